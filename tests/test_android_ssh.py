"""SshBoard against a transcript, plus the board-side script run for real on this machine."""

import json
import shutil
import subprocess
import sys

import pytest

from android_bench.errors import BenchmarkFailedError, DeviceCommandError, ToolNotFoundError
from android_bench.runner import CommandResult, ReplayRunner
from android_bench.ssh import REMOTE_SCRIPT_PATH, SshBoard, remote_script_source

HOST = "pi@raspberrypi.local"
REMOTE = "/tmp/rmtkd_0a1b2c3d"
SSH = ["ssh", "-o", "BatchMode=yes", "-p", "2222", HOST]
PAYLOAD = {
    "latencies_ms": [2.0, 1.0, 3.0, 4.0], "init_ms": 12.5, "first_inference_ms": 9.0, "cpu_seconds": 0.02,
    "peak_rss_kb": 51200, "batch_size": 1, "machine": "aarch64", "cpu_model": None,
    "os": "Linux-6.6.31+rpt-rpi-v8-aarch64-with-glibc2.36", "python": "3.11.2", "runtime": "ai_edge_litert 2.3.0",
}


def transcript(run_stdout, run_rc=0, run_stderr=""):
    return [
        {"argv": SSH + [f"mkdir -p {REMOTE}"]},
        {"argv": ["scp", "-q", "-o", "BatchMode=yes", "-P", "2222", "<ANY>", f"{HOST}:{REMOTE}/model.tflite"]},
        {"argv": SSH + [f"taskset f python3 - {REMOTE}/model.tflite 4 3 4 0 1"], "returncode": run_rc,
         "stdout": run_stdout, "stderr": run_stderr},
        {"argv": SSH + [f"rm -rf {REMOTE}"]},
    ]


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "student.tflite"
    path.write_bytes(b"TFL3" + bytes(60))
    return path


def run(model, runner):
    board = SshBoard(HOST, port=2222, runner=runner)
    return board.benchmark(model, threads=4, warmup=3, runs=4, cpu_mask="0xf", run_id="0a1b2c3d")


def test_command_sequence_and_result(model):
    runner = ReplayRunner(transcript("RMTKD_RESULT " + json.dumps(PAYLOAD) + "\n"))
    result = run(model, runner)
    runner.assert_done()
    assert runner.calls[1][-2] == str(model)
    assert runner.inputs[2] == remote_script_source()  # the script travels on stdin
    assert (result.runner, result.transport, result.device.serial) == ("litert-python", "ssh", HOST)
    assert result.device.machine == "aarch64"
    assert (result.runs, result.warmup_runs, result.threads) == (4, 3, 4)
    assert (result.latency_ms.min, result.latency_ms.median, result.latency_ms.max) == (1.0, 2.5, 4.0)
    assert result.cpu_seconds_per_inference == pytest.approx(0.005)
    assert result.peak_rss_mb == 50.0 and result.init_ms == 12.5
    assert result.energy.available is False and "proxy" in result.energy.note
    assert result.extra["runtime"] == "ai_edge_litert 2.3.0"


def test_board_error_line_is_reported_and_cleanup_runs(model):
    runner = ReplayRunner(transcript("RMTKD_ERROR no LiteRT runtime on the board: pip install ai-edge-litert\n", 3))
    with pytest.raises(BenchmarkFailedError, match="^benchmark on pi@raspberrypi.local failed: no LiteRT runtime"):
        run(model, runner)
    runner.assert_done()


def test_connection_failure_is_one_line_and_cleanup_is_attempted(model):
    commands = [
        {"argv": SSH + [f"mkdir -p {REMOTE}"], "returncode": 255,
         "stderr": "ssh: connect to host raspberrypi.local port 2222: Connection refused\r\n"},
        {"argv": SSH + [f"rm -rf {REMOTE}"], "returncode": 255, "stderr": "Connection refused"},
    ]
    runner = ReplayRunner(commands)
    with pytest.raises(DeviceCommandError,
                       match="^ssh connection to pi@raspberrypi.local failed: ssh: connect to host .* Connection refused$"):
        run(model, runner)
    runner.assert_done()


def test_python_crash_without_result_line(model):
    runner = ReplayRunner(transcript("", 1, "Traceback (most recent call last):\nImportError: numpy.core.multiarray failed\n"))
    with pytest.raises(BenchmarkFailedError, match=r"\(exit 1\): ImportError: numpy.core.multiarray failed"):
        run(model, runner)


def test_argument_errors(model, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="invalid ssh host"):
        SshBoard("-oProxyCommand=evil", runner=ReplayRunner([]))
    with pytest.raises(ValueError, match="hexadecimal"):
        SshBoard(HOST, runner=ReplayRunner([])).benchmark(model, cpu_mask="xyz")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolNotFoundError, match="^ssh not found on PATH"):
        SshBoard(HOST)


@pytest.mark.slow
def test_board_script_runs_for_real_through_a_local_fake_ssh(model, tmp_path_factory):
    """ssh/scp emulated locally: the script really loads LiteRT and benchmarks a tiny model."""
    from test_bench_host import build_tiny_tflite_models  # same session cache as the host tests

    directory = tmp_path_factory.getbasetemp() / "tiny_tflite_models"
    directory.mkdir(exist_ok=True)
    tiny = build_tiny_tflite_models(directory)[1]  # int8 model: exercises int8 random inputs on the board

    def local_runner(argv, input=None, timeout=None):
        if argv[0] == "scp":
            shutil.copy(argv[-2], argv[-1].split(":", 1)[1])
            return CommandResult(tuple(argv), 0)
        command = argv[-1].replace("python3 -", f"{sys.executable} -")
        done = subprocess.run(["bash", "-c", command], input=input, capture_output=True, text=True, timeout=120)
        return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)

    result = SshBoard("localhost", remote_tmp=str(tmp_path_factory.mktemp("board")), runner=local_runner).benchmark(
        tiny, threads=1, warmup=2, runs=5)
    assert result.runs == 5 and result.batch_size == 1
    assert 0 < result.latency_ms.min <= result.latency_ms.max
    assert result.extra["runtime"].startswith("ai_edge_litert")
    assert REMOTE_SCRIPT_PATH.endswith("remote_litert_bench.py")
