"""The `compress` and `compare` runs: RMT-KD, and RMT-KD against the alternatives, on one teacher and one split.

    python -m benchmarks compare --task configs/compare_cifar10_cnn        # a committed comparison
    python -m benchmarks compress --task configs/cifar10_mlp                # a committed results-table row
    python -m benchmarks compare --teacher rmtkd_tf/assets/cifar10_cnn.keras --data ../shared/data/cifar10 \
        --limit 300 --methods rmtkd-mp,svd-rmtkd-ranks --epochs 1 --target-params 0.5 --runs 10 --name smoke \
        --out /tmp/compare_smoke.json --run-dir /tmp/compare_smoke     # a few minutes on 2 cores

`compress` is `compare` with one method, RMT-KD with `--rank-rule` (`rmtkd-mp` in the result), exported at
fp32, fp16 and int8. Every method starts from the same teacher, sees the same calibration / validation /
fine-tuning split (`rmtkd_tf.pipeline.load_task`, one seed) and is fine-tuned by distillation from the
teacher with the same loss, batch size and number of epochs:

- `rmtkd-mp`: RMT-KD with the Marchenko–Pastur rule on `--schedule` (default `budgeted`: one analysis, one cut
  at `--target-params` / `--target-flops` or the deepest within `--search-tolerance`, `--epochs` distillation
  epochs from the teacher; `iterative`: the paper's loop). The epochs it spent are the budget `E` of every
  other method, and its size their target;
- `rmtkd-mp-bn` (with `--schedule budgeted`): `rmtkd-mp` with its cut student's BatchNorm statistics
  re-estimated before it is scored and distilled (`--recalibrate-bn`; `rmtkd-mp` itself follows
  `--recalibrate-bn`, so pass it to compare the two);
- `rmtkd-iterative` (with `--schedule budgeted`): the paper's loop, `--epochs-per-step`, `--max-steps`,
  `--final-epochs`, `--target-params` as its stopping rule;
- `rmtkd-energy`, `rmtkd-gavish-donoho`: `rmtkd-mp`'s schedule and target with those rules;
- `svd-rmtkd-ranks`: data-free truncated SVD at the ranks RMT-KD chose, `E` epochs;
- `svd-uniform-rank`: data-free SVD with one rank ratio for every layer, at RMT-KD's parameter count;
- `dense-small-kd`: the teacher's architecture narrowed to RMT-KD's parameter count (a transformer's encoder
  count unless `--match-params model`), trained from scratch by distillation for `E` epochs;
- `magnitude-pruning`: global unstructured magnitude pruning of the same layers to RMT-KD's parameter count
  (`rmtkd_tf.baselines.MagnitudePruning`; zeros stored densely, so its `.tflite` is not smaller or faster).

For each: parameters, FLOPs, validation and test accuracy (Keras and every `.tflite`), file sizes, batch-1
latency against the teacher (`benchmarks.timing`), and the wall time of the compression. Writes the result
(`benchmarks.schema`) after every method, so an interrupted run keeps what it measured; a `compare` result
also gets its accuracy-vs-parameters plot. `--write-markdown` writes its BENCHMARKS.md section.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import platform
import shutil
import time
from pathlib import Path

from benchmarks import timing
from benchmarks.driver import HERE, METHODS
from benchmarks.schema import SCHEMA_VERSION

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PRECISIONS = {"compress": ("fp32", "fp16", "int8"), "compare": ("fp32", "int8")}
TIMED = ("fp32", "int8")


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def finetune_epochs_spent(state, config):
    """Distillation epochs a `compress` run actually spent: one block per step that ran surgery, plus the final ones."""
    steps = sum(1 for record in state["steps"] if "losses" in record)
    return steps * config.epochs_per_step + (config.final_epochs if state.get("final_done") else 0)


def n_rows(x):
    """Examples in `x`: an array, or a dict of arrays (a text model's token_ids / padding_mask / segment_ids)."""
    return int(len(next(iter(x.values())) if isinstance(x, dict) else x))


def take_rows(x, count):
    return {k: v[:count] for k, v in x.items()} if isinstance(x, dict) else x[:count]


def gzip_size(path):
    with open(path, "rb") as handle:
        return len(gzip.compress(handle.read(), compresslevel=9))


def _pad_tokens(x, length):
    import numpy as np

    return {k: np.pad(v, ((0, 0), (0, length - v.shape[1]))) for k, v in x.items()}


class Evaluator:
    """Exports a model to `.tflite` at each precision, measures accuracy, size and latency against the teacher.

    `timed_seq_len` (text models): latency is measured on the models rebuilt at that many tokens (same
    weights), exported separately; accuracy stays at the model's own length.
    """

    def __init__(self, task, run_dir, runs, precisions, timed_seq_len=None):
        self.task = task
        self.run_dir = Path(run_dir)
        self.runs = runs
        self.precisions = precisions
        self.timed_seq_len = timed_seq_len
        self.teacher_timed = None

    def _timed_files(self, model, folder):
        """`({precision: .tflite}, flops)` of the model as it is timed."""
        from rmtkd_tf.export import export_tflite
        from rmtkd_tf.flops import model_flops

        data = self.task.data
        if not self.timed_seq_len:
            return None, model_flops(model)
        from rmtkd_tf.transformers import with_sequence_length

        timed = with_sequence_length(model, self.timed_seq_len)
        x = _pad_tokens(data.x_test, self.timed_seq_len)
        calibration = _pad_tokens(data.x_calibration, self.timed_seq_len)
        paths = {}
        for precision in TIMED:
            path = folder / f"model_{precision}_seq{self.timed_seq_len}.tflite"
            export_tflite(timed, path, precision=precision, representative_data=calibration,
                          verify_inputs=take_rows(x, 64))
            paths[precision] = path
        return paths, model_flops(timed)

    def timed_x(self):
        x = self.task.data.x_test
        return _pad_tokens(x, self.timed_seq_len) if self.timed_seq_len else x

    def evaluate(self, name, model, params=None, encoder_params=None):
        from rmtkd_tf.baselines import encoder_parameter_count
        from rmtkd_tf.export import export_tflite
        from rmtkd_tf.flops import model_flops
        from rmtkd_tf.steps import accuracy

        data = self.task.data
        folder = self.run_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        out = {
            "params": int(model.count_params()) if params is None else int(params),
            "stored_params": int(model.count_params()),
            "encoder_params": encoder_parameter_count(model) if encoder_params is None else int(encoder_params),
            "flops": model_flops(model),
            "val_accuracy": accuracy(model, data.x_validation, data.y_validation),
            "exports": {},
        }
        paths = {}
        for precision in self.precisions:
            log(f"  export {name} {precision}")
            report = export_tflite(model, folder / f"model_{precision}.tflite", precision=precision,
                                   representative_data=data.x_calibration, verify_inputs=data.x_test,
                                   verify_labels=data.y_test)
            paths[precision] = report.path
            check = report.verification
            out["exports"][precision] = {
                "size_bytes": os.path.getsize(report.path), "gzip_bytes": gzip_size(report.path),
                "test_accuracy": 100.0 * check["tflite_accuracy"], "top1_agreement": check["top1_agreement"],
                "max_abs_err": check["max_abs_err"], "flex_ops": len(report.flex_ops),
            }
            if precision == "fp32":
                out["test_accuracy"] = 100.0 * check["keras_accuracy"]
                out["op_histogram_fp32"] = report.op_histogram
        timed_paths, timed_flops = self._timed_files(model, folder)
        timed_paths = timed_paths or {p: paths[p] for p in TIMED}
        if self.teacher_timed is None:  # the teacher itself: nothing to time against yet
            self.teacher_timed = (timed_paths, timed_flops)
            return out
        teacher_paths, teacher_flops = self.teacher_timed
        out["latency"] = {}
        for precision in TIMED:
            log(f"  latency {name} {precision} (interleaved with the teacher, {self.runs} runs)")
            comparison = timing.time_pair(teacher_paths[precision], timed_paths[precision], self.timed_x(),
                                          runs=self.runs)
            out["latency"][precision] = timing.latency_entry(comparison, timed_flops, teacher_flops)
        return out


def result_paths(args, kind):
    """`(name, result name, JSON path, run folder)` of a run."""
    name = args.name or Path(args.teacher).stem
    stem = name if kind == "compress" else f"compare_{name}"
    out = Path(args.out) if args.out else HERE / "results" / f"{stem}.json"
    run_dir = Path(args.run_dir) if args.run_dir else HERE / "runs" / stem
    return name, stem, out, run_dir


def settings_record(args, kind, match, finetune):
    settings = {
        "schedule": args.schedule, "order": args.order, "epochs": args.epochs, "epochs_per_step": args.epochs_per_step,
        "max_steps": args.max_steps, "final_epochs": args.final_epochs, "batch_size": args.batch_size,
        "learning_rate": args.learning_rate, "distillation_learning_rate": args.distillation_learning_rate,
        "max_drop": args.max_drop, "seed": args.seed, "target_params": args.target_params,
        "feature_weight": args.feature_weight, "recalibrate_bn": args.recalibrate_bn,
        "target_flops": args.target_flops, "search_tolerance": args.search_tolerance, "validation": args.validation,
        "tau": args.tau, "energy_fraction": args.energy_fraction, "alpha": finetune["alpha"],
        "temperature": finetune["temperature"], "latency_runs": args.runs, "seq_len": args.seq_len,
        "test_limit": args.test_limit, "calibration_fraction": args.calibration_fraction,
        "validation_fraction": args.validation_fraction, "latency": timing.DESCRIPTION,
        "timing_protocol": timing.PROTOCOL, "latency_seq_len": args.latency_seq_len,
    }
    if kind == "compare":
        settings.update(match_params=match, scratch_learning_rate=args.scratch_learning_rate, methods=args.methods)
    else:
        settings.update(rank_rule=args.rank_rule)
    return settings


def run(args, kind="compare"):
    import keras
    import numpy as np

    import rmtkd_tf  # noqa: F401  (registers the factorized layers)
    from benchmarks import render
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
    from rmtkd_tf.compression import CompressionConfig
    from rmtkd_tf.compression import run as run_rmtkd_loop
    from rmtkd_tf.io import save_model, write_json
    from rmtkd_tf.pipeline import load_task
    from rmtkd_tf.steps import accuracy
    from rmtkd_tf.surgery import factorize_model

    name, stem, out_path, run_dir = result_paths(args, kind)
    wanted = {"rmtkd-mp"} if kind == "compress" else set(args.methods.split(",")) | {"rmtkd-mp"}

    t_start = time.time()
    task = load_task(args.teacher, args.data, limit=args.limit, seed=args.seed, sequence_length=args.seq_len,
                     calibration_fraction=args.calibration_fraction, validation_fraction=args.validation_fraction,
                     validation=args.validation, log=log)
    teacher = task.model
    data = task.data
    if data.x_test is None or n_rows(data.x_test) == 0:
        raise SystemExit(f"error: --data {args.data} has no test split; every method is scored on it")
    if args.test_limit is not None:
        data.x_test, data.y_test = take_rows(data.x_test, args.test_limit), data.y_test[: args.test_limit]
    if args.latency_seq_len and not isinstance(data.x_test, dict):
        raise SystemExit("error: --latency-seq-len is for text (BERT) models only")
    teacher_encoder_params = encoder_parameter_count(teacher)
    match = getattr(args, "match_params", "model")
    if match == "auto":
        match = "model" if teacher_encoder_params is None else "encoder"
    if match == "encoder" and teacher_encoder_params is None:
        raise SystemExit("error: --match-params encoder needs a teacher with transformer encoder blocks")
    # The work folder is this driver's own (checkpoints, exports); emptied only once the inputs have loaded.
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    # The RMT-KD run would evaluate on the test split for its report; that is measurement, not compression,
    # so the loops get the data without it (and stay comparable).
    loop_data = dataclasses.replace(data, x_test=None, y_test=None)
    base = dict(epochs_per_step=args.epochs_per_step, max_steps=args.max_steps, final_epochs=args.final_epochs,
                batch_size=args.batch_size, learning_rate=args.learning_rate, max_drop=args.max_drop, seed=args.seed,
                order=args.order)
    finetune = dict(batch_size=args.batch_size, alpha=CompressionConfig.alpha,
                    temperature=CompressionConfig.temperature, seed=args.seed)
    evaluator = Evaluator(task, run_dir, args.runs, PRECISIONS[kind], args.latency_seq_len)
    result = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "name": stem,
        "command": args.command_line,
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"machine": platform.machine(), "cpu_count": os.cpu_count(),
                    "note": "shared build machine; latencies are interleaved with the teacher, compare ratios"},
        "teacher_path": str(args.teacher),
        "data": task.description,
        "splits": {"calibration": n_rows(data.x_calibration), "validation": int(len(data.y_validation)),
                   "fine_tuning": int(len(data.y_train)), "test": int(len(data.y_test))},
        "settings": settings_record(args, kind, match, finetune),
        "timed_seq_len": args.latency_seq_len,
        "notes": [
            "Every method: same teacher, same calibration/validation/fine-tuning split, same distillation loss, "
            "batch size and fine-tuning epochs (budget E = the epochs RMT-KD (MP) spent); the one-shot methods use "
            "rmtkd-mp's learning rate schedule.",
            "FLOPs count the matrix products as executed, 2 per multiply-add (dense for the pruned model): "
            "Dense/Conv2D layers and, in a transformer encoder, its projections at every token plus the attention "
            "score and value products.",
        ],
        "methods": [],
    }
    if "magnitude-pruning" in wanted:
        result["notes"].append(
            "magnitude-pruning: params counts the nonzero weights; the .tflite stores the zeros densely, so it is "
            "NOT smaller or faster without sparse kernels; its gzip size shows what sparse storage could save.")
    if "dense-small-kd" in wanted:
        result["notes"].append(
            "dense-small-kd trains from scratch (fresh init) with the same epochs at scratch_learning_rate; after "
            "training its BatchNorm statistics are re-estimated on training images (kept only if validation "
            "accuracy does not drop).")
    if teacher_encoder_params is not None:
        result["notes"] += [
            "Transformer teacher: params is the whole model (embeddings included), encoder_params the transformer "
            "encoder blocks alone. RMT-KD, the SVD baselines and pruning change only encoder parts, so their "
            "embeddings equal the teacher's.",
            "Latency: batch 1 with a real test example; int8 exports are calibrated on the calibration split.",
        ]
        if "dense-small-kd" in wanted:
            result["notes"].append(f"dense-small-kd is sized to RMT-KD's {match} parameter count (match_params).")

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
        teacher_entry = result["teacher"]
        entry["param_reduction"] = 1.0 - entry["params"] / teacher_entry["params"]
        entry["flop_reduction"] = 1.0 - entry["flops"] / teacher_entry["flops"] if teacher_entry["flops"] else None
        if entry["encoder_params"] is not None and teacher_encoder_params:
            entry["encoder_param_reduction"] = 1.0 - entry["encoder_params"] / teacher_encoder_params
        result["methods"].append(entry)
        save()
        save_model(model, run_dir / method / "model.keras")  # for later analysis (e.g. `floor`); not committed
        exports = entry["exports"]
        log(f"{method}: {entry['params']:,} params, test {entry['test_accuracy']:.2f}% (tflite "
            + ", ".join(f"{p} {e['test_accuracy']:.2f}%" for p, e in exports.items())
            + f"), fp32 speed-up {entry['latency']['fp32']['speedup_vs_teacher']:.2f}x, wall {wall_s:.0f}s")
        return entry

    def run_rmtkd(method, rule, rule_params, description, schedule, recalibrate_bn=args.recalibrate_bn):
        if schedule == "budgeted":
            config = CompressionConfig(
                schedule="budgeted", rank_rule=rule, rule_params=rule_params, distillation_epochs=args.epochs,
                distillation_learning_rate=args.distillation_learning_rate, search_tolerance=args.search_tolerance,
                target_params=args.target_params, target_flops=args.target_flops, batch_size=args.batch_size,
                max_drop=args.max_drop, seed=args.seed, feature_weight=args.feature_weight,
                recalibrate_batch_norm=recalibrate_bn)
        else:
            config = CompressionConfig(schedule="iterative", rank_rule=rule, rule_params=rule_params,
                                       target_params=args.target_params, feature_weight=args.feature_weight, **base)
        log(f"{method}: compress(schedule={schedule!r}) with rule {rule} {rule_params}")
        t0 = time.time()
        student, report = run_rmtkd_loop(teacher, loop_data, config, run_dir / method / "loop",
                                         log=lambda m: log(f"  {m}"))
        wall = time.time() - t0
        state = json.loads((run_dir / method / "loop" / "state.json").read_text())
        extra = dict(schedule=schedule, ranks=factorized_ranks(student), stopped=state["stopped"])
        if schedule == "budgeted":
            attempts = state.get("attempts", [])
            epochs = args.epochs * max(len(attempts), 1)
            extra.update(cut_chosen_by=state.get("cut_chosen_by"), mp_cut_params=state["ladder"]["mp_cut"]["params"],
                         attempts=[{k: a.get(k) for k in ("params", "val_accuracy_after_surgery",
                                                          "val_accuracy_after_batch_norm",
                                                          "val_accuracy_after_distillation", "kept", "accepted")}
                                   for a in attempts])
        else:
            epochs = finetune_epochs_spent(state, config)
            extra.update(steps=len(state["steps"]), accepted_steps=sum(1 for s in state["steps"] if s.get("accepted")))
        if kind == "compress":
            result["compression"] = report
        entry = record(method, student, wall, epochs, description, **extra)
        return student, entry

    def keep_better(student, before_weights, acc_before):
        # the iterative schedule's rule: when fine-tuning lowers validation accuracy, keep the surgery-only weights.
        acc_after = accuracy(student, data.x_validation, data.y_validation)
        if acc_before is not None and acc_after is not None and acc_after < acc_before:
            student.set_weights(before_weights)
            return False
        return True

    rules = {"mp": {"tau": args.tau}, "energy": {"fraction": args.energy_fraction}, "gavish-donoho": {}}
    main_rule = getattr(args, "rank_rule", "mp")
    schedule_text = ("budgeted: one analysis, one cut, distilled from the original teacher" if args.schedule == "budgeted"
                     else f"iterative ({args.order}), self-distillation per step")
    rmtkd_student, rmtkd = run_rmtkd("rmtkd-mp", main_rule, rules[main_rule],
                                     f"RMT-KD: {main_rule} signal ranks on activation covariances, {schedule_text}",
                                     args.schedule)
    target_params = rmtkd["params"]
    target_encoder_params = rmtkd["encoder_params"]
    budget = rmtkd["finetune_epochs"]
    rmtkd_ranks = factorized_ranks(rmtkd_student)
    result.update(finetune_budget_epochs=budget, target_params=target_params,
                  target_encoder_params=target_encoder_params)
    save()
    if not rmtkd_ranks:
        warning = ("RMT-KD factorized nothing (every step rolled back or nothing to reduce; see --max-drop): the "
                   "parameter target is the teacher's own size, so the other methods are not compressed either")
        result["notes"].append(warning)
        log(f"warning: {warning}")
    log(f"budget: {budget} fine-tuning epochs, target {target_params:,} params, RMT-KD ranks {rmtkd_ranks}")

    if "rmtkd-mp-bn" in wanted and args.schedule == "budgeted":
        run_rmtkd("rmtkd-mp-bn", main_rule, rules[main_rule],
                  "rmtkd-mp with the cut student's BatchNorm statistics re-estimated before scoring and distillation",
                  "budgeted", recalibrate_bn=True)
    if "rmtkd-iterative" in wanted and args.schedule == "budgeted":
        run_rmtkd("rmtkd-iterative", "mp", rules["mp"],
                  f"RMT-KD, the paper's iterative loop ({args.order}), MP rule, self-distillation per step", "iterative")
    if "rmtkd-energy" in wanted:
        run_rmtkd("rmtkd-energy", "energy", rules["energy"],
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
        log(f"dense-small-kd: width x{width:.3f}, {student.count_params():,} params, training from scratch")
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
    if kind == "compare":
        from benchmarks.plot import plot_accuracy_vs_params

        png = plot_accuracy_vs_params(result, out_path.with_suffix(".png"))
        log(f"wrote {out_path} and {png}")
        table = render.compare_table(result)
        print(table)
        if args.write_markdown:
            render.write_section(table, "compare", stem)
            log("updated its section of BENCHMARKS.md")
    else:
        log(f"wrote {out_path}")
        if args.write_markdown:
            from benchmarks.report import compress_results

            render.write_section(render.results_table(compress_results()), "results")
            log("updated the results table of BENCHMARKS.md")
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


__all__ = ["METHODS", "run", "Evaluator"]
