"""Parse the text output of TFLite / LiteRT's `benchmark_model` tool.

The format comes from `tensorflow/lite/tools/benchmark/benchmark_model.cc`
(now `tflite/tools/benchmark/benchmark_model.cc` in google-ai-edge/LiteRT),
the `Stat::OutputToStream` of `tensorflow/core/util/stats_calculator.h`
(now `xla/tsl/util/stats_calculator.h`) and the TFLITE_LOG wrappers in
`tensorflow/lite/tools/logging.h`.  Variants handled (samples with sources in
tests/data/benchmark_model/README.md):

* line prefixes: none (TF <= 2.3 logged to stderr unprefixed), `INFO: ` /
  `WARN: ` / `ERROR: ` (tools/logging.h since TF 2.4), Android logcat
  `threadtime` (`11-26 02:07:30.123  1234  1234 I tflite  : msg`) and
  `brief` (`I/tflite  ( 1234): msg`) formats, and CRLF line ends from adb;
* the summary line, three generations:
  `Inference timings in us: Init: X, First inference: Y, Warmup (avg): Z, Inference (avg): W`
  (TF >= 2.2), `Average inference timings in us: Warmup: X, Init: Y, Inference: Z`
  (TF 1.14 - 2.1 and the Android benchmark APK) and
  `Average inference timings in us: Warmup: X, Init: Y, no stats: Z` (TF <= 1.13);
* per-phase stats lines `count=50 first=... curr=... min=... max=... avg=... std=...`
  with the optional ` p5=... median=... p95=...` of StatWithPercentiles
  (LiteRT), the `count=N curr=V(all same)` short form when all runs took the
  same time, and the pre-2018 `curr=... count=...` order;
* numbers as C++ iostreams print them (default precision 6, so large
  doubles come out as `1.23457e+06`);
* memory lines: `Memory footprint delta from the start of the tool (MB): init=.. overall=..`,
  `Peak memory footprint (MB): init=.. overall=..` (TF 2.2 - 2.x),
  `Overall peak memory footprint (MB) via periodic monitoring: ..`,
  `- VmRSS : N MB`, and `[Init Phase] - Memory usage: max resident set size = .. MB, ...`.

Example:

>>> out = parse_benchmark_model_output(
...     "INFO: count=50 first=1200 curr=1000 min=990 max=1200 avg=1010.5 std=30\\n"
...     "INFO: Inference timings in us: Init: 2500, First inference: 1200, "
...     "Warmup (avg): 1200, Inference (avg): 1010.5\\n")
>>> out["inference_avg_us"], out["inference_stats"]["count"]
(1010.5, 50)
"""

from __future__ import annotations

import re
from typing import Any

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"

# Android logcat "threadtime" (default of `adb logcat`):
#   11-26 02:07:30.123  1234  1234 I tflite  : message
# optionally with a year (logcat -v year) or an epoch timestamp (-v epoch).
_LOGCAT_THREADTIME = re.compile(
    r"^(?:(?:\d{4}-)?\d{2}-\d{2}\s+\d{2}:\d{2}:\d{2}\.\d+|\d+\.\d+)\s+\d+\s+\d+\s+"
    r"(?P<level>[VDIWEFA])\s+(?P<tag>[^:]*?)\s*:(?: |$)"
)
# Android logcat "brief":  I/tflite  ( 1234): message
_LOGCAT_BRIEF = re.compile(r"^(?P<level>[VDIWEFA])/(?P<tag>[^(]*?)\s*\(\s*\d+\):(?: |$)")
_SEVERITY = re.compile(r"^(INFO|WARN|WARNING|ERROR|FATAL|VERBOSE): ?")

_SUMMARY = re.compile(r"^(Average inference timings|Inference timings) in us:\s*(.*)$")
_SUMMARY_PAIR = re.compile(r"([A-Za-z][A-Za-z ()]*?):\s*(" + _NUMBER + r")")
_SUMMARY_KEYS = {
    "Init": "init_us",
    "First inference": "first_inference_us",
    "Warmup (avg)": "warmup_avg_us",
    "Warmup": "warmup_avg_us",
    "Inference (avg)": "inference_avg_us",
    "Inference": "inference_avg_us",
    "no stats": "inference_avg_us",
    "with stats": "with_stats_avg_us",
}
_STAT_LINE = re.compile(r"^(?:count|curr)=")
_STAT_PAIR = re.compile(r"(\w+)=(" + _NUMBER + r")(\(all same\))?")
_STAT_INT_KEYS = ("count",)

