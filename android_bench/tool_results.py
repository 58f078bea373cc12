"""One `BenchmarkResult` out of any benchmark tool's output.

The tools and what they print (parsers in `android_bench.benchmark_output`,
`android_bench.litert_output`, `android_bench.benchmark_result_proto`):

| tool | output | latency figures |
|---|---|---|
| TFLite 2.x `benchmark_model` | `count=... min=... avg=...` + `Inference timings in us:` text | microseconds (int) |
| LiteRT 2.x `benchmark_model` | the same `count=` lines + a `BENCHMARK RESULTS` block (ms, MB), optional `--result_file_path` proto | us lines, ms (0.01) block, float32 ms proto |
| `litert-benchmark` (Python) | `BENCHMARK RESULTS` block on stdout, `--result_json` JSON | ms rounded to 0.01 |

`result_from_tool_output` takes whichever of these a run produced and
prefers the most precise figure for each field: the `count=` lines (integer
microseconds) over the proto (float32 ms) over the text block (0.01 ms).
Which sources were used is recorded in `extra["sources"]`; every parsed
document is kept under `extra` as well.

Example:

>>> import tempfile, os
>>> model = tempfile.NamedTemporaryFile(suffix=".tflite", delete=False); _ = model.write(b"x"); model.close()
>>> result = result_from_tool_output(
...     model.name, text="INFO: count=50 first=900 curr=800 min=790 max=950 avg=810.5 std=20\\n",
...     runner="benchmark_model", transport="host", threads=1, delegate="xnnpack", warmup=1)
>>> result.latency_ms.mean, result.runs, result.extra["sources"]
(0.8105, 50, ['tflite_text'])
>>> os.unlink(model.name)
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from android_bench.benchmark_output import parse_benchmark_model_output
from android_bench.benchmark_result_proto import parse_benchmark_result_proto
from android_bench.litert_output import has_litert_results, parse_litert_benchmark_json, parse_litert_results_text
from rmtkd_tf.bench.schema import (
    BenchmarkResult,
    DeviceInfo,
    EnergyInfo,
    LatencyStats,
    MemoryInfo,
    file_size_and_sha256,
    throughput_from_latency,
)

_US = 1e-3


def parse_tool_output(text: str = "", proto: bytes | None = None,
                      litert_json: str | bytes | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Parse every document a run produced; `{source name: parsed dict}`.

    Sources: "tflite_text" (count= / Inference timings lines), "litert_text"
    (BENCHMARK RESULTS block), "proto" (result file), "litert_json".
    Raises ValueError when none of them holds a benchmark result; the message
    names the first ERROR line of the text when there is one.
    """
    parsed: dict[str, Any] = {}
    errors: list[str] = []
    if text:
        try:
            parsed["tflite_text"] = parse_benchmark_model_output(text)
        except ValueError as error:
            errors.append(str(error))
        if has_litert_results(text):
            parsed["litert_text"] = parse_litert_results_text(text)
    if proto is not None:
        parsed["proto"] = parse_benchmark_result_proto(proto)
    if litert_json is not None:
        parsed["litert_json"] = parse_litert_benchmark_json(litert_json)
    if not parsed:
        raise ValueError(errors[0] if errors else "no benchmark output to parse")
    return parsed


def _latency(parsed: Mapping[str, Any]) -> tuple[LatencyStats, int | None, dict[str, float]]:
    """(latency in ms, timed run count, percentiles) from the most precise source present."""
    percentiles: dict[str, float] = {}
    text = parsed.get("tflite_text")
    stats = text["inference_stats"] if text else None
    if stats is not None:
        for key in ("p5", "p95"):
            if key in stats:
                percentiles[f"{key}_ms"] = stats[key] * _US
        median = stats["median"] * _US if "median" in stats else None
        if median is None and "proto" in parsed and "median_ms" in parsed["proto"]["latency_metrics"]:
            median = parsed["proto"]["latency_metrics"]["median_ms"]
        latency = LatencyStats(min=stats["min"] * _US, median=median, mean=stats["avg"] * _US, p90=None, p99=None,
                               max=stats["max"] * _US, std=stats["std"] * _US)
        return latency, int(stats["count"]), percentiles
    if "proto" in parsed:
        metrics = parsed["proto"]["latency_metrics"]
        runs = parsed["proto"]["misc_metrics"].get("num_runs")
        for key in ("p5_ms", "p95_ms"):
            if key in metrics:
                percentiles[key] = metrics[key]
        try:
            latency = LatencyStats(min=metrics["min_ms"], median=metrics.get("median_ms"), mean=metrics["avg_ms"],
                                   p90=None, p99=None, max=metrics["max_ms"], std=metrics.get("stddev_ms", 0.0))
        except KeyError as missing:
            raise ValueError(f"BenchmarkResult proto lacks latency_metrics.{missing.args[0]}") from None
        return latency, runs, percentiles
    block = parsed.get("litert_json") or parsed.get("litert_text")
    if block is None:
        raise ValueError("benchmark output has no per-run statistics (no count= line, proto or results block)")
    for key in ("p5_ms", "p95_ms"):
        if key in block:
            percentiles[key] = block[key]
    missing = [k for k in ("min_ms", "max_ms", "std_ms") if k not in block]
    if missing:
        raise ValueError(f"the benchmark results lack {', '.join(missing)} (no inference runs?)")
    latency = LatencyStats(min=block["min_ms"], median=block.get("median_ms"), mean=block["avg_ms"], p90=None,
                           p99=None, max=block["max_ms"], std=block["std_ms"])
    return latency, block.get("runs"), percentiles


