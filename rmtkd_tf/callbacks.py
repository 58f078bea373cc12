"""RMT-KD inside your own `model.fit`: the `RMTKDCallback`.

Add one callback to `model.fit(...)` and RMT-KD runs with the paper's schedule:
train normally until the validation accuracy passes a threshold, then reduce
the model at epoch boundaries, one layer per step (shallow → deep, round
robin), each step self-distilled from the model *before* the step.

`fit` cannot swap the model it trains, so the callback works on a copy:

1. Before the threshold nothing happens; your model trains as usual.
2. At the first epoch end where the validation accuracy reaches
   `start_accuracy`, the callback snapshots your model (a clone with copied
   weights) as `teacher_`, records its validation accuracy as
   `baseline_accuracy_`, and starts the student (`student_`) from a second
   copy of that snapshot.
3. Every `reduce_every` epochs after that, one RMT-KD step runs on the
   student: collect the chosen layer's activation covariance on
   `calibration_data`, pick its rank with `rank_rule`, factorize it, and
   self-distil the result for `epochs_per_step` epochs on `train_data` from a
   frozen copy of the student before the step. A step whose validation
   accuracy falls more than `max_drop` points below the baseline is rolled
   back and that layer is left alone from then on.
4. When no layer can be reduced any more, or the parameter target is met,
   compression is done (`stopped_` says why); with
   `stop_training_when_done=True` the callback also ends your `fit`.

Your model is never modified by the callback (it only reads it, once, for the
snapshot); after the snapshot its further training does not influence the
student. The result is `callback.student_`, an ordinary Keras model (not
compiled) that saves to `.keras` and reloads after `import rmtkd_tf`.

Units: `start_accuracy` is a fraction in [0, 1], like Keras'
`logs["val_accuracy"]`; everything RMT-KD reports (`baseline_accuracy_`,
`history_[i]["val_accuracy"]`, `max_drop`) is in percent / percentage points,
as in `rmtkd_tf.compress`.

The same steps are what `rmtkd_tf.compress.compress` does offline; the
callback reuses its building blocks (`collect_activations`, `decide_ranks`,
`factorize_model`, `distil`, `accuracy`) rather than duplicating them.
"""

from __future__ import annotations

import math
import numbers
import time

import keras
import numpy as np
import tensorflow as tf

from rmtkd_tf.arguments import check_integer
from rmtkd_tf.collection import candidate_layers, collect_activations
from rmtkd_tf.compress import CompressionConfig, CompressionData, accuracy, distil, next_open_layer
from rmtkd_tf.distill import check_hyperparameters
from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.selection import decide_ranks
from rmtkd_tf.spectral import get_rank_rule
from rmtkd_tf.surgery import factorize_model


