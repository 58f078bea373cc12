"""Seconds per step of keras.applications teachers on CIFAR-10 on this machine, and what a run would cost.

    nice -n 10 python -m tools.keras_apps_cost [--steps 30] [--out benchmarks/results/keras_apps_cost.json]
    nice -n 10 python -m tools.keras_apps_cost --models MobileNetV2,EfficientNetB0 --resnet-sizes "" --out ...
    nice -n 10 python -m tools.keras_apps_cost --models ResNet50 --no-32 --resnet-sizes 64,224 --out ...
    python -m tools.keras_apps_cost --resnet-sizes "" --dtype-policies float32,mixed_bfloat16 --out ...
    python -m tools.keras_apps_cost --markdown RESULT.json [RESULT.json ...]   # BENCHMARKS.md's tables

For ResNet-50, MobileNetV2 (alpha 1.0) and EfficientNet-B0 (`weights=None`, 10 classes, logits) at 32x32, and
ResNet-50 upsampled inside the model (a `Resizing` layer in front, so it still takes CIFAR's 32x32 images),
on real CIFAR-10 training images (`rmtkd_tf.data.load_data`, a class-balanced draw of a few hundred), measures:

- `train`: one `fit` step (SGD with momentum, sparse cross-entropy on logits, Keras' default compile), batch 64;
- `inference`: one `predict` batch of 64 (what evaluation, `compress`'s search and its teacher passes cost);
- `distill`: one step of `rmtkd_tf.distill.SelfDistiller` (what `compress` trains with), the student being a
  full-size copy of the teacher, so an upper bound of a real (smaller) student's step;
- `collection`: one batch of 64 through `rmtkd_tf.collection.collect_activations` over every candidate layer
  (calibration), as the difference of two calls (4 and 1 batches) so that tracing is not counted;
- `decide_ranks_s`: the MP rank decisions over those statistics (eigendecompositions; independent of n).

Each timing runs `--warmup` steps first (tracing, first allocations) and reports the median and mean wall time
and process CPU seconds of the following `--steps` steps, with the load average around it: the machine is
shared, so wall times are upper bounds of what the same code would take alone; CPU seconds (all threads of
the process) are the demand: alone on the 2 cores a step would take between half of them and all of them.
`--dtype-policies` times each model under each Keras dtype policy in the same run (`mixed_bfloat16`: bfloat16
compute, float32 variables; does this CPU's bf16 hardware pay off in TensorFlow's kernels?).
`estimates["wall"]` and `estimates["cpu"]` extrapolate each to one CIFAR-10 epoch (50,000 images), teacher runs
of 30 and 100 epochs, and a default `rmtkd-tf compress` on full CIFAR-10 (see `compress_estimate`). Weights are
random: step times do not depend on them.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from rmtkd_tf.collection import candidate_layers, collect_activations  # noqa: E402
from rmtkd_tf.data import load_data  # noqa: E402
from rmtkd_tf.distill import SelfDistiller  # noqa: E402
from rmtkd_tf.flops import model_flops  # noqa: E402
from rmtkd_tf.io import write_json  # noqa: E402
from rmtkd_tf.selection import decide_ranks  # noqa: E402
from rmtkd_tf.spectral import get_rank_rule  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10"
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000
TEACHER_EPOCHS = (30, 100)
# `rmtkd-tf compress` defaults on a data set without a validation split (CIFAR-10's image folders).
COMPRESS = dict(calibration_fraction=0.1, validation_fraction=0.1, calibration_samples=2048, batch_size=64,
                distillation_epochs=3)


class StepTimer(keras.callbacks.Callback):
    """Wall and process-CPU time of every batch of a `fit` or `predict`, from one batch end to the next."""

    def __init__(self):
        super().__init__()
        self.marks = []

    def _mark(self, *_, **__):
        self.marks.append((time.perf_counter(), time.process_time()))

    on_train_begin = on_predict_begin = _mark
    on_train_batch_end = on_predict_batch_end = _mark

    def summary(self, warmup, batch_size):
        """Median/mean over the batches after `warmup` (the first mark is the start of batch 1)."""
        marks = np.array(self.marks[warmup:])
        wall, cpu = np.diff(marks[:, 0]), np.diff(marks[:, 1])
        return {"batch_size": batch_size, "steps_timed": len(wall), "warmup_steps": warmup,
                "wall_s_median": round(float(np.median(wall)), 4), "wall_s_mean": round(float(wall.mean()), 4),
                "wall_s_min": round(float(wall.min()), 4), "cpu_s_mean": round(float(cpu.mean()), 4)}


def build(application, size, alpha=None):
    """The application with 10 logits; for `size` != 32, a Resizing layer in front of a size x size copy."""
    kwargs = dict(weights=None, classes=10, classifier_activation=None, input_shape=(size, size, 3))
    if alpha is not None:
        kwargs["alpha"] = alpha
    net = getattr(keras.applications, application)(**kwargs)
    if size == 32:
        return net
    inputs = keras.Input((32, 32, 3))
    return keras.Model(inputs, net(keras.layers.Resizing(size, size, name="upsample")(inputs)),
                       name=f"{application}_{size}")


def repeated(x, y, batch_size, steps):
    n = len(x)
    index = np.arange(batch_size * steps) % n
    return tf.data.Dataset.from_tensor_slices((x[index], y[index])).batch(batch_size).prefetch(2)


def time_train(model, x, y, batch_size, warmup, steps):
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = StepTimer()
    model.fit(repeated(x, y, batch_size, warmup + steps), epochs=1, verbose=0, callbacks=[timer])
    return timer.summary(warmup, batch_size)


def time_inference(model, x, batch_size, warmup, steps):
    index = np.arange(batch_size * (warmup + steps)) % len(x)
    timer = StepTimer()
    model.predict(x[index], batch_size=batch_size, verbose=0, callbacks=[timer])
    return timer.summary(warmup, batch_size)


def time_distill(model, x, y, batch_size, warmup, steps):
    student = keras.models.clone_model(model)
    student.set_weights(model.get_weights())
    distiller = SelfDistiller(student, model, alpha=0.7, temperature=4.0)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    timer = StepTimer()
    distiller.fit(repeated(x, y, batch_size, warmup + steps), epochs=1, verbose=0, callbacks=[timer])
    for layer in model._flatten_layers(include_self=True):  # SelfDistiller froze the teacher
        layer.trainable = True
    return timer.summary(warmup, batch_size)


def time_collection(model, x, batch_size, batches=4):
    """Seconds per calibration batch and the MP rank decisions' seconds.

    Each batch is timed through the collection's progress callback; the first call (1 batch) traces, the
    second (`batches` batches, traced again: the collection builds its step per call) gives the median of
    its batches after the first. (The results committed before this change differenced the two calls' totals,
    which the machine's changing load can make negative: such a figure is reported and left out of estimates.)
    """
    collect_activations(model, x[:batch_size], batch_size=batch_size)
    marks = [(time.perf_counter(), time.process_time())]
    stats = collect_activations(model, x[: batches * batch_size], batch_size=batch_size,
                                progress=lambda *_: marks.append((time.perf_counter(), time.process_time())))
    marks = np.array(marks[1:])  # from the end of the first (tracing) batch
    wall, cpu = np.diff(marks[:, 0]), np.diff(marks[:, 1])
    layers = dict(candidate_layers(model))
    t3, c3 = time.perf_counter(), time.process_time()
    decide_ranks(layers, stats, get_rank_rule("mp", tau=0.5))
    t4, c4 = time.perf_counter(), time.process_time()
    return {"batch_size": batch_size, "batches_timed": len(wall), "candidate_layers": len(layers),
            "largest_dim": max(s.dim for s in stats.values()),
            "wall_s_per_batch": round(float(np.median(wall)), 3), "cpu_s_per_batch": round(float(cpu.mean()), 3),
            }, round(t4 - t3, 2), round(c4 - c3, 2)


# Whether other jobs shared the machine is not known here: each model's entry records the load averages around it.
MACHINE = "the project's 2-core x86-64 CPU build machine (other load: each model's load_before / load_after)"


def measure(label, application, size, x, y, args, full, dtype_policy="float32"):
    keras.backend.clear_session()
    gc.collect()
    keras.mixed_precision.set_global_policy(dtype_policy)
    try:
        model = build(application, size, args.alpha if application == "MobileNetV2" else None)
    finally:  # the policy applies to the layers built above; nothing else is built under it
        keras.mixed_precision.set_global_policy("float32")
    batch = args.batch_size if size <= 128 else args.large_batch_size
    steps = args.steps if size == 32 else args.upsampled_steps
    entry = {"application": application, "input_size": size, "params": int(model.count_params()),
             "flops_per_image": int(model_flops(model)), "load_before": [round(v, 2) for v in os.getloadavg()]}
    if application == "MobileNetV2":
        entry["alpha"] = args.alpha
    if dtype_policy != "float32":
        entry["dtype_policy"] = dtype_policy
    print(f"{label}: {entry['params']:,} params", flush=True)
    entry["inference"] = time_inference(model, x, batch, args.warmup, steps)
    print(f"  inference {entry['inference']}", flush=True)
    entry["train"] = time_train(model, x, y, batch, args.warmup, steps)
    print(f"  train {entry['train']}", flush=True)
    if full:
        entry["distill"] = time_distill(model, x, y, batch, args.warmup, steps)
        print(f"  distill {entry['distill']}", flush=True)
        entry["collection"], entry["decide_ranks_wall_s"], entry["decide_ranks_cpu_s"] = time_collection(
            model, x, batch)
        print(f"  collection {entry['collection']}, decide_ranks {entry['decide_ranks_wall_s']} s", flush=True)
    entry["load_after"] = [round(v, 2) for v in os.getloadavg()]
    return entry


STEP = {"wall": "wall_s_median", "cpu": "cpu_s_mean"}


def per_image(timing, measure):
    return timing[STEP[measure]] / timing["batch_size"]


def compress_estimate(entry, measure, search_evaluations=15):
    """Seconds of a default `rmtkd-tf compress` on full CIFAR-10 (50,000 train / 10,000 test images).

    Calibration: min(2,048, 10% of train) images through the collection, then the rank decisions. Validation: 10%
    of train (5,000), the rest (40,000) distilled for 3 epochs. Search (only without --target-*): at most
    `search_evaluations` validation passes (1 + ceil(log2(ladder length)) for a ladder up to 16,384 cuts), each
    priced as a teacher pass (a student is cheaper). Evaluations: teacher and student on validation and test.
    The distillation step is the full-size upper bound. Surgery, checkpoints and the TFLite export are not counted.
    `measure`: "wall" (median wall seconds per step, on the shared machine) or "cpu" (mean process CPU seconds).
    """
    val = int(COMPRESS["validation_fraction"] * CIFAR_TRAIN)
    calibration = min(COMPRESS["calibration_samples"], int(COMPRESS["calibration_fraction"] * CIFAR_TRAIN))
    train = CIFAR_TRAIN - val - int(COMPRESS["calibration_fraction"] * CIFAR_TRAIN)
    bs = COMPRESS["batch_size"]
    collection = entry.get("collection") or {}
    per_batch = collection.get(f"{measure}_s_per_batch")
    # Results written before batches were timed one by one ("batches": [1, n]) differenced two calls' totals,
    # whose tracing costs differ: not a measurement of a batch, so left out.
    measured = "batches_timed" in collection and per_batch is not None and per_batch >= 0
    parts = {
        "calibration_s": (math.ceil(calibration / bs) * per_batch + entry[f"decide_ranks_{measure}_s"])
        if measured else 0.0,
        "search_s_without_target": search_evaluations * val * per_image(entry["inference"], measure),
        "evaluation_s": 2 * (val + CIFAR_TEST) * per_image(entry["inference"], measure),
        "distillation_s": COMPRESS["distillation_epochs"] * math.ceil(train / bs) * entry["distill"][STEP[measure]],
    }
    total = sum(parts.values())
    parts = {k: round(v, 1) for k, v in parts.items()}
    parts["total_h_with_target"] = round((total - parts["search_s_without_target"]) / 3600, 2)
    parts["total_h_without_target"] = round(total / 3600, 2)
    if not measured:
        parts["calibration_s"] = None  # not measured: left out of the totals
    return parts


def estimates(entry, measure):
    """Hours of one CIFAR-10 epoch and of teacher runs (each epoch + one test pass), and of `compress`."""
    epoch_s = math.ceil(CIFAR_TRAIN / entry["train"]["batch_size"]) * entry["train"][STEP[measure]]
    test_pass_s = CIFAR_TEST * per_image(entry["inference"], measure)
    out = {"train_epoch_h": round(epoch_s / 3600, 2), "test_pass_s": round(test_pass_s, 1)}
    for epochs in TEACHER_EPOCHS:
        out[f"teacher_{epochs}_epochs_h"] = round(epochs * (epoch_s + test_pass_s) / 3600, 1)
    if "distill" in entry:
        out["compress"] = compress_estimate(entry, measure)
    return out


def _model_label(result, with_alpha=False):
    """`MobileNetV2 (alpha 1.0), mixed_bfloat16`: the application, its width if asked, and a non-default policy."""
    alpha = f" (alpha {result['alpha']})" if with_alpha and "alpha" in result else ""
    policy = f", {result['dtype_policy']}" if "dtype_policy" in result else ""
    return result["application"] + alpha + policy


def markdown(payload):
    """The two tables of BENCHMARKS.md's #15 section, from a result written by this script.

    A calibration cell reads `n/a`, and the compress totals beside it carry a `*` (calibration left out), for a
    result whose collection has no `batches_timed`: one written before `time_collection` timed batches one by
    one, whose per-batch figure (the difference of two calls' totals) measured nothing. Nothing else in such a
    result stands in for it; only a rerun fills the cell (the committed keras_apps_cost.json is one of these).
    """
    def step(t):
        return f"{t['wall_s_median']:.2f} / {t['cpu_s_mean']:.2f}" if t else "-"

    lines = ["| model | input | params | MFLOPs / image | train step | inference batch | distillation step "
             "| calibration batch | rank decisions |", "|---|---|---|---|---|---|---|---|---|"]
    for r in payload["results"].values():
        collection = r.get("collection")
        name = _model_label(r, with_alpha=True)
        size = f"{r['input_size']}x{r['input_size']}" + (" (upsampled in the model)" if r["input_size"] != 32 else "")
        calibration = "-" if not collection else (
            f"{collection['wall_s_per_batch']:.2f} / {collection['cpu_s_per_batch']:.2f}"
            if "batches_timed" in collection else "n/a")
        ranks = f"{r['decide_ranks_wall_s']:.0f} / {r['decide_ranks_cpu_s']:.0f}" if collection else "-"
        lines.append(f"| {name} | {size} | {r['params']:,} | {r['flops_per_image'] / 1e6:,.0f} "
                     f"| {step(r['train'])} (batch {r['train']['batch_size']}) | {step(r['inference'])} "
                     f"| {step(r.get('distill'))} | {calibration} | {ranks} |")
    lines += ["", "| model | input | one epoch, h | teacher, 30 epochs, h | teacher, 100 epochs, h "
              "| compress with a target, h | compress without (search), h |", "|---|---|---|---|---|---|---|"]
    for r in payload["results"].values():
        # Derived, not measured: recomputed from the measurements with this file's rules.
        w, c = estimates(r, "wall"), estimates(r, "cpu")

        def pair(key, sub=None):
            a, b = (w[key], c[key]) if sub is None else (w.get(key, {}).get(sub), c.get(key, {}).get(sub))
            if a is None:
                return "-"
            partial = sub is not None and w[key]["calibration_s"] is None  # calibration not measured
            return f"{a:g} / {b:g}{'*' if partial else ''}"

        name = _model_label(r)
        lines.append(f"| {name} | {r['input_size']}x{r['input_size']} | {pair('train_epoch_h')} "
                     f"| {pair('teacher_30_epochs_h')} | {pair('teacher_100_epochs_h')} "
                     f"| {pair('compress', 'total_h_with_target')} | {pair('compress', 'total_h_without_target')} |")
    return "\n".join(lines)


def recover_from_log(log_path, out, command_as_run):
    """The result of a run stopped before it wrote its JSON, from the lines it printed (its own measurements)."""
    import ast

    results, label, application, size = {}, None, None, None
    for line in Path(log_path).read_text().splitlines():
        if "@" in line and line.endswith(" params") and ":" in line:
            label = line.split(":")[0]
            application, at = label.split("@")
            size, _, policy = at.partition("/")  # `ResNet50@32/mixed_bfloat16` under another dtype policy
            params = int(line.split(": ")[1].split()[0].replace(",", ""))
            results[label] = {"application": application, "input_size": int(size), "params": params,
                              **({"dtype_policy": policy} if policy else {})}
        elif label and line.startswith("  ") and line.split()[0] in ("inference", "train", "distill"):
            key, text = line.strip().split(" ", 1)
            results[label][key] = ast.literal_eval(text)
    for entry in results.values():
        model = build(entry["application"], entry["input_size"])
        entry["flops_per_image"] = int(model_flops(model))
        entry["estimates"] = {m: estimates(entry, m) for m in STEP}
    payload = {
        "schema_version": 2, "kind": "cost", "name": Path(out).stem,
        "command": "python -m tools.keras_apps_cost --recover-from-log LOG",
        "command_as_run": command_as_run,
        "recovered_from_log": str(log_path),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"what": MACHINE,
                    "cpu_count": os.cpu_count(), "tensorflow": tf.__version__, "keras": keras.__version__},
        "assumptions": {"cifar10_train": CIFAR_TRAIN, "cifar10_test": CIFAR_TEST, "teacher_epochs": TEACHER_EPOCHS,
                        "compress": COMPRESS, "compress_estimate": compress_estimate.__doc__.strip()},
        "results": results, "complete": False,
    }
    write_json(out, payload)
    return payload


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--images", type=int, default=640, help="real training images drawn (cycled)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--large-batch-size", type=int, default=16, help="batch above 128x128 (memory)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--upsampled-steps", type=int, default=4)
    parser.add_argument("--resnet-sizes", default="64,224", help="upsampled ResNet-50 inputs ('' for none)")
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width")
    parser.add_argument("--models", default="ResNet50,MobileNetV2,EfficientNetB0")
    parser.add_argument("--dtype-policies", default="float32",
                        help="Keras dtype policies to time each 32x32 model under, e.g. float32,mixed_bfloat16")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "keras_apps_cost.json"))
    parser.add_argument("--recover-from-log", metavar="LOG", default=None,
                        help="write --out from the printed measurements of a run stopped before its JSON")
    parser.add_argument("--as-run", default=None, help="with --recover-from-log: the command that printed LOG")
    parser.add_argument("--no-32", dest="at_32", action="store_false", help="only the upsampled ResNet-50 runs")
    parser.add_argument("--markdown", metavar="RESULT", nargs="+", default=None,
                        help="print the tables of these results (in order) and exit")
    args = parser.parse_args(argv)
    if args.recover_from_log:
        recover_from_log(args.recover_from_log, args.out, args.as_run)
        return
    if args.markdown:
        results = {}
        for path in args.markdown:
            results.update(json.loads(Path(path).read_text())["results"])
        print(markdown({"results": results}))
        return
    tf.keras.utils.set_random_seed(0)
    t0 = time.time()
    data = load_data(args.data, limit=args.images, seed=0)
    x, y = data.x_train.astype("float32"), data.y_train.astype("int32")
    print(f"{len(x)} CIFAR-10 training images, shape {x.shape[1:]}", flush=True)
    policies = [p for p in args.dtype_policies.split(",") if p]
    jobs = [(f"{name}@32" + ("" if policy == "float32" else f"/{policy}"), name, 32, True, policy)
            for name in args.models.split(",") if name and args.at_32 for policy in policies]
    if "ResNet50" in args.models.split(","):
        jobs += [(f"ResNet50@{s}", "ResNet50", int(s), False, "float32") for s in args.resnet_sizes.split(",") if s]
    results = {}
    payload = {
        "schema_version": 2, "kind": "cost", "name": Path(args.out).stem,
        "command": "python -m tools.keras_apps_cost " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])
                                                                 if a != args.out and not a.startswith("--out")),
        "command_as_run": f"nice -n {os.nice(0)} " + " ".join(shlex.quote(a) for a in ["python", "-m", "tools.keras_apps_cost",
                                                               *(argv or sys.argv[1:])]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"what": MACHINE,
                    "cpu_count": os.cpu_count(), "platform": platform.platform(), "tensorflow": tf.__version__,
                    "keras": keras.__version__, "backend": keras.backend.backend()},
        "data": {"path": args.data, "train_images_drawn": len(x)},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "assumptions": {"cifar10_train": CIFAR_TRAIN, "cifar10_test": CIFAR_TEST, "teacher_epochs": TEACHER_EPOCHS,
                        "compress": COMPRESS, "compress_estimate": compress_estimate.__doc__.strip()},
        "results": results,
        "complete": False,
    }
    for label, application, size, full, policy in jobs:
        results[label] = measure(label, application, size, x, y, args, full, policy)
        results[label]["estimates"] = {m: estimates(results[label], m) for m in STEP}
        print(f"  estimates {results[label]['estimates']}", flush=True)
        payload["wall_s"] = round(time.time() - t0, 1)
        write_json(args.out, payload)  # after every model: a run stopped early keeps what it measured
    payload["complete"] = True
    write_json(args.out, payload)
    print(f"wrote {args.out} ({payload['wall_s']} s)")


if __name__ == "__main__":
    main()
