"""The accuracy-vs-parameters (and vs latency) plot of a `compare` result (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.render import label as method_label

# One look per method family, so the plot reads the same whatever subset was run.
STYLE = {
    "rmtkd-mp": ("#d62728", "o"),
    "rmtkd-iterative": ("#8c564b", "o"),
    "rmtkd-energy": ("#ff7f0e", "o"),
    "rmtkd-gavish-donoho": ("#bcbd22", "o"),
    "svd-rmtkd-ranks": ("#1f77b4", "s"),
    "svd-uniform-rank": ("#17becf", "s"),
    "dense-small-kd": ("#2ca02c", "^"),
    "magnitude-pruning": ("#9467bd", "D"),
}


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
    count_key = "encoder_params" if teacher.get("encoder_params") is not None else "params"
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
            label = method_label(entry)
            color, marker = STYLE.get(entry["method"], ("0.3", "o"))
            hollow = entry["method"] == "magnitude-pruning"
            axes.scatter([x], [entry["test_accuracy"]], marker=marker, s=90, zorder=3,
                         facecolors="none" if hollow else color, edgecolors=color, linewidths=1.8,
                         label=f"{label}: {entry['test_accuracy']:.1f}%")
            int8 = (entry.get("exports") or {}).get("int8", {}).get("test_accuracy")
            if int8 is not None:
                axes.scatter([x], [int8], marker=marker, s=30, zorder=2, facecolors="none", edgecolors=color,
                             linewidths=1.0, alpha=0.8)
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