def _first(*values):
    return next((v for v in values if v is not None), None)


def result_from_tool_output(model_path: str | os.PathLike, *, runner: str, transport: str, threads: int,
                            delegate: str, warmup: int, text: str = "", proto: bytes | None = None,
                            litert_json: str | bytes | Mapping[str, Any] | None = None,
                            device: DeviceInfo | None = None, batch_size: int | None = None,
                            energy: EnergyInfo | None = None, memory_note: str | None = None,
                            extra: Mapping[str, Any] | None = None) -> BenchmarkResult:
    """A `BenchmarkResult` from a tool run's text / result proto / result JSON (see module doc).

    `warmup` is the requested warm-up count, used only when the output does
    not state how many warm-up runs it did.  Raises ValueError when the
    output holds no benchmark result.
    """
    model_path = os.fspath(model_path)
    parsed = parse_tool_output(text, proto, litert_json)
    latency, runs, percentiles = _latency(parsed)
    text_doc = parsed.get("tflite_text") or {}
    block = parsed.get("litert_json") or parsed.get("litert_text") or {}
    proto_doc = parsed.get("proto") or {"latency_metrics": {}, "memory_metrics": {}, "misc_metrics": {}}
    warm_stats = text_doc.get("warmup_stats")
    warmup_runs = _first(warm_stats["count"] if warm_stats else None, proto_doc["misc_metrics"].get("num_warmup_runs"),
                         block.get("warmup_runs"), warmup)
    runs = _first(runs, proto_doc["misc_metrics"].get("num_runs"), block.get("runs"))
    if runs is None:
        raise ValueError("the benchmark output does not say how many timed runs it made")
    init_ms = _first(text_doc["init_us"] * _US if text_doc.get("init_us") is not None else None,
                     text_doc.get("init_session_ms"), proto_doc["latency_metrics"].get("init_ms"), block.get("init_ms"))
    first_ms = _first(text_doc["first_inference_us"] * _US if text_doc.get("first_inference_us") is not None else None,
                      warm_stats["first"] * _US if warm_stats and "first" in warm_stats else None,
                      proto_doc["latency_metrics"].get("first_inference_ms"), block.get("warmup_first_ms"))
    text_memory = text_doc.get("memory") or {}
    proto_memory = proto_doc["memory_metrics"]
    init_mb = _first(text_memory.get("init_mb"),
                     proto_memory["init_footprint_kb"] / 1024.0 if "init_footprint_kb" in proto_memory else None,
                     block.get("init_footprint_mb"))
    overall_mb = _first(text_memory.get("overall_mb"),
                        proto_memory["overall_footprint_kb"] / 1024.0 if "overall_footprint_kb" in proto_memory else None,
                        block.get("overall_footprint_mb"))
    peak_mb = _first(text_memory.get("periodic_peak_mb"), proto_memory.get("peak_mem_mb"), block.get("peak_mem_mb"))
    kind = text_memory.get("kind") or ("footprint_delta" if init_mb is not None else None)
    size, sha256 = file_size_and_sha256(model_path)
    return BenchmarkResult(
        model_path=model_path,
        model_size_bytes=size,
        model_sha256=sha256,
        runner=runner,
        transport=transport,
        device=device or DeviceInfo(),
        threads=threads,
        delegate=delegate,
        batch_size=batch_size,
        warmup_runs=int(warmup_runs),
        runs=int(runs),
        latency_ms=latency,
        throughput_per_s=throughput_from_latency(latency.mean, batch_size),
        init_ms=init_ms,
        peak_rss_mb=peak_mb,
        memory=MemoryInfo(peak_rss_mb=peak_mb, init_mb=init_mb, overall_mb=overall_mb, kind=kind,
                          end_rss_mb=text_memory.get("vm_rss_mb"),
                          note=memory_note or f"{runner}'s own memory figures (approximate, include the tool itself)"),
        cpu_seconds_per_inference=None,
        energy=energy or EnergyInfo.unavailable(f"{runner} reports no energy; none was measured"),
        extra={
            **dict(extra or {}),
            "sources": sorted(parsed),
            "first_inference_ms": first_ms,
            "percentiles_ms": percentiles,
            "throughput_mb_s": _first(block.get("throughput_mb_s"),
                                      proto_doc["misc_metrics"].get("model_throughput_in_mb_per_sec")),
            "parsed": parsed,
        },
    )
