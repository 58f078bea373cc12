"""The external benchmark tools: parsers on real / recorded outputs, runners (replayed and real), CLI wiring.

Fixtures: tests/data/litert_benchmark/ (real `litert-benchmark` runs on the project's models) and
tests/data/benchmark_model/litert2_* (LiteRT 2.x C++ text and protoc-encoded result proto).
"""

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from android_bench.adb import AdbDevice
from android_bench.benchmark_output import parse_benchmark_model_output
from android_bench.benchmark_result_proto import file_descriptor_proto, parse_benchmark_result_proto
from android_bench.errors import BenchmarkFailedError, MissingBinaryError, WrongAbiError
from android_bench.litert_output import has_litert_results, parse_litert_benchmark_json, parse_litert_results_text
from android_bench.local import LocalTools
from android_bench.runner import ReplayRunner
from android_bench.ssh import SshBoard
from android_bench.tool_results import parse_tool_output, result_from_tool_output
from cli.bench_cmd import bench
from test_android_adb import fake_elf
from test_bench_host import build_tiny_tflite_models

DATA = Path(__file__).parent / "data"
LB = DATA / "litert_benchmark"
BM = DATA / "benchmark_model"
MODELS = ("teacher_fp32", "student_fp32", "teacher_fp16", "student_fp16", "teacher_int8", "student_int8")
LITERT_TEXT = (BM / "litert2_benchmark_model_cpu.txt").read_text()
PROTO = (BM / "litert2_result.pb").read_bytes()


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "student.tflite"
    path.write_bytes(b"TFL3" + bytes(60))
    return path


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return build_tiny_tflite_models(tmp_path_factory.mktemp("tiny_tools"))


# ----------------------------------------------------------------------------- litert-benchmark (real outputs)


def test_every_litert_benchmark_fixture_is_listed():
    names = {p.name for p in LB.iterdir()} - {"README.md"}
    assert names == {f"{m}.{kind}" for m in MODELS for kind in ("json", "stdout.txt", "stderr.txt")}


@pytest.mark.parametrize("name", MODELS)
def test_litert_benchmark_stdout_block_agrees_with_its_json(name):
    block = parse_litert_results_text((LB / f"{name}.stdout.txt").read_text())
    doc = parse_litert_benchmark_json((LB / f"{name}.json").read_text())
    assert block["tool"] == "litert-benchmark" and block["fully_accelerated"] is False
    for key in ("init_ms", "warmup_first_ms", "warmup_avg_ms", "warmup_runs", "avg_ms", "runs", "min_ms", "max_ms",
                "median_ms", "std_ms", "p5_ms", "p95_ms", "throughput_mb_s"):
        assert block[key] == doc[key], key
    assert (doc["runs"], doc["warmup_runs"], doc["num_threads"], doc["accelerators"]) == (50, 5, 1, ["CPU"])
    assert doc["min_ms"] <= doc["p5_ms"] <= doc["median_ms"] <= doc["p95_ms"] <= doc["max_ms"]
    # stderr is LiteRT's and Python's logging: no results block, nothing the TFLite parser takes for stats
    stderr = (LB / f"{name}.stderr.txt").read_text()
    assert not has_litert_results(stderr)
    with pytest.raises(ValueError):
        parse_benchmark_model_output(stderr)


def test_litert_benchmark_exact_numbers_of_one_run():
    doc = parse_litert_benchmark_json((LB / "student_int8.json").read_bytes())
    assert (doc["init_ms"], doc["avg_ms"], doc["min_ms"], doc["max_ms"], doc["median_ms"], doc["std_ms"]) == (
        1.47, 0.19, 0.14, 2.64, 0.14, 0.35)
    assert doc["model_size_mb"] == 0.26 and doc["throughput_mb_s"] == 15.14


def test_litert_benchmark_fixture_to_result(model):
    result = result_from_tool_output(
        model, runner="litert-benchmark", transport="host", threads=1, delegate="xnnpack", warmup=5,
        text=(LB / "teacher_fp32.stdout.txt").read_text(), litert_json=(LB / "teacher_fp32.json").read_text())
    assert result.runner == "litert-benchmark" and (result.runs, result.warmup_runs) == (50, 5)
    assert (result.latency_ms.mean, result.latency_ms.median, result.latency_ms.min) == (1.45, 0.69, 0.67)
    assert result.latency_ms.p90 is None and result.extra["percentiles_ms"] == {"p5_ms": 0.67, "p95_ms": 4.87}
    assert result.init_ms == 5.61 and result.extra["sources"] == ["litert_json", "litert_text"]
    assert json.loads(json.dumps(result.to_dict()))["runner"] == "litert-benchmark"


