"""`python -m benchmarks SUBCOMMAND --task configs/NAME [flags]`: every benchmark of this project from one driver.

Subcommands:

- `compress`: RMT-KD on a teacher, every export (fp32 / fp16 / int8) verified, latency against the teacher
  (`results/<name>.json`, the rows of BENCHMARKS.md's results table);
- `compare`: RMT-KD against the alternatives (SVD, narrow student, pruning, other rules) on one teacher, split
  and budget (`results/compare_<name>.json` and its plot);
- `floor`: the latency a BERT keeps whatever the ranks (`results/latency_floor_<name>.json`);
- `report`: re-render BENCHMARKS.md sections from the committed results (and aggregate seeds);
- `train {cifar10,bert,keras-hub-encoder,teacher-split,gpu-prepare,gpu-torch,gpu-import}`: the teachers and their data split;
- `arm64`: run exported models on aarch64 under qemu-user (`benchmarks/arm64_qemu/README.md`).

A task config (`benchmarks/configs/NAME.json`, one per committed result) holds what the command line would:
`kind` (the subcommand), a `description`, and option values under their option names with `_` for `-`
(`"test_limit": 872`). Flags on the command line override the config. A `name` may hold `{seed}`. Keys
that are not options: `seeds` (a `compare` task run once per seed, aggregated by `report`),
`differs_from_as_run` (settings that differ on purpose from the command the result was first produced with,
each with the reason), `args` (`arm64`: its arguments), `paper` (`compress`: the paper's figure for this row,
`{"row", "param_reduction", "accuracy_drop"}`, rendered beside ours by `report`).

Run from the repository root (`python -m benchmarks ...`); every result records the command that made it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
ORDERS = ("shallow-to-deep", "block-by-block", "all-at-once")
METHODS = (
    "rmtkd-mp", "rmtkd-mp-bn", "rmtkd-iterative", "rmtkd-energy", "rmtkd-gavish-donoho", "svd-rmtkd-ranks",
    "svd-uniform-rank",
    "dense-small-kd", "magnitude-pruning",
)
TRAINERS = {
    "cifar10": "benchmarks.train_cifar10",
    "bert": "benchmarks.train_bert",
    "keras-hub-encoder": "benchmarks.train_encoder",
    "teacher-split": "benchmarks.teacher_split",
    "gpu-prepare": "benchmarks.gpu_teachers.prepare",
    "gpu-torch": "benchmarks.gpu_teachers.train_torch",
    "gpu-import": "benchmarks.gpu_teachers.import_keras",
}
CONFIG_ONLY_KEYS = {"kind", "description", "seeds", "differs_from_as_run", "args", "paper"}


class ConfigError(ValueError):
    """A task config that cannot be used (missing, unreadable, unknown keys, wrong types)."""


def resolve_task_path(task):
    """`configs/NAME`, `NAME` or a path (with or without `.json`) to the config file."""
    candidates = [Path(task), Path(task + ".json"), HERE / task, HERE / (task + ".json"),
                  CONFIGS / task, CONFIGS / (task + ".json")]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(f"no task config {task!r} (looked in {CONFIGS})")


def load_config(task):
    """The task config `task` as a dict (with `_path`, its file)."""
    path = resolve_task_path(task)
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict) or "kind" not in config:
        raise ConfigError(f"{path}: a task config is a JSON object with a 'kind'")
    config["_path"] = path
    return config


def task_configs():
    """Every task config in `benchmarks/configs/`, by stem."""
    return {path.stem: load_config(str(path)) for path in sorted(CONFIGS.glob("*.json"))}


def _positive(kind):
    def check(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    check.__name__ = kind.__name__
    return check


def _add_task(parser):
    parser.add_argument("--task", help="task config: configs/NAME (benchmarks/configs/NAME.json); flags override it")


def _add_run_options(parser, *, max_steps, final_epochs, runs):
    """The options `compress` and `compare` share (RMT-KD's loop, data split, timing, outputs)."""
    _add_task(parser)
    parser.add_argument("--teacher", "--model", dest="teacher", help="the trained Keras model (.keras)")
    parser.add_argument("--data", help="data spec for rmtkd_tf.data.load_data")
    parser.add_argument("--name", help="result name (default: the teacher's file stem); may hold {seed}")
    parser.add_argument("--limit", type=_positive(int), help="examples per split (train and test), class-balanced")
    parser.add_argument("--test-limit", type=_positive(int), help="score on the first this many test examples")
    parser.add_argument("--calibration-fraction", type=float, default=0.1,
                        help="of the training split, for RMT-KD's statistics and int8 calibration")
    parser.add_argument("--validation-fraction", type=float, default=0.1,
                        help="of the training split, for the max-drop check and keep-better rules (unless the data "
                             "has its own validation split)")
    parser.add_argument("--validation", default="auto",
                        help="validation split: auto, train, test-split or a data spec (rmtkd_tf.pipeline.load_task)")
    parser.add_argument("--seq-len", type=_positive(int), help="text models: tokens per example")
    parser.add_argument("--order", default="shallow-to-deep", choices=ORDERS, help="iterative loop order")
    parser.add_argument("--tau", type=float, default=0.5, help="MP rule's tau")
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--schedule", default="budgeted", choices=("budgeted", "iterative"),
                        help="RMT-KD's schedule (the package default: budgeted)")
    parser.add_argument("--target-params", type=float, help="cut to this fraction of the parameters")
    parser.add_argument("--target-flops", type=float, help="budgeted: cut to this fraction of the FLOPs")
    parser.add_argument("--epochs", type=int, default=3, help="budgeted: distillation epochs of the final student")
    parser.add_argument("--search-tolerance", type=float, default=5.0,
                        help="budgeted without a target: deepest cut within this many validation points")
    parser.add_argument("--epochs-per-step", type=_positive(int), default=1)
    parser.add_argument("--max-steps", type=_positive(int), default=max_steps)
    parser.add_argument("--final-epochs", type=int, default=final_epochs)
    parser.add_argument("--batch-size", type=_positive(int), default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--distillation-learning-rate", type=float, default=1e-3,
                        help="budgeted and the one-shot baselines: peak learning rate (cosine decay to 0)")
    parser.add_argument("--feature-weight", type=float, default=0.0,
                        help="RMT-KD: weight of intermediate-feature distillation (the factorized layers' outputs "
                             "matched to the teacher's; README 'What it does', step 6)")
    parser.add_argument("--recalibrate-bn", action="store_true",
                        help="RMT-KD (budgeted): re-estimate the cut student's BatchNorm statistics before scoring and "
                             "distilling it. The package does by default (--recalibrate-bn); here it is off unless "
                             "given, so that the results committed before it existed still reproduce")
    parser.add_argument("--runs", type=_positive(int), default=runs, help="timed invocations per model and precision")
    parser.add_argument("--latency-seq-len", type=_positive(int),
                        help="text models: time teacher and students rebuilt at this many tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="result JSON (default benchmarks/results/...)")
    parser.add_argument("--run-dir", help="work folder (default benchmarks/runs/...; not committed)")
    parser.add_argument("--write-markdown", action="store_true", help="also write the section into BENCHMARKS.md")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    compress = sub.add_parser("compress", help="RMT-KD on one teacher: exports, accuracy, latency")
    _add_run_options(compress, max_steps=12, final_epochs=2, runs=300)
    compress.add_argument("--rank-rule", default="mp", choices=("mp", "energy", "gavish-donoho"))
    compress.add_argument("--energy-fraction", type=float, default=0.9, help="energy rule: variance kept")

    compare = sub.add_parser("compare", help="RMT-KD against the alternatives, same teacher, split and budget")
    _add_run_options(compare, max_steps=7, final_epochs=1, runs=200)
    compare.add_argument("--methods", default=",".join(METHODS),
                         help=f"comma-separated subset of {','.join(METHODS)} (rmtkd-mp always runs first)")
    compare.add_argument("--energy-fraction", type=float, default=0.9)
    compare.add_argument("--match-params", default="auto", choices=("auto", "model", "encoder"),
                         help="the count dense-small-kd is sized to (auto: encoder for a transformer teacher)")
    compare.add_argument("--scratch-learning-rate", type=float, default=1e-3)

    floor = sub.add_parser("floor", help="a BERT's latency floor: every encoder part at rank 1")
    _add_task(floor)
    floor.add_argument("--teacher", help="a BERT classifier (.keras)")
    floor.add_argument("--data", help="data spec (a real test example is the timed input)")
    floor.add_argument("--students", nargs="*", default=[], help="compressed .keras students of this teacher")
    floor.add_argument("--runs", type=_positive(int), default=200)
    floor.add_argument("--name")
    floor.add_argument("--out", help="result JSON (default benchmarks/results/latency_floor_<name>.json)")

    report = sub.add_parser("report", help="render BENCHMARKS.md sections from benchmarks/results")
    _add_task(report)
    report.add_argument("--write", action="store_true",
                        help="write the sections into BENCHMARKS.md (and the seeds summaries and plots beside the results)")

    train = sub.add_parser("train", help="train a teacher or write its data split (the module's own flags follow)")
    train.add_argument("what", choices=sorted(TRAINERS))
    train.add_argument("args", nargs=argparse.REMAINDER)

    arm64 = sub.add_parser("arm64", help="run .tflite files on aarch64 under qemu-user (needs root)")
    _add_task(arm64)
    arm64.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _subparser(parser, command):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def _check_value(action, key, value, path):
    if value is None:
        return
    kind = getattr(action.type, "__name__", None)
    accepted = {"int": int, "float": (int, float)}.get(kind)  # JSON numbers; a float option takes 1 as well as 1.0
    if action.nargs == "*":
        if not isinstance(value, list):
            raise ConfigError(f"{path}: {key} must be a list")
        return
    if accepted is not None:
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise ConfigError(f"{path}: {key} must be a number ({kind}), got {value!r}")
        try:
            action.type(str(value))
        except (argparse.ArgumentTypeError, ValueError) as error:
            raise ConfigError(f"{path}: invalid {key} {value!r} ({error})") from None
    elif isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {key} must be true or false")
    elif not isinstance(value, str):
        raise ConfigError(f"{path}: {key} must be a string, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{path}: {key} must be one of {', '.join(map(str, action.choices))}, got {value!r}")


def config_defaults(subparser, config, command):
    """The option values of `config` for `subparser`, checked: unknown keys, types and choices are errors."""
    path = config["_path"]
    if config["kind"] != command:
        raise ConfigError(f"{path} is a '{config['kind']}' task, not '{command}'")
    actions = {a.dest: a for a in subparser._actions if a.dest not in ("help", "task")}
    defaults = {}
    for key, value in config.items():
        if key.startswith("_") or key in CONFIG_ONLY_KEYS:
            continue
        if key not in actions:
            raise ConfigError(f"{path}: unknown option {key!r} for '{command}'")
        _check_value(actions[key], key, value, path)
        defaults[key] = value
    return defaults


def parse(argv):
    """The command line resolved against its task config (flags win); `args.config` is that config or None.

    Errors (bad flags, a bad or missing config, a missing teacher/data) exit with status 2 and one line, like argparse.

    >>> args = parse(["compare", "--task", "configs/cifar10_mlp_seeds", "--seed", "1"])
    >>> args.name, args.limit, args.epochs, args.config["_path"].name
    ('cifar10_mlp_seed1', 5000, 6, 'cifar10_mlp_seeds.json')
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    config = None
    if getattr(args, "task", None):
        subparser = _subparser(parser, args.command)
        try:
            config = load_config(args.task)
            # `report` renders any task's results; the others take the task's settings as their defaults.
            defaults = {} if args.command == "report" else config_defaults(subparser, config, args.command)
        except ConfigError as error:
            subparser.error(str(error))
        subparser.set_defaults(**defaults)
        args = parser.parse_args(argv)
        if args.command == "arm64":
            args.args = list(config.get("args", [])) + list(args.args)
    if args.command in ("compress", "compare", "floor"):
        subparser = _subparser(parser, args.command)
        for option in ("teacher", "data"):
            if not getattr(args, option):
                subparser.error(f"--{option} is required (on the command line or in the task config)")
    if args.command in ("compress", "compare"):
        _check_run(_subparser(parser, args.command), args)
    args.seeds = (config or {}).get("seeds")
    args.config = config
    return args


def _check_run(subparser, args):
    if getattr(args, "methods", None) is not None:
        unknown = sorted(set(args.methods.split(",")) - set(METHODS))
        if unknown:
            subparser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if args.final_epochs < 0 or args.epochs < 1:
        subparser.error("--final-epochs must be >= 0 and --epochs >= 1")
    if args.name and "{" in args.name:
        try:
            args.name = args.name.format(seed=args.seed)
        except (KeyError, IndexError, ValueError):
            subparser.error(f"--name {args.name!r}: only {{seed}} may be substituted")


def module_command(module, argv):
    """`python -m <module>` and `argv`, quoted as a shell would need: the command line a result records
    (this driver's and the one-off tools' alike)."""
    return f"python -m {module} " + shlex.join(argv)


def command_line(argv):
    """The command that reproduces this run, as recorded in results."""
    return module_command("benchmarks", argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    args.command_line = command_line(argv)
    if args.command == "train":
        import importlib

        sys.argv[0] = f"python -m benchmarks train {args.what}"  # the usage line of the module's own parser
        module = importlib.import_module(TRAINERS[args.what])
        module.main(args.args)  # a trainer may return its record: not an exit status
        return 0
    if args.command == "arm64":
        from benchmarks.arm64_qemu import run as arm64_run

        sys.argv[0] = "python -m benchmarks arm64"

        return arm64_run.main(args.args, command=args.command_line)

    from benchmarks.schema import ResultError
    from rmtkd_tf.errors import RMTKDError

    try:
        if args.command in ("compress", "compare"):
            from benchmarks.compare import run

            run(args, kind=args.command)
        elif args.command == "floor":
            from benchmarks.floor import run

            run(args)
        elif args.command == "report":
            from benchmarks.report import run

            run(args)
    except (RMTKDError, ResultError) as error:  # bad input (data, lengths, model, result): one line
        raise SystemExit(f"error: {error}") from None
    return 0