class RMTKDCallback(keras.callbacks.Callback):
    """Applies RMT-KD to a copy of the model being trained, during `fit` (see the module docstring).

    Args:
        calibration_data: inputs whose activations pick the ranks: an array, a
            dict of arrays, an `(x, y)` tuple or a `tf.data.Dataset` (as
            `rmtkd_tf.collection.collect_activations` takes). Draw it from the
            training split, never the test split.
        train_data: `(x, y)` arrays the student is self-distilled on; `y`
            integer class indices.
        validation_data: `(x, y)` arrays for the accept/roll-back decision
            (and for the threshold when `logs` has no `val_accuracy`).
        start_accuracy: validation accuracy, a *fraction* in [0, 1] like
            Keras' `val_accuracy`, at which compression starts; `None` starts
            at the end of the first epoch. Read from `logs["val_accuracy"]`
            (the validation data given to `fit`) when present, otherwise
            measured on `validation_data`.
        reduce_every: epochs between two RMT-KD steps (the first step comes
            `reduce_every` epochs after the snapshot).
        rank_rule, rule_params: rank rule name and parameters for
            `rmtkd_tf.spectral.get_rank_rule` (`"mp"`: Marchenko–Pastur edge).
        max_drop: validation accuracy, in percentage points, a step may lose
            against the baseline before it is rolled back.
        min_rank_ratio: never go below `ceil(min_rank_ratio · d)` directions.
        target_params: stop once the student has at most
            `target_params × teacher` parameters (a fraction in (0, 1]);
            `None`: reduce until no layer can be reduced.
        epochs_per_step: self-distillation epochs after each factorization
            (0: accept or roll back right after surgery).
        alpha, temperature: distillation loss weights (see
            `rmtkd_tf.distill.distillation_loss`).
        learning_rate, batch_size: Adam learning rate and batch size of the
            self-distillation; `batch_size` also batches the calibration data.
        stop_training_when_done: set `model.stop_training = True` once
            compression is done, ending your `fit` early.
        verbose: 0 silent, 1 one line per step.
        include_output_layers: also factorize the classifier head (off by
            default: squeezing the logits saves little and costs accuracy).
        seed: seeds the shuffling of the self-distillation data. The global
            Keras seed is left alone so that your own training is undisturbed.

    Fitted attributes:
        teacher_: the snapshot of your model (uncompiled clone), or None before the threshold.
        baseline_accuracy_: `teacher_`'s validation accuracy in percent.
        student_: the compressed model (a copy of `teacher_` until a step is accepted).
        start_epoch_: the epoch (0-based, as Keras counts) of the snapshot.
        history_: one dict per attempted layer: `epoch`, `step`, `layers`,
            `ranks` ({path: rank}), `decisions`, `params_before`, `params_after`
            (of the candidate), `params` (of `student_` after the step),
            `val_accuracy_after_surgery`, `val_accuracy`, `val_drop`, `losses`,
            `outcome` (`"accepted"`, `"rolled back"`, `"not reducible"`),
            `accepted`, `reason`, `wall_s`.
        frozen_: {path: why the layer is not reduced any more}.
        stopped_: why compression finished, or None while it is running.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 8)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int64")
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
    ...                           keras.layers.Dense(2)])
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...               metrics=["accuracy"])
    >>> rmtkd = RMTKDCallback(x[:200], (x[:200], y[:200]), (x[200:], y[200:]), rank_rule="fixed-rank",
    ...                       rule_params={"rank": 2}, max_drop=100.0, verbose=0)
    >>> _ = model.fit(x[:200], y[:200], validation_data=(x[200:], y[200:]), epochs=3,
    ...               callbacks=[rmtkd], verbose=0)
    >>> rmtkd.student_.count_params() < rmtkd.teacher_.count_params()
    True
    """

    def __init__(
        self,
        calibration_data,
        train_data,
        validation_data,
        start_accuracy=None,
        reduce_every=1,
        rank_rule="mp",
        rule_params=None,
        max_drop=1.0,
        min_rank_ratio=0.02,
        target_params=None,
        epochs_per_step=1,
        alpha=0.7,
        temperature=4.0,
        learning_rate=1e-3,
        batch_size=64,
        stop_training_when_done=True,
        verbose=1,
        include_output_layers=False,
        seed=0,
    ):
        super().__init__()
        self.start_accuracy = _check_start_accuracy(start_accuracy)
        self.reduce_every = check_integer(reduce_every, "reduce_every", minimum=1)
        self.epochs_per_step = check_integer(epochs_per_step, "epochs_per_step", minimum=0)
        self.batch_size = check_integer(batch_size, "batch_size", minimum=1)
        self.verbose = check_integer(verbose, "verbose", minimum=0)
        self.seed = check_integer(seed, "seed", minimum=0)
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real) or not (
            math.isfinite(learning_rate) and learning_rate > 0
        ):
            raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
        check_hyperparameters(alpha, temperature)
        self.rank_rule = rank_rule
        self.rule_params = dict(rule_params or {})
        # Built now so that a bad rule name or parameter fails before training, not mid-fit.
        self._rule = get_rank_rule(rank_rule, **self.rule_params)
        # CompressionConfig validates max_drop, min_rank_ratio and target_params, and is what
        # `distil` reads its hyperparameters from.
        self._config = CompressionConfig(
            rank_rule=rank_rule,
            rule_params=self.rule_params,
            target_params=target_params,
            min_rank_ratio=min_rank_ratio,
            max_drop=max_drop,
            epochs_per_step=self.epochs_per_step,
            batch_size=self.batch_size,
            learning_rate=float(learning_rate),
            alpha=float(alpha),
            temperature=float(temperature),
            seed=self.seed,
        )
        self.max_drop = float(max_drop)
        self.min_rank_ratio = float(min_rank_ratio)
        self.target_params = target_params
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.learning_rate = float(learning_rate)
        self.stop_training_when_done = bool(stop_training_when_done)
        self.include_output_layers = bool(include_output_layers)

        _check_calibration_data(calibration_data)
        self.calibration_data = calibration_data
        x_train, y_train = _check_labelled(train_data, "train_data")
        x_val, y_val = _check_labelled(validation_data, "validation_data")
        self._data = CompressionData(
            x_train=x_train,
            y_train=y_train,
            x_calibration=calibration_data,
            x_validation=x_val,
            y_validation=y_val,
        )

        self.teacher_ = None
        self.student_ = None
        self.baseline_accuracy_ = None
        self.start_epoch_ = None
        self.history_ = []
        self.frozen_ = {}
        self.stopped_ = None
        # path -> the noise fit of a layer's first analysis, reused when it is analysed again (a fixed point).
        self._noise = {}
        self._eligible = None
        self._cursor = 0
        self._epochs_since_start = 0

    # -- Keras hooks ---------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        # Fail before the first epoch, not after it, for models RMT-KD cannot rebuild.
        eligible = [p for p, _ in candidate_layers(self.model, include_outputs=self.include_output_layers)]
        if not eligible:
            raise RMTKDError(
                "the model has no Dense or Conv2D layer to factorize"
                + ("" if self.include_output_layers else " (besides its output layer)")
            )
        if self._eligible is None:
            self._eligible = eligible

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped_ is not None:
            return
        if self.teacher_ is None:
            value = self._gate_accuracy(logs)
            if self.start_accuracy is None or value >= self.start_accuracy:
                self._start(epoch, value)
            return
        self._epochs_since_start += 1
        if self._epochs_since_start % self.reduce_every:
            return
        self._reduce(epoch)

    # -- the schedule --------------------------------------------------------------------------

    def _gate_accuracy(self, logs):
        """The validation accuracy (fraction) compared with `start_accuracy`."""
        if logs and logs.get("val_accuracy") is not None:
            return float(logs["val_accuracy"])
        return accuracy(self.model, self._data.x_validation, self._data.y_validation, self.batch_size) / 100.0

    def _start(self, epoch, gate_value):
        self.teacher_ = _copy_model(self.model)
        self.student_ = _copy_model(self.model)
        self.baseline_accuracy_ = self._val_accuracy(self.teacher_)
        self.start_epoch_ = int(epoch)
        self._epochs_since_start = 0
        self._log(
            f"RMT-KD: epoch {epoch + 1}: val accuracy {gate_value:.4f}"
            + ("" if self.start_accuracy is None else f" >= {self.start_accuracy:g}")
            + f"; snapshot taken ({self.teacher_.count_params()} params, "
            f"val acc {self.baseline_accuracy_:.2f}%), reducing every {self.reduce_every} epoch(s)"
        )
        reason = self._done_reason()  # e.g. target_params=1.0, or nothing eligible
        if reason:
            self._finish(reason)

    def _reduce(self, epoch):
        """One RMT-KD step: try open layers in round-robin order until one is factorized."""
        while self._done_reason() is None:
            open_paths = self._open_paths()
            path, self._cursor = next_open_layer(self._eligible, open_paths, self._cursor)
            record = self._step(path, epoch)
            self.history_.append(record)
            if record["outcome"] != "not reducible":
                break  # one factorization per reduction epoch; a layer that cannot shrink costs no epoch
        reason = self._done_reason()
        if reason:
            self._finish(reason)

    def _step(self, path, epoch):
        t0 = time.time()
        step = len(self.history_) + 1
        current = self.student_
        params_now = int(current.count_params())
        layers_now = dict(candidate_layers(current, [path]))
        statistics = collect_activations(current, self.calibration_data, layers=[path], batch_size=self.batch_size)
        decisions, factors = decide_ranks(layers_now, statistics, self._rule, min_rank_ratio=self.min_rank_ratio,
                                          noise_priors={p: self._noise[p] for p in (path,) if p in self._noise})
        for decision in decisions:
            if decision.noise is not None:
                self._noise.setdefault(decision.path, decision.noise)
        record = {
            "epoch": int(epoch),
            "step": step,
            "layers": [path],
            "ranks": {d.path: d.rank for d in decisions if d.rank is not None},
            "decisions": [d.to_dict() for d in decisions],
            "params_before": params_now,
            "params_after": params_now,
            "params": params_now,
            "val_accuracy_after_surgery": None,
            "val_accuracy": None,
            "val_drop": None,
            "losses": {},
        }
        if not factors:
            reason = decisions[0].skipped if decisions else "no statistics collected"
            self.frozen_[path] = reason
            record.update(outcome="not reducible", accepted=False, reason=reason, wall_s=round(time.time() - t0, 2))
            self._log(f"RMT-KD step {step}: {path}: nothing to reduce ({reason})")
            return record

        candidate = factorize_model(current, factors)
        acc_after_surgery = self._val_accuracy(candidate)
        # The frozen teacher is a copy: SelfDistiller sets its teacher non-trainable, and `current`
        # must stay trainable in case this step is rolled back and `current` is factorized again.
        teacher = _copy_model(current) if self.epochs_per_step > 0 else current
        losses = distil(candidate, teacher, self._data, self._config, self.epochs_per_step, seed=self.seed * 1000 + step)
        val_acc = self._val_accuracy(candidate)
        drop = self.baseline_accuracy_ - val_acc
        record.update(
            params_after=int(candidate.count_params()),
            val_accuracy_after_surgery=acc_after_surgery,
            val_accuracy=val_acc,
            val_drop=drop,
            losses=losses,
        )
        ranks = ", ".join(f"{d.path}: {d.dim}->{d.rank}" for d in decisions if d.rank is not None)
        if drop > self.max_drop:
            reason = f"validation accuracy drop {drop:.2f} > max_drop {self.max_drop:g}"
            self.frozen_[path] = f"rolled back at step {step}: drop {drop:.2f} points"
            record.update(outcome="rolled back", accepted=False, reason=reason)
            self._log(f"RMT-KD step {step} (epoch {epoch + 1}): {ranks}: val acc {val_acc:.2f}% -> rolled back ({reason})")
        else:
            self.student_ = candidate
            record.update(outcome="accepted", accepted=True, reason=None, params=int(candidate.count_params()))
            self._log(
                f"RMT-KD step {step} (epoch {epoch + 1}): {ranks}: params {params_now} -> "
                f"{record['params_after']}, val acc {val_acc:.2f}% (baseline {self.baseline_accuracy_:.2f}%)"
            )
        record["wall_s"] = round(time.time() - t0, 2)
        return record

    def _open_paths(self):
        return [p for p in self._eligible if p not in self.frozen_]

    def _done_reason(self):
        teacher_params = int(self.teacher_.count_params())
        params = int(self.student_.count_params())
        if self.target_params is not None and params <= self.target_params * teacher_params:
            return f"parameter target reached ({params} <= {self.target_params:g} x {teacher_params})"
        if not self._open_paths():
            return "no layer can be reduced further"
        return None

    def _finish(self, reason):
        self.stopped_ = reason
        ending = ""
        if self.stop_training_when_done:
            self.model.stop_training = True
            ending = "; stopping training"
        self._log(
            f"RMT-KD done: {reason}. Student {self.student_.count_params()} params vs teacher "
            f"{self.teacher_.count_params()}{ending}"
        )

    # -- helpers -------------------------------------------------------------------------------

    def _val_accuracy(self, model):
        return accuracy(model, self._data.x_validation, self._data.y_validation, self.batch_size)

    def _log(self, message):
        if self.verbose:
            print(message, flush=True)


