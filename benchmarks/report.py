"""`python -m benchmarks report`: BENCHMARKS.md's generated sections from the committed results.

    python -m benchmarks report                                        # print every section BENCHMARKS.md has
    python -m benchmarks report --task configs/cifar10_mlp_seeds --write   # aggregate the seeds, write the section

Per task kind: `compress` tasks share the results table (every `compress` result, `<!-- results:... -->`);
a `compare` task is its own section (`<!-- compare:compare_<name>:... -->`, plot redrawn beside the JSON);
a `compare` task with `seeds` is aggregated first (mean ± sample sd per method over the per-seed results,
paired per-seed differences between methods; the runs must differ only in `--seed`/`--name`) into
`results/<task>.json` and rendered as `<!-- seeds:<name>:... -->`. Other kinds have no generated section.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from benchmarks import render
from benchmarks.driver import HERE, load_config, task_configs
from benchmarks.schema import SCHEMA_VERSION, read_result, read_results

ROOT = HERE.parent
FIELDS = ("params", "flop_ratio", "test_accuracy", "test_change", "fp32_speedup", "int8_speedup", "epochs", "wall_min")


def compress_results(folder=HERE / "results"):
    """Every `compress` result, in file order (the rows of the results table)."""
    return [r for r in read_results(folder).values() if r["kind"] == "compress"]


def paper_rows(folder=HERE / "results"):
    """`[(paper, result, quantize_or_None)]` of every `compress` task whose config gives the paper's figure (`paper`).

    A task's int8-class measurements are `results/quantize_<name>.json` when present.
    """
    rows = []
    for stem, config in task_configs().items():
        if config["kind"] != "compress" or not config.get("paper") or not (folder / f"{stem}.json").is_file():
            continue
        quantize = folder / f"quantize_{stem}.json"
        rows.append((config["paper"], read_result(folder / f"{stem}.json"),
                     read_result(quantize) if quantize.is_file() else None))
    return rows


def _command_without_seed(command):
    return re.sub(r"--(seed|name) \S+", "", command).split()


def _mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(runs):
    """The `seeds` summary of per-seed `compare` results (same command apart from `--seed` / `--name`)."""
    if len({tuple(_command_without_seed(run["command"])) for run in runs}) != 1:
        raise SystemExit("error: the runs differ in more than --seed/--name; they cannot be pooled")
    seeds = [run["settings"].get("seed") for run in runs]
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
    summary = {"seeds": seeds, "teacher_test_accuracy": _mean_sd([run["teacher"]["test_accuracy"] for run in runs]),
               "methods": methods, "pairs": pairs, "command": runs[0]["command"], "data": runs[0]["data"]}
    if runs[0].get("command_as_run"):
        summary["command_as_run"] = runs[0]["command_as_run"]
    if runs[0].get("timed_seq_len"):  # text models timed at another length than they run at
        summary["timed_seq_len"] = runs[0]["timed_seq_len"]
    return summary


def seed_result_paths(config):
    """The per-seed `compare` results of a task with `seeds`."""
    return [HERE / "results" / f"compare_{config['name'].format(seed=seed)}.json" for seed in config["seeds"]]


def sections(config, write=False):
    """`[(kind, name, text)]`: the BENCHMARKS.md sections task `config` renders.

    With `write`, a seeds task's summary is written to `results/<task>.json` and a comparison's plot redrawn.
    """
    from rmtkd_tf.io import write_json

    stem = Path(config["_path"]).stem
    if config["kind"] == "compress":
        found = [("results", None, render.results_table(compress_results()))]
        if config.get("paper"):
            found.append(("paper", None, render.paper_table(paper_rows())))
        return found
    if config["kind"] != "compare":
        return []
    if config.get("seeds"):
        paths = seed_result_paths(config)
        summary = aggregate([read_result(path) for path in paths])
        name = stem.removesuffix("_seeds")
        out = {"schema_version": SCHEMA_VERSION, "kind": "seeds", "name": name, **summary,
               "runs": [str(path.relative_to(ROOT)) for path in paths]}
        if write:
            write_json(HERE / "results" / f"{stem}.json", out)
        return [("seeds", name, render.seeds_table(out))]
    result = read_result(HERE / "results" / f"{stem}.json")
    if write:
        from benchmarks.plot import plot_accuracy_vs_params

        plot_accuracy_vs_params(result, HERE / "results" / f"{stem}.png")
    return [("compare", result["name"], render.compare_table(result))]


def run(args):
    configs = [load_config(args.task)] if args.task else list(task_configs().values())
    done = set()
    for config in configs:
        for kind, name, text in sections(config, write=args.write):
            if (kind, name) in done:
                continue
            present = render.section(kind, name) is not None
            if not args.task and not present:
                continue  # `report` alone re-renders the sections BENCHMARKS.md has
            done.add((kind, name))
            begin, _ = render.markers(kind, name)
            print(f"{begin}\n{text}\n")
            if args.write:
                render.write_section(text, kind, name)
    if args.write:
        print(f"updated {len(done)} section(s) of {render.BENCHMARKS_MD}")
