"""`report.md` of a compress run, with its plots: what a person reads after `rmtkd-tf compress`.

`write_run_report(output_dir, report, spectra)` writes into `output_dir`:

- `report.md`: the teacher-vs-student table (parameters, FLOPs, validation and test accuracy,
  `.tflite` size and latency), how the cut was chosen, one row per layer, and the plots below;
- `report/compared.png`: teacher vs student bars (parameters, FLOPs, accuracy, latency);
- `report/ranks.png`: each analysed layer's full rank, its signal rank (the rank rule's, the most the
  run keeps) and the rank it has in the student;
- `report/spectrum_<layer>.png`: each layer's covariance spectrum with its fitted Marchenko–Pastur
  law (`rmtkd_tf.spectral.plot_spectrum`, the same plot as `rmtkd-tf analyze`).

`spectra` is a `SpectrumRecorder`: a `RunLog` listener that keeps each layer's first analysis. Every
file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPORT_NAME = "report.md"
PLOTS_DIR = "report"


class SpectrumRecorder:
    """Keeps each layer's first analysed spectrum (a `LayerDecision`) from a run's `"analysis"` events.

    >>> from types import SimpleNamespace
    >>> recorder = SpectrumRecorder()
    >>> recorder.on_event("analysis", {"step": 0, "decisions": [SimpleNamespace(path="fc", eigenvalues=None)]})
    >>> list(recorder.decisions)
    ['fc']
    """

    def __init__(self):
        self.decisions = {}

    def on_event(self, name, values):
        if name == "analysis":
            for decision in values["decisions"]:
                self.decisions.setdefault(decision.path, decision)


def _plot_file(name):
    return name.replace("/", "__").replace(" ", "_")


def _save(figure, path):
    """Save a matplotlib figure as PNG atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    figure.savefig(temporary, format="png", dpi=100)
    os.replace(temporary, path)
    return path


def plot_ranks(rows, path):
    """Horizontal bars per layer: full rank, signal rank, rank in the student. `rows`: (layer, full, signal, kept, ...)."""
    from matplotlib.figure import Figure

    names = [r[0] for r in rows]
    y = np.arange(len(rows))
    figure = Figure(figsize=(7.5, max(2.8, 0.45 * len(rows) + 1.6)))
    axes = figure.add_subplot()
    height = 0.27
    series = (("full rank (before)", 1, "tab:gray"), ("signal rank (MP)", 2, "tab:orange"),
              ("rank in the student", 3, "tab:blue"))
    for offset, (label, column, color) in zip((-height, 0.0, height), series):
        values = [np.nan if r[column] is None else r[column] for r in rows]
        axes.barh(y + offset, values, height=height, color=color, label=label)
    axes.set_yticks(y, names)
    axes.invert_yaxis()
    axes.set_xlabel("rank")
    axes.set_title("rank per layer")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize="small", frameon=False)
    figure.tight_layout()
    return _save(figure, path)


def plot_compared(panels, path):
    """Teacher vs student bars, one panel per measure. `panels`: (title, teacher value, student value, unit)."""
    from matplotlib.figure import Figure

    panels = [p for p in panels if p[1] is not None and p[2] is not None]
    figure = Figure(figsize=(2.3 * max(len(panels), 1) + 0.6, 3.4))
    for index, (title, teacher, student, unit) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        bars = axes.bar(["teacher", "student"], [teacher, student], color=["tab:gray", "tab:blue"])
        axes.bar_label(bars, labels=[_short_number(teacher, unit), _short_number(student, unit)], fontsize="small")
        axes.set_title(title, fontsize="medium")
        axes.set_ylim(0, 1.18 * max(teacher, student, 1e-12))
        axes.set_yticks([])  # the bars carry their values
    figure.tight_layout()
    return _save(figure, path)


def _short_number(value, unit):
    if unit == "%":
        return f"{value:.2f}%"
    if unit == "ms":
        return f"{value:.3g} ms"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _fmt(value, digits=2, suffix=""):
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def _change(teacher, student, relative=True):
    if teacher is None or student is None:
        return "-"
    if relative:
        return f"{100 * (student / teacher - 1):+.1f}%" if teacher else "-"
    return f"{student - teacher:+.2f} pts"


def _rank_rows(report, spectra):
    """`(layer, full rank, signal rank, rank in the student, that rank as the table shows it)` per analysed layer."""
    from rmtkd_tf.report import rank_text

    layers = report.get("layers", {})
    rows = []
    for path, decision in spectra.decisions.items():
        full = min(decision.fan_in, decision.units) if getattr(decision, "fan_in", None) else decision.dim
        entry = layers.get(path, {"rank": full})
        rows.append((path, full, decision.rule_rank, entry["rank"], rank_text(entry)))
    return rows


