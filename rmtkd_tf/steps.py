"""The steps every compression schedule is made of: analyse, factorize, distil, check, checkpoint.

`rmtkd_tf.compression.run` chooses a schedule (`rmtkd_tf.schedules`); each schedule is
a short loop over these shared steps:

- `reduction_step`: one step of the iterative schedule and of `RMTKDCallback`:
  collect -> select -> factorize -> distil -> decide, on a group of layers;
- `analyse`: collect the covariances of some layers on the calibration split and
  let the rank rule decide (`rmtkd_tf.selection.decide_ranks`);
- `distil` / `distil_keep_better`: self-distil a student from a frozen teacher
  on the fine-tuning split;
- `validation_check`: the student's validation accuracy and its drop below the
  original model's, paired on the same examples, with the decision whether the
  drop is within `max_drop`;
- `RunFolder`: the run's `state.json`, `history.json` and checkpoints.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rmtkd_tf.acceptance import accept_drop, describe, paired_accuracy_drop
from rmtkd_tf.collection import candidate_layers, collect_activations
from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.evaluation import per_example_correct
from rmtkd_tf.finite_guard import ensure_finite_training
from rmtkd_tf.flops import model_flops
from rmtkd_tf.io import write_json
from rmtkd_tf.rows import n_rows, take_rows
from rmtkd_tf.surgery import factorize_model


def accuracy(model, x, y, batch_size=256):
    """Top-1 accuracy (percent) of `model` on `(x, y)`, None without labels or examples."""
    if y is None or n_rows(x) == 0:
        return None
    return float(100.0 * np.mean(per_example_correct(model, x, y, batch_size)))


def seed_step(seed, step):
    """Seed every generator from `(seed, step)`, so a resumed run repeats an uninterrupted one."""
    keras.utils.set_random_seed(int(seed) * 1000 + int(step))


def calibration_inputs(data, config):
    """The first `config.calibration_samples` calibration examples."""
    count = min(n_rows(data.x_calibration), config.calibration_samples)
    return take_rows(data.x_calibration, np.arange(count))


def analyse(model, data, config, rule, paths, noise_priors=None, log=None):
    """Collect the covariances of `paths` and decide their ranks.

    Returns `(decisions, factors, statistics)` as `rmtkd_tf.selection.decide_ranks` does,
    plus the raw `LayerStatistics` by path. `noise_priors` (path -> the noise fit of an
    earlier analysis of that layer) makes the rank rule reuse that noise level. `log` (a
    `rmtkd_tf.progress.RunLog`) shows the collection's progress.
    """
    from rmtkd_tf.progress import progress_of
    from rmtkd_tf.selection import decide_ranks

    layers = dict(candidate_layers(model, paths))
    inputs = calibration_inputs(data, config)
    batches = math.ceil(n_rows(inputs) / config.batch_size)
    with progress_of(log, f"collecting activations of {len(layers)} layers", batches, "batch") as bar:
        statistics = collect_activations(model, inputs, layers=paths, batch_size=config.batch_size,
                                         progress=bar.update)
    decisions, factors = decide_ranks(layers, statistics, rule, min_rank_ratio=config.min_rank_ratio,
                                      noise_priors=noise_priors)
    return decisions, factors, statistics


def training_dataset(data, batch_size, seed):
    """The shuffled, batched fine-tuning split."""
    return (
        tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
        .shuffle(min(n_rows(data.x_train), 20000), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
    )


# Iterators `keras.Model.fit` opens on a dataset of known length per epoch (no `steps_per_epoch`): the one it
# reads, and one it opens at the epoch's end and drops (Keras 3 `EpochIterator`). Each draws the next reshuffle.
FIT_ITERATORS_PER_EPOCH = 2


def skip_shuffles_of_fitted_epochs(dataset, epochs):
    """`dataset`, with the reshuffles that `epochs` epochs of `fit` drew on it drawn already.

    So that a fit resumed at `initial_epoch=epochs` (same seeds) sees the order an uninterrupted fit's
    epoch `epochs` saw. tests/test_compress_budgeted.py checks a resumed distillation ends bit-for-bit
    where an uninterrupted one does, which also pins `FIT_ITERATORS_PER_EPOCH`.
    """
    for _ in range(epochs * FIT_ITERATORS_PER_EPOCH):
        iter(dataset)  # opening an iterator draws a reshuffle; nothing is read
    return dataset


def distil(student, teacher, data, config, epochs, seed, initial_epoch=0, callbacks=(), learning_rate=None):
    """Self-distil `student` from frozen `teacher` on the training split; returns the last epoch's logs.

    Runs epochs `initial_epoch .. epochs - 1` (so an interrupted distillation can continue: epoch `k` sees
    the shuffle an uninterrupted run's epoch `k` sees, given the same seeds). `learning_rate` may be a
    Keras schedule; default `config.learning_rate`. A callback may restore the optimizer's state in
    `on_train_begin` (`rmtkd_tf.schedules.budgeted` does).
    """
    if epochs <= initial_epoch:
        return {}
    # SelfDistiller freezes the teacher (trainable=False on every sublayer). The teacher may be the
    # caller's own model or the next step's surgery source: restore every flag afterwards.
    trainable_flags = [(layer, layer.trainable) for layer in teacher._flatten_layers(include_self=True)]
    try:
        logs = _fit_distiller(student, teacher, data, config, epochs, seed, initial_epoch, callbacks, learning_rate)
        ensure_finite_training(student, logs, "distillation")  # never accept nor save a NaN student
        return logs
    finally:
        for layer, flag in trainable_flags:
            layer.trainable = flag


def _fit_distiller(student, teacher, data, config, epochs, seed, initial_epoch, callbacks, learning_rate):
    from rmtkd_tf.distill import SelfDistiller
    from rmtkd_tf.features import FeatureTaps, factorized_paths

    feature_weight = getattr(config, "feature_weight", 0.0)
    paths = factorized_paths(student, teacher) if feature_weight > 0 else []
    with FeatureTaps(student, teacher, paths) as taps:
        distiller = SelfDistiller(student, teacher, alpha=config.alpha, temperature=config.temperature,
                                  feature_taps=taps if paths else None, feature_weight=feature_weight)
        rate = config.learning_rate if learning_rate is None else learning_rate
        distiller.compile(optimizer=keras.optimizers.Adam(rate))
        dataset = skip_shuffles_of_fitted_epochs(training_dataset(data, config.batch_size, seed), initial_epoch)
        history = distiller.fit(
            dataset, epochs=epochs, initial_epoch=initial_epoch, verbose=0,
            shuffle=False, callbacks=list(callbacks),  # the dataset shuffles
        )
    return {k: float(v[-1]) for k, v in history.history.items()}


def distil_keep_better(student, teacher, data, config, epochs, seed, callbacks=()):
    """Distil, then keep whichever of the weights before/after scores better on validation.

    Distillation can make a student worse (e.g. a learning rate too high for a converged teacher);
    the weights before it are then the better student by the same measure, so they are restored.
    Returns `(logs, val_accuracy_before, val_accuracy_after_distillation, kept_distillation)`.
    """
    weights_before = student.get_weights()
    acc_before = accuracy(student, data.x_validation, data.y_validation)
    logs = distil(student, teacher, data, config, epochs, seed=seed, callbacks=callbacks)
    acc_after = accuracy(student, data.x_validation, data.y_validation)
    kept = not (acc_before is not None and acc_after is not None and acc_after < acc_before)
    if not kept:
        student.set_weights(weights_before)
    return logs, acc_before, acc_after, kept


def reduction_step(current, data, config, rule, group, reference, *, seed, noise=None, log=None, step=None):
    """One RMT-KD step on the layers `group` of `current`: collect -> select -> factorize -> distil -> decide.

    1. collect the covariances of `group` on the calibration split and let `rule` pick each layer's
       rank (`analyse`; `noise`, path -> first noise fit, is reused and filled in);
    2. factorize the layers that can shrink (`rmtkd_tf.surgery.factorize_model`);
    3. self-distil the candidate from `current` for `config.epochs_per_step` epochs, keeping the
       weights before distillation if it made validation worse (`distil_keep_better`);
    4. check it against the original model on validation (`reference.check`, paired, within
       `config.max_drop` at `config.confidence`).

    `log` (a `rmtkd_tf.progress.RunLog`) shows the collection's and the distillation's progress and
    gets the `"analysis"` event (numbered `step`). Nothing is saved and `current` is unchanged. Returns `(candidate, record)`: the candidate is None
    when no layer of `group` can be reduced; `record` (JSON-ready) has `layers`, `decisions`, `ranks`,
    `params_before`, and after a factorization `params_after`, `flops_after`,
    `val_accuracy_after_surgery`, `val_accuracy`, `kept_fine_tuning`, `val_drop`, `validation_check`,
    `losses`; then `accepted`, `reason` (why not accepted) and `wall_s`.
    """
    t0 = time.time()
    noise = {} if noise is None else noise
    params_now = int(current.count_params())
    from rmtkd_tf.progress import FitProgress, emit

    decisions, factors, _ = analyse(current, data, config, rule, group,
                                    noise_priors={p: noise[p] for p in group if p in noise}, log=log)
    emit(log, "analysis", step=step or 0, decisions=decisions)
    for decision in decisions:
        if decision.noise is not None and decision.path not in noise:
            noise[decision.path] = decision.noise
    record = {"layers": list(group), "decisions": [d.to_dict() for d in decisions],
              "ranks": {d.path: d.rank for d in decisions if d.rank is not None}, "params_before": params_now}
    if not factors:
        record.update(accepted=False, reason="no layer in this step can be reduced", wall_s=round(time.time() - t0, 2))
        return None, record
    candidate = factorize_model(current, factors)
    shown = FitProgress(log, f"step {step}: distilling" if step is not None else "distilling", config.epochs_per_step,
                        math.ceil(n_rows(data.x_train) / config.batch_size), stage=None if step is None else f"step {step}")
    logs, acc_after_surgery, _, kept_fine_tuning = distil_keep_better(
        candidate, current, data, config, config.epochs_per_step, seed=seed, callbacks=[shown])
    check = reference.check(candidate, data, config)
    record.update(
        params_after=int(candidate.count_params()),
        flops_after=model_flops(candidate),
        val_accuracy_after_surgery=acc_after_surgery,
        val_accuracy=check["val_accuracy"],
        kept_fine_tuning=kept_fine_tuning,
        val_drop=check["drop"],
        validation_check=check,
        losses=logs,
        accepted=check["accepted"],
        reason=None if check["accepted"] else (
            f"validation drop {check['drop']:.2f} (upper bound {check['drop_upper']:.2f}) "
            f"not within max_drop {config.max_drop}"),
        wall_s=round(time.time() - t0, 2),
    )
    return candidate, record


class ValidationReference:
    """The original model's per-example correctness on the validation split, to pair students against."""

    def __init__(self, model, data):
        self.correct = None
        if data.y_validation is not None and len(data.y_validation):
            self.correct = per_example_correct(model, data.x_validation, data.y_validation)

    @property
    def accuracy(self):
        return None if self.correct is None else float(100.0 * self.correct.mean())

    def check(self, student, data, config):
        """Validation accuracy of `student`, its paired drop below the original and whether it is accepted.

        Accepted only when the upper bound of the drop's `config.confidence` interval is within
        `config.max_drop` (`rmtkd_tf.acceptance`). Without validation labels every student is accepted.
        """
        if self.correct is None:
            return {"val_accuracy": None, "drop": None, "drop_upper": None, "accepted": True}
        student_correct = per_example_correct(student, data.x_validation, data.y_validation)
        estimate = paired_accuracy_drop(self.correct, student_correct, confidence=config.confidence)
        return {
            "val_accuracy": float(100.0 * student_correct.mean()),
            "drop": float(estimate.drop),
            "drop_upper": float(estimate.upper),
            "accepted": bool(accept_drop(estimate, config.max_drop)),
            "estimate": estimate.to_dict(),
            "text": describe(estimate, config.max_drop),
        }


class RunFolder:
    """A run's files: `state.json` (everything needed to resume), `history.json`, `checkpoints/`."""

    def __init__(self, output_dir):
        self.dir = Path(output_dir)
        self.state_path = self.dir / "state.json"
        self.history_path = self.dir / "history.json"
        self.checkpoints = self.dir / "checkpoints"

    def checkpoint_path(self, step):
        return self.checkpoints / f"step_{step:03d}.keras"

    def named_checkpoint(self, name):
        return self.checkpoints / f"{name}.keras"

    def save_state(self, state):
        write_json(self.state_path, state)
        history = {"config": state["config"], "schedule": state.get("schedule", "iterative"),
                   "steps": state.get("steps", []), "attempts": state.get("attempts", [])}
        write_json(self.history_path, history)

    def load_state(self):
        if not self.state_path.exists():
            raise RMTKDError(f"nothing to resume in {self.dir}: no state.json")
        with open(self.state_path) as fh:
            return json.load(fh)
