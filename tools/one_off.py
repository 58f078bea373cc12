"""What the one-off tools share: their teacher/student arguments, the checks on their paths, the teacher's task
and the command line they record.

Imports nothing heavy at module level (TensorFlow loads only in `load_teacher_task`), so a tool can still set
its environment before the first TensorFlow import.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def tool_command(module: str, argv: list[str]) -> str:
    """The command line a result records: `python -m <module>` and `argv`, quoted as a shell would need
    (the driver's own rule, so a tool's record and a driver run's read alike)."""
    from benchmarks.driver import module_command

    return module_command(module, argv)


def require_existing(*paths: Path) -> None:
    """Exit with an error naming the first of `paths` that does not exist."""
    for path in paths:
        if not Path(path).exists():
            raise SystemExit(f"error: {path} does not exist")


def refuse_existing_out(path: Path) -> None:
    """Exit with an error when `path`, a result to write, already exists (a one-off never overwrites)."""
    if Path(path).exists():
        raise SystemExit(f"error: {path} exists; remove it or choose another --out")


def add_teacher_student_arguments(parser: argparse.ArgumentParser) -> None:
    """`--teacher`, `--student` (.keras), `--data`, `--limit`, `--seed` and `--validation`: what
    `load_teacher_task` reads."""
    parser.add_argument("--teacher", required=True, type=Path)
    parser.add_argument("--student", required=True, type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, help="the --limit the compress run used")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation", default="auto",
                        help="the --validation the compress run used (test-split: the test figures are on the "
                             "half of the test split it did not validate on)")


def parse_teacher_student(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`parser`'s arguments (with `add_teacher_student_arguments` and `--out`), the two models checked to
    exist and `--out` not to."""
    args = parser.parse_args(argv)
    require_existing(args.teacher, args.student)
    refuse_existing_out(args.out)
    return args


def load_teacher_task(args: argparse.Namespace):
    """The teacher's `load_task` split as `python -m benchmarks compress` drew it (same limit and seed), quietly."""
    from rmtkd_tf.pipeline import load_task

    return load_task(str(args.teacher), args.data, limit=args.limit, seed=args.seed,
                     validation=args.validation, log=lambda message: None)
