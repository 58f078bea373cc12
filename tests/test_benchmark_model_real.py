"""Real outputs of TFLite's C++ `benchmark_model`, built from source here (tests/data/benchmark_model/x86_64/).

Six runs of the binary that android_bench/build_benchmark_model.sh built (LiteRT f67457790c9c, no XNNPACK) on
the project's teacher / student at fp32, fp16 and int8: the verbatim console output (`*.txt`) and the
`--result_file_path` proto (`*.pb`) of each. The text parser, the proto decoder and the result schema are
checked on them, and against each other.
"""

from pathlib import Path

import pytest

from android_bench.benchmark_output import parse_benchmark_model_output
from android_bench.benchmark_result_proto import parse_benchmark_result_proto
from android_bench.tool_results import result_from_tool_output

REAL = Path(__file__).parent / "data" / "benchmark_model" / "x86_64"
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
    assert out["memory"]["kind"] == "footprint_delta" and 0 < out["memory"]["init_mb"] <= out["memory"]["overall_mb"]
    # a binary built without XNNPACK does not know the flag the runners pass; it says so and goes on
    assert "WARN: Unconsumed cmdline flags: --use_xnnpack=false" in _text(name)


@pytest.mark.parametrize("name", MODELS)
def test_proto_of_each_run_agrees_with_its_text(name):
    text, proto = parse_benchmark_model_output(_text(name)), _proto(name)
    latency, stats = proto["latency_metrics"], text["inference_stats"]
    for key, field in (("avg", "avg_ms"), ("min", "min_ms"), ("max", "max_ms"), ("median", "median_ms"),
                       ("p5", "p5_ms"), ("p95", "p95_ms"), ("std", "stddev_ms")):
        assert latency[field] == pytest.approx(stats[key] / 1000, rel=1e-6), key
    assert latency["init_ms"] == pytest.approx(text["init_us"] / 1000, rel=1e-6)
    assert latency["first_inference_ms"] == pytest.approx(text["first_inference_us"] / 1000, rel=1e-6)
    assert latency["average_warm_up_ms"] == pytest.approx(text["warmup_avg_us"] / 1000, rel=1e-6)
    # the text prints MB with 6 significant digits, the proto holds whole KB
    assert proto["memory_metrics"]["init_footprint_kb"] / 1024 == pytest.approx(text["memory"]["init_mb"], abs=1e-5)
    assert proto["memory_metrics"]["overall_footprint_kb"] / 1024 == pytest.approx(text["memory"]["overall_mb"],
                                                                                  abs=1e-5)
    assert proto["misc_metrics"]["num_runs"] == 100 and proto["misc_metrics"]["num_warmup_runs"] == 10
    assert proto["misc_metrics"]["model_size_mb"] == pytest.approx(text["model_size_mb"], rel=1e-6)


def test_exact_numbers_of_one_run():
    out = parse_benchmark_model_output(_text("student_fp32"))
    assert out["inference_stats"] == {
        "count": 100, "first": 1725.0, "curr": 1839.0, "min": 1708.0, "max": 1998.0, "avg": 1829.32, "std": 68.0,
        "p5": 1739.0, "median": 1830.0, "p95": 1959.0, "all_same": False}
    assert (out["init_us"], out["first_inference_us"], out["warmup_avg_us"]) == (343.0, 3110.0, 1954.0)
    assert out["memory"] == {"init_mb": 4.03125, "overall_mb": 6.55469, "kind": "footprint_delta"}
    assert out["model_size_mb"] == 0.942436
    assert _proto("student_fp32")["memory_metrics"] == {"init_footprint_kb": 4128, "overall_footprint_kb": 6712}


def test_real_run_to_the_result_schema(tmp_path):
    model = tmp_path / "student_fp32.tflite"
    model.write_bytes(b"TFL3" + bytes(60))
    result = result_from_tool_output(model, runner="benchmark_model", transport="host", threads=1, delegate="none",
                                     warmup=10, text=_text("student_fp32"),
                                     proto=(REAL / "student_fp32.pb").read_bytes())
    assert result.runner == "benchmark_model" and result.runs == 100 and result.warmup_runs == 10
    assert result.latency_ms.mean == pytest.approx(1.82932) and result.latency_ms.median == pytest.approx(1.830)
    assert result.latency_ms.min == pytest.approx(1.708) and result.latency_ms.max == pytest.approx(1.998)
    assert result.init_ms == pytest.approx(0.343)
    assert result.memory.init_mb == pytest.approx(4128 / 1024) and result.memory.kind == "footprint_delta"
    assert set(result.extra["sources"]) == {"proto", "tflite_text"}
