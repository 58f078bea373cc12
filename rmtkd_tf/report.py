"""Plain-text tables for the terminal."""

from __future__ import annotations


def _fmt_int(n):
    return f"{n:,}" if n is not None else "-"


def _fmt_acc(a):
    return f"{a:.2f}" if a is not None else "-"


def rank_text(entry):
    """A compressed layer's rank as the report tables show it (`entry`: a row of a report's `layers`).

    >>> rank_text({"rank": 12})
    '12'
    >>> rank_text({"rank": 24, "joint_qk_rank": 2, "heads": 12})
    'joint Q/K 2/head (12 heads: 24)'
    """
    if entry.get("joint_qk_rank") is not None:
        return f"joint Q/K {entry['joint_qk_rank']}/head ({entry['heads']} heads: {entry['rank']})"
    return str(entry["rank"])


def format_layer_table(decisions):
    """One row per layer: width, samples, rule rank, applied rank, params before/after or why skipped."""
    rows = [("layer", "type", "d", "n", "rule k", "k", "params", "after", "note")]
    for d in decisions:
        rows.append(
            (
                d.path,
                d.layer_type,
                str(d.dim),
                _fmt_int(d.n_samples),
                "-" if d.rule_rank is None else str(d.rule_rank),
                "-" if d.rank is None else str(d.rank),
                _fmt_int(d.params_before),
                _fmt_int(d.params_after),
                d.skipped or "",
            )
        )
    return _tabulate(rows)


def format_summary(report):
    """Teacher vs student: params, FLOPs, accuracies, and the per-layer ranks."""
    t, s = report["teacher"], report["student"]
    rows = [
        ("", "teacher", "student", "change"),
        ("params", _fmt_int(t["params"]), _fmt_int(s["params"]), f"{-100 * report['param_reduction']:+.1f}%"),
        (
            "FLOPs/sample",
            _fmt_int(t["flops"]),
            _fmt_int(s["flops"]),
            "-" if report.get("flop_reduction") is None else f"{-100 * report['flop_reduction']:+.1f}%",
        ),
        ("val acc %", _fmt_acc(t["val_accuracy"]), _fmt_acc(s["val_accuracy"]), _delta(t["val_accuracy"], s["val_accuracy"])),
        ("test acc %", _fmt_acc(t["test_accuracy"]), _fmt_acc(s["test_accuracy"]), _delta(t["test_accuracy"], s["test_accuracy"])),
    ]
    for name in ("teacher", "student"):
        export = report.get("export", {}).get(name)
        if export:
            verification = export.get("verification") or {}
            rows.append((f"{name}.tflite", f"{export['size_bytes'] / 1024:.0f} KiB", f"acc {_fmt_acc(verification.get('tflite_accuracy'))}", f"top1 agree {verification.get('top1_agreement', 0):.3f}"))
    latency = report.get("latency")
    if latency:
        rows.append(("tflite latency", f"{latency['teacher_ms']:.3g} ms", f"{latency['student_ms']:.3g} ms",
                     f"{100 * (latency['student_ms'] / latency['teacher_ms'] - 1):+.1f}% (median, host)"))
    text = _tabulate(rows)
    layer_rows = [("layer", "type", "units", "rank", "params", "after")]
    for path, entry in report.get("layers", {}).items():
        layer_rows.append((path, entry["type"], str(entry["units"]), rank_text(entry), _fmt_int(entry["params_before"]), _fmt_int(entry["params_after"])))
    if len(layer_rows) > 1:
        text += "\n\n" + _tabulate(layer_rows)
    text += _format_exports(report.get("export") or {})
    text += f"\n\nstopped: {report.get('stopped')}"
    text += _format_kept(report)
    return text


#: What a budgeted attempt kept (`rmtkd_tf.schedules.budgeted.kept_candidate`), and each candidate's score.
KEPT_TEXT = {"distillation": "the distilled student",
             "batch_norm": "the cut with re-estimated BatchNorm statistics (distillation did not improve on it)",
             "surgery": "the cut alone (distillation did not improve on it)"}
CANDIDATE_SCORES = (("cut", "val_accuracy_after_surgery"), ("BatchNorm re-estimated", "val_accuracy_after_batch_norm"),
                    ("distilled", "val_accuracy_after_distillation"))


def _format_kept(report):
    """The budgeted schedule's final attempt: which candidate student it kept, with their validation scores."""
    final = report.get("final_attempt")
    attempts = report.get("attempts") or []
    if not final or final > len(attempts):
        return ""
    attempt = attempts[final - 1]
    kept = attempt.get("kept") or ("distillation" if attempt.get("kept_distillation", True) else "surgery")
    scores = ", ".join(f"{label} {attempt[key]:.2f}" for label, key in CANDIDATE_SCORES if attempt.get(key) is not None)
    return f"\nkept: {KEPT_TEXT[kept]}" + (f" (validation %: {scores})" if scores else "")


def _format_exports(exports):
    """Precision and conversion path of each .tflite; with `--precision auto`, every precision tried."""
    from rmtkd_tf.precision_search import PrecisionTrial, format_trials

    text = ""
    for name, export in exports.items():
        text += f"\n\n{name}.tflite: {export.get('precision')}, via {export.get('exporter', 'saved-model')}"
        auto = export.get("auto")
        if auto:
            trials = [PrecisionTrial(**trial) for trial in auto["tried"]]
            text += " (auto)\n" + format_trials(trials, auto["max_drop"], auto["confidence"], auto["validation_examples"])
    return text


def _delta(a, b):
    if a is None or b is None:
        return "-"
    return f"{b - a:+.2f}"


def _tabulate(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
