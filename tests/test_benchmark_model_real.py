"""Real outputs of TFLite's C++ `benchmark_model`, built from source here (tests/data/benchmark_model/ARCH/).

Per architecture, six runs of the binary that android_bench/build_benchmark_model.sh built (LiteRT f67457790c9c,
no XNNPACK) on the project's teacher / student at fp32, fp16 and int8: the verbatim console output (`*.txt`) and
the `--result_file_path` proto (`*.pb`) of each. The text parser, the proto decoder and the result schema are
checked on them, and against each other.

- x86_64: the host build, run natively.
- aarch64: `build_benchmark_model.sh --arch aarch64` (Debian's arm64 protobuf), run under qemu-user.
"""

from pathlib import Path

import pytest

from android_bench.benchmark_output import parse_benchmark_model_output
from android_bench.benchmark_result_proto import parse_benchmark_result_proto
from android_bench.tool_results import result_from_tool_output

DATA = Path(__file__).parent / "data" / "benchmark_model"
MODELS = ("teacher_fp32", "student_fp32", "teacher_fp16", "student_fp16", "teacher_int8", "student_int8")
ARCHES = ("x86_64", "aarch64")

# How closely the proto (float32 ms, whole KB) matches the text (6 significant digits): the x86_64 runs' times
# are ~1000x shorter, so the text's 6 digits hold more of them (avg=1829.32 us against avg=23546.6 us).
TIME_REL = {"x86_64": 1e-6, "aarch64": 1e-5}
MEMORY_TOLERANCE = {"x86_64": {"abs": 1e-5}, "aarch64": {"rel": 1e-5}}

# Every number of one run, read by hand from its text and proto.
EXACT = {
    "x86_64": ("student_fp32", {
        "inference_stats": {"count": 100, "first": 1725.0, "curr": 1839.0, "min": 1708.0, "max": 1998.0,
                            "avg": 1829.32, "std": 68.0, "p5": 1739.0, "median": 1830.0, "p95": 1959.0,
                            "all_same": False},
        "timings_us": (343.0, 3110.0, 1954.0),
        "memory": {"init_mb": 4.03125, "overall_mb": 6.55469, "kind": "footprint_delta"},
        "model_size_mb": 0.942436,
        "proto_memory": {"init_footprint_kb": 4128, "overall_footprint_kb": 6712},
    }),
    "aarch64": ("student_int8", {
        "inference_stats": {"count": 100, "first": 23888.0, "curr": 23516.0, "min": 23344.0, "max": 26420.0,
                            "avg": 23546.6, "std": 333.0, "p5": 23377.0, "median": 23467.0, "p95": 24035.0,
                            "all_same": False},
        "timings_us": (29281.0, 32903.0, 24972.4),
        "memory": {"init_mb": 5.57812, "overall_mb": 6.45312, "kind": "footprint_delta"},
        "model_size_mb": 0.27084,
        "proto_memory": {"init_footprint_kb": 5712, "overall_footprint_kb": 6608},
    }),
}

# student_fp32 through result_from_tool_output: latency in ms, init in ms, init memory in MB (from the proto's KB).
SCHEMA = {
    "x86_64": {"mean": 1.82932, "median": 1.830, "min": 1.708, "max": 1.998, "init_ms": 0.343, "init_kb": 4128},
    "aarch64": {"mean": 166.531, "median": 166.257, "min": 163.717, "max": 172.149, "init_ms": 28.540,
                "init_kb": 5936},
}


def _text(arch, name):
    return (DATA / arch / f"{name}.txt").read_text()


def _proto(arch, name):
    return parse_benchmark_result_proto((DATA / arch / f"{name}.pb").read_bytes())


