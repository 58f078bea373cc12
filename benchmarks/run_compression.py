"""One compression benchmark: RMT-KD on a teacher, then TFLite exports, accuracy and host latency.

    python benchmarks/run_compression.py --name cifar10_cnn --model benchmarks/models/cifar10_cnn.keras \
        --data ../shared/data/cifar10 --limit 10000 --epochs-per-step 1 --final-epochs 2

Writes `benchmarks/results/<name>.json` (everything measured, with the exact command) and the run folder
`benchmarks/runs/<name>/` (checkpoints, history, .tflite files; not committed). Latencies are measured
with the LiteRT interpreter, teacher and student alternately in one process (ratios, not absolute claims),
batch 1, one thread. Energy is reported only where a real counter exists; otherwise CPU-seconds per
inference stand in as a proxy and the JSON says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--rank-rule", default="mp")
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--target-params", type=float, default=None)
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--epochs-per-step", type=int, default=1)
    parser.add_argument("--final-epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--seq-len", type=int, default=None, help="Text models: tokens per example.")
    parser.add_argument("--order", default="shallow-to-deep", choices=["shallow-to-deep", "block-by-block", "all-at-once"])
    parser.add_argument("--test-limit", type=int, default=None, help="Score on this many test examples.")
    parser.add_argument("--calibration-fraction", type=float, default=0.1,
                        help="Of the training split (text: enough sentences for a few thousand real tokens).")
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--latency-seq-len", type=int, default=None,
                        help="Text models: time teacher and student at this many tokens (same weights, "
                             "rebuilt with rmtkd_tf.transformers.with_sequence_length); default: the model's.")
    args = parser.parse_args()

    from rmtkd_tf.baselines import encoder_parameter_count
    from rmtkd_tf.bench.host import compare_tflite
    from rmtkd_tf.compression import CompressionConfig
    from rmtkd_tf.export import export_tflite
    from rmtkd_tf.io import write_json
    from rmtkd_tf.pipeline import compress_task, load_task

    run_dir = HERE / "runs" / args.name
    if run_dir.exists() and not args.resume:
        shutil.rmtree(run_dir)
    task = load_task(args.model, args.data, limit=args.limit, seed=args.seed, sequence_length=args.seq_len,
                     calibration_fraction=args.calibration_fraction, validation_fraction=args.validation_fraction)
    if args.test_limit is not None and task.data.x_test is not None:
        take = slice(0, args.test_limit)
        x = task.data.x_test
        task.data.x_test = {k: v[take] for k, v in x.items()} if isinstance(x, dict) else x[take]
        task.data.y_test = task.data.y_test[take]
    config = CompressionConfig(
        rank_rule=args.rank_rule,
        rule_params={"tau": args.tau} if args.rank_rule == "mp" else {},
        target_params=args.target_params,
        max_drop=args.max_drop,
        epochs_per_step=args.epochs_per_step,
        final_epochs=args.final_epochs,
        max_steps=args.max_steps,
        order=args.order,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    report = compress_task(task, config, run_dir, resume=args.resume, export_precision=None)
    import keras

    student = keras.models.load_model(run_dir / "student.keras")
    x_test, y_test = task.data.x_test, task.data.y_test
    exports = {}
    for who, model in (("teacher", task.model), ("student", student)):
        for precision in ("fp32", "fp16", "int8"):
            path = run_dir / f"{who}_{precision}.tflite"
            print(f"export {path.name}", flush=True)
            exports[f"{who}_{precision}"] = export_tflite(
                model, path, precision=precision, representative_data=task.data.x_calibration,
                verify_inputs=x_test, verify_labels=y_test,
            ).to_dict()
    suffix, timed_x = "", x_test
    timed = {"teacher": task.model, "student": student}
    if args.latency_seq_len:
        from rmtkd_tf.transformers import with_sequence_length

        suffix = f"_seq{args.latency_seq_len}"
        timed = {who: with_sequence_length(model, args.latency_seq_len) for who, model in timed.items()}
        extra = args.latency_seq_len - x_test["token_ids"].shape[1]
        timed_x = {k: np.pad(v, ((0, 0), (0, extra))) for k, v in x_test.items()}
        calibration = {k: np.pad(v, ((0, 0), (0, extra))) for k, v in task.data.x_calibration.items()}
        for who, model in timed.items():
            for precision in ("fp32", "int8"):
                path = run_dir / f"{who}_{precision}{suffix}.tflite"
                print(f"export {path.name}", flush=True)
                export_tflite(model, path, precision=precision, representative_data=calibration,
                              verify_inputs={k: v[:64] for k, v in timed_x.items()})
    from compare_methods import one_real_example
    from rmtkd_tf.flops import model_flops

    flops = {who: int(model_flops(model)) for who, model in timed.items()}
    latency = {}
    for precision in ("fp32", "int8"):
        print(f"latency {precision}", flush=True)
        a, b = run_dir / f"teacher_{precision}{suffix}.tflite", run_dir / f"student_{precision}{suffix}.tflite"
        cmp = compare_tflite(a, b, threads=1, warmup=20, runs=args.runs,
                             inputs_a=one_real_example(a, timed_x), inputs_b=one_real_example(b, timed_x))
        latency[precision] = cmp.to_dict()
    add_flop_ratios(latency, flops)
    result = {
        "name": args.name,
        "command": "python benchmarks/run_compression.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "compression": report,
        "exports": exports,
        "host_latency": latency,
        "latency_seq_len": args.latency_seq_len,
        "flops_timed": flops,
        # Parameters inside the transformer encoder blocks (issue #5's measure), None for other models.
        "encoder_params": {who: encoder_parameter_count(model) for who, model in (("teacher", task.model), ("student", student))},
    }
    write_json(HERE / "results" / f"{args.name}.json", result)
    print(json.dumps({k: result["compression"][k] for k in ("param_reduction", "flop_reduction", "stopped")}, indent=1))


def add_flop_ratios(latency, flops):
    """Add `flop_ratio` and `speedup_over_flop_ratio` to each precision's teacher/student comparison.

    The FLOP ratio bounds the speed-up a dense student can reach; the second figure is how much of it is
    realised. `flops` is `{"teacher": ..., "student": ...}` of the timed models.
    """
    for entry in latency.values():
        entry["flop_ratio"] = flops["teacher"] / max(flops["student"], 1)
        speedup = entry.get("ratios", {}).get("median_latency_a_over_b")
        if speedup:
            entry["speedup_over_flop_ratio"] = speedup / entry["flop_ratio"]


if __name__ == "__main__":
    main()
