"""RMT-KD against the alternatives a user would otherwise reach for, on one teacher and one budget.

    python benchmarks/compare_methods.py --teacher benchmarks/models/cifar10_cnn.keras \
        --data ../shared/data/cifar10 --limit 5000 --epochs-per-step 1 --max-steps 14 --final-epochs 1 --runs 300

(the committed run: 33 minutes on 2 shared cores; `--limit 2000 --max-steps 3` is a 6-minute smoke run).

Text tasks (a BERT classifier from `rmtkd_tf.transformers.bert_classifier`, vocabulary beside the model);
the committed runs (about 1 h each on 2 cores, run side by side):

    python benchmarks/compare_methods.py --teacher benchmarks/models/sst2_minilm_scratch.keras \
        --data ../shared/data/sst2 --name sst2_minilm_scratch --limit 1500 --calibration-fraction 0.25 \
        --test-limit 872 --order all-at-once --max-steps 2 --epochs-per-step 1 --final-epochs 1 \
        --batch-size 32 --max-drop 1 --runs 100 --scratch-learning-rate 5e-4 --seq-len 64

    python benchmarks/teacher_split.py --data ../shared/data/agnews --out benchmarks/runs/agnews_teacher_split
    python benchmarks/compare_methods.py --teacher benchmarks/models/agnews_minilm_scratch.keras \
        --data benchmarks/runs/agnews_teacher_split --name agnews_minilm_scratch --limit 1500 \
        --calibration-fraction 0.15 --test-limit 1000 --order all-at-once --max-steps 3 --epochs-per-step 1 \
        --final-epochs 1 --batch-size 32 --max-drop 1 --runs 100 --scratch-learning-rate 5e-4 --seq-len 128

(AG News: `--data` a folder written by `benchmarks/teacher_split.py`, so validation is the teacher's
held-out rows. The pretrained MiniLM teachers run the same way, but at these budgets RMT-KD's step is
rolled back on them.)

(all-at-once is one surgery step for all 36 encoder parts; a rolled-back step (`--max-drop`) is retried
in halves, shallow half first; if no step is accepted, RMT-KD factorizes nothing and the comparison is
void, which the JSON notes say).

The texts are encoded with the model's vocabulary at its fixed length (`--seq-len` must match it);
latency is timed on a real test example (random token ids would fall outside the vocabulary). For a
transformer the parameter count that `dense-small-kd` is matched on is the encoder blocks' (the
issue's transformer bar; `--match-params model` matches whole models instead): RMT-KD reduces only
the encoders, while the embedding tables are a large fixed share of a BERT (11.9M of MiniLM-L6's
22.6M) that costs a lookup, not compute. The factorized and pruned methods change only the layers
RMT-KD may change, so for them matching the whole model and matching the encoders is the same.

Every method starts from the same teacher, sees the same calibration / validation / fine-tuning
split (`rmtkd_tf.pipeline.load_task`, one seed) and is fine-tuned by distillation from the teacher
with the same loss (alpha, temperature), batch size and number of epochs:

- `rmtkd-mp`: RMT-KD with the Marchenko–Pastur rule on `--schedule` (default `budgeted`, the package
  default: one analysis, one cut at `--target-params` / `--target-flops` or the deepest within
  `--search-tolerance`, `--epochs` distillation epochs from the original teacher; `iterative`: the paper's
  loop). The epochs it spent are the budget `E` of every other method, and its size their target;
- `rmtkd-iterative` (with `--schedule budgeted`): the paper's layer-by-layer loop, `--epochs-per-step`,
  `--max-steps`, `--final-epochs`, and `--target-params` as its stopping rule: the two schedules side by side;
- `rmtkd-energy`, `rmtkd-gavish-donoho`: `rmtkd-mp`'s schedule and target with the energy (0.9) and
  Gavish–Donoho rules in place of MP (with a target, at equal parameters);
- `svd-rmtkd-ranks`: data-free truncated SVD of each weight matrix at the ranks RMT-KD chose, `E` epochs;
- `svd-uniform-rank`: data-free SVD with one rank ratio k/d for every layer, at RMT-KD's parameter count;
- `dense-small-kd`: the teacher's architecture narrowed to RMT-KD's parameter count, trained from
  scratch by distillation for `E` epochs (learning rate `--scratch-learning-rate`: fine-tuning's
  1e-4 is for converged weights; BatchNorm statistics re-estimated afterwards);
- `magnitude-pruning`: global unstructured magnitude pruning of the same layers to RMT-KD's parameter
  count (cubic schedule over the first half of `E`). TF Model Optimization needs Keras 2, so this is
  `rmtkd_tf.baselines.MagnitudePruning`; zeros are stored densely, so its `.tflite` is NOT smaller or
  faster with stock TFLite kernels (its gzip size shows what a sparse format could save).

For each method: parameters, FLOPs, validation and test accuracy (Keras and its fp32 / int8
`.tflite`), file sizes, batch-1 LiteRT latency interleaved with the teacher (fp32 and int8,
1 thread), CPU-seconds per inference, and the wall time of the compression itself. Writes
`benchmarks/results/compare_<name>.json` (after every method, so an interrupted run keeps what it
measured), the accuracy-vs-parameters PNG, and prints the markdown table (`--write-markdown` puts it
between the `<!-- compare:<name>:begin -->` / `<!-- compare:<name>:end -->` markers of BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # plot_compare beside this file

# The orders of rmtkd_tf.compression.CompressionConfig (not imported here: argument parsing stays light).
ORDERS = ("shallow-to-deep", "block-by-block", "all-at-once")

METHODS = (
    "rmtkd-mp",
    "rmtkd-iterative",
    "rmtkd-energy",
    "rmtkd-gavish-donoho",
    "svd-rmtkd-ranks",
    "svd-uniform-rank",
    "dense-small-kd",
    "magnitude-pruning",
)


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="the trained Keras model (.keras)")
    parser.add_argument("--data", required=True, help="data spec for rmtkd_tf.data.load_data")
    parser.add_argument("--name", default=None, help="result name (default: the teacher's file stem)")
    parser.add_argument("--limit", type=int, default=None, help="examples per split (train and test), class-balanced")
    parser.add_argument("--test-limit", type=int, default=None,
                        help="score on the first this many test examples (after --limit)")
    parser.add_argument("--calibration-fraction", type=float, default=0.1,
                        help="of the training split, for RMT-KD's statistics (text: enough sentences for a few "
                             "thousand real tokens) and int8 calibration")
    parser.add_argument("--validation-fraction", type=float, default=0.1,
                        help="of the training split, for RMT-KD's max-drop check and every method's keep-better "
                             "rule; ignored when the data has its own validation split (e.g. SST-2's dev.tsv)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="text models: tokens per example (a fixed-length model takes only its own length)")
    parser.add_argument("--order", default="shallow-to-deep", choices=ORDERS,
                        help="RMT-KD loop order (all-at-once: one surgery step for every layer, far cheaper for "
                             "the 36 parts of a 6-layer BERT)")
    parser.add_argument("--match-params", default="auto", choices=("auto", "model", "encoder"),
                        help="the count dense-small-kd is sized to: whole model, or transformer encoder blocks "
                             "only (auto: encoder when the teacher has transformer encoders)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (rmtkd-mp is always run first)")
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--energy-fraction", type=float, default=0.9)
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--schedule", default="budgeted", choices=("budgeted", "iterative"),
                        help="rmtkd-mp's schedule (and its rule variants')")
    parser.add_argument("--target-params", type=float, default=None, help="budgeted: cut to this fraction of the params")
    parser.add_argument("--target-flops", type=float, default=None, help="budgeted: cut to this fraction of the FLOPs")
    parser.add_argument("--epochs", type=int, default=3, help="budgeted: distillation epochs of the final student")
    parser.add_argument("--search-tolerance", type=float, default=5.0,
                        help="budgeted without a target: deepest cut within this many validation points before training")
    parser.add_argument("--validation", default="auto",
                        help="validation split: auto, train, test-split or a data spec (rmtkd_tf.pipeline.load_task)")
    parser.add_argument("--epochs-per-step", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=7)
    parser.add_argument("--final-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--scratch-learning-rate", type=float, default=1e-3)
    parser.add_argument("--distillation-learning-rate", type=float, default=1e-3,
                        help="budgeted and the one-shot baselines: peak learning rate (cosine decay to 0)")
    parser.add_argument("--runs", type=int, default=200, help="timed invocations per model and precision")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/compare_<name>.json)")
    parser.add_argument("--run-dir", default=None, help="work folder (default benchmarks/runs/compare_<name>)")
    parser.add_argument("--write-markdown", action="store_true",
                        help="also write the table into BENCHMARKS.md between the compare markers")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.methods.split(",")) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if args.epochs_per_step < 1 or args.max_steps < 1 or args.final_epochs < 0:
        parser.error("--epochs-per-step and --max-steps must be >= 1, --final-epochs >= 0")
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    for option in ("limit", "test_limit", "seq_len"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    return args


def finetune_epochs_spent(state, config):
    """Distillation epochs a `compress` run actually spent: one block per step that ran surgery, plus the final ones."""
    steps = sum(1 for record in state["steps"] if "losses" in record)
    return steps * config.epochs_per_step + (config.final_epochs if state.get("final_done") else 0)


def n_rows(x):
    """Examples in `x`: an array, or a dict of arrays (a text model's token_ids / padding_mask / segment_ids)."""
    return int(len(next(iter(x.values())) if isinstance(x, dict) else x))


def take_rows(x, count):
    return {k: v[:count] for k, v in x.items()} if isinstance(x, dict) else x[:count]


def one_real_example(path, x):
    """Batch-1 real input for a multi-input (BERT) `.tflite`, keyed by its interpreter's input tensor names.

    Random token ids would fall outside the vocabulary's range (or embed nonsense); a single-input
    model returns None and is timed on random inputs as before.
    """
    if not isinstance(x, dict):
        return None
    from ai_edge_litert.interpreter import Interpreter

    inputs = {}
    for detail in Interpreter(model_path=str(path)).get_input_details():
        matches = [k for k in x if k in detail["name"]]
        if len(matches) != 1:
            raise ValueError(f"{path}: cannot match input tensor {detail['name']!r} to one of {sorted(x)}")
        inputs[detail["name"]] = x[matches[0]][:1].astype(detail["dtype"])
    return inputs


def gzip_size(path):
    with open(path, "rb") as handle:
        return len(gzip.compress(handle.read(), compresslevel=9))


class Evaluator:
    """Exports a model to fp32 / int8 `.tflite`, measures accuracy, size and latency against the teacher."""

    def __init__(self, task, run_dir, runs):
        self.task = task
        self.run_dir = Path(run_dir)
        self.runs = runs
        self.teacher_paths = None

    def evaluate(self, name, model, params=None, encoder_params=None):
        import numpy as np

        from rmtkd_tf.baselines import encoder_parameter_count
        from rmtkd_tf.bench.host import compare_tflite
        from rmtkd_tf.steps import accuracy
        from rmtkd_tf.export import export_tflite, tflite_predict
        from rmtkd_tf.flops import model_flops

        data = self.task.data
        folder = self.run_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        out = {
            "params": int(model.count_params()) if params is None else int(params),
            "stored_params": int(model.count_params()),
            "encoder_params": encoder_parameter_count(model) if encoder_params is None else int(encoder_params),
            "flops": model_flops(model),
            "val_accuracy": accuracy(model, data.x_validation, data.y_validation),
        }
        paths, sizes = {}, {}
        fp32 = export_tflite(model, folder / "model_fp32.tflite", precision="fp32",
                             verify_inputs=data.x_test, verify_labels=data.y_test)
        paths["fp32"] = fp32.path
        out["test_accuracy"] = 100.0 * fp32.verification["keras_accuracy"]
        out["tflite_fp32_test_accuracy"] = 100.0 * fp32.verification["tflite_accuracy"]
        out["tflite_fp32_top1_agreement"] = fp32.verification["top1_agreement"]
        int8 = export_tflite(model, folder / "model_int8.tflite", precision="int8",
                             representative_data=data.x_calibration)
        paths["int8"] = int8.path
        probs = tflite_predict(int8.path, data.x_test, batch_size=256)
        out["tflite_int8_test_accuracy"] = float(100.0 * np.mean(np.argmax(probs, -1) == np.asarray(data.y_test)))
        for precision, path in paths.items():
            sizes[precision] = os.path.getsize(path)
            sizes[f"{precision}_gzip"] = gzip_size(path)
        out["size_bytes"] = sizes
        out["op_histogram_fp32"] = fp32.op_histogram
        if self.teacher_paths is None:  # the teacher itself: nothing to interleave with yet
            self.teacher_paths = paths
            return out
        out["latency"] = {}
        for precision in ("fp32", "int8"):
            log(f"  latency {name} {precision} (interleaved with the teacher, {self.runs} runs)")
            teacher_path = self.teacher_paths[precision]
            cmp = compare_tflite(teacher_path, paths[precision], threads=1, warmup=20, runs=self.runs,
                                 block_runs=10, inputs_a=one_real_example(teacher_path, data.x_test),
                                 inputs_b=one_real_example(paths[precision], data.x_test))
            out["latency"][precision] = {
                "teacher_median_ms": cmp.a.latency_ms.median,
                "median_ms": cmp.b.latency_ms.median,
                "p90_ms": cmp.b.latency_ms.p90,
                "speedup_vs_teacher": cmp.ratios["median_latency_a_over_b"],
                "teacher_cpu_seconds_per_inference": cmp.a.cpu_seconds_per_inference,
                "cpu_seconds_per_inference": cmp.b.cpu_seconds_per_inference,
                "energy": cmp.b.energy.to_dict(),
            }
        return out


def run(args):
    import keras
    import numpy as np

    import rmtkd_tf  # noqa: F401  (registers the factorized layers)
    from plot_compare import markdown_table, plot_accuracy_vs_params, write_markdown_section
    from rmtkd_tf.baselines import (
        MagnitudePruning,
        encoder_parameter_count,
        factorized_parameter_count,
        factorized_ranks,
        fine_tune,
        prunable_kernels,
        pruned_parameter_count,
        recalibrate_batch_norm,
        svd_factors,
        uniform_rank_plan,
        width_for_parameter_count,
    )
    from rmtkd_tf.compression import CompressionConfig, run
    from rmtkd_tf.steps import accuracy
    from rmtkd_tf.io import save_model, write_json
    from rmtkd_tf.pipeline import load_task
    from rmtkd_tf.surgery import factorize_model

    name = args.name or Path(args.teacher).stem
    out_path = Path(args.out) if args.out else HERE / "results" / f"compare_{name}.json"
    run_dir = Path(args.run_dir) if args.run_dir else HERE / "runs" / f"compare_{name}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    wanted = set(args.methods.split(",")) | {"rmtkd-mp"}

    t_start = time.time()
    task = load_task(args.teacher, args.data, limit=args.limit, seed=args.seed, sequence_length=args.seq_len,
                     calibration_fraction=args.calibration_fraction, validation_fraction=args.validation_fraction,
                     validation=args.validation, log=log)
    teacher = task.model
    data = task.data
    if data.x_test is None or n_rows(data.x_test) == 0:
        raise SystemExit(f"error: --data {args.data} has no test split; the comparison scores every method on it")
    if args.test_limit is not None:
        data.x_test, data.y_test = take_rows(data.x_test, args.test_limit), data.y_test[: args.test_limit]
    teacher_encoder_params = encoder_parameter_count(teacher)
    match = args.match_params
    if match == "auto":
        match = "model" if teacher_encoder_params is None else "encoder"
    if match == "encoder" and teacher_encoder_params is None:
        raise SystemExit("error: --match-params encoder needs a teacher with transformer encoder blocks")
    # run() would evaluate teacher and student on the test split for its report; that is
    # measurement, not compression, so the loops get the data without it (and stay comparable).
    loop_data = dataclasses.replace(data, x_test=None, y_test=None)
    base = dict(
        epochs_per_step=args.epochs_per_step, max_steps=args.max_steps, final_epochs=args.final_epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate, max_drop=args.max_drop, seed=args.seed,
        order=args.order,
    )
    finetune = dict(batch_size=args.batch_size, alpha=CompressionConfig.alpha,
                    temperature=CompressionConfig.temperature, seed=args.seed)
    evaluator = Evaluator(task, run_dir, args.runs)
    result = {
        "name": f"compare_{name}",
        "command": "python benchmarks/compare_methods.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"machine": platform.machine(), "cpu_count": os.cpu_count(),
                    "note": "shared build machine; latencies are interleaved with the teacher, compare ratios"},
        "teacher_path": str(args.teacher),
        "data": task.description,
        "splits": {
            "calibration": n_rows(data.x_calibration), "validation": int(len(data.y_validation)),
            "fine_tuning": int(len(data.y_train)), "test": int(len(data.y_test)),
        },
        "settings": {**base, "schedule": args.schedule, "epochs": args.epochs, "target_params": args.target_params,
                     "target_flops": args.target_flops, "search_tolerance": args.search_tolerance,
                     "distillation_learning_rate": args.distillation_learning_rate, "validation": args.validation,
                     "tau": args.tau, "energy_fraction": args.energy_fraction,
                     "alpha": finetune["alpha"], "temperature": finetune["temperature"],
                     "scratch_learning_rate": args.scratch_learning_rate, "latency_runs": args.runs,
                     "seq_len": args.seq_len, "test_limit": args.test_limit, "match_params": match,
                     "calibration_fraction": args.calibration_fraction,
                     "validation_fraction": args.validation_fraction,
                     "latency": "LiteRT interpreter, XNNPACK, 1 thread, batch 1, interleaved ABBA blocks with the teacher"},
        "notes": [
            "Every method: same teacher, same calibration/validation/fine-tuning split, same distillation loss, "
            "batch size and fine-tuning epochs (budget E = the epochs RMT-KD (MP) spent); the one-shot methods use "
            "rmtkd-mp's learning rate schedule.",
            "magnitude-pruning: params counts the nonzero weights; the .tflite stores the zeros densely, so it is "
            "NOT smaller or faster without sparse kernels (stock TFLite/XNNPACK run it as the dense teacher); "
            "its gzip size shows what sparse storage could save. TF Model Optimization 0.8.x needs tf-keras (Keras 2), "
            "so pruning is rmtkd_tf.baselines.MagnitudePruning (global, unstructured, cubic schedule).",
            "dense-small-kd trains from scratch (fresh init) with the same epochs; its learning rate is "
            "scratch_learning_rate because 1e-4 is a fine-tuning rate for converged weights; after training its "
            "BatchNorm statistics are re-estimated on training images (kept only if validation accuracy does not drop).",
            "FLOPs count the matrix products as executed, 2 per multiply-add (dense for the pruned model): Dense/Conv2D layers and, in a transformer encoder, its projections at every token plus the attention score and value products.",
        ],
        "methods": [],
    }

    if teacher_encoder_params is not None:
        result["notes"] += [
            "Transformer teacher: params is the whole model (embeddings included), encoder_params the transformer "
            "encoder blocks alone (the issue's transformer bar). RMT-KD, the SVD baselines and pruning change only "
            "encoder parts (query/key/value/attention output/FFN in every block), so their embeddings equal the "
            "teacher's and matching whole-model or encoder counts is the same for them.",
            f"dense-small-kd is sized to RMT-KD's {'encoder' if match == 'encoder' else 'whole-model'} parameter "
            "count (match_params): same layers, heads, vocabulary and sequence length, model width (a multiple of "
            "the heads, embeddings included) and FFN width narrowed by one multiplier, fresh init. Matched on "
            "encoders, its embedding tables shrink with the width too, so its whole-model count is below RMT-KD's.",
            "Latency: batch 1 with a real test example (fixed sequence length, so the cost does not depend on "
            "which example); int8 exports are calibrated on the calibration split's encoded texts.",
        ]

    def save():
        write_json(out_path, result)

    log("teacher: exporting and measuring")
    result["teacher"] = evaluator.evaluate("teacher", teacher)
    save()
    log(f"teacher: {result['teacher']['params']:,} params, test {result['teacher']['test_accuracy']:.2f}%")

    def record(method, model, wall_s, epochs, description, params=None, encoder_params=None, **extra):
        log(f"{method}: evaluating")
        entry = {"method": method, "description": description, "compression_wall_s": round(wall_s, 1),
                 "finetune_epochs": epochs, **extra}
        entry.update(evaluator.evaluate(method, model, params=params, encoder_params=encoder_params))
        entry["param_reduction"] = 1.0 - entry["params"] / result["teacher"]["params"]
        if entry["encoder_params"] is not None and teacher_encoder_params:
            entry["encoder_param_reduction"] = 1.0 - entry["encoder_params"] / teacher_encoder_params
        result["methods"].append(entry)
        save()
        # The final model, for later analysis (e.g. benchmarks/latency_floor.py); the run folder is not committed.
        save_model(model, run_dir / method / "model.keras")
        log(f"{method}: {entry['params']:,} params, test {entry['test_accuracy']:.2f}% "
            f"(tflite fp32 {entry['tflite_fp32_test_accuracy']:.2f}%, int8 {entry['tflite_int8_test_accuracy']:.2f}%), "
            f"fp32 speed-up {entry['latency']['fp32']['speedup_vs_teacher']:.2f}x, wall {wall_s:.0f}s")
        return entry

    def run_rmtkd(method, rule, rule_params, description, schedule):
        if schedule == "budgeted":
            config = CompressionConfig(
                schedule="budgeted", rank_rule=rule, rule_params=rule_params, distillation_epochs=args.epochs,
                distillation_learning_rate=args.distillation_learning_rate, search_tolerance=args.search_tolerance,
                target_params=args.target_params, target_flops=args.target_flops, batch_size=args.batch_size,
                max_drop=args.max_drop, seed=args.seed)
        else:
            config = CompressionConfig(schedule="iterative", rank_rule=rule, rule_params=rule_params,
                                       target_params=args.target_params, **base)
        log(f"{method}: compress(schedule={schedule!r}) with rule {rule} {rule_params}")
        t0 = time.time()
        student, report = run(teacher, loop_data, config, run_dir / method / "loop", log=lambda m: log(f"  {m}"))
        wall = time.time() - t0
        state = json.loads((run_dir / method / "loop" / "state.json").read_text())
        extra = dict(schedule=schedule, ranks=factorized_ranks(student), stopped=state["stopped"])
        if schedule == "budgeted":
            attempts = state.get("attempts", [])
            epochs = args.epochs * max(len(attempts), 1)
            extra.update(cut_chosen_by=state.get("cut_chosen_by"), mp_cut_params=state["ladder"]["mp_cut"]["params"],
                         attempts=[{k: a.get(k) for k in ("params", "val_accuracy_after_surgery",
                                                          "val_accuracy_after_distillation", "accepted")}
                                   for a in attempts])
        else:
            epochs = finetune_epochs_spent(state, config)
            extra.update(steps=len(state["steps"]), accepted_steps=sum(1 for s in state["steps"] if s.get("accepted")))
        entry = record(method, student, wall, epochs, description, **extra)
        return student, entry

    def keep_better(student, before_weights, acc_before):
        # the iterative schedule's rule: when fine-tuning lowers validation accuracy, keep the surgery-only weights.
        acc_after = accuracy(student, data.x_validation, data.y_validation)
        if acc_before is not None and acc_after is not None and acc_after < acc_before:
            student.set_weights(before_weights)
            return False
        return True

    schedule_text = ("budgeted: one analysis, one cut, distilled from the original teacher" if args.schedule == "budgeted"
                     else f"iterative ({args.order}), self-distillation per step")
    rmtkd_student, rmtkd = run_rmtkd("rmtkd-mp", "mp", {"tau": args.tau},
                                     f"RMT-KD: MP-edge signal ranks on activation covariances, {schedule_text}",
                                     args.schedule)
    target_params = rmtkd["params"]
    target_encoder_params = rmtkd["encoder_params"]
    budget = rmtkd["finetune_epochs"]
    rmtkd_ranks = factorized_ranks(rmtkd_student)
    result["finetune_budget_epochs"] = budget
    result["target_params"] = target_params
    result["target_encoder_params"] = target_encoder_params
    save()
    if not rmtkd_ranks:
        warning = ("RMT-KD factorized nothing (every step rolled back or nothing to reduce; see --max-drop): the "
                   "parameter target is the teacher's own size, so the other methods are not compressed either")
        result["notes"].append(warning)
        log(f"warning: {warning}")
    encoder_note = "" if target_encoder_params is None else f" ({target_encoder_params:,} in encoders)"
    log(f"budget: {budget} fine-tuning epochs, target {target_params:,} params{encoder_note}, "
        f"RMT-KD ranks {rmtkd_ranks}")

    if "rmtkd-iterative" in wanted and args.schedule == "budgeted":
        run_rmtkd("rmtkd-iterative", "mp", {"tau": args.tau},
                  f"RMT-KD, the paper's iterative loop ({args.order}), MP rule, self-distillation per step", "iterative")

    if "rmtkd-energy" in wanted:
        run_rmtkd("rmtkd-energy", "energy", {"fraction": args.energy_fraction},
                  f"same schedule, energy rule (keep {args.energy_fraction:g} of the variance)", args.schedule)
    if "rmtkd-gavish-donoho" in wanted:
        run_rmtkd("rmtkd-gavish-donoho", "gavish-donoho", {}, "same schedule, Gavish-Donoho optimal hard threshold",
                  args.schedule)

    def one_shot_rate():
        # The one-shot methods are tuned like rmtkd-mp's final student: with the budgeted schedule, its peak
        # learning rate on a cosine decay over the budget; with the iterative one, the loop's rate.
        if args.schedule != "budgeted" or budget == 0:
            return args.learning_rate
        from rmtkd_tf.schedules.budgeted import ShiftedCosineDecay

        steps = -(-int(len(data.y_train)) // args.batch_size)
        return ShiftedCosineDecay(args.distillation_learning_rate, budget * steps)

    def one_shot_factorized(method, ranks, description, **extra):
        log(f"{method}: ranks {ranks}")
        t0 = time.time()
        student = factorize_model(teacher, svd_factors(teacher, ranks))
        acc_surgery = accuracy(student, data.x_validation, data.y_validation)
        weights = student.get_weights()
        fine_tune(student, teacher, data, budget, learning_rate=one_shot_rate(), **finetune)
        kept = keep_better(student, weights, acc_surgery)
        record(method, student, time.time() - t0, budget, description, ranks=ranks,
               val_accuracy_after_surgery=acc_surgery, kept_fine_tuning=kept, **extra)

    if "svd-rmtkd-ranks" in wanted:
        if rmtkd_ranks:
            one_shot_factorized("svd-rmtkd-ranks", rmtkd_ranks,
                                "data-free truncated SVD of each weight matrix at RMT-KD's ranks, one shot, KD fine-tuning")
        else:
            log("svd-rmtkd-ranks: RMT-KD factorized nothing; skipped")
    if "svd-uniform-rank" in wanted:
        ratio, ranks = uniform_rank_plan(teacher, target_params)
        one_shot_factorized("svd-uniform-rank", ranks,
                            "data-free truncated SVD, one rank ratio k/d for every layer at RMT-KD's parameter count",
                            rank_ratio=ratio, planned_params=factorized_parameter_count(teacher, ranks))

    if "dense-small-kd" in wanted:
        t0 = time.time()
        if match == "encoder":
            width, student = width_for_parameter_count(teacher, target_encoder_params, seed=args.seed,
                                                       count=encoder_parameter_count)
        else:
            width, student = width_for_parameter_count(teacher, target_params, seed=args.seed)
        encoder_note = "" if match == "model" else f" ({encoder_parameter_count(student):,} in encoders)"
        log(f"dense-small-kd: width x{width:.3f}, {student.count_params():,} params{encoder_note}, "
            "training from scratch")
        logs = fine_tune(student, teacher, data, budget, learning_rate=args.scratch_learning_rate, **finetune)
        # A few hundred steps from scratch leave BatchNorm's moving averages near their initial values
        # (chance accuracy in inference mode); re-estimate them on training images, keep the better.
        acc_trained = accuracy(student, data.x_validation, data.y_validation)
        weights = student.get_weights()
        recalibrate_batch_norm(student, data.x_train, batch_size=args.batch_size)
        kept_recalibration = keep_better(student, weights, acc_trained)
        description = "same architecture, every hidden layer narrowed by one width multiplier, from scratch, KD"
        shape = {}
        if teacher_encoder_params is not None:
            description = ("same transformer (layers, heads, vocabulary, length), model and FFN widths narrowed "
                           f"by one multiplier to RMT-KD's {match} parameter count, from scratch, KD")
            shape = {"narrow_shape": _transformer_shape(student), "teacher_shape": _transformer_shape(teacher)}
        record("dense-small-kd", student, time.time() - t0, budget, description,
               width_multiplier=width, matched=match, last_epoch=logs,
               val_accuracy_before_bn_recalibration=acc_trained, kept_bn_recalibration=kept_recalibration, **shape)

    if "magnitude-pruning" in wanted:
        t0 = time.time()
        student = keras.models.clone_model(teacher)
        student.set_weights(teacher.get_weights())
        kernels = prunable_kernels(student)
        total = sum(int(np.prod(k.shape)) for k in kernels.values())
        keep = target_params - (int(teacher.count_params()) - total)
        ramp = max(1, budget // 2)
        log(f"magnitude-pruning: keep {keep:,} of {total:,} kernel weights, ramp {ramp} of {budget} epochs")
        pruning = MagnitudePruning(kernels, keep, ramp_epochs=ramp)
        if budget > 0:
            fine_tune(student, teacher, data, budget, learning_rate=args.learning_rate,
                      callbacks=[pruning], **finetune)
        else:
            pruning.prune(keep)
        record("magnitude-pruning", student, time.time() - t0, budget,
               "global unstructured magnitude pruning of the same layers (cubic schedule), KD fine-tuning; "
               "dense storage", params=pruned_parameter_count(student, kernels),
               encoder_params=encoder_parameter_count(student, pruned_kernels=kernels),
               sparsity_of_pruned_kernels=1.0 - keep / total)

    result["total_wall_s"] = round(time.time() - t_start, 1)
    save()
    png = out_path.with_suffix(".png")
    plot_accuracy_vs_params(result, png)
    log(f"wrote {out_path} and {png}")
    table = markdown_table(result)
    print(table)
    if args.write_markdown:
        write_markdown_section(table, HERE.parent / "BENCHMARKS.md", result["name"])
        log("updated the compare section of BENCHMARKS.md")
    return result


def _transformer_shape(model):
    """`{hidden_dim, intermediate_dims, num_heads, num_layers}` of a model's transformer encoder blocks."""
    from rmtkd_tf.model_walk import composite_parts, dense_matrix_shape, iter_graph_layers

    encoders = [layer for _, layer in iter_graph_layers(model) if composite_parts(layer) is not None]
    return {
        "hidden_dim": dense_matrix_shape(composite_parts(encoders[0])["ffn_output"])[1],
        "intermediate_dims": sorted({int(e.intermediate_dim) for e in encoders}),
        "num_heads": sorted({int(e.num_heads) for e in encoders}),
        "num_layers": len(encoders),
    }


def main(argv=None):
    args = parse_args(argv)
    from rmtkd_tf.errors import RMTKDError

    try:
        run(args)
    except RMTKDError as error:  # bad input (data, lengths, model): one line, not a traceback
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
