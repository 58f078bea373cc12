"""Accuracy-vs-parameters (and vs latency) plot and markdown table of a `compare_methods.py` result.

    python benchmarks/plot_compare.py benchmarks/results/compare_cifar10_cnn.json            # PNG + table
    python benchmarks/plot_compare.py benchmarks/results/compare_cifar10_cnn.json --write    # + BENCHMARKS.md

The PNG goes beside the JSON (same stem). `--write` replaces only the text between
`<!-- compare:<name>:begin -->` and `<!-- compare:<name>:end -->` in BENCHMARKS.md (one pair per
result, `<name>` its `name`, e.g. `compare_cifar10_cnn`), adding a heading and the two markers at the
end of the file when they are missing; the rest of the file, the reading of each table included, is
left as it is.

For a transformer teacher (the result has `encoder_params`), the table adds the encoder blocks'
parameters and their reduction, and the left plot's x axis is encoder parameters (the count the
methods were matched on; whole-model counts stay in the table).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def markers(name):
    """The begin/end comments around the generated table of the result called `name` in BENCHMARKS.md."""
    return f"<!-- compare:{name}:begin -->", f"<!-- compare:{name}:end -->"

# One look per method family, so the plot reads the same whatever subset was run.
STYLE = {
    "rmtkd-mp": ("RMT-KD (MP)", "#d62728", "o"),
    "rmtkd-iterative": ("RMT-KD, paper's iterative loop", "#8c564b", "o"),
    "rmtkd-energy": ("RMT-KD, energy rule", "#ff7f0e", "o"),
    "rmtkd-gavish-donoho": ("RMT-KD, Gavish-Donoho", "#bcbd22", "o"),
    "svd-rmtkd-ranks": ("data-free SVD, RMT-KD ranks", "#1f77b4", "s"),
    "svd-uniform-rank": ("data-free SVD, uniform rank", "#17becf", "s"),
    "dense-small-kd": ("narrow dense student, KD from scratch", "#2ca02c", "^"),
    "magnitude-pruning": ("magnitude pruning (nonzeros; dense file)", "#9467bd", "D"),
}


def _fmt(x, spec, missing="-"):
    return missing if x is None else format(x, spec)


def _speedup(entry, precision):
    value = (entry.get("latency") or {}).get(precision, {}).get("speedup_vs_teacher")
    return _fmt(value, ".2f") + "x" if value else "-"


def _speedup_over_flop_ratio(entry, teacher):
    """fp32 speed-up ÷ (teacher FLOPs / student FLOPs): how much of the FLOP-reduction bound is realised."""
    speedup = (entry.get("latency") or {}).get("fp32", {}).get("speedup_vs_teacher")
    if not speedup or not entry.get("flops"):
        return None
    return speedup / (teacher["flops"] / entry["flops"])


def _has_encoders(result):
    return result["teacher"].get("encoder_params") is not None


def markdown_table(result):
    """The comparison as a markdown table, teacher first, then the methods in run order."""
    teacher = result["teacher"]
    encoders = _has_encoders(result)
    header = [
        "method", "params", "param red.", *(["encoder params", "encoder red."] if encoders else []), "MFLOPs", "test acc (Keras)", "Δ vs teacher",
        ".tflite acc fp32 / int8", "KiB fp32 / int8 / int8 gzip", "fp32 ms (teacher ms)", "fp32 speed-up",
        "int8 speed-up", "fp32 speed-up ÷ FLOP ratio", "CPU ms/inf fp32", "FT epochs", "compress wall (min)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(label, entry, is_teacher=False):
        lat = (entry.get("latency") or {}).get("fp32") or {}
        sizes = entry["size_bytes"]
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
            f"{entry['tflite_fp32_test_accuracy']:.2f} / {entry['tflite_int8_test_accuracy']:.2f}",
            f"{sizes['fp32'] / 1024:.0f} / {sizes['int8'] / 1024:.0f} / {sizes['int8_gzip'] / 1024:.0f}",
            ms,
            "-" if is_teacher else _speedup(entry, "fp32"),
            "-" if is_teacher else _speedup(entry, "int8"),
            "-" if is_teacher else _fmt(_speedup_over_flop_ratio(entry, teacher), ".2f"),
            "-" if cpu is None else f"{1000 * cpu:.3f}",
            "-" if is_teacher else str(entry.get("finetune_epochs")),
            "-" if is_teacher else f"{entry['compression_wall_s'] / 60:.1f}",
        ]

    lines.append("| " + " | ".join(row("teacher", teacher, is_teacher=True)) + " |")
    for entry in result["methods"]:
        label = STYLE.get(entry["method"], (entry["method"],))[0]
        lines.append("| " + " | ".join(row(f"{label} (`{entry['method']}`)", entry)) + " |")
    split = result["splits"]
    lines += [
        "",
        f"![test accuracy vs parameters](benchmarks/results/{result['name']}.png)",
        "",
        f"Data: {result['data']}; calibration {split['calibration']:,}, validation {split['validation']:,}, "
        f"fine-tuning {split['fine_tuning']:,}, test {split['test']:,} examples. "
        f"Fine-tuning budget: {result.get('finetune_budget_epochs')} epochs of distillation from the teacher for every "
        f"method (the epochs RMT-KD (MP) spent). Latency: {result['settings']['latency']}, "
        f"{result['settings']['latency_runs']} runs per model.",
        "",
        "Notes: " + " ".join(result.get("notes", [])),
        "",
        f"Command: `{result['command']}` ({result['date']}, total wall {result.get('total_wall_s', 0) / 60:.1f} min).",
    ]
    return "\n".join(lines)


def plot_accuracy_vs_params(result, path):
    """Write a PNG: test accuracy against parameters (left) and against fp32 batch-1 latency (right).

    One marker per method; large markers are the Keras model, small hollow ones its int8 `.tflite`.
    Latency is relative to the teacher's, measured interleaved with it (1 / speed-up), because absolute
    milliseconds drift between pairs on a shared machine while the ratios stay comparable.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 5.4), dpi=110)
    by_params, by_latency = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    teacher = result["teacher"]
    count_key = "encoder_params" if _has_encoders(result) else "params"
    teacher_x = {by_params: teacher[count_key], by_latency: 1.0}

    def relative_latency(entry):
        speedup = (entry.get("latency") or {}).get("fp32", {}).get("speedup_vs_teacher")
        return 1.0 / speedup if speedup else None

    for axes, x_of in ((by_params, lambda e: e.get(count_key)), (by_latency, relative_latency)):
        axes.axhline(teacher["test_accuracy"], color="0.4", linestyle="--", linewidth=1)
        if teacher_x[axes] is not None:
            axes.scatter([teacher_x[axes]], [teacher["test_accuracy"]], marker="*", s=220, color="black",
                         label=f"teacher ({teacher[count_key]:,} {count_key.replace('_', ' ')})", zorder=3)
        for entry in result["methods"]:
            x = x_of(entry)
            if x is None:
                continue
            label, color, marker = STYLE.get(entry["method"], (entry["method"], "0.3", "o"))
            hollow = entry["method"] == "magnitude-pruning"
            axes.scatter([x], [entry["test_accuracy"]], marker=marker, s=90, zorder=3,
                         facecolors="none" if hollow else color, edgecolors=color, linewidths=1.8,
                         label=f"{label}: {entry['test_accuracy']:.1f}%")
            axes.scatter([x], [entry["tflite_int8_test_accuracy"]], marker=marker, s=30, zorder=2,
                         facecolors="none", edgecolors=color, linewidths=1.0, alpha=0.8)
        axes.set_xscale("log")
        axes.set_ylabel("test accuracy (%)")
        axes.grid(True, which="both", alpha=0.3)
    what = "encoder-block parameters" if count_key == "encoder_params" else "parameters"
    by_params.set_xlabel(f"{what} (log scale; pruning: nonzero weights)")
    by_latency.set_xlabel("fp32 .tflite latency ÷ teacher's (batch 1, 1 thread, interleaved; log scale)")
    by_params.legend(fontsize=7.5, loc="lower right", framealpha=0.9)
    budget = result.get("finetune_budget_epochs")
    figure.suptitle(f"{result['name']}: same teacher, split and fine-tuning budget ({budget} epochs); "
                    "large markers: Keras model, small hollow: its int8 .tflite", fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return str(path)


def write_markdown_section(table, markdown_path, name):
    """Replace the text between the markers of result `name` in `markdown_path` (appended if missing)."""
    markdown_path = Path(markdown_path)
    doc = markdown_path.read_text() if markdown_path.exists() else ""
    BEGIN, END = markers(name)
    if BEGIN not in doc or END not in doc:
        heading = f"\n### {name}\n\n"
        doc = doc.rstrip("\n") + "\n" + heading + BEGIN + "\n" + END + "\n"
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    if end < start:
        raise ValueError(f"{markdown_path}: {END} comes before {BEGIN}")
    markdown_path.write_text(doc[:start] + "\n" + table + "\n" + doc[end:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="?", default=str(HERE / "results" / "compare_cifar10_cnn.json"))
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()
    result = json.loads(Path(args.json).read_text())
    png = plot_accuracy_vs_params(result, Path(args.json).with_suffix(".png"))
    table = markdown_table(result)
    print(table)
    print(f"\nwrote {png}")
    if args.write:
        write_markdown_section(table, HERE.parent / "BENCHMARKS.md", result["name"])


if __name__ == "__main__":
    main()
