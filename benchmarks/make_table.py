"""Regenerate the results table of BENCHMARKS.md from benchmarks/results/*.json.

    python benchmarks/make_table.py            # prints the table (paste between the markers)
    python benchmarks/make_table.py --write    # rewrites the block between the markers in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def _acc(x):
    return "-" if x is None else f"{x:.2f}"


def _verification_acc(export):
    v = export.get("verification") or {}
    acc = v.get("tflite_accuracy")
    return None if acc is None else 100 * acc if acc <= 1 else acc


def row(result):
    c = result["compression"]
    t, s = c["teacher"], c["student"]
    e = result["exports"]
    lat = result["host_latency"]
    fp32_ratio = lat["fp32"]["ratios"]["median_latency_a_over_b"]
    int8_ratio = lat["int8"]["ratios"]["median_latency_a_over_b"]
    flop_ratio = t["flops"] / s["flops"] if s["flops"] else None
    size_ratio = e["teacher_fp32"]["size_bytes"] / e["student_int8"]["size_bytes"]
    return [
        result["name"],
        f"{t['params']:,}",
        f"{s['params']:,}",
        _pct(c["param_reduction"]),
        _pct(c["flop_reduction"]),
        _acc(t["test_accuracy"]),
        _acc(s["test_accuracy"]),
        f"{s['test_accuracy'] - t['test_accuracy']:+.2f}",
        f"{_acc(_verification_acc(e['student_fp32']))} / {_acc(_verification_acc(e['student_int8']))}",
        f"{e['teacher_fp32']['size_bytes'] / 1024:.0f} / {e['student_fp32']['size_bytes'] / 1024:.0f} / {e['student_int8']['size_bytes'] / 1024:.0f}",
        f"{size_ratio:.1f}x",
        f"{fp32_ratio:.2f}x" if fp32_ratio else "-",
        f"{int8_ratio:.2f}x" if int8_ratio else "-",
        f"{fp32_ratio / flop_ratio:.2f}" if fp32_ratio and flop_ratio else "-",
        f"{c.get('compression_wall_s', 0) / 60:.1f}",
    ]


HEADER = [
    "task", "teacher params", "student params", "param red.", "FLOP red.", "teacher test acc", "student test acc",
    "Δ acc (pts)", "student .tflite acc fp32 / int8", "KiB: teacher fp32 / student fp32 / student int8",
    "teacher fp32 ÷ student int8 size", "fp32 speed-up (batch 1)", "int8 speed-up", "speed-up ÷ FLOP ratio",
    "compress wall (min)",
]


def table():
    # Only single-method compression runs (arm64 and method-comparison records have other layouts).
    results = [json.loads(p.read_text()) for p in sorted((HERE / "results").glob("*.json"))]
    results = [r for r in results if "compression" in r and "exports" in r]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in results]
    text_results = [r for r in results if (r.get("encoder_params") or {}).get("teacher")]
    if text_results:
        lines += ["", "Transformer encoders (issue #5's bar: >= 80% fewer encoder parameters, <= 1.0 point, "
                  ">= 3x faster fp32 `.tflite` at batch 1, 128 tokens):", ""]
        lines.append("| task | encoder params teacher / student | encoder param red. | Δ acc (pts) | timed at (tokens) "
                     "| fp32 speed-up | int8 speed-up | FLOP ratio | fp32 speed-up ÷ FLOP ratio |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in text_results:
            enc, c, lat = r["encoder_params"], r["compression"], r["host_latency"]
            seq = r.get("latency_seq_len") or "model's"
            fp32, int8 = lat["fp32"], lat["int8"]
            lines.append(
                f"| {r['name']} | {enc['teacher']:,} / {enc['student']:,} | {_pct(1 - enc['student'] / enc['teacher'])} | "
                f"{c['student']['test_accuracy'] - c['teacher']['test_accuracy']:+.2f} | {seq} | "
                f"{fp32['ratios']['median_latency_a_over_b']:.2f}x | {int8['ratios']['median_latency_a_over_b']:.2f}x | "
                f"{fp32.get('flop_ratio', 0):.2f}x | {fp32.get('speedup_over_flop_ratio', 0):.2f} |"
            )
    lines += ["", "TFLite exports (accuracy on the test split; parity = Keras vs `.tflite` on the same inputs):", ""]
    lines.append("| task | model | precision | KiB | .tflite acc | top-1 agreement | max abs err | Flex ops |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in results:
        for key, export in r["exports"].items():
            who, precision = key.split("_", 1)
            v = export.get("verification") or {}
            err = v.get("max_abs_err")
            lines.append(
                f"| {r['name']} | {who} | {precision} | {export['size_bytes'] / 1024:.0f} | "
                f"{_acc(_verification_acc(export))} | {v.get('top1_agreement', 0):.4f} | "
                f"{'-' if err is None else f'{err:.2e}'} | {len(export.get('flex_ops') or [])} |"
            )
    lines.append("")
    lines.append("Commands that produced each row:")
    lines.append("")
    lines += [f"- `{r['name']}`: `{r['command']}`" for r in results]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    text = table()
    if not args.write:
        print(text)
        return
    path = HERE.parent / "BENCHMARKS.md"
    doc = path.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    path.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])


if __name__ == "__main__":
    main()
