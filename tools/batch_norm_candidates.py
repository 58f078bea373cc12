"""One-off: a budgeted run's three candidate students (cut, cut + re-estimated BatchNorm, distilled) on a large test set.

    python -m tools.batch_norm_candidates --teacher rmtkd_tf/assets/cifar10_cnn.keras \
        --data ../shared/data/cifar10 --runs /work/scratch/demo_bn/f055_s1 /work/scratch/demo_bn/f055_s2 \
        --out benchmarks/results/batch_norm_candidates_demo.json

A run of `rmtkd-tf compress --recalibrate-bn` chooses between its candidates on validation (the packaged
sample has 150 images: one image is 0.7 points). This scores them on every test image of `--data` instead,
paired on the same images. Each run folder needs `checkpoints/attempt_1_batch_norm.keras` (the cut with
re-estimated statistics) and `checkpoints/attempt_1.keras` (the student after the last distillation epoch).
The plain cut is not saved by a run; it is rebuilt exactly: surgery changes no BatchNormalization layer, so
the cut is the re-estimated model with the teacher's moving statistics put back (`cut_from_recalibrated`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tools.one_off import refuse_existing_out, require_existing, tool_command

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CHECKPOINTS = {"cut_batch_norm": "attempt_1_batch_norm.keras", "distilled": "attempt_1.keras"}


def cut_from_recalibrated(recalibrated, teacher):
    """`recalibrated` with every BatchNormalization's moving mean and variance set back to the teacher's
    layer of the same name, in place; returns the number of layers restored.

    Raises SystemExit when a BatchNormalization of `recalibrated` has no namesake in `teacher`.
    """
    from rmtkd_tf.batch_norm import batch_norms

    originals = {layer.name: layer for layer in batch_norms(teacher)}
    layers = batch_norms(recalibrated)
    for layer in layers:
        if layer.name not in originals:
            raise SystemExit(f"error: BatchNormalization {layer.name!r} of the student is not in the teacher")
        layer.moving_mean.assign(originals[layer.name].moving_mean)
        layer.moving_variance.assign(originals[layer.name].moving_variance)
    return len(layers)


def _paired(a_correct, b_correct):
    """`b` minus `a` in points, with the 95% interval of the paired difference (`drop_from_counts`)."""
    from rmtkd_tf.acceptance import paired_accuracy_drop

    estimate = paired_accuracy_drop(a_correct, b_correct)
    return {"gain": -float(estimate.drop), "lower": -float(estimate.upper), "upper": -float(estimate.lower),
            "only_a": int((a_correct & ~b_correct).sum()), "only_b": int((b_correct & ~a_correct).sum())}


def score_run(folder, teacher, teacher_correct, x, y):
    """Test accuracies of one run's candidates and their paired differences."""
    from rmtkd_tf.evaluation import per_example_correct
    from rmtkd_tf.io import load_model

    state = json.loads((folder / "state.json").read_text())
    attempt = state["attempts"][0]
    recalibrated = load_model(folder / "checkpoints" / CHECKPOINTS["cut_batch_norm"])
    correct = {"cut_batch_norm": per_example_correct(recalibrated, x, y),
               "distilled": per_example_correct(load_model(folder / "checkpoints" / CHECKPOINTS["distilled"]), x, y)}
    cut_from_recalibrated(recalibrated, teacher)
    correct["cut"] = per_example_correct(recalibrated, x, y)
    return {
        "run": str(folder),
        "config": {key: state["config"].get(key) for key in ("target_params", "target_flops", "distillation_epochs",
                                                               "distillation_learning_rate", "seed", "calibration_samples")},
        "params": attempt["params"], "flops": attempt["flops"],
        "validation": {key: attempt.get(f"val_accuracy_after_{name}") for key, name in
                       (("cut", "surgery"), ("cut_batch_norm", "batch_norm"), ("distilled", "distillation"))},
        "kept": attempt.get("kept"),
        "test_accuracy": {name: float(100.0 * c.mean()) for name, c in correct.items()},
        "vs_teacher": {name: _paired(teacher_correct, c) for name, c in correct.items()},
        "batch_norm_minus_cut": _paired(correct["cut"], correct["cut_batch_norm"]),
        "distilled_minus_batch_norm": _paired(correct["cut_batch_norm"], correct["distilled"]),
    }


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, type=Path)
    parser.add_argument("--data", required=True, help="a data spec with a test split (rmtkd_tf.data.load_data)")
    parser.add_argument("--runs", required=True, nargs="+", type=Path, help="run folders of compress --recalibrate-bn")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    require_existing(args.teacher, *args.runs, *(run / "checkpoints" / name for run in args.runs
                                                 for name in CHECKPOINTS.values()))
    refuse_existing_out(args.out)

    import rmtkd_tf  # noqa: F401  (registers the factorized layers)
    from benchmarks.schema import SCHEMA_VERSION
    from rmtkd_tf.data import load_data
    from rmtkd_tf.evaluation import per_example_correct
    from rmtkd_tf.io import load_model, write_json

    splits = load_data(args.data)
    x, y = splits.x_test, splits.y_test
    teacher = load_model(args.teacher)
    teacher_correct = per_example_correct(teacher, x, y)
    result = {
        "schema_version": SCHEMA_VERSION, "kind": "batch_norm_candidates", "name": args.out.stem,
        "command": tool_command("tools.batch_norm_candidates", argv), "date": time.strftime("%Y-%m-%d"),
        "data": args.data, "n_test": int(len(y)), "teacher": str(args.teacher),
        "teacher_test_accuracy": float(100.0 * teacher_correct.mean()),
        "runs": [score_run(run, teacher, teacher_correct, x, y) for run in args.runs],
        "notes": ["gain: second minus first in points, paired on the same test images, with its 95% interval "
                  "(rmtkd_tf.acceptance); the cut is rebuilt from the re-estimated one with the teacher's "
                  "BatchNorm statistics (surgery changes no BatchNormalization)."],
    }
    write_json(args.out, result)
    for run in result["runs"]:
        acc = run["test_accuracy"]
        print(f"{run['run']}: cut {acc['cut']:.2f}, cut+BN {acc['cut_batch_norm']:.2f}, distilled {acc['distilled']:.2f}"
              f" (teacher {result['teacher_test_accuracy']:.2f}; kept {run['kept']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
