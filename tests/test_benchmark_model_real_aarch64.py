"""Real outputs of TFLite's C++ `benchmark_model` cross-compiled for aarch64 (tests/data/benchmark_model/aarch64/).

The binary android_bench/build_benchmark_model.sh --arch aarch64 built here (LiteRT f67457790c9c, no XNNPACK,
Debian's arm64 protobuf), run under qemu-user on the project's teacher / student: the verbatim console output
(`*.txt`) and the `--result_file_path` proto (`*.pb`) of each run. The text parser, the proto decoder and the
result schema are checked on them, and against each other.
"""

from pathlib import Path

import pytest

from android_bench.benchmark_output import parse_benchmark_model_output
from android_bench.benchmark_result_proto import parse_benchmark_result_proto
from android_bench.tool_results import result_from_tool_output

REAL = Path(__file__).parent / "data" / "benchmark_model" / "aarch64"
MODELS = ("teacher_fp32", "student_fp32", "teacher_fp16", "student_fp16", "teacher_int8", "student_int8")


def _text(name):
    return (REAL / f"{name}.txt").read_text()


def _proto(name):
    return parse_benchmark_result_proto((REAL / f"{name}.pb").read_bytes())


def test_every_real_run_is_here_and_nothing_else():
    expected = {f"{m}.{ext}" for m in MODELS for ext in ("txt", "pb")} | {"README.md"}
    assert {p.name for p in REAL.iterdir()} == expected


@pytest.mark.parametrize("name", MODELS)
def test_text_of_each_run(name):
    out = parse_benchmark_model_output(_text(name))
    assert out["format"] == "inference_timings" and out["errors"] == []
    assert out["params"]["Graph"] == f"/tmp/tools13/models/{name}.tflite"
    assert (out["params"]["Num threads"], out["params"]["Min num runs"], out["params"]["Min warmup runs"]) == (
        "1", "100", "10")
    assert out["inference_stats"]["count"] == 100 and out["warmup_stats"]["count"] == 10
    stats = out["inference_stats"]
    assert stats["min"] <= stats["p5"] <= stats["median"] <= stats["p95"] <= stats["max"]
    assert out["inference_avg_us"] == stats["avg"] and out["warmup_avg_us"] == out["warmup_stats"]["avg"]
    assert out["first_inference_us"] == out["warmup_stats"]["first"]
    assert out["memory"]["kind"] == "footprint_delta"
    assert "WARN: Unconsumed cmdline flags: --use_xnnpack=false" in _text(name)


@pytest.mark.parametrize("name", MODELS)
def test_proto_of_each_run_agrees_with_its_text(name):
    text, proto = parse_benchmark_model_output(_text(name)), _proto(name)
    latency, stats = proto["latency_metrics"], text["inference_stats"]
    # the text prints 6 significant digits (avg=23546.6 us), the proto a float32 of ms: equal to 1e-5 relative
    for key, field in (("avg", "avg_ms"), ("min", "min_ms"), ("max", "max_ms"), ("median", "median_ms"),
                       ("p5", "p5_ms"), ("p95", "p95_ms"), ("std", "stddev_ms")):
        assert latency[field] == pytest.approx(stats[key] / 1000, rel=1e-5), key
    assert latency["init_ms"] == pytest.approx(text["init_us"] / 1000, rel=1e-5)
    assert latency["first_inference_ms"] == pytest.approx(text["first_inference_us"] / 1000, rel=1e-5)
    assert latency["average_warm_up_ms"] == pytest.approx(text["warmup_avg_us"] / 1000, rel=1e-5)
    # memory: whole KB in the proto, MB with 6 significant digits in the text
    assert proto["memory_metrics"]["init_footprint_kb"] / 1024 == pytest.approx(text["memory"]["init_mb"], rel=1e-5)
    assert proto["memory_metrics"]["overall_footprint_kb"] / 1024 == pytest.approx(text["memory"]["overall_mb"],
                                                                                  rel=1e-5)
    assert proto["misc_metrics"]["num_runs"] == 100 and proto["misc_metrics"]["num_warmup_runs"] == 10
    assert proto["misc_metrics"]["model_size_mb"] == pytest.approx(text["model_size_mb"], rel=1e-5)


def test_real_aarch64_run_to_the_result_schema(tmp_path):
    model = tmp_path / "student_fp32.tflite"
    model.write_bytes(b"TFL3" + bytes(60))
    text = _text("student_fp32")
    stats = parse_benchmark_model_output(text)["inference_stats"]
    result = result_from_tool_output(model, runner="benchmark_model", transport="host", threads=1, delegate="none",
                                     warmup=10, text=text, proto=(REAL / "student_fp32.pb").read_bytes())
    assert result.runner == "benchmark_model" and result.runs == 100 and result.warmup_runs == 10
    assert result.latency_ms.mean == pytest.approx(stats["avg"] / 1000)
    assert result.latency_ms.median == pytest.approx(stats["median"] / 1000)
    assert set(result.extra["sources"]) == {"proto", "tflite_text"}


def test_exact_numbers_of_one_run():
    out = parse_benchmark_model_output(_text("student_int8"))
    assert out["inference_stats"] == {
        "count": 100, "first": 23888.0, "curr": 23516.0, "min": 23344.0, "max": 26420.0, "avg": 23546.6, "std": 333.0,
        "p5": 23377.0, "median": 23467.0, "p95": 24035.0, "all_same": False}
    assert (out["init_us"], out["first_inference_us"], out["warmup_avg_us"]) == (29281.0, 32903.0, 24972.4)
    assert out["memory"] == {"init_mb": 5.57812, "overall_mb": 6.45312, "kind": "footprint_delta"}
