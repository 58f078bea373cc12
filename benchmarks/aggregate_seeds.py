"""Mean ± sd over seeds of `compare_methods.py` runs, and paired differences between methods.

    python benchmarks/aggregate_seeds.py benchmarks/results/compare_cifar10_cnn_schedules_seed{0,1,2}.json \
        --name cifar10_cnn_schedules --write-markdown

Every run must use the same command apart from `--seed` and `--name` (checked). For each method: params,
FLOP ratio, test accuracy and its change against the teacher, fp32 / int8 speed-up, distillation epochs and
compression wall time, as mean ± sample sd over the seeds. For each pair of methods: the per-seed
difference of test accuracy (same seed = same split, same calibration and validation examples, same test
examples), mean ± sd. Writes `benchmarks/results/<name>_seeds.json`; `--write-markdown` puts the table
between the `<!-- seeds:<name>:begin -->` / `<!-- seeds:<name>:end -->` markers of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _command_without_seed(command):
    return re.sub(r"--(seed|name) \S+", "", command).split()


def load_runs(paths):
    runs = [json.loads(Path(path).read_text()) for path in paths]
    commands = {tuple(_command_without_seed(run["command"])) for run in runs}
    if len(commands) != 1:
        raise SystemExit("error: the runs differ in more than --seed/--name; they cannot be pooled")
    return runs


def _mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(runs):
    """`{"methods": {name: {field: [mean, sd]}}, "pairs": {...}, "teacher": {...}, "seeds": [...]}`."""
    seeds = [run["settings"]["seed"] if "seed" in run["settings"] else None for run in runs]
    by_method = {}
    for run in runs:
        teacher = run["teacher"]
        for method in run["methods"]:
            entry = by_method.setdefault(method["method"], {key: [] for key in FIELDS})
            entry["params"].append(method["params"])
            entry["flop_ratio"].append(method["flops"] / teacher["flops"])
            entry["test_accuracy"].append(method["test_accuracy"])
            entry["test_change"].append(method["test_accuracy"] - teacher["test_accuracy"])
            entry["fp32_speedup"].append(method["latency"]["fp32"]["speedup_vs_teacher"])
            entry["int8_speedup"].append(method["latency"]["int8"]["speedup_vs_teacher"])
            entry["epochs"].append(method["finetune_epochs"])
            entry["wall_min"].append(method["compression_wall_s"] / 60.0)
    methods = {name: {key: _mean_sd(values) for key, values in entry.items()} for name, entry in by_method.items()}
    names = list(by_method)
    pairs = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            a_acc, b_acc = by_method[a]["test_accuracy"], by_method[b]["test_accuracy"]
            if len(a_acc) == len(b_acc) == len(runs):
                differences = [x - y for x, y in zip(a_acc, b_acc)]
                pairs[f"{a} - {b}"] = {"per_seed": differences, "mean_sd": _mean_sd(differences)}
    teacher = _mean_sd([run["teacher"]["test_accuracy"] for run in runs])
    return {"seeds": seeds, "teacher_test_accuracy": teacher, "methods": methods, "pairs": pairs,
            "command": runs[0]["command"], "data": runs[0]["data"]}


FIELDS = ("params", "flop_ratio", "test_accuracy", "test_change", "fp32_speedup", "int8_speedup", "epochs", "wall_min")


def _pm(pair, spec):
    mean, sd = pair
    return "-" if mean is None else f"{format(mean, spec)} ± {format(sd, spec.lstrip('+'))}"


def markdown(summary):
    rows = ["| method | params | FLOP ratio | test acc | Δ vs teacher (pts) | fp32 speed-up | int8 speed-up | "
            "distillation epochs | compress wall (min) |", "|---" * 9 + "|"]
    for name, m in summary["methods"].items():
        rows.append(f"| {name} | {_pm(m['params'], ',.0f')} | {_pm(m['flop_ratio'], '.3f')} | "
                    f"{_pm(m['test_accuracy'], '.2f')} | {_pm(m['test_change'], '+.2f')} | "
                    f"{_pm(m['fp32_speedup'], '.2f')}x | {_pm(m['int8_speedup'], '.2f')}x | "
                    f"{_pm(m['epochs'], '.1f')} | {_pm(m['wall_min'], '.1f')} |")
    rows.append("")
    rows.append("Paired test-accuracy differences (same seed, same split and test examples), mean ± sd over "
                f"seeds {summary['seeds']}:")
    rows.append("")
    rows.append("| pair | per seed (pts) | mean ± sd |")
    rows.append("|---|---|---|")
    for pair, values in summary["pairs"].items():
        per_seed = ", ".join(f"{v:+.2f}" for v in values["per_seed"])
        rows.append(f"| {pair} | {per_seed} | {_pm(values['mean_sd'], '+.2f')} |")
    teacher = summary["teacher_test_accuracy"]
    rows.append("")
    rows.append(f"Teacher test accuracy {_pm(teacher, '.2f')} ({summary['data']}). Command (per seed): "
                f"`{summary['command']}`.")
    return "\n".join(rows)


def write_markdown_section(text, path, name):
    begin, end = f"<!-- seeds:{name}:begin -->", f"<!-- seeds:{name}:end -->"
    content = path.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"error: {path} has no {begin} / {end} markers")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="compare_methods JSON files, one per seed")
    parser.add_argument("--name", required=True)
    parser.add_argument("--write-markdown", action="store_true")
    args = parser.parse_args(argv)
    summary = aggregate(load_runs(args.runs))
    summary["runs"] = [str(path) for path in args.runs]
    out = HERE / "results" / f"{args.name}_seeds.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary)
    print(text)
    if args.write_markdown:
        write_markdown_section(text, HERE.parent / "BENCHMARKS.md", args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
