"""Host benchmarking with the LiteRT interpreter on tiny real .tflite models (a few runs each)."""

import hashlib
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from cli.bench_cmd import bench
from rmtkd_tf.bench.host import LoadedTfliteModel, benchmark_tflite, compare_tflite, parse_cpu_mask
from rmtkd_tf.bench.schema import BenchmarkResult, ComparisonResult

pytestmark = pytest.mark.slow  # converts two tiny Keras models once per session (~5 s)


def build_tiny_tflite_models(directory):
    """float32 and full-int8 versions of Dense(8->16->4), via SavedModel (not from_keras_model: Keras 3)."""
    float_path, int8_path = directory / "tiny_float.tflite", directory / "tiny_int8.tflite"
    if float_path.exists() and int8_path.exists():
        return float_path, int8_path
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)])
    saved = directory / "saved_model"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    float_path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.standard_normal((1, 8)).astype(np.float32)] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    int8_path.write_bytes(converter.convert())
    return float_path, int8_path


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    directory = tmp_path_factory.getbasetemp() / "tiny_tflite_models"
    directory.mkdir(exist_ok=True)
    return build_tiny_tflite_models(directory)


@pytest.fixture
def no_rapl(tmp_path):
    return str(tmp_path / "no-powercap" / "intel-rapl:*")


def test_float_model_result(tiny_models, no_rapl):
    path = tiny_models[0]
    result = benchmark_tflite(path, threads=1, warmup=2, runs=5, rapl_glob=no_rapl)
    assert isinstance(result, BenchmarkResult)
    assert (result.runner, result.transport, result.delegate) == ("litert-python", "host", "xnnpack")
    assert (result.threads, result.warmup_runs, result.runs, result.batch_size) == (1, 2, 5, 1)
    assert result.model_size_bytes == os.path.getsize(path)
    assert result.model_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    lat = result.latency_ms
    assert 0 < lat.min <= lat.median <= lat.p90 <= lat.p99 <= lat.max
    assert lat.min <= lat.mean <= lat.max
    assert result.throughput_per_s == pytest.approx(1000.0 / lat.mean)
    assert result.init_ms > 0 and result.cpu_seconds_per_inference > 0
    assert result.peak_rss_mb > 0 and result.memory.kind == "rss_delta"
    assert result.extra["first_inference_ms"] > 0
    assert result.energy.available is False
    assert result.energy.note.startswith("RAPL unavailable") and "proxy" in result.energy.note
    assert BenchmarkResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_energy_says_unavailable_with_the_default_rapl_path(tiny_models):
    from rmtkd_tf.bench.energy import RaplMeter

    if RaplMeter.probe() is not None:
        pytest.skip("this host has readable RAPL counters")
    result = benchmark_tflite(tiny_models[0], warmup=1, runs=3)
    assert result.energy.available is False and result.energy.joules_per_inference is None
    assert "RAPL" in result.energy.note


def test_rapl_energy_is_reported_when_readable(tiny_models, tmp_path):
    domain = tmp_path / "intel-rapl:0"
    domain.mkdir()
    (domain / "energy_uj").write_text("1000\n")
    (domain / "max_energy_range_uj").write_text("262143328850\n")
    (domain / "name").write_text("package-0\n")
    # A frozen fake counter: energy is "available" and exactly zero, proving the wiring, not the physics.
    result = benchmark_tflite(tiny_models[0], warmup=1, runs=3, rapl_glob=str(tmp_path / "intel-rapl:*"))
    assert result.energy.available is True and result.energy.source == "rapl"
    assert result.energy.joules_per_inference == 0.0
    assert "package-0" in result.energy.note


def test_int8_model_gets_int8_inputs(tiny_models):
    loaded = LoadedTfliteModel(tiny_models[1], threads=1, seed=3)
    assert loaded.interpreter.get_input_details()[0]["dtype"] == np.int8
    assert loaded.input_arrays[0].dtype == np.int8 and loaded.input_arrays[0].shape == (1, 8)
    assert len(set(loaded.input_arrays[0].ravel().tolist())) > 1  # random, not a constant fill
    result = benchmark_tflite(tiny_models[1], warmup=1, runs=3, use_xnnpack=False)
    assert result.delegate == "none" and result.extra["op_resolver"] == "BUILTIN_WITHOUT_DEFAULT_DELEGATES"


def test_user_inputs_resize_the_dynamic_batch(tiny_models):
    batch = np.zeros((4, 8), np.float32)
    result = benchmark_tflite(tiny_models[0], warmup=1, runs=3, inputs=batch)
    assert result.batch_size == 4
    assert result.throughput_per_s == pytest.approx(4 * 1000.0 / result.latency_ms.mean)
    name = LoadedTfliteModel(tiny_models[0]).interpreter.get_input_details()[0]["name"]
    assert benchmark_tflite(tiny_models[0], warmup=0, runs=1, inputs={name: batch}).batch_size == 4


