"""The one markdown renderer of BENCHMARKS.md: a table per result kind, written between its markers.

Each generated section sits between `<!-- KIND:NAME:begin -->` and `<!-- KIND:NAME:end -->` (`markers`); the
single-run table of every `compress` result sits between `<!-- results:begin -->` and `<!-- results:end -->`.
`write_section` replaces only the text between one pair (appending a heading and the pair at the end of the
file when they are missing), so the hand-written reading around each table is kept.

>>> markers("seeds", "cifar10_mlp")
('<!-- seeds:cifar10_mlp:begin -->', '<!-- seeds:cifar10_mlp:end -->')
>>> markers("results")
('<!-- results:begin -->', '<!-- results:end -->')
>>> command_text({"command": "python -m benchmarks compare --task configs/x", "command_as_run": "python old.py"})
'`python -m benchmarks compare --task configs/x` (as run: `python old.py`)'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"

# One label per method family, shared by the tables and the plot.
LABELS = {
    "rmtkd-mp": "RMT-KD (MP)",
    "rmtkd-iterative": "RMT-KD, paper's iterative loop",
    "rmtkd-energy": "RMT-KD, energy rule",
    "rmtkd-gavish-donoho": "RMT-KD, Gavish-Donoho",
    "svd-rmtkd-ranks": "data-free SVD, RMT-KD ranks",
    "svd-uniform-rank": "data-free SVD, uniform rank",
    "dense-small-kd": "narrow dense student, KD from scratch",
    "magnitude-pruning": "magnitude pruning (nonzeros; dense file)",
}


def label(entry):
    """A method's label; a rule variant that ran the paper's loop (the schedule before `budgeted`) says so.

    >>> label({"method": "rmtkd-energy", "schedule": "budgeted"}), label({"method": "rmtkd-energy"})
    ('RMT-KD, energy rule', 'RMT-KD loop, energy rule')
    """
    method = entry["method"]
    text = LABELS.get(method, method)
    if method in ("rmtkd-energy", "rmtkd-gavish-donoho") and entry.get("schedule", "iterative") == "iterative":
        text = text.replace("RMT-KD,", "RMT-KD loop,")
    return text


def markers(kind, name=None):
    """The begin/end comments around the generated section `name` of `kind` (`results` has no name)."""
    tag = kind if name is None else f"{kind}:{name}"
    return f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"


def write_section(text, kind, name=None, path=BENCHMARKS_MD):
    """Replace the text between the markers of (`kind`, `name`) in `path`, atomically; appended if missing."""
    path = Path(path)
    doc = path.read_text() if path.exists() else ""
    begin, end = markers(kind, name)
    if begin not in doc or end not in doc:
        doc = doc.rstrip("\n") + f"\n\n### {name or kind}\n\n{begin}\n{end}\n"
    start, stop = doc.index(begin) + len(begin), doc.index(end)
    if stop < start:
        raise ValueError(f"{path}: {end} comes before {begin}")
    new = doc[:start] + "\n" + text + "\n" + doc[stop:]
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        out.write(new)
    os.replace(tmp, path)


def section(kind, name=None, path=BENCHMARKS_MD):
    """The text now between the markers of (`kind`, `name`) in `path`, or None."""
    doc = Path(path).read_text()
    begin, end = markers(kind, name)
    if begin not in doc or end not in doc:
        return None
    return doc[doc.index(begin) + len(begin):doc.index(end)].strip("\n")


def made_by_old_code(result):
    """Whether a result was produced by a script since replaced (its `command_as_run` is not its `command`)."""
    return bool(result.get("command_as_run")) and result["command_as_run"] != result["command"]


def command_text(result):
    """The result's command in backticks, followed by the command it was actually run with when that differs."""
    text = f"`{result['command']}`"
    if made_by_old_code(result):
        text += f" (as run: `{result['command_as_run']}`)"
    return text


def _fmt(x, spec, missing="-"):
    return missing if x is None else format(x, spec)


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def _export(entry, precision):
    return (entry.get("exports") or {}).get(precision) or {}