@pytest.mark.parametrize("bad, message", [
    ("not json", "not JSON"),
    ("{}", "no 'latency' object"),
    ('{"latency": {"avg_ms": 1}}', "no numeric latency.min_ms"),
    ('{"latency": {"avg_ms": 1, "min_ms": 1, "max_ms": 1, "std_ms": 0, "num_runs": 1, "p99_ms": 1}}', "unknown key"),
])
def test_litert_benchmark_json_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_litert_benchmark_json(bad)


# ----------------------------------------------------------------------------- LiteRT 2.x C++ text and proto


def test_litert2_cpp_results_block():
    block = parse_litert_results_text(LITERT_TEXT)
    assert block == {
        "tool": "benchmark_model", "signature": "serving_default", "init_ms": 2.09, "warmup_first_ms": 3.31,
        "warmup_avg_ms": 1.79, "warmup_runs": 5, "avg_ms": 1.40, "runs": 50, "min_ms": 1.36, "max_ms": 1.69,
        "std_ms": 0.05, "throughput_mb_s": 8.38, "init_footprint_mb": 3.52, "overall_footprint_mb": 4.10,
        "peak_mem_mb": 21.75}


def test_litert2_cpp_text_also_has_the_tflite_stat_lines():
    parsed = parse_benchmark_model_output(LITERT_TEXT)
    assert parsed["format"] is None and parsed["init_us"] is None  # no "Inference timings in us" line
    assert parsed["inference_stats"]["count"] == 50 and parsed["inference_stats"]["median"] == 1384.0
    assert parsed["warmup_stats"]["count"] == 5 and parsed["init_session_ms"] == 2.091


def test_results_block_errors():
    with pytest.raises(ValueError, match="no 'BENCHMARK RESULTS' block"):
        parse_litert_results_text("INFO: count=3 curr=5\n")
    with pytest.raises(ValueError, match="no 'Inference \\(avg\\)' line"):
        parse_litert_results_text("========== BENCHMARK RESULTS ==========\nNo inference runs were performed.\n")


def test_result_proto_fixture():
    decoded = parse_benchmark_result_proto(PROTO)
    latency = decoded["latency_metrics"]
    assert latency["avg_ms"] == pytest.approx(1.39862) and latency["median_ms"] == pytest.approx(1.384)
    assert latency["p5_ms"] == pytest.approx(1.366) and latency["p95_ms"] == pytest.approx(1.503)
    assert decoded["memory_metrics"] == {"init_footprint_kb": 3604, "overall_footprint_kb": 4198,
                                         "peak_mem_mb": pytest.approx(21.75)}
    assert decoded["misc_metrics"]["num_runs"] == 50 and decoded["misc_metrics"]["num_warmup_runs"] == 5
    assert "name" not in decoded


@pytest.mark.parametrize("data, message", [(b"\xff\xff\xff", "not a BenchmarkResult"), (b"", "no latency metrics"),
                                           ("text", "must be bytes")])
def test_result_proto_errors(data, message):
    with pytest.raises(ValueError, match=message):
        parse_benchmark_result_proto(data)


@pytest.mark.skipif(shutil.which("protoc") is None, reason="protoc not installed (Debian: protobuf-compiler)")
def test_runtime_descriptor_matches_protoc(tmp_path):
    from google.protobuf import descriptor_pb2

    out = tmp_path / "set.pb"
    subprocess.run(["protoc", f"--descriptor_set_out={out}", "--proto_path=android_bench/proto",
                    "benchmark_result.proto"], check=True, cwd=Path(__file__).parent.parent)
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    ours = file_descriptor_proto()
    compiled.name = ours.name  # protoc names it by the --proto_path-relative file name
    for message in compiled.message_type:  # protoc leaves json_name out of descriptor sets
        for field in message.field:
            field.ClearField("json_name")
    for message in ours.message_type:
        for field in message.field:
            field.ClearField("json_name")
    assert ours == compiled


