"""One-off: the test accuracy drop of a compressed student, paired with its teacher on the same examples.

    python -m tools.paired_test_drop --teacher benchmarks/models/sst2_minilm_pretrained_cpu.keras \
        --student benchmarks/runs/sst2_minilm_pretrained_cpu/rmtkd-mp/model.keras \
        --data /work/shared/data/sst2 --limit 2500 --test-limit 872 \
        --out benchmarks/results/paired_test_sst2_minilm_pretrained_cpu.json

`python -m benchmarks compress` reports teacher and student test accuracy, not the interval of their
difference. This scores both Keras models on the test split that `compress` used (same `load_task` call:
`--limit`, `--seed`, `--test-limit`, texts encoded with the teacher's vocabulary) and gives the paired drop
with its 95% interval (`rmtkd_tf.acceptance.paired_accuracy_drop`, the estimator `--max-drop` uses on
validation), and the discordant counts it rests on.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tools.one_off import add_teacher_student_arguments, load_teacher_task, parse_teacher_student, tool_command

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_teacher_student_arguments(parser)
    parser.add_argument("--test-limit", type=int, help="the --test-limit the compress run used")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--out", required=True, type=Path)
    args = parse_teacher_student(parser, argv)

    from benchmarks.compare import take_rows
    from benchmarks.schema import SCHEMA_VERSION
    from rmtkd_tf.acceptance import paired_accuracy_drop
    from rmtkd_tf.evaluation import per_example_correct
    from rmtkd_tf.io import load_model, write_json

    task = load_teacher_task(args)
    x, y = task.data.x_test, task.data.y_test
    if args.test_limit is not None:
        x, y = take_rows(x, args.test_limit), y[: args.test_limit]
    teacher_correct = per_example_correct(task.model, x, y)
    student_correct = per_example_correct(load_model(args.student), x, y)
    estimate = paired_accuracy_drop(teacher_correct, student_correct, confidence=args.confidence)
    result = {
        "schema_version": SCHEMA_VERSION, "kind": "paired-test", "name": args.out.stem,
        "command": tool_command("tools.paired_test_drop", argv),
        "date": time.strftime("%Y-%m-%d"),
        "data": task.description, "n_test": int(len(y)),
        "teacher": str(args.teacher), "student": str(args.student),
        "teacher_test_accuracy": float(100.0 * teacher_correct.mean()),
        "student_test_accuracy": float(100.0 * student_correct.mean()),
        "teacher_only_correct": int((teacher_correct & ~student_correct).sum()),
        "student_only_correct": int((student_correct & ~teacher_correct).sum()),
        "drop": float(estimate.drop), "lower": float(estimate.lower), "upper": float(estimate.upper),
        "confidence": args.confidence,
    }
    write_json(args.out, result)
    print(f"teacher {result['teacher_test_accuracy']:.2f}%, student {result['student_test_accuracy']:.2f}%: drop "
          f"{result['drop']:.2f} [{result['lower']:.2f}, {result['upper']:.2f}] points on {len(y)} test examples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