@pytest.mark.parametrize("inputs, message", [
    (np.zeros((1, 8), np.float64), "has dtype float64, model expects float32"),
    (np.zeros((1, 7), np.float32), r"has shape \(1, 7\), model expects \(-1, 8\)"),
    ([np.zeros((1, 8), np.float32)] * 2, "model has 1 input"),
    ({"nope": np.zeros((1, 8), np.float32)}, "unknown input name"),
])
def test_bad_inputs(tiny_models, inputs, message):
    with pytest.raises(ValueError, match=message):
        benchmark_tflite(tiny_models[0], warmup=0, runs=1, inputs=inputs)


def test_bad_arguments(tiny_models, tmp_path):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        benchmark_tflite(tiny_models[0], threads=0)
    with pytest.raises(ValueError, match="runs must be a positive integer"):
        benchmark_tflite(tiny_models[0], runs=0)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        benchmark_tflite(tmp_path / "missing.tflite")
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="LiteRT cannot load .*garbage.tflite: The model is not a valid Flatbuffer"):
        benchmark_tflite(garbage)
    with pytest.raises(ValueError, match="hexadecimal"):
        benchmark_tflite(tiny_models[0], cpu_mask="0xzz")


def test_cpu_mask_pins_and_restores(tiny_models):
    before = os.sched_getaffinity(0)
    cpu = min(before)
    result = benchmark_tflite(tiny_models[0], warmup=1, runs=2, cpu_mask=hex(1 << cpu))
    assert result.extra["cpu_affinity"] == [cpu]
    assert os.sched_getaffinity(0) == before
    assert sorted(parse_cpu_mask("f0")) == [4, 5, 6, 7]


def test_compare_runs_interleaved_abba_blocks(tiny_models, monkeypatch, no_rapl):
    order = []
    original = LoadedTfliteModel.run

    def recording_run(self, n):
        order.append((os.path.basename(self.path), n))
        return original(self, n)

    monkeypatch.setattr(LoadedTfliteModel, "run", recording_run)
    comparison = compare_tflite(tiny_models[0], tiny_models[1], warmup=2, runs=5, block_runs=2, rapl_glob=no_rapl)
    a, b = "tiny_float.tflite", "tiny_int8.tflite"
    assert order == [(a, 2), (b, 2), (a, 2), (b, 2), (b, 2), (a, 2), (a, 1), (b, 1)]
    assert isinstance(comparison, ComparisonResult)
    assert comparison.a.runs == comparison.b.runs == 5
    assert comparison.method["blocks"] == 3 and comparison.method["block_runs"] == 2
    assert comparison.ratios["size_a_over_b"] == comparison.a.model_size_bytes / comparison.b.model_size_bytes
    assert comparison.ratios["median_latency_a_over_b"] == comparison.a.latency_ms.median / comparison.b.latency_ms.median
    assert comparison.ratios["cpu_seconds_a_over_b"] == (
        comparison.a.cpu_seconds_per_inference / comparison.b.cpu_seconds_per_inference)
    assert comparison.ratios["energy_a_over_b"] is None
    assert comparison.a.extra["interleaved_with"] == str(tiny_models[1])


# ----------------------------------------------------------------------------- CLI on the host


def test_cli_single_model_writes_json_atomically(tiny_models, tmp_path):
    report = tmp_path / "bench.json"
    result = CliRunner().invoke(bench, [str(tiny_models[0]), "--runs", "3", "--warmup", "1", "-o", str(report)])
    assert result.exit_code == 0, result.output
    assert "median ms" in result.output and "tiny_float.tflite" in result.output
    assert "energy: unavailable" in result.output
    parsed = BenchmarkResult.from_dict(json.loads(report.read_text()))
    assert parsed.runs == 3 and parsed.transport == "host"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]  # no temp file left behind


def test_cli_compare(tiny_models, tmp_path):
    report = tmp_path / "compare.json"
    result = CliRunner().invoke(bench, [str(tiny_models[0]), "--vs", str(tiny_models[1]), "--runs", "4",
                                        "--warmup", "1", "--block-runs", "2", "-o", str(report)])
    assert result.exit_code == 0, result.output
    assert "a/b: median latency" in result.output
    comparison = ComparisonResult.from_dict(json.loads(report.read_text()))
    assert comparison.b.model_path == str(tiny_models[1])


def test_cli_unloadable_model_is_one_line_error(tmp_path):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"nope")
    result = CliRunner().invoke(bench, [str(garbage)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: LiteRT cannot load {garbage}: The model is not a valid Flatbuffer buffer"]