def test_cpp_text_and_proto_most_precise_source_wins(model):
    result = result_from_tool_output(model, runner="benchmark_model", transport="host", threads=1,
                                     delegate="xnnpack", warmup=1, text=LITERT_TEXT, proto=PROTO)
    assert result.extra["sources"] == ["litert_text", "proto", "tflite_text"]
    assert result.latency_ms.mean == pytest.approx(1.39862)  # count= line (us), not the block's 1.40
    assert result.latency_ms.median == pytest.approx(1.384) and result.runs == 50 and result.warmup_runs == 5
    assert result.init_ms == pytest.approx(2.091) and result.extra["first_inference_ms"] == pytest.approx(3.31)
    assert result.memory.init_mb == pytest.approx(3604 / 1024) and result.memory.kind == "footprint_delta"
    assert result.peak_rss_mb == pytest.approx(21.75)
    only_block = result_from_tool_output(model, runner="benchmark_model", transport="host", threads=1,
                                         delegate="xnnpack", warmup=1,
                                         text="\n".join(l for l in LITERT_TEXT.splitlines() if "count=" not in l))
    assert only_block.latency_ms.mean == 1.40 and only_block.latency_ms.median is None
    assert only_block.memory.init_mb == 3.52 and only_block.init_ms == 2.09  # the block, no stat lines left


def test_nothing_to_parse_says_why():
    with pytest.raises(ValueError, match="first error: Failed to mmap model"):
        parse_tool_output("INFO: STARTING!\nERROR: Failed to mmap model m.tflite\n")


# ----------------------------------------------------------------------------- host runners


def test_litert_benchmark_runner_replayed(model):
    stdout = (LB / "student_fp32.stdout.txt").read_text()
    runner = ReplayRunner([{"argv": ["litert-benchmark", f"--model={model}", "--num_threads=2", "--warmup_runs=5",
                                     "--num_runs=50", "<ANY>"], "stdout": stdout}])
    result = LocalTools(runner).litert_benchmark(model, threads=2, warmup=5, runs=50, command=["litert-benchmark"])
    runner.assert_done()
    assert runner.calls[0][-1].startswith("--result_json=")
    assert result.extra["sources"] == ["litert_text"]  # the replay wrote no JSON: the stdout block is used
    assert (result.latency_ms.mean, result.runs, result.threads) == (1.52, 50, 2)


def test_litert_benchmark_runner_failure_is_one_line(model):
    runner = ReplayRunner([{"argv": ["lb", "<ANY>", "<ANY>", "<ANY>", "<ANY>", "<ANY>"], "returncode": 1,
                            "stderr": "2026-12-02 10:00:00 ERROR benchmark_litert_model: x\nTraceback\nValueError: bad model\n"}])
    with pytest.raises(BenchmarkFailedError, match="litert-benchmark failed \\(exit 1\\): ValueError: bad model"):
        LocalTools(runner).litert_benchmark(model, command=["lb"])


def test_litert_benchmark_for_real(tiny_models):
    result = LocalTools().litert_benchmark(tiny_models[0], threads=1, warmup=2, runs=7)
    assert result.runner == "litert-benchmark" and result.transport == "host"
    assert (result.runs, result.warmup_runs) == (7, 2)
    assert result.extra["sources"] == ["litert_json", "litert_text"]
    # the tool rounds to 0.01 ms: this tiny model may well print 0.00
    assert 0 <= result.latency_ms.min <= result.latency_ms.mean <= result.latency_ms.max
    assert result.device.machine


def test_benchmark_model_runner_replayed(model, tmp_path):
    binary = fake_elf(tmp_path / "benchmark_model", 62)
    binary.chmod(0o755)
    argv = [str(binary), f"--graph={model}", "--num_threads=1", "--warmup_runs=5", "--warmup_min_secs=0",
            "--num_runs=50", "--min_secs=0", "--use_xnnpack=true", "<ANY>"]
    runner = ReplayRunner([{"argv": argv, "stderr": LITERT_TEXT}])
    result = LocalTools(runner).benchmark_model(model, binary, warmup=5, runs=50)
    runner.assert_done()
    assert runner.calls[0][-1].startswith("--result_file_path=")
    assert result.runner == "benchmark_model" and result.latency_ms.mean == pytest.approx(1.39862)
    assert result.extra["binary_abi"] == "x86_64"