def _copy_model(model):
    """An independent clone of `model` with its weights (same layer names, so same paths)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _check_start_accuracy(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"start_accuracy must be None or a fraction in [0, 1], got {value!r}")
    if value > 1:
        raise ValueError(
            f"start_accuracy is a fraction in [0, 1] like Keras' val_accuracy, got {value!r} "
            f"(for {value}% pass {value / 100:g})"
        )
    if value < 0:
        raise ValueError(f"start_accuracy must be a fraction in [0, 1], got {value!r}")
    return float(value)


def _length(x):
    if isinstance(x, dict):
        lengths = {len(v) for v in x.values()}
        if len(lengths) != 1:
            raise ValueError(f"the arrays of an input dict must have the same length, got lengths {sorted(lengths)}")
        return lengths.pop()
    return len(x)


def _check_calibration_data(data):
    if isinstance(data, tf.data.Dataset):
        return
    x = data[0] if isinstance(data, (tuple, list)) and len(data) in (2, 3) else data
    if x is None or _length(x) == 0:
        raise ValueError("calibration_data is empty")


def _check_labelled(data, name):
    """`(x, y)` with `y` as 1-D integer class indices; one-line ValueError otherwise."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{name} must be an (x, y) pair of arrays, got {type(data).__name__}")
    x, y = data
    if not isinstance(x, dict):
        x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"{name} labels must be integer class indices of shape (n,), got shape {y.shape} "
            "(one-hot labels: pass np.argmax(y, axis=1))"
        )
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"{name} labels must be integer class indices, got non-integer values")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iu":
        raise ValueError(f"{name} labels must be integer class indices, got dtype {y.dtype}")
    n = _length(x)
    if n != len(y):
        raise ValueError(f"{name}: x has {n} rows but y has {len(y)}")
    if n == 0:
        raise ValueError(f"{name} is empty")
    if y.min() < 0:
        raise ValueError(f"{name} labels must be >= 0, got {int(y.min())}")
    return x, y