def write_run_report(output_dir, report, spectra=None, log=None):
    """Write `report.md` and its plots into `output_dir`; returns the path of `report.md`.

    `log` (a `rmtkd_tf.progress.RunLog`) shows the progress of the spectrum plots, one per layer.
    """
    from rmtkd_tf.progress import progress_of
    from rmtkd_tf.spectral import plot_spectrum
    from rmtkd_tf.spectral.noise import NoiseFit

    output_dir = Path(output_dir)
    plots = output_dir / PLOTS_DIR
    teacher, student = report["teacher"], report["student"]
    export = report.get("export") or {}
    latency = report.get("latency") or {}
    size = {name: (export.get(name) or {}).get("size_bytes") for name in ("teacher", "student")}
    rows = [
        ("parameters", _fmt(teacher["params"]), _fmt(student["params"]), _change(teacher["params"], student["params"])),
        ("FLOPs per example", _fmt(teacher["flops"]), _fmt(student["flops"]), _change(teacher["flops"], student["flops"])),
        ("validation accuracy", _fmt(teacher["val_accuracy"], suffix="%"), _fmt(student["val_accuracy"], suffix="%"),
         _change(teacher["val_accuracy"], student["val_accuracy"], relative=False)),
        ("test accuracy", _fmt(teacher["test_accuracy"], suffix="%"), _fmt(student["test_accuracy"], suffix="%"),
         _change(teacher["test_accuracy"], student["test_accuracy"], relative=False)),
    ]
    if size["teacher"] and size["student"]:
        rows.append((f"`.tflite` size ({export['student'].get('precision')})", f"{size['teacher'] / 1024:,.0f} KiB",
                     f"{size['student'] / 1024:,.0f} KiB", _change(size["teacher"], size["student"])))
    if latency:
        rows.append(("`.tflite` latency (median)", f"{latency['teacher_ms']:.3g} ms", f"{latency['student_ms']:.3g} ms",
                     _change(latency["teacher_ms"], latency["student_ms"])))
    lines = ["# rmtkd-tf compress report", ""]
    lines += [f"- model: `{report.get('model', '-')}`", f"- data: {report.get('data', '-')}"]
    validation = report.get("validation") or {}
    if validation:
        lines.append(f"- validation: {validation.get('examples')} examples ({validation.get('origin')})")
    lines.append(f"- schedule: {report.get('schedule')}"
                 + (f", cut chosen by {report['cut_chosen_by']}" if report.get("cut_chosen_by") else ""))
    lines.append(f"- stopped: {report.get('stopped')}")
    if report.get("compression_wall_s") is not None:
        lines.append(f"- compression took {report['compression_wall_s']} s")
    lines += ["", "| | teacher | student | change |", "|---|---:|---:|---:|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    if latency:
        lines += ["", f"Latency: LiteRT on this host, {latency['threads']} thread(s), {latency['runs']} runs each, "
                      f"teacher and student interleaved in one process (`rmtkd_tf.bench.host.compare_tflite`)."]
    compared = plot_compared([
        ("parameters", teacher["params"], student["params"], ""),
        ("FLOPs / example", teacher["flops"], student["flops"], ""),
        ("test accuracy" if teacher["test_accuracy"] is not None else "val accuracy",
         teacher["test_accuracy"] if teacher["test_accuracy"] is not None else teacher["val_accuracy"],
         student["test_accuracy"] if teacher["test_accuracy"] is not None else student["val_accuracy"], "%"),
        ("latency (median)", latency.get("teacher_ms"), latency.get("student_ms"), "ms"),
    ], plots / "compared.png")
    lines += ["", f"![teacher vs student]({PLOTS_DIR}/{compared.name})", ""]

    spectra = spectra or SpectrumRecorder()
    rank_rows = _rank_rows(report, spectra)
    if rank_rows:
        ranks = plot_ranks(rank_rows, plots / "ranks.png")
        lines += ["## Ranks", "", f"![rank per layer]({PLOTS_DIR}/{ranks.name})", "",
                  "| layer | full rank | signal rank | student rank |", "|---|---:|---:|---:|"]
        lines += [f"| {path} | {full} | {'-' if signal is None else signal} | {kept} |"
                  for path, full, signal, _, kept in rank_rows]
        lines.append("")
    spectrum_lines = []
    plotted = {path: decision for path, decision in spectra.decisions.items()
               if getattr(decision, "eigenvalues", None) is not None and np.max(decision.eigenvalues) > 0}
    with progress_of(log, "plotting spectra", len(plotted), "layer") as bar:
        for path, decision in plotted.items():
            fit = NoiseFit.from_dict(decision.noise) if decision.noise else None
            target = plots / f"spectrum_{_plot_file(path)}.png"
            temporary = target.with_name(f".{target.name}.tmp")
            plot_spectrum(decision.eigenvalues, fit, decision.rule_rank,
                          f"{path} (d={decision.dim}, n={decision.n_samples}, n_eff={decision.n_effective})", temporary)
            os.replace(temporary, target)
            spectrum_lines += [f"### {path}", "", f"![{path} spectrum]({PLOTS_DIR}/{target.name})", ""]
            bar.update()
    if spectrum_lines:
        lines += ["## Spectra", "",
                  "Covariance eigenvalues of each layer's pre-activations on the calibration split, the fitted "
                  "Marchenko–Pastur noise law and its edge λ+ (eigenvalues above it are signal). "
                  "\"no MP bulk\": almost every direction is signal, and only the edge is drawn.", ""]
        lines += spectrum_lines
    path = output_dir / REPORT_NAME
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path