@pytest.mark.parametrize("arch", ARCHES)
def test_every_real_run_is_here_and_nothing_else(arch):
    expected = {f"{m}.{ext}" for m in MODELS for ext in ("txt", "pb")} | {"README.md"}
    assert {p.name for p in (DATA / arch).iterdir()} == expected


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", MODELS)
def test_text_of_each_run(arch, name):
    out = parse_benchmark_model_output(_text(arch, name))
    assert out["format"] == "inference_timings" and out["errors"] == []
    assert out["params"]["Graph"] == f"/tmp/tools13/models/{name}.tflite"
    assert (out["params"]["Num threads"], out["params"]["Min num runs"], out["params"]["Min warmup runs"]) == (
        "1", "100", "10")
    assert out["inference_stats"]["count"] == 100 and out["warmup_stats"]["count"] == 10
    stats = out["inference_stats"]
    assert stats["min"] <= stats["p5"] <= stats["median"] <= stats["p95"] <= stats["max"]
    assert out["inference_avg_us"] == stats["avg"] and out["warmup_avg_us"] == out["warmup_stats"]["avg"]
    assert out["first_inference_us"] == out["warmup_stats"]["first"]
    assert out["memory"]["kind"] == "footprint_delta" and 0 < out["memory"]["init_mb"] <= out["memory"]["overall_mb"]
    # a binary built without XNNPACK does not know the flag the runners pass; it says so and goes on
    assert "WARN: Unconsumed cmdline flags: --use_xnnpack=false" in _text(arch, name)


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", MODELS)
def test_proto_of_each_run_agrees_with_its_text(arch, name):
    text, proto = parse_benchmark_model_output(_text(arch, name)), _proto(arch, name)
    latency, stats, rel, memory = proto["latency_metrics"], text["inference_stats"], TIME_REL[arch], MEMORY_TOLERANCE[arch]
    for key, field in (("avg", "avg_ms"), ("min", "min_ms"), ("max", "max_ms"), ("median", "median_ms"),
                       ("p5", "p5_ms"), ("p95", "p95_ms"), ("std", "stddev_ms")):
        assert latency[field] == pytest.approx(stats[key] / 1000, rel=rel), key
    assert latency["init_ms"] == pytest.approx(text["init_us"] / 1000, rel=rel)
    assert latency["first_inference_ms"] == pytest.approx(text["first_inference_us"] / 1000, rel=rel)
    assert latency["average_warm_up_ms"] == pytest.approx(text["warmup_avg_us"] / 1000, rel=rel)
    # the text prints MB with 6 significant digits, the proto holds whole KB
    assert proto["memory_metrics"]["init_footprint_kb"] / 1024 == pytest.approx(text["memory"]["init_mb"], **memory)
    assert proto["memory_metrics"]["overall_footprint_kb"] / 1024 == pytest.approx(text["memory"]["overall_mb"],
                                                                                  **memory)
    assert proto["misc_metrics"]["num_runs"] == 100 and proto["misc_metrics"]["num_warmup_runs"] == 10
    assert proto["misc_metrics"]["model_size_mb"] == pytest.approx(text["model_size_mb"], rel=rel)


@pytest.mark.parametrize("arch", ARCHES)
def test_exact_numbers_of_one_run(arch):
    name, expected = EXACT[arch]
    out = parse_benchmark_model_output(_text(arch, name))
    assert out["inference_stats"] == expected["inference_stats"]
    assert (out["init_us"], out["first_inference_us"], out["warmup_avg_us"]) == expected["timings_us"]
    assert out["memory"] == expected["memory"]
    assert out["model_size_mb"] == expected["model_size_mb"]
    assert _proto(arch, name)["memory_metrics"] == expected["proto_memory"]


@pytest.mark.parametrize("arch", ARCHES)
def test_real_run_to_the_result_schema(arch, tmp_path):
    model = tmp_path / "student_fp32.tflite"
    model.write_bytes(b"TFL3" + bytes(60))
    text = _text(arch, "student_fp32")
    stats = parse_benchmark_model_output(text)["inference_stats"]
    result = result_from_tool_output(model, runner="benchmark_model", transport="host", threads=1, delegate="none",
                                     warmup=10, text=text, proto=(DATA / arch / "student_fp32.pb").read_bytes())
    expected = SCHEMA[arch]
    assert result.runner == "benchmark_model" and result.runs == 100 and result.warmup_runs == 10
    for key, field in (("mean", "avg"), ("median", "median"), ("min", "min"), ("max", "max")):
        value = getattr(result.latency_ms, key)
        assert value == pytest.approx(expected[key]) and value == pytest.approx(stats[field] / 1000), key
    assert result.init_ms == pytest.approx(expected["init_ms"])
    assert result.memory.init_mb == pytest.approx(expected["init_kb"] / 1024) and result.memory.kind == "footprint_delta"
    assert set(result.extra["sources"]) == {"proto", "tflite_text"}