def test_benchmark_model_runner_refuses_foreign_or_missing_binaries(model, tmp_path):
    with pytest.raises(MissingBinaryError, match="not found"):
        LocalTools().benchmark_model(model, tmp_path / "nope")
    arm = fake_elf(tmp_path / "arm_benchmark_model", 183)
    arm.chmod(0o755)
    with pytest.raises(WrongAbiError, match="built for arm64-v8a"):
        LocalTools().benchmark_model(model, arm)
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(WrongAbiError, match="not an ELF"):
        LocalTools().benchmark_model(model, script)


# ----------------------------------------------------------------------------- ssh and adb


HOST = "pi@board"
REMOTE = "/tmp/rmtkd_0a1b2c3d"
SSH = ["ssh", "-o", "BatchMode=yes", HOST]


def test_benchmark_model_over_ssh_replayed(model, tmp_path):
    binary = fake_elf(tmp_path / "benchmark_model", 183)
    run = (f"taskset f {REMOTE}/benchmark_model --graph={REMOTE}/model.tflite --num_threads=4 --warmup_runs=5 "
           f"--warmup_min_secs=0 --num_runs=50 --min_secs=0 --use_xnnpack=true --result_file_path={REMOTE}/result.pb")
    runner = ReplayRunner([
        {"argv": SSH + ["uname -m"], "stdout": "aarch64\n"},
        {"argv": SSH + [f"mkdir -p {REMOTE}"]},
        {"argv": ["scp", "-q", "-o", "BatchMode=yes", str(model), f"{HOST}:{REMOTE}/model.tflite"]},
        {"argv": ["scp", "-q", "-o", "BatchMode=yes", str(binary), f"{HOST}:{REMOTE}/benchmark_model"]},
        {"argv": SSH + [f"chmod 755 {REMOTE}/benchmark_model"]},
        {"argv": SSH + [run], "stderr": LITERT_TEXT},
        {"argv": ["scp", "-q", "-o", "BatchMode=yes", f"{HOST}:{REMOTE}/result.pb", "<ANY>"], "returncode": 1,
         "stderr": "scp: no such file"},
        {"argv": SSH + [f"rm -rf {REMOTE}"]},
    ])
    result = SshBoard(HOST, runner=runner).benchmark_binary(model, binary=binary, threads=4, warmup=5, runs=50,
                                                            cpu_mask="0xF", run_id="0a1b2c3d")
    runner.assert_done()
    assert (result.runner, result.transport, result.device.machine, result.device.serial) == (
        "benchmark_model", "ssh", "aarch64", HOST)
    assert result.latency_ms.median == pytest.approx(1.384) and result.extra["sources"] == ["litert_text", "tflite_text"]


def test_benchmark_model_over_ssh_wrong_abi_copies_nothing(model, tmp_path):
    runner = ReplayRunner([{"argv": SSH + ["uname -m"], "stdout": "aarch64\n"}])
    with pytest.raises(WrongAbiError, match="built for x86_64 but pi@board is aarch64"):
        SshBoard(HOST, runner=runner).benchmark_binary(model, binary=fake_elf(tmp_path / "bm", 62))
    runner.assert_done()


def test_benchmark_model_over_ssh_failure_cleans_up(model):
    runner = ReplayRunner([
        {"argv": SSH + ["uname -m"], "stdout": "aarch64\n"},
        {"argv": SSH + [f"mkdir -p {REMOTE}"]},
        {"argv": ["scp", "-q", "-o", "BatchMode=yes", str(model), f"{HOST}:{REMOTE}/model.tflite"]},
        {"argv": SSH + ["<ANY>"], "returncode": 1, "stderr": "ERROR: Failed to mmap model x\nERROR: Benchmarking failed.\n"},
        {"argv": SSH + [f"rm -rf {REMOTE}"]},
    ])
    with pytest.raises(BenchmarkFailedError, match="exit 1\\): Failed to mmap model x"):
        SshBoard(HOST, runner=runner).benchmark_binary(model, binary_on_board="/opt/bm", run_id="0a1b2c3d")
    runner.assert_done()
    assert runner.calls[3][-1].startswith("/opt/bm --graph=")


