"""Parse the LiteRT 2.x benchmark outputs: the `BENCHMARK RESULTS` block and `litert-benchmark`'s JSON.

Two tools print a `BENCHMARK RESULTS` block in milliseconds (memory in MB):

* the C++ `benchmark_model` of LiteRT 2.x (CompiledModel API,
  `litert/tools/benchmark_litert_model.h`, `BenchmarkLoggingListener::OnBenchmarkEnd`),
  through `LITERT_LOG`, i.e. on stderr with an `INFO: [benchmark_litert_model.h:94] `
  prefix per line (`litert/c/internal/litert_logging.*`; logcat tag `litert`
  on Android).  The header and `Memory Usage:` lines are logged as
  `"\\n..."`, so they stand on a line of their own.  It prints avg/min/max/std
  (std without a unit), optional throughput and the memory footprints; the
  median and percentiles only go to the `--result_file_path` proto
  (`android_bench.benchmark_result_proto`).  Before the block the shared
  TFLite benchmark base still prints `count=... p5=... median=... p95=...`
  lines, which `android_bench.benchmark_output` parses;
* `litert-benchmark` (the Python mirror shipped in the `ai-edge-litert`
  wheel, `ai_edge_litert/tools/benchmark_litert_model.py`) prints it on stdout
  between lines of 40 `=`, adding median / p5 / p95 and `Fully accelerated`,
  and writes the same numbers (rounded to 0.01 ms) to `--result_json`.

Example:

>>> block = parse_litert_results_text(
...     "INFO: [benchmark_litert_model.h:89] \\n"
...     "========== BENCHMARK RESULTS ==========\\n"
...     "INFO: [benchmark_litert_model.h:94] Model initialization: 3.10 ms\\n"
...     "INFO: [benchmark_litert_model.h:99] Inference (avg):      0.52 ms (50 runs)\\n"
...     "INFO: [benchmark_litert_model.h:107] Inference (std):      0.01\\n")
>>> block["init_ms"], block["avg_ms"], block["runs"], block["std_ms"]
(3.1, 0.52, 50, 0.01)
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from android_bench.benchmark_output import strip_log_prefix

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_SOURCE_LOCATION = re.compile(r"^\[[\w.+-]+:\d+\]\s?")
_HEADER = re.compile(r"^=*\s*BENCHMARK RESULTS\s*=*$")
_RULE = re.compile(r"^={10,}$")
_ITEM = re.compile(r"^(?P<label>[A-Za-z][A-Za-z ()0-9]*?):\s+(?P<value>\S+)(?:\s+(?P<unit>ms|MB/s|MB))?"
                   r"(?:\s+\((?P<runs>\d+) runs\))?\s*(?:#.*)?$")

# label -> (key, kind); kind "ms"/"mb"/"mbs" numbers, "runs" attaches the (N runs) count.
_LABELS = {
    "Model initialization": "init_ms",
    "Warmup (first)": "warmup_first_ms",
    "First inference": "warmup_first_ms",  # the README's sample block spells it so
    "Warmup (avg)": "warmup_avg_ms",
    "Inference (avg)": "avg_ms",
    "Inference (min)": "min_ms",
    "Inference (max)": "max_ms",
    "Inference (median)": "median_ms",
    "Inference (std)": "std_ms",
    "Inference (p5)": "p5_ms",
    "Inference (p95)": "p95_ms",
    "Throughput": "throughput_mb_s",
    "Init footprint": "init_footprint_mb",
    "Overall footprint": "overall_footprint_mb",
    "Peak memory": "peak_mem_mb",
}
_RUN_COUNTS = {"Warmup (avg)": "warmup_runs", "Inference (avg)": "runs"}


def _message(raw: str) -> str:
    message, _, _ = strip_log_prefix(raw)
    return _SOURCE_LOCATION.sub("", message).strip()


def has_litert_results(text: str) -> bool:
    """Whether `text` holds a `BENCHMARK RESULTS` block (LiteRT 2.x tools)."""
    return any(_HEADER.match(_message(line)) for line in text.splitlines())


def parse_litert_results_text(text: str) -> dict[str, Any]:
    """The numbers of the last `BENCHMARK RESULTS` block in `text` (stdout, stderr or logcat).

    Keys (present only when printed): `init_ms`, `warmup_first_ms`,
    `warmup_avg_ms`, `warmup_runs`, `avg_ms`, `runs`, `min_ms`, `max_ms`,
    `median_ms`, `std_ms`, `p5_ms`, `p95_ms`, `throughput_mb_s`,
    `init_footprint_mb`, `overall_footprint_mb`, `peak_mem_mb`, `signature`,
    `fully_accelerated`; plus `tool`: "litert-benchmark" when the block has
    the Python tool's shape (40-`=` rules around a bare title) else
    "benchmark_model".  Raises ValueError without a block or without
    `Inference (avg)` in it.
    """
    if not isinstance(text, str):
        raise ValueError(f"benchmark output must be str; got {type(text).__name__}")
    lines = [_message(line) for line in text.splitlines()]
    starts = [i for i, line in enumerate(lines) if _HEADER.match(line)]
    if not starts:
        raise ValueError("no 'BENCHMARK RESULTS' block found (not LiteRT 2.x benchmark output)")
    start = starts[-1]
    title = lines[start]
    result: dict[str, Any] = {"tool": "benchmark_model" if title.startswith("=") else "litert-benchmark"}
    for line in lines[start + 1:]:
        if not line or line == "Memory Usage:":
            continue
        if _RULE.match(line):
            if "avg_ms" in result:
                break
            continue  # the rule under the Python tool's title
        if line.startswith("Signature name:"):
            result["signature"] = line.split(":", 1)[1].strip()
            continue
        if line.startswith("Fully accelerated:"):
            result["fully_accelerated"] = line.split(":", 1)[1].strip() == "True"
            continue
        match = _ITEM.match(line)
        if not match or match.group("label") not in _LABELS:
            continue  # "No throughput data available ...", "Peak memory usage not available ..."
        label = match.group("label")
        try:
            result[_LABELS[label]] = float(match.group("value"))
        except ValueError:
            continue
        if match.group("runs") is not None and label in _RUN_COUNTS:
            result[_RUN_COUNTS[label]] = int(match.group("runs"))
    if "avg_ms" not in result:
        raise ValueError("the BENCHMARK RESULTS block has no 'Inference (avg)' line")
    return result


_JSON_LATENCY_KEYS = ("init_ms", "warmup_first_ms", "warmup_avg_ms", "num_warmup_runs", "avg_ms", "min_ms",
                      "max_ms", "median_ms", "std_ms", "p5_ms", "p95_ms", "num_runs")


def parse_litert_benchmark_json(data: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    """Validate and flatten `litert-benchmark --result_json` output.

    Returns the block keys of `parse_litert_results_text` (`runs`,
    `warmup_runs`, `avg_ms`, ...) plus `model`, `model_size_mb`,
    `accelerators`, `num_threads`.  Raises ValueError for anything else.

    >>> parse_litert_benchmark_json('{"model": "m.tflite", "latency": {"avg_ms": 1.2, "min_ms": 1.0, '
    ...     '"max_ms": 1.5, "std_ms": 0.1, "num_runs": 50}}')["runs"]
    50
    """
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as error:
            raise ValueError(f"litert-benchmark result is not JSON: {error}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("latency"), Mapping):
        raise ValueError("not a litert-benchmark result: no 'latency' object")
    latency = data["latency"]
    for key in ("avg_ms", "min_ms", "max_ms", "std_ms", "num_runs"):
        if not isinstance(latency.get(key), (int, float)) or isinstance(latency.get(key), bool):
            raise ValueError(f"litert-benchmark result has no numeric latency.{key}")
    unknown = sorted(set(latency) - set(_JSON_LATENCY_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) in litert-benchmark latency: {', '.join(unknown)}")
    out: dict[str, Any] = {"tool": "litert-benchmark"}
    for key, value in latency.items():
        name = {"num_runs": "runs", "num_warmup_runs": "warmup_runs"}.get(key, key)
        out[name] = int(value) if name in ("runs", "warmup_runs") else float(value)
    for key in ("model", "model_size_mb", "accelerators", "num_threads", "signature", "fully_accelerated"):
        if key in data:
            out[key] = data[key]
    if "throughput_mb_s" in data:
        out["throughput_mb_s"] = float(data["throughput_mb_s"])
    return out
