"""Parser for TFLite benchmark_model output, checked on every sample in tests/data/benchmark_model/."""

from pathlib import Path

import pytest

from android_bench.benchmark_output import parse_benchmark_model_output, parse_stat_line, strip_log_prefix

SAMPLES = Path(__file__).parent / "data" / "benchmark_model"


def _parse(name, **kwargs):
    return parse_benchmark_model_output((SAMPLES / name).read_text(), **kwargs)


def test_every_sample_is_covered_by_a_test():
    tested = {
        "litert_percentiles_info_prefix.txt", "tf2_android_shell_scientific.txt", "tf2_no_prefix_peak_footprint.txt",
        "android_logcat_threadtime.txt", "android_apk_logcat_average.txt", "tf1_average_inference_max_rss.txt",
        "tf1_contrib_no_stats.txt", "error_failed_to_mmap.txt",
        "litert2_benchmark_model_cpu.txt",  # tests/test_bench_tools.py
    }
    assert {p.name for p in SAMPLES.glob("*.txt")} == tested


def test_litert_percentiles_with_info_prefix():
    out = _parse("litert_percentiles_info_prefix.txt")
    assert out["format"] == "inference_timings"
    assert (out["init_us"], out["first_inference_us"], out["warmup_avg_us"], out["inference_avg_us"]) == (
        31664.0, 15872.0, 12194.4, 11920.3)
    assert out["warmup_stats"] == {
        "count": 41, "first": 15872.0, "curr": 11893.0, "min": 11702.0, "max": 15872.0, "avg": 12194.4,
        "std": 671.0, "p5": 11741.0, "median": 12031.0, "p95": 13290.0, "all_same": False}
    assert out["inference_stats"] == {
        "count": 84, "first": 11954.0, "curr": 11847.0, "min": 11655.0, "max": 13961.0, "avg": 11920.3,
        "std": 318.0, "p5": 11690.0, "median": 11848.0, "p95": 12512.0, "all_same": False}
    assert out["memory"] == {
        "init_mb": 9.73438, "overall_mb": 17.2461, "kind": "footprint_delta", "periodic_peak_mb": 26.4102,
        "vm_rss_mb": 27.0, "rss_anon_mb": 14.0, "rss_file_shmem_mb": 13.0}
    assert out["model_size_mb"] == 13.9787
    assert out["init_session_ms"] == 31.664
    assert out["params"]["Num threads"] == "4"
    assert out["params"]["Graph"] == "/tmp/mobilenet_v2_1.0_224.tflite"
    assert out["params"]["Use xnnpack"] == "1"
    assert out["errors"] == []


def test_scientific_notation_and_single_warmup_run():
    out = _parse("tf2_android_shell_scientific.txt")
    assert out["format"] == "inference_timings"
    assert out["init_us"] == 1052311.0
    assert out["first_inference_us"] == 1318442.0
    assert out["warmup_avg_us"] == 1.31844e06
    assert out["inference_avg_us"] == 1.20118e06
    assert out["warmup_stats"] == {"count": 1, "curr": 1318442.0, "first": 1318442.0, "min": 1318442.0,
                                   "max": 1318442.0, "avg": 1318442.0, "std": 0.0, "all_same": True}
    stats = out["inference_stats"]
    assert (stats["count"], stats["min"], stats["max"], stats["avg"], stats["std"]) == (
        5, 1189330.0, 1212608.0, 1.20118e06, 8102.0)
    assert "median" not in stats
    assert out["memory"] == {"init_mb": 212.352, "overall_mb": 409.566, "kind": "footprint_delta"}
    assert out["init_session_ms"] == 1052.31
    assert out["params"]["Use gpu"] == "0"


def test_unprefixed_output_with_peak_footprint_line():
    out = _parse("tf2_no_prefix_peak_footprint.txt")
    assert out["format"] == "inference_timings"
    assert (out["init_us"], out["first_inference_us"], out["warmup_avg_us"], out["inference_avg_us"]) == (
        2117.0, 412.0, 133.62, 132.804)
    assert out["warmup_stats"]["count"] == 3714
    assert out["inference_stats"] == {"count": 7385, "first": 131.0, "curr": 127.0, "min": 116.0, "max": 701.0,
                                      "avg": 132.804, "std": 11.0, "all_same": False}
    assert out["memory"] == {"init_mb": 2.61328, "overall_mb": 3.05859, "kind": "peak_footprint"}
    assert out["model_size_mb"] == 0.09952


def test_logcat_threadtime_prefix_and_foreign_tags():
    out = _parse("android_logcat_threadtime.txt", logcat_tag="tflite")
    assert out["format"] == "inference_timings"
    assert (out["init_us"], out["first_inference_us"], out["warmup_avg_us"], out["inference_avg_us"]) == (
        22816.0, 7105.0, 5163.24, 5121.88)
    assert out["warmup_stats"]["count"] == 97
    assert out["inference_stats"] == {
        "count": 195, "first": 5043.0, "curr": 5077.0, "min": 4931.0, "max": 6374.0, "avg": 5121.88, "std": 171.0,
        "p5": 4958.0, "median": 5086.0, "p95": 5398.0, "all_same": False}
    assert out["memory"] == {"init_mb": 5.44922, "overall_mb": 11.7617, "kind": "footprint_delta"}
    assert out["errors"] == []
    # Without the tag filter the unrelated "E ThermalEngine: count=2 ..." line is read as a stats line.
    unfiltered = _parse("android_logcat_threadtime.txt")
    assert unfiltered["inference_stats"]["count"] == 195
    assert unfiltered["warmup_stats"]["count"] == 97