def _latency(entry, precision):
    return (entry.get("latency") or {}).get(precision) or {}


def _speedup(entry, precision):
    value = _latency(entry, precision).get("speedup_vs_teacher")
    return _fmt(value, ".2f") + "x" if value else "-"


def speedup_over_flop_ratio(entry, teacher):
    """fp32 speed-up ÷ (teacher FLOPs / model FLOPs): how much of the FLOP-reduction bound is realised."""
    speedup = _latency(entry, "fp32").get("speedup_vs_teacher")
    if not speedup or not entry.get("flops"):
        return None
    return speedup / (teacher["flops"] / entry["flops"])


# --- compare ------------------------------------------------------------------------------------------------

def _own_budget_note(result):
    """The methods that run their own schedule (the paper's loop), so that the budget line does not claim them.

    >>> _own_budget_note({"methods": [{"method": "rmtkd-mp"}, {"method": "rmtkd-iterative", "finetune_epochs": 7}]})
    ', except rmtkd-iterative, whose loop stops by its own rules (7 epochs here)'
    >>> _own_budget_note({"methods": [{"method": "rmtkd-mp"}]})
    ''
    """
    own = [m for m in result["methods"] if m["method"] == "rmtkd-iterative"]
    return "".join(f", except rmtkd-iterative, whose loop stops by its own rules ({m['finetune_epochs']} epochs here)"
                   for m in own)