def test_adb_run_with_litert2_output(model, tmp_path):
    transcript = json.loads((DATA / "adb" / "benchmark_ok.json").read_text())["commands"]
    for entry in transcript:
        if entry["argv"][-1].startswith("sh ") and entry["argv"][-1].endswith("run_bench.sh"):
            head, rest = entry["stdout"].split("@@RMTKD start", 1)
            start_line, rest = rest.split("\n", 1)
            _, tail = rest.split("@@RMTKD stop", 1)
            entry["stdout"] = f"{head}@@RMTKD start{start_line}\n{LITERT_TEXT}@@RMTKD stop{tail}"
    runner = ReplayRunner(transcript)
    result = AdbDevice(runner=runner).benchmark(model, binary=fake_elf(tmp_path / "benchmark_model", 183), threads=4,
                                                warmup=100, runs=200, run_id="5f3a9c01")
    runner.assert_done()
    assert (result.runs, result.warmup_runs) == (50, 5) and result.latency_ms.median == pytest.approx(1.384)
    assert result.init_ms == pytest.approx(2.091) and result.memory.init_mb == 3.52
    assert result.extra["litert_results"]["avg_ms"] == 1.40
    assert result.energy.available  # the window starts after LiteRT's init time


# ----------------------------------------------------------------------------- CLI


