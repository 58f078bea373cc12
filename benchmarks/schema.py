"""The one result schema of `python -m benchmarks`, and a reader for every result ever committed.

A result is a JSON object (written atomically by `rmtkd_tf.io.write_json`) with these common fields:

- `schema_version`: `SCHEMA_VERSION` (2). Files without it are version 1, written by the scripts this
  package replaced (`compare_methods.py`, `run_compression.py`, ...); `read_result` upgrades them in memory.
- `kind`: one of `KINDS`: `compare` (several methods against one teacher), `compress` (RMT-KD alone, every
  export), `seeds` (mean ± sd over per-seed `compare` runs), `floor` (latency floor of a BERT),
  `arm64` (qemu-user parity), `retime` (one re-timed pair), `resume` (kill-and-resume check),
  `quantize` (accuracy of every .tflite precision of a model, paired with its Keras model);
  `distribute` (one compress on one device, two logical devices and two local workers: wall time, ranks);
  `crosscheck` (teacher/student latency ratio, in-process interpreter vs external benchmark tools);
  `attention_error` (per-layer attention/encoder-output error of query/key factorizations, no training);
  `cost` (measured seconds per training / inference / distillation / calibration step of a model on this
  machine, extrapolated to the wall time of whole runs);
  `paired-test` (a student's test accuracy drop paired with its teacher, with its interval);
  `int8_layer_errors` (each quantized op's error in an int8 `.tflite`, in quantization steps);
  `batch_norm_candidates` (a budgeted run's cut, cut with re-estimated BatchNorm and distilled student on a test set);
- `name`: the result's name (a `compare` result's is `compare_<task name>`);
- `command`: the command that regenerates it (`python -m benchmarks ...`);
- `command_as_run`: present when the result was produced by another command (a script since replaced, or a
  tool): that command, verbatim. Never rewritten. A result the driver wrote has none: `command` is what ran.
- `date`.

`compare` and `compress` results share a layout: `teacher` (an entry), `methods` (a list of entries, each with
`method`), `data`, `splits`, `settings`, `notes`. An entry holds `params`, `encoder_params`, `flops`,
`test_accuracy`, `val_accuracy`, `param_reduction`, `finetune_epochs`, `compression_wall_s`,
`exports` = `{precision: {size_bytes, gzip_bytes, test_accuracy, top1_agreement, max_abs_err, flex_ops}}`
(accuracies in percent) and `latency` = `{precision: timing.latency_entry(...)}` (not for the teacher).
A `compress` result also keeps `compression` (the `compress` report). The other kinds keep their payload.

>>> upgrade({"command": "python benchmarks/resume_check.py", "killed_with": "SIGKILL"}, "resume_check")["kind"]
'resume'
>>> result = upgrade({"name": "compare_x", "teacher": {"size_bytes": {"fp32": 8, "int8": 2},
...     "tflite_fp32_test_accuracy": 90.0, "tflite_int8_test_accuracy": 89.0}, "methods": [], "splits": {}})
>>> result["schema_version"], result["kind"], result["teacher"]["exports"]["int8"]["size_bytes"]
(2, 'compare', 2)
"""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA_VERSION = 2
KINDS = ("compare", "compress", "seeds", "floor", "arm64", "retime", "resume", "crosscheck", "distribute", "quantize",
         "attention_error", "cost", "paired-test", "int8_layer_errors", "batch_norm_candidates")
RESULTS = Path(__file__).resolve().parent / "results"


class ResultError(ValueError):
    """A file that is not a benchmark result of any known layout."""


