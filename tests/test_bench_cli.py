"""`rmtkd-tf bench` option handling, one-line errors and the atomic JSON writer (no model conversion here)."""

import json

import click
import pytest
from click.testing import CliRunner

from cli.bench_cmd import bench, format_table, write_json_atomic
from rmtkd_tf.bench.schema import BenchmarkResult, DeviceInfo, EnergyInfo, LatencyStats


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"TFL3")
    return str(path)


def invoke(*args):
    return CliRunner().invoke(bench, list(args))


def test_is_a_click_command_named_bench():
    assert isinstance(bench, click.Command) and bench.name == "bench"


@pytest.mark.parametrize("extra, message", [
    (["--use-gpu"], "Error: --use-gpu needs --device adb (the host and ssh runners are CPU-only)"),
    (["--device", "ssh"], "Error: --device ssh needs --ssh-host HOST"),
    (["--serial", "X"], "Error: --serial/--binary/--binary-on-device only apply to --device adb or --tool benchmark_model"),
    (["--ssh-host", "pi@x"], "Error: --ssh-host/--ssh-port/--ssh-option only apply to --device ssh"),
    (["--vs", "missing.tflite"], "Error: no such model file: missing.tflite"),
])
def test_option_errors_are_one_line(model, extra, message):
    result = invoke(model, *extra)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [message]


def test_missing_model(tmp_path):
    result = invoke(str(tmp_path / "nope.tflite"))
    assert result.exit_code == 1 and result.output.strip() == f"Error: no such model file: {tmp_path / 'nope.tflite'}"


def test_adb_missing_from_path(model, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    result = invoke(model, "--device", "adb", "--binary", model)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: adb not found on PATH: install Android SDK platform-tools and put adb on PATH"]


def test_ssh_missing_from_path(model, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    result = invoke(model, "--device", "ssh", "--ssh-host", "pi@board")
    assert result.exit_code == 1 and result.output.strip() == "Error: ssh not found on PATH: install an OpenSSH client"


def test_bad_numbers_are_usage_errors(model):
    assert invoke(model, "--runs", "0").exit_code == 2
    assert invoke(model, "--device", "phone").exit_code == 2


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    write_json_atomic(str(target), {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    with pytest.raises(TypeError):
        write_json_atomic(str(target), {"a": object()})  # not serialisable: old file must survive intact
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    with pytest.raises(click.ClickException, match="output directory does not exist"):
        write_json_atomic(str(tmp_path / "no" / "r.json"), {})


def test_table_formatting():
    result = BenchmarkResult(
        model_path="/x/student.tflite", model_size_bytes=2048, model_sha256="0" * 64, runner="benchmark_model",
        transport="adb", device=DeviceInfo(), threads=4, delegate="gpu", batch_size=1, warmup_runs=1, runs=10,
        latency_ms=LatencyStats(min=1.0, median=1.25, mean=1.5, p90=None, p99=None, max=2.0, std=0.1),
        throughput_per_s=666.6667, energy=EnergyInfo(available=True, joules_per_inference=0.0123,
                                                     source="android-battery", note="x"))
    lines = format_table([result]).splitlines()
    assert lines[0].split() == ["model", "size", "KiB", "median", "ms", "mean", "ms", "p90", "ms", "per", "s",
                                "cpu", "ms/inf", "mJ/inf"]
    assert lines[1].split() == ["student.tflite", "2.0", "1.25", "1.5", "-", "666.7", "-", "12.3"]