def test_cli_litert_benchmark_vs_for_real(tiny_models, tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(bench, [str(tiny_models[0]), "--vs", str(tiny_models[0]), "--tool", "litert-benchmark",
                                        "--runs", "5", "--warmup", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["a"]["runner"] == report["b"]["runner"] == "litert-benchmark"
    assert report["method"]["schedule"].startswith("sequential litert-benchmark runs on host")
    assert "median ms" in result.output


@pytest.mark.parametrize("extra, message", [
    (["--tool", "litert-benchmark", "--ssh", "pi@b"], "--tool litert-benchmark runs on the host only"),
    (["--tool", "litert-benchmark", "--no-xnnpack"], "always uses LiteRT's CPU accelerator"),
    (["--tool", "interpreter", "--adb"], "--tool interpreter does not run over adb"),
    (["--tool", "benchmark_model"], "--tool benchmark_model needs --binary PATH"),
    (["--tool", "benchmark_model", "--binary", "nope"], "no such benchmark_model binary: nope"),
    (["--tool", "benchmark_model", "--ssh", "pi@b"], "needs one of --binary PATH"),
    (["--ssh", "pi@b", "--adb"], "--ssh and --adb are two different targets"),
    (["--ssh", "pi@b", "--device", "adb"], "--ssh USER@HOST conflicts"),
])
def test_cli_tool_option_errors(model, extra, message):
    result = CliRunner().invoke(bench, [str(model), *extra])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_cli_adb_shorthand_selects_the_serial(model, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(bench, [str(model), "--adb", "SERIAL1", "--binary", str(model)])
    assert result.exit_code == 1 and "adb not found on PATH" in result.output


# ----------------------------------------------------------------------------- the build script (dry run)

SCRIPT = Path(__file__).parent.parent / "android_bench" / "build_benchmark_model.sh"


TF_FILE_PATHS = ["tensorflow/core/example/CMakeLists.txt", "tensorflow/core/example/example.proto",
                 "tensorflow/core/example/feature.proto", "tensorflow/core/util/stats_calculator.h",
                 "tensorflow/core/util/stat_summarizer_options.h", "third_party/fft2d/fft.h", "third_party/fft2d/fft2d.h",
                 "third_party/xla/xla/tsl/util/stats_calculator.cc", "third_party/xla/xla/tsl/util/stats_calculator.h",
                 "third_party/xla/xla/tsl/util/stat_summarizer_options.h",
                 "third_party/xla/xla/tsl/lib/random/philox_random.h",
                 "third_party/xla/xla/tsl/lib/random/random_distributions_utils.h",
                 "third_party/xla/xla/tsl/framework/convolution/eigen_spatial_convolutions-inl.h",
                 "third_party/xla/xla/tsl/framework/convolution/eigen_convolution_helpers.h"]


def _dry_run(tmp_path, env, *args):
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--work", str(tmp_path / "w"), *args],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **env})
    assert done.returncode == 0, done.stderr
    return [shlex.split(line)[1:] for line in done.stdout.splitlines() if line.startswith("+ ")]


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("git") is None, reason="needs cmake and git")
def test_build_script_dry_run_offline_sources(tmp_path):
    deps = tmp_path / "deps"
    for name in ("abseil-cpp", "fp16_headers"):
        (deps / name).mkdir(parents=True)
    src = tmp_path / "w" / "src"
    lines = _dry_run(tmp_path, {"DEPS_DIR": str(deps), "TF_FILES": "/src/tf", "LITERT_SRC": "/src/litert"},
                     "--jobs", "3", "--xnnpack", "on")
    # LITERT_SRC given: no clone. The assembled tree: LiteRT's tflite/, the converter link, the proto-path patch.
    assert lines[:4] == [["rm", "-rf", str(src)], ["mkdir", "-p", f"{src}/tensorflow/compiler/mlir"],
                         ["cp", "-a", "/src/litert/tflite", f"{src}/tflite"],
                         ["ln", "-s", "../../../tflite/converter", f"{src}/tensorflow/compiler/mlir/lite"]]
    assert lines[4][:2] == ["sed", "-i"] and lines[4][-1] == f"{src}/tflite/tools/benchmark/proto/CMakeLists.txt"
    copies = [line for line in lines if line[:2] == ["cp", "-p"]]
    assert copies == [["cp", "-p", f"/src/tf/{f}", f"{src}/{f}"] for f in TF_FILE_PATHS]
    configure, build = lines[-2], lines[-1]
    assert configure[:5] == ["cmake", "-S", f"{src}/tflite", "-B", str(tmp_path / "w" / "build-host")]
    for flag in ("-DTFLITE_ENABLE_BENCHMARK_MODEL=ON", "-DTFLITE_ENABLE_XNNPACK=ON", f"-DTENSORFLOW_SOURCE_DIR={src}",
                 "-DFETCHCONTENT_FULLY_DISCONNECTED=ON", f"-DFETCHCONTENT_SOURCE_DIR_ABSEIL-CPP={deps / 'abseil-cpp'}",
                 f"-DFP16_SOURCE_DIR={deps / 'fp16_headers'}"):
        assert flag in configure, flag
    assert not any("FETCHCONTENT_SOURCE_DIR_EIGEN" in arg for arg in configure)  # absent deps are left to CMake
    assert build == ["nice", "-n", "19", "cmake", "--build", str(tmp_path / "w" / "build-host"),
                     "--target", "benchmark_model", "-j", "3"]


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("git") is None or shutil.which("curl") is None,
                    reason="needs cmake, git and curl")
@pytest.mark.skipif(not (shutil.which("protoc") and Path("/usr/include/google/protobuf").is_dir()),
                    reason="--protobuf system checks for the host protoc and protobuf headers")
def test_build_script_dry_run_online_downloads_the_tensorflow_files_at_the_pinned_tag(tmp_path):
    lines = _dry_run(tmp_path, {"LITERT_SRC": "/src/litert"}, "--configure-only", "--protobuf", "system")
    downloads = [line for line in lines if line[0] == "curl"]
    src = tmp_path / "w" / "src"
    assert downloads == [["curl", "-fsSL", "-o", f"{src}/{f}",
                          f"https://raw.githubusercontent.com/tensorflow/tensorflow/v2.21.0-rc0/{f}"]
                         for f in TF_FILE_PATHS]
    assert lines[-1][0] == "cmake" and "--build" not in lines[-1]  # --configure-only: no build step
    assert f"-DCMAKE_PROJECT_tensorflow-lite_INCLUDE={tmp_path / 'w' / 'system_protobuf.cmake'}" in lines[-1]
    assert not any(line[0] == "git" for line in lines)


@pytest.mark.parametrize("args, message", [(["--arch", "arm"], "--arch must be host or aarch64"),
                                           (["--jobs", "0"], "--jobs must be a positive integer"),
                                           (["--protobuf", "conda"], "--protobuf must be source or system"),
                                           (["--frobnicate"], "unknown argument: --frobnicate")])
def test_build_script_argument_errors(args, message):
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [f"build_benchmark_model.sh: {message} (see --help)"
                                                                         if "unknown" in message else
                                                                         f"build_benchmark_model.sh: {message}; got "
                                                                         f"'{args[1]}'"]


@pytest.mark.parametrize("args, env, message", [
    (["--protobuf", "system", "--arch", "aarch64"], {"ARM64_LIBPROTOBUF": "/nonexistent/libprotobuf.a"},
     "--arch aarch64 --protobuf system needs Debian's arm64 libprotobuf, no /nonexistent/libprotobuf.a "
     "(dpkg --add-architecture arm64; apt-get update; apt-get install libprotobuf-dev:arm64)"),
    (["--arch", "aarch64"], {}, "--arch aarch64 needs a host flatc: set HOST_TOOLS_DIR to its folder (see --help)")])
def test_build_script_cross_build_errors(args, env, message):
    if "HOST_TOOLS_DIR" in message and shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("needs aarch64-linux-gnu-g++")
    if "libprotobuf" in message and not (shutil.which("protoc") and Path("/usr/include/google/protobuf").is_dir()):
        pytest.skip("needs the host protoc and protobuf headers")
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env})
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [f"build_benchmark_model.sh: {message}"]