def compare_table(result):
    """A `compare` result as a markdown table, teacher first, then the methods in run order, and its notes."""
    teacher = result["teacher"]
    encoders = teacher.get("encoder_params") is not None
    header = [
        "method", "params", "param red.", *(["encoder params", "encoder red."] if encoders else []), "MFLOPs",
        "test acc (Keras)", "Δ vs teacher", ".tflite acc fp32 / int8", "KiB fp32 / int8 / int8 gzip",
        "fp32 ms (teacher ms)", "fp32 speed-up", "int8 speed-up", "fp32 speed-up ÷ FLOP ratio", "CPU ms/inf fp32",
        "FT epochs", "compress wall (min)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(label, entry, is_teacher=False):
        lat = _latency(entry, "fp32")
        fp32, int8 = _export(entry, "fp32"), _export(entry, "int8")
        ms = "-" if is_teacher else f"{_fmt(lat.get('median_ms'), '.3f')} ({_fmt(lat.get('teacher_median_ms'), '.3f')})"
        cpu = lat.get("cpu_seconds_per_inference")
        encoder_cells = []
        if encoders:
            count, reduction = entry.get("encoder_params"), entry.get("encoder_param_reduction")
            encoder_cells = [_fmt(count, ","), "-" if is_teacher or reduction is None else f"{100 * reduction:.1f}%"]
        return [
            label,
            f"{entry['params']:,}",
            "-" if is_teacher else f"{100 * entry['param_reduction']:.1f}%",
            *encoder_cells,
            f"{entry['flops'] / 1e6:.1f}",
            f"{entry['test_accuracy']:.2f}",
            "-" if is_teacher else f"{entry['test_accuracy'] - teacher['test_accuracy']:+.2f}",
            f"{fp32['test_accuracy']:.2f} / {int8['test_accuracy']:.2f}",
            f"{fp32['size_bytes'] / 1024:.0f} / {int8['size_bytes'] / 1024:.0f} / {int8['gzip_bytes'] / 1024:.0f}",
            ms,
            "-" if is_teacher else _speedup(entry, "fp32"),
            "-" if is_teacher else _speedup(entry, "int8"),
            "-" if is_teacher else _fmt(speedup_over_flop_ratio(entry, teacher), ".2f"),
            "-" if cpu is None else f"{1000 * cpu:.3f}",
            "-" if is_teacher else str(entry.get("finetune_epochs")),
            "-" if is_teacher else f"{entry['compression_wall_s'] / 60:.1f}",
        ]

    lines.append("| " + " | ".join(row("teacher", teacher, is_teacher=True)) + " |")
    for entry in result["methods"]:
        lines.append("| " + " | ".join(row(f"{label(entry)} (`{entry['method']}`)", entry)) + " |")
    split = result["splits"]
    lines += [
        "",
        f"![test accuracy vs parameters](benchmarks/results/{result['name']}.png)",
        "",
        f"Data: {result['data']}; calibration {split['calibration']:,}, validation {split['validation']:,}, "
        f"fine-tuning {split['fine_tuning']:,}, test {split['test']:,} examples. "
        f"Fine-tuning budget: {result.get('finetune_budget_epochs')} epochs of distillation from the teacher for every "
        f"method (the epochs RMT-KD (MP) spent){_own_budget_note(result)}. Latency: {result['settings']['latency']}, "
        f"{result['settings']['latency_runs']} runs per model.",
        "",
        "Notes: " + " ".join(result.get("notes", [])),
        "",
        f"Command: {command_text(result)} ({result['date']}, total wall {result.get('total_wall_s', 0) / 60:.1f} min).",
    ]
    return "\n".join(lines)


# --- seeds ----------------------------------------------------------------------------------------------------

def _pm(pair, spec):
    mean, sd = pair
    return "-" if mean is None else f"{format(mean, spec)} ± {format(sd, spec.lstrip('+'))}"


def seeds_table(summary):
    """A `seeds` summary: per method mean ± sd over seeds, then the paired per-seed differences."""
    rows = ["| method | params | FLOP ratio | test acc | Δ vs teacher (pts) | fp32 speed-up | int8 speed-up | "
            "distillation epochs | compress wall (min) |", "|---" * 9 + "|"]
    for name, m in summary["methods"].items():
        rows.append(f"| {name} | {_pm(m['params'], ',.0f')} | {_pm(m['flop_ratio'], '.3f')} | "
                    f"{_pm(m['test_accuracy'], '.2f')} | {_pm(m['test_change'], '+.2f')} | "
                    f"{_pm(m['fp32_speedup'], '.2f')}x | {_pm(m['int8_speedup'], '.2f')}x | "
                    f"{_pm(m['epochs'], '.1f')} | {_pm(m['wall_min'], '.1f')} |")
    if summary["pairs"]:  # a one-method task has no pair to difference
        rows += ["", "Paired test-accuracy differences (same seed, same split and test examples), mean ± sd over "
                     f"seeds {summary['seeds']}:", "", "| pair | per seed (pts) | mean ± sd |", "|---|---|---|"]
    for pair, values in summary["pairs"].items():
        per_seed = ", ".join(f"{v:+.2f}" for v in values["per_seed"])
        rows.append(f"| {pair} | {per_seed} | {_pm(values['mean_sd'], '+.2f')} |")
    teacher = summary["teacher_test_accuracy"]
    timed = f" Speed-ups timed at {summary['timed_seq_len']} tokens." if summary.get("timed_seq_len") else ""
    rows += ["", f"Teacher test accuracy {_pm(teacher, '.2f')} ({summary['data']}).{timed} Command (per seed): "
                 f"{command_text(summary)}."]
    return "\n".join(rows)


# --- compress (the results table) -----------------------------------------------------------------------------

RESULTS_HEADER = [
    "task", "teacher params", "student params", "param red.", "FLOP red.", "teacher test acc", "student test acc",
    "Δ acc (pts)", "student .tflite acc fp32 / int8", "KiB: teacher fp32 / student fp32 / student int8",
    "teacher fp32 ÷ student int8 size", "fp32 speed-up (batch 1)", "int8 speed-up", "speed-up ÷ FLOP ratio",
    "compress wall (min)",
]


def _acc(x):
    return "-" if x is None else f"{x:.2f}"


OLD_CODE_MARK = " †"
OLD_CODE_NOTE = ("† made by a script since replaced (its \"as run\" command, below), with the code of its day: the "
                 "paper's iterative loop and the old MP fit; the driver command runs today's code, which gives other "
                 "numbers.")


def _results_row(result):
    t, s = result["teacher"], result["methods"][0]
    fp32_ratio = _latency(s, "fp32").get("speedup_vs_teacher")
    int8_ratio = _latency(s, "int8").get("speedup_vs_teacher")
    flop_ratio = t["flops"] / s["flops"] if s["flops"] else None
    t32, s32, s8 = _export(t, "fp32"), _export(s, "fp32"), _export(s, "int8")
    return [
        result["name"] + (OLD_CODE_MARK if made_by_old_code(result) else ""), f"{t['params']:,}", f"{s['params']:,}",
        _pct(s.get("param_reduction")),
        _pct(s.get("flop_reduction")), _acc(t["test_accuracy"]), _acc(s["test_accuracy"]),
        f"{s['test_accuracy'] - t['test_accuracy']:+.2f}",
        f"{_acc(s32.get('test_accuracy'))} / {_acc(s8.get('test_accuracy'))}",
        f"{t32['size_bytes'] / 1024:.0f} / {s32['size_bytes'] / 1024:.0f} / {s8['size_bytes'] / 1024:.0f}",
        f"{t32['size_bytes'] / s8['size_bytes']:.1f}x",
        f"{fp32_ratio:.2f}x" if fp32_ratio else "-",
        f"{int8_ratio:.2f}x" if int8_ratio else "-",
        f"{fp32_ratio / flop_ratio:.2f}" if fp32_ratio and flop_ratio else "-",
        f"{(s.get('compression_wall_s') or 0) / 60:.1f}",
    ]


def results_table(results):
    """Every `compress` result (a list, in order): the summary table, the transformer table, the exports, commands."""
    lines = ["| " + " | ".join(RESULTS_HEADER) + " |", "|" + "---|" * len(RESULTS_HEADER)]
    lines += ["| " + " | ".join(_results_row(r)) + " |" for r in results]
    if any(made_by_old_code(r) for r in results):
        lines += ["", OLD_CODE_NOTE]
    text_results = [r for r in results if r["teacher"].get("encoder_params")]
    if text_results:
        lines += ["", "Transformer encoders (issue #5's bar: >= 80% fewer encoder parameters, <= 1.0 point, "
                  ">= 3x faster fp32 `.tflite` at batch 1, 128 tokens):", ""]
        lines.append("| task | encoder params teacher / student | encoder param red. | Δ acc (pts) | timed at (tokens) "
                     "| fp32 speed-up | int8 speed-up | FLOP ratio | fp32 speed-up ÷ FLOP ratio |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in text_results:
            t, s = r["teacher"], r["methods"][0]
            fp32, int8 = _latency(s, "fp32"), _latency(s, "int8")
            lines.append(
                f"| {r['name']} | {t['encoder_params']:,} / {s['encoder_params']:,} | "
                f"{_pct(1 - s['encoder_params'] / t['encoder_params'])} | "
                f"{s['test_accuracy'] - t['test_accuracy']:+.2f} | {r.get('timed_seq_len') or 'model' + chr(39) + 's'} | "
                f"{fp32['speedup_vs_teacher']:.2f}x | {int8['speedup_vs_teacher']:.2f}x | "
                f"{fp32.get('flop_ratio', 0):.2f}x | {fp32.get('speedup_over_flop_ratio', 0):.2f} |"
            )
    lines += ["", "TFLite exports (accuracy on the test split; parity = Keras vs `.tflite` on the same inputs):", ""]
    lines.append("| task | model | precision | KiB | .tflite acc | top-1 agreement | max abs err | Flex ops |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in results:
        for who, entry in (("teacher", r["teacher"]), ("student", r["methods"][0])):
            for precision, export in entry["exports"].items():
                err = export.get("max_abs_err")
                lines.append(
                    f"| {r['name']} | {who} | {precision} | {export['size_bytes'] / 1024:.0f} | "
                    f"{_acc(export.get('test_accuracy'))} | {export.get('top1_agreement') or 0:.4f} | "
                    f"{'-' if err is None else f'{err:.2e}'} | {export.get('flex_ops') or 0} |"
                )
    lines += ["", "Commands that produced each row:", ""]
    lines += [f"- `{r['name']}`: {command_text(r)}" for r in results]
    return "\n".join(lines)


# --- the paper's rows (issue #15) ---------------------------------------------------------------------------

PAPER_HEADER = [
    "task", "paper's row", "teacher test acc", "student test acc", "Δ acc (pts)", "params teacher → student (red.)",
    "encoder params teacher → student (red.)", "FLOP red.", "KiB: teacher fp32 / student fp32 / student int8",
    "fp32 speed-up", "int8 speed-up", "compress wall (min)",
]


def _paper_cell(paper):
    return f"{paper['row']}: {paper['param_reduction']:.1f}% fewer params at {paper['accuracy_drop']:.1f} pts"


def paper_table(rows):
    """`[(paper, result, quantize_or_None)]`: our compress rows beside the paper's figure, then the int8-class files.

    `paper` is the task config's `paper` entry (`row`, `param_reduction` in %, `accuracy_drop` in points).
    """
    lines = ["| " + " | ".join(PAPER_HEADER) + " |", "|" + "---|" * len(PAPER_HEADER)]
    for paper, result, _ in rows:
        t, s = result["teacher"], result["methods"][0]
        t32, s32, s8 = _export(t, "fp32"), _export(s, "fp32"), _export(s, "int8")
        encoder = "-"
        if t.get("encoder_params"):
            encoder = (f"{t['encoder_params']:,} → {s['encoder_params']:,} "
                       f"({_pct(1 - s['encoder_params'] / t['encoder_params'])})")
        lines.append("| " + " | ".join([
            result["name"], _paper_cell(paper), _acc(t["test_accuracy"]), _acc(s["test_accuracy"]),
            f"{s['test_accuracy'] - t['test_accuracy']:+.2f}",
            f"{t['params']:,} → {s['params']:,} ({_pct(s.get('param_reduction'))})", encoder,
            _pct(s.get("flop_reduction")),
            f"{t32['size_bytes'] / 1024:.0f} / {s32['size_bytes'] / 1024:.0f} / {s8['size_bytes'] / 1024:.0f}",
            _speedup(s, "fp32"), _speedup(s, "int8"), f"{(s.get('compression_wall_s') or 0) / 60:.1f}",
        ]) + " |")
    quantized = [(result, q) for _, result, q in rows if q]
    if quantized:
        lines += ["", "int8-class files of each model (`python -m tools.quantize_precisions`; test accuracy of the "
                  "`.tflite` and of its Keras model on the same examples, paired drop with its 95% interval):", ""]
        lines.append("| task | model | precision | KiB | Keras test acc | .tflite test acc | drop (pts) [95% interval] |")
        lines.append("|---|---|---|---|---|---|---|")
        for result, q in quantized:
            for index, (path, model) in enumerate(q["models"].items()):
                who = "teacher" if index == 0 else "student"
                for precision, row in model["precisions"].items():
                    if "error" in row:
                        lines.append(f"| {result['name']} | {who} | {precision} | - | - | - | {row['error']} |")
                        continue
                    low, high = row["drop_interval"]
                    lines.append(
                        f"| {result['name']} | {who} | {precision} | {row['size_bytes'] / 1024:.0f} | "
                        f"{row['keras_test_accuracy']:.2f} | {row['tflite_test_accuracy']:.2f} | "
                        f"{row['drop']:.2f} [{low:.2f}, {high:.2f}] |"
                    )
    lines += ["", "Commands:", ""]
    for _, result, q in rows:
        lines.append(f"- `{result['name']}`: {command_text(result)}")
        if q:
            lines.append(f"- `{q['name']}`: {command_text(q)}")
    return "\n".join(lines)