_FOOTPRINT_DELTA = re.compile(
    r"^Memory footprint delta from the start of the tool \(MB\):\s*init=(" + _NUMBER + r")\s+overall=(" + _NUMBER + r")"
)
_PEAK_FOOTPRINT = re.compile(
    r"^Peak memory footprint \(MB\):\s*init=(" + _NUMBER + r")\s+overall=(" + _NUMBER + r")"
)
_PERIODIC_PEAK = re.compile(r"^Overall peak memory footprint \(MB\) via periodic monitoring:\s*(" + _NUMBER + r")")
_RSS_LINE = re.compile(r"^[-+]\s*(VmRSS|RssAnnon|RssFile \+ RssShmem)\s*:\s*(" + _NUMBER + r")\s*MB")
_OLD_MEMORY = re.compile(
    r"(?:^\[(Init Phase|Overall)\] - Memory usage:|Overall)\s*max resident set size = (" + _NUMBER + r") MB"
)
_MODEL_SIZE = re.compile(r"^The input model file size \(MB\):\s*(" + _NUMBER + r")")
_INIT_SESSION = re.compile(r"^Initialized session in\s*(" + _NUMBER + r")\s*ms")
_PARAM = re.compile(r"^([A-Za-z#][^:\[\]=]*?)\s*:\s*\[(.*)\]\s*$")


def strip_log_prefix(line: str) -> tuple[str, str | None, str | None]:
    """(message, severity letter, logcat tag) of one output line.

    The severity is the logcat level letter or the first letter of an
    `INFO:`/`WARN:`/`ERROR:`/`FATAL:` prefix; tag is None outside logcat.

    >>> strip_log_prefix("11-26 02:07:30.123  1234  1234 I tflite  : count=3 curr=5")
    ('count=3 curr=5', 'I', 'tflite')
    >>> strip_log_prefix("ERROR: Could not open model.")
    ('Could not open model.', 'E', None)
    """
    line = line.rstrip("\r\n")
    level = tag = None
    for pattern in (_LOGCAT_THREADTIME, _LOGCAT_BRIEF):
        match = pattern.match(line)
        if match:
            level, tag = match.group("level"), match.group("tag").strip()
            line = line[match.end():]
            break
    severity = _SEVERITY.match(line)
    if severity:
        level = level or severity.group(1)[0]
        line = line[severity.end():]
    return line.strip(), level, tag


def _number(text: str) -> float:
    return float(text)


def parse_stat_line(message: str) -> dict[str, Any]:
    """`count=50 first=.. curr=.. min=.. max=.. avg=.. std=.. [p5=.. median=.. p95=..]` -> dict.

    For the `count=N curr=V(all same)` short form (every run took V us), min,
    max and avg equal V and std is 0, so they are filled in.

    >>> parse_stat_line("count=3 curr=812(all same)")["avg"]
    812.0
    """
    stats: dict[str, Any] = {}
    all_same = False
    for key, value, same in _STAT_PAIR.findall(message):
        stats[key] = int(float(value)) if key in _STAT_INT_KEYS else _number(value)
        all_same = all_same or bool(same)
    if "count" not in stats:
        raise ValueError(f"stats line without count=: {message!r}")
    # A single run (count=1) prints only curr= too: it is trivially "all same".
    if stats["count"] >= 1 and "min" not in stats and "curr" in stats:
        all_same = True
    if all_same:
        value = stats["curr"]
        stats.setdefault("first", value)
        stats.setdefault("min", value)
        stats.setdefault("max", value)
        stats.setdefault("avg", value)
        stats.setdefault("std", 0.0)
    stats["all_same"] = all_same
    return stats


def benchmark_model_errors(text: str) -> list[str]:
    """Messages of the ERROR/FATAL lines (logcat E/F) of a possibly failed run.

    >>> benchmark_model_errors("INFO: STARTING!\\nERROR: Failed to mmap model m.tflite\\n")
    ['Failed to mmap model m.tflite']
    """
    errors = []
    for raw in text.splitlines():
        message, level, _ = strip_log_prefix(raw)
        if message and level in ("E", "F") and not _SUMMARY.match(message):
            errors.append(message)
    return errors