def test_build_script_cross_build_passes_the_host_tools_and_the_emulator(tmp_path):
    if shutil.which("aarch64-linux-gnu-g++") is None or shutil.which("qemu-aarch64-static") is None:
        pytest.skip("needs aarch64-linux-gnu-g++ and qemu-aarch64-static")
    configure = _dry_run(tmp_path, {"LITERT_SRC": "/src/litert", "TF_FILES": "/src/tf", "HOST_TOOLS_DIR": "/h"},
                         "--arch", "aarch64", "--configure-only")[-1]
    for flag in ("-DTFLITE_HOST_TOOLS_DIR=/h", "-DCMAKE_CROSSCOMPILING_EMULATOR=qemu-aarch64-static;-L;/usr/aarch64-linux-gnu",
                 "-DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++", "-DCMAKE_SYSTEM_PROCESSOR=aarch64"):
        assert flag in configure, flag


def test_build_script_cross_build_with_the_system_protobuf(tmp_path):
    if (shutil.which("aarch64-linux-gnu-g++") is None or shutil.which("protoc") is None
            or not Path("/usr/include/google/protobuf").is_dir()):
        pytest.skip("needs aarch64-linux-gnu-g++, the host protoc and protobuf headers")
    fake_lib = tmp_path / "libprotobuf.a"
    fake_lib.write_bytes(b"!<arch>\n")
    lines = _dry_run(tmp_path, {"LITERT_SRC": "/src/litert", "TF_FILES": "/src/tf", "HOST_TOOLS_DIR": "/h",
                                "ARM64_LIBPROTOBUF": str(fake_lib)},
                     "--arch", "aarch64", "--protobuf", "system", "--configure-only")
    work = tmp_path / "w"
    # only google/ of the host include folder is shown to the cross compiler
    assert ["ln", "-sfn", "/usr/include/google", f"{work}/protobuf-include/google"] in lines
    configure = lines[-1]
    assert f"-DCMAKE_PROJECT_tensorflow-lite_INCLUDE={work / 'system_protobuf.cmake'}" in configure
    assert "-DTFLITE_HOST_TOOLS_DIR=/h" in configure and "-DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++" in configure
    # the host protoc runs as it is: no emulator
    assert not any(arg.startswith("-DCMAKE_CROSSCOMPILING_EMULATOR") for arg in configure)


def test_real_ssh_session_on_the_qemu_board_replays(model):
    """The recorded session (tests/data/ssh/README.md) gives the same command sequence and result."""
    runner = ReplayRunner.from_file(DATA / "ssh" / "qemu_arm64_student_fp32.json")
    opts = ["-o", "IdentityFile=board_key", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR"]
    result = SshBoard("root@127.0.0.1", port=2222, ssh_options=opts, runner=runner).benchmark(
        model, threads=1, warmup=3, runs=20, run_id="a64e2e01")
    runner.assert_done()
    assert (result.device.machine, result.device.os) == ("aarch64", "Linux-6.18.44-fc-v1045-aarch64-with-glibc2.36")
    assert (result.runs, result.warmup_runs, result.batch_size) == (20, 3, 1)
    assert result.latency_ms.min == pytest.approx(274.023249) and result.latency_ms.max == pytest.approx(1264.219578)
    assert result.extra["runtime"] == "ai_edge_litert 2.3.0" and result.peak_rss_mb == pytest.approx(109144 / 1024)