def read_result(path):
    """The result at `path` in the current schema (older layouts upgraded in memory; the file is not changed)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ResultError(f"{path}: not a readable JSON result ({error})") from None
    return upgrade(payload, path.stem)


def read_results(folder=RESULTS):
    """Every `*.json` result in `folder`, by file stem, sorted."""
    return {path.stem: read_result(path) for path in sorted(Path(folder).glob("*.json"))}


def legacy_kind(payload):
    """The kind of a version-1 result, from its fields."""
    if "pairs" in payload and "seeds" in payload:
        return "seeds"
    if "methods" in payload and "teacher" in payload:
        return "compare"
    if "compression" in payload and "exports" in payload:
        return "compress"
    if "fixed_share_of_teacher_latency" in payload:
        return "floor"
    if "killed_with" in payload:
        return "resume"
    if "speedup_a_over_b" in payload:
        return "retime"
    if "arm64" in payload and "all_within_tolerance" in payload:
        return "arm64"
    raise ResultError("not a benchmark result of any known layout")


def upgrade(payload, stem=None):
    """`payload` in schema version `SCHEMA_VERSION` (a new dict; version-2 payloads are checked, not changed)."""
    version = payload.get("schema_version", 1)
    if version == SCHEMA_VERSION:
        if payload.get("kind") not in KINDS:
            raise ResultError(f"unknown result kind {payload.get('kind')!r}")
        return dict(payload)
    if version != 1:
        raise ResultError(f"schema_version {version!r} is newer than this reader ({SCHEMA_VERSION})")
    result = dict(payload)
    kind = legacy_kind(payload)
    result.update(schema_version=SCHEMA_VERSION, kind=kind)
    if kind == "seeds":
        result.setdefault("name", (stem or "").removesuffix("_seeds"))
    elif kind == "compare":
        result["teacher"] = _legacy_compare_entry(payload["teacher"])
        result["methods"] = [_legacy_compare_entry(entry) for entry in payload["methods"]]
    elif kind == "compress":
        result.update(_legacy_compress(payload))
    else:
        result.setdefault("name", stem)
    return result


def _legacy_compare_entry(entry):
    """A version-1 compare entry (flat `tflite_<p>_test_accuracy` and `size_bytes`) with `exports`."""
    entry = dict(entry)
    sizes = entry.get("size_bytes") or {}
    exports = {}
    for precision in ("fp32", "fp16", "int8"):
        if precision not in sizes:
            continue
        exports[precision] = {
            "size_bytes": sizes[precision],
            "gzip_bytes": sizes.get(f"{precision}_gzip"),
            "test_accuracy": entry.get(f"tflite_{precision}_test_accuracy"),
            "top1_agreement": entry.get(f"tflite_{precision}_top1_agreement"),
        }
    entry["exports"] = exports
    return entry


def _percent(value):
    return None if value is None else 100.0 * value if value <= 1 else value


def _legacy_export(export):
    verification = export.get("verification") or {}
    return {
        "size_bytes": export["size_bytes"],
        "test_accuracy": _percent(verification.get("tflite_accuracy")),
        "top1_agreement": verification.get("top1_agreement"),
        "max_abs_err": verification.get("max_abs_err"),
        "flex_ops": len(export.get("flex_ops") or []),
    }


def _legacy_latency(comparison):
    ratios = comparison.get("ratios") or {}
    a, b = comparison.get("a") or {}, comparison.get("b") or {}
    entry = {
        "teacher_median_ms": (a.get("latency_ms") or {}).get("median"),
        "median_ms": (b.get("latency_ms") or {}).get("median"),
        "p90_ms": (b.get("latency_ms") or {}).get("p90"),
        "speedup_vs_teacher": ratios.get("median_latency_a_over_b"),
        "teacher_cpu_seconds_per_inference": a.get("cpu_seconds_per_inference"),
        "cpu_seconds_per_inference": b.get("cpu_seconds_per_inference"),
    }
    for key in ("flop_ratio", "speedup_over_flop_ratio"):
        if key in comparison:
            entry[key] = comparison[key]
    return entry


def _legacy_compress(payload):
    """`teacher` and `methods` (one `rmtkd-mp` entry) from a `run_compression.py` result."""
    report, exports = payload["compression"], payload["exports"]
    encoder = payload.get("encoder_params") or {}
    entries = {}
    for who in ("teacher", "student"):
        side = report[who]
        entries[who] = {
            "params": side["params"],
            "encoder_params": encoder.get(who),
            "flops": side["flops"],
            "test_accuracy": side.get("test_accuracy"),
            "val_accuracy": side.get("val_accuracy"),
            "exports": {key.split("_", 1)[1]: _legacy_export(value) for key, value in exports.items()
                        if key.startswith(who + "_")},
        }
    student = entries["student"]
    student.update(method="rmtkd-mp", param_reduction=report.get("param_reduction"),
                   flop_reduction=report.get("flop_reduction"), compression_wall_s=report.get("compression_wall_s", 0),
                   latency={precision: _legacy_latency(comparison)
                            for precision, comparison in (payload.get("host_latency") or {}).items()})
    return {"teacher": entries["teacher"], "methods": [student], "timed_seq_len": payload.get("latency_seq_len")}