def parse_benchmark_model_output(text: str, logcat_tag: str | None = None) -> dict[str, Any]:
    """Parse `benchmark_model` stdout/stderr/logcat text into a dict.

    Keys (absent figures are None):

    * `format`: "inference_timings" (TF >= 2.2), "average_inference_timings"
      (TF 1.14 - 2.1 / Android APK), "average_no_stats" (TF <= 1.13), or
      None when only stats lines were found;
    * `init_us`, `first_inference_us`, `warmup_avg_us`, `inference_avg_us`
      from the summary line (microseconds, floats);
    * `warmup_stats`, `inference_stats`: dicts from the `count=` lines
      (`count` int; `first`, `curr`, `min`, `max`, `avg`, `std` and, when
      printed, `p5`, `median`, `p95` in microseconds; `all_same` bool);
    * `memory`: dict with any of `init_mb`, `overall_mb`, `kind`,
      `periodic_peak_mb`, `vm_rss_mb`, `rss_anon_mb`, `rss_file_shmem_mb`,
      `init_max_rss_mb`, `overall_max_rss_mb`;
    * `model_size_mb`, `init_session_ms`;
    * `params`: the `Name: [value]` parameter echo lines (e.g. "Num threads");
    * `errors`: messages of ERROR/FATAL (or logcat E/F) lines.

    `logcat_tag`: when given (e.g. "tflite"), logcat lines with any other tag
    are ignored, so a full `adb logcat` dump can be parsed.

    Raises ValueError when the text has neither a summary line nor a stats
    line (i.e. the benchmark did not run).
    """
    if not isinstance(text, str):
        raise ValueError(f"benchmark_model output must be str; got {type(text).__name__}")
    result: dict[str, Any] = {
        "format": None,
        "init_us": None,
        "first_inference_us": None,
        "warmup_avg_us": None,
        "inference_avg_us": None,
        "warmup_stats": None,
        "inference_stats": None,
        "memory": {},
        "model_size_mb": None,
        "init_session_ms": None,
        "params": {},
        "errors": [],
    }
    stat_lines: list[dict[str, Any]] = []
    memory = result["memory"]
    for raw in text.splitlines():
        message, level, tag = strip_log_prefix(raw)
        if not message or (logcat_tag is not None and tag is not None and tag != logcat_tag):
            continue
        if _STAT_LINE.match(message):
            stat_lines.append(parse_stat_line(message))
            continue
        summary = _SUMMARY.match(message)
        if summary:
            body = summary.group(2)
            for label, value in _SUMMARY_PAIR.findall(body):
                key = _SUMMARY_KEYS.get(label.strip())
                if key is not None:
                    result[key] = _number(value)
            if summary.group(1) == "Inference timings":
                result["format"] = "inference_timings"
            elif re.search(r"\bno stats:", body):
                result["format"] = "average_no_stats"
            else:
                result["format"] = "average_inference_timings"
            old = _OLD_MEMORY.search(body)  # APK: "...Inference: 80660.1Overall max resident set size = .."
            if old:
                memory["overall_max_rss_mb"] = _number(old.group(2))
                memory.setdefault("kind", "max_rss")
            continue
        match = _FOOTPRINT_DELTA.match(message)
        if match:
            memory.update(init_mb=_number(match.group(1)), overall_mb=_number(match.group(2)), kind="footprint_delta")
            continue
        match = _PEAK_FOOTPRINT.match(message)
        if match:
            memory.update(init_mb=_number(match.group(1)), overall_mb=_number(match.group(2)), kind="peak_footprint")
            continue
        match = _PERIODIC_PEAK.match(message)
        if match:
            memory["periodic_peak_mb"] = _number(match.group(1))
            continue
        match = _RSS_LINE.match(message)
        if match:
            key = {"VmRSS": "vm_rss_mb", "RssAnnon": "rss_anon_mb", "RssFile + RssShmem": "rss_file_shmem_mb"}
            memory[key[match.group(1)]] = _number(match.group(2))
            continue
        match = _OLD_MEMORY.match(message)
        if match:
            phase = "init" if match.group(1) == "Init Phase" else "overall"
            memory[f"{phase}_max_rss_mb"] = _number(match.group(2))
            if "kind" not in memory:
                memory["kind"] = "max_rss"
            continue
        match = _MODEL_SIZE.match(message)
        if match:
            result["model_size_mb"] = _number(match.group(1))
            continue
        match = _INIT_SESSION.match(message)
        if match:
            result["init_session_ms"] = _number(match.group(1))
            continue
        match = _PARAM.match(message)
        if match:
            result["params"][match.group(1).strip()] = match.group(2)
            continue
        if level in ("E", "F"):
            result["errors"].append(message)
    if memory.get("kind") == "max_rss":
        for phase in ("init", "overall"):
            if f"{phase}_max_rss_mb" in memory:
                memory.setdefault(f"{phase}_mb", memory[f"{phase}_max_rss_mb"])
    if stat_lines:
        # benchmark_model prints the warm-up phase, then the timed phase.
        result["inference_stats"] = stat_lines[-1]
        if len(stat_lines) >= 2:
            result["warmup_stats"] = stat_lines[-2]
    if result["format"] is None and not stat_lines:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        detail = f"; first error: {result['errors'][0]}" if result["errors"] else f"; first line: {first[:120]!r}"
        raise ValueError("not benchmark_model output: no 'Inference timings' or 'count=' line found" + detail)
    if result["inference_avg_us"] is None and result["inference_stats"] is not None:
        result["inference_avg_us"] = result["inference_stats"].get("avg")
    return result