def test_apk_average_line_glued_to_memory():
    out = _parse("android_apk_logcat_average.txt", logcat_tag="tflite")
    assert out["format"] == "average_inference_timings"
    assert (out["warmup_avg_us"], out["init_us"], out["inference_avg_us"]) == (91471.0, 4108.0, 80660.1)
    assert out["first_inference_us"] is None
    assert out["inference_stats"] is None and out["warmup_stats"] is None
    assert out["memory"] == {"overall_max_rss_mb": 58.3906, "kind": "max_rss", "overall_mb": 58.3906}
    # Logged at ERROR level by the APK, but it is the result, not an error.
    assert out["errors"] == []


def test_tf1_average_inference_with_max_rss_lines():
    out = _parse("tf1_average_inference_max_rss.txt")
    assert out["format"] == "average_inference_timings"
    assert (out["warmup_avg_us"], out["init_us"], out["inference_avg_us"]) == (72106.6, 3874.0, 71188.2)
    assert out["warmup_stats"] == {"count": 7, "first": 76912.0, "curr": 71034.0, "min": 70811.0, "max": 76912.0,
                                   "avg": 72106.6, "std": 2011.0, "all_same": False}
    assert out["inference_stats"]["count"] == 50
    assert out["inference_stats"]["max"] == 73215.0
    assert out["memory"] == {"init_max_rss_mb": 6.51953, "overall_max_rss_mb": 9.82031, "kind": "max_rss",
                             "init_mb": 6.51953, "overall_mb": 9.82031}
    assert out["init_session_ms"] == 3.874
    assert out["params"]["Use nnapi"] == "0"
    assert out["params"]["Min warmup runs duration (seconds)"] == "0.5"


def test_contrib_era_no_stats_format():
    out = _parse("tf1_contrib_no_stats.txt")
    assert out["format"] == "average_no_stats"
    assert (out["warmup_avg_us"], out["init_us"], out["inference_avg_us"]) == (151208.0, 5107.0, 139377.0)
    assert out["warmup_stats"]["all_same"] is True
    assert out["warmup_stats"]["avg"] == 151208.0
    assert out["inference_stats"]["avg"] == 139377.0
    assert out["inference_stats"]["std"] == 1104.0
    assert out["memory"] == {}
    assert out["params"]["Num runs"] == "50"


def test_failed_run_raises_with_the_first_error():
    with pytest.raises(ValueError, match=r"not benchmark_model output.*Could not open '/data/local/tmp/rmtkd_77aa12ef"):
        _parse("error_failed_to_mmap.txt")


def test_crlf_and_brief_logcat_and_all_same_suffix():
    text = ("I/tflite  ( 4242): count=20 curr=812(all same)\r\n"
            "I/tflite  ( 4242): count=50 first=900 curr=800 min=790 max=900 avg=805 std=4\r\n"
            "I/tflite  ( 4242): Inference timings in us: Init: 1500, First inference: 812, Warmup (avg): 812, "
            "Inference (avg): 805\r\n")
    out = parse_benchmark_model_output(text)
    assert out["warmup_stats"] == {"count": 20, "curr": 812.0, "first": 812.0, "min": 812.0, "max": 812.0,
                                   "avg": 812.0, "std": 0.0, "all_same": True}
    assert out["inference_stats"]["avg"] == 805.0
    assert out["inference_avg_us"] == 805.0


def test_old_curr_first_order_and_profiler_summary_lines_are_not_run_stats():
    text = ("curr=120 count=10 min=100 max=150 avg=121.5 std=12\n"
            "Timings (microseconds): count=10 first=130 curr=120 min=100 max=150 avg=121.5 std=12\n"
            "Memory (bytes): count=0\n")
    out = parse_benchmark_model_output(text)
    assert out["format"] is None
    assert out["warmup_stats"] is None
    assert out["inference_stats"] == {"curr": 120.0, "count": 10, "min": 100.0, "max": 150.0, "avg": 121.5,
                                      "std": 12.0, "all_same": False}
    assert out["inference_avg_us"] == 121.5


def test_strip_log_prefix_variants():
    assert strip_log_prefix("11-26 02:07:30.123  1234  1234 I tflite  : Num threads: [4]") == (
        "Num threads: [4]", "I", "tflite")
    assert strip_log_prefix("2025-11-26 02:07:30.123  1234  1234 W tflite  : x") == ("x", "W", "tflite")
    assert strip_log_prefix("WARN: slow") == ("slow", "W", None)
    assert strip_log_prefix("plain line") == ("plain line", None, None)


def test_bad_input():
    with pytest.raises(ValueError, match="must be str"):
        parse_benchmark_model_output(b"count=1 curr=5")
    with pytest.raises(ValueError, match="no 'Inference timings'"):
        parse_benchmark_model_output("")
    with pytest.raises(ValueError, match="without count="):
        parse_stat_line("curr=5 min=4")
