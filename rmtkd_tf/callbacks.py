"""RMT-KD inside your own `model.fit`: the `RMTKDCallback`.

Add one callback to `model.fit(...)` and RMT-KD runs with the paper's schedule:
train normally until the validation accuracy passes a threshold, then reduce
the model at epoch boundaries, one layer per step (shallow → deep, round
robin; `order` in the config groups them otherwise), each step
self-distilled from the model *before* the step.

`fit` cannot swap the model it trains, so the callback works on a copy:

1. Before the threshold nothing happens; your model trains as usual.
2. At the first epoch end where the validation accuracy reaches
   `start_accuracy`, the callback snapshots your model (a clone with copied
   weights) as `teacher_`, records its validation accuracy as
   `baseline_accuracy_`, and starts the student (`student_`) from a second
   copy of that snapshot.
3. Every `reduce_every` epochs after that, one step of the iterative schedule
   runs on the student (`rmtkd_tf.schedules.iterative.advance`, the very step
   `rmtkd_tf.compress(..., schedule="iterative")` runs): collect the chosen
   layer's activation covariance on `calibration_data`, pick its rank with
   the config's rank rule, factorize it, and self-distil the result for
   `epochs_per_step` epochs on `train_data` from the student before the step
   (keeping the surgery's weights if distillation made validation worse). A
   step whose validation drop below the snapshot, paired on the same
   examples, is not within `max_drop` (upper bound of its `confidence`
   interval, `rmtkd_tf.acceptance`) is rolled back and that layer is left
   alone from then on.
4. When no layer can be reduced any more, a parameter or FLOP target is met,
   or `max_steps` steps have run, compression is done (`stopped_` says why); with
   `stop_training_when_done=True` the callback also ends your `fit`.

Your model is never modified by the callback (it only reads it, once, for the
snapshot); after the snapshot its further training does not influence the
student. The result is `callback.student_`, an ordinary Keras model (not
compiled) that saves to `.keras` and reloads after `import rmtkd_tf`.

Units: `start_accuracy` is a fraction in [0, 1], like Keras'
`logs["val_accuracy"]`; everything RMT-KD reports (`baseline_accuracy_`,
`history_[i]["val_accuracy"]`, `max_drop`) is in percent / percentage points,
as in `rmtkd_tf.compress`.

Settings are a `rmtkd_tf.CompressionConfig` (the fields of the iterative
schedule: `rank_rule`, `rule_params`, `max_drop`, `confidence`,
`min_rank_ratio`, `target_params`, `target_flops`, `max_steps`, `order`,
`split_on_rollback`, `epochs_per_step`, `learning_rate`, `alpha`,
`temperature`, `feature_weight`, `batch_size`, `calibration_samples`,
`layers`, `include_output_layers`, `seed`); the budgeted schedule's fields and
`final_epochs` are not used.
"""

from __future__ import annotations

import math
import numbers

import keras

from rmtkd_tf.arguments import check_integer
from rmtkd_tf.collection import candidate_layers
from rmtkd_tf.compression import CompressionData, resolve_config
from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.flops import model_flops
from rmtkd_tf.inputs import inputs_only, labelled
from rmtkd_tf.model_walk import iter_graph_layers
from rmtkd_tf.schedules import iterative
from rmtkd_tf.spectral import get_rank_rule
from rmtkd_tf.steps import ValidationReference, accuracy

# What the callback itself takes besides a CompressionConfig's fields.
CALLBACK_SETTINGS = ("start_accuracy", "reduce_every", "stop_training_when_done", "verbose")


class RMTKDCallback(keras.callbacks.Callback):
    """Applies RMT-KD to a copy of the model being trained, during `fit` (see the module docstring).

    Args:
        calibration_data: inputs whose activations pick the ranks: an array, a
            dict of arrays, an `(x, y)` tuple or a finite `tf.data.Dataset`
            (its first `config.calibration_samples` rows are kept in memory).
            Draw it from the training split, never the test split.
        train_data: what the student is self-distilled on: `(x, y)` arrays,
            `y` integer class indices, or a finite dataset of `(x, y)` batches
            (materialised in memory).
        validation_data: `(x, y)` arrays or a dataset of `(x, y)` batches for
            the accept/roll-back decision (and for the threshold when `logs`
            has no `val_accuracy`).
        config: a `rmtkd_tf.CompressionConfig` (or a dict of its fields);
            default `CompressionConfig()`. Its fields can also be given as
            keyword arguments (`max_drop=2.0`, `rank_rule="energy"`), which
            override `config`'s.
        start_accuracy: validation accuracy, a *fraction* in [0, 1] like
            Keras' `val_accuracy`, at which compression starts; `None` starts
            at the end of the first epoch. Read from `logs["val_accuracy"]`
            (the validation data given to `fit`) when present, otherwise
            measured on `validation_data`.
        reduce_every: epochs between two RMT-KD steps (the first step comes
            `reduce_every` epochs after the snapshot).
        stop_training_when_done: set `model.stop_training = True` once
            compression is done, ending your `fit` early.
        verbose: 0 silent, 1 one line per step.

    The distillation's data are shuffled with `config.seed`; the global Keras
    seed is left alone so that your own training is undisturbed.

    Fitted attributes:
        teacher_: the snapshot of your model (uncompiled clone), or None before the threshold.
        baseline_accuracy_: `teacher_`'s validation accuracy in percent.
        student_: the compressed model (a copy of `teacher_` until a step is accepted).
        start_epoch_: the epoch (0-based, as Keras counts) of the snapshot.
        history_: one record per step, as `rmtkd_tf.steps.reduction_step` returns it (`step`,
            `layers`, `ranks` ({path: rank}), `decisions`, `params_before`, `params_after` (of the
            candidate), `val_accuracy_after_surgery`, `val_accuracy`, `val_drop`,
            `validation_check`, `losses`, `accepted`, `reason`, `wall_s`), plus `epoch`, `params`
            (of `student_` after the step) and `outcome` (`"accepted"`, `"rolled back"`,
            `"not reducible"`).
        frozen_: {path: why the layer is not reduced any more}.
        stopped_: why compression finished, or None while it is running.

    Example:

    >>> import numpy as np
    >>> from rmtkd_tf import CompressionConfig
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 8)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int64")
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
    ...                           keras.layers.Dense(2)])
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...               metrics=["accuracy"])
    >>> config = CompressionConfig(rank_rule="fixed-rank", rule_params={"rank": 2}, max_drop=100.0)
    >>> rmtkd = RMTKDCallback(x[:200], (x[:200], y[:200]), (x[200:], y[200:]), config, verbose=0)
    >>> _ = model.fit(x[:200], y[:200], validation_data=(x[200:], y[200:]), epochs=3,
    ...               callbacks=[rmtkd], verbose=0)
    >>> rmtkd.student_.count_params() < rmtkd.teacher_.count_params()
    True
    """

    def __init__(self, calibration_data, train_data, validation_data, config=None, *, start_accuracy=None,
                 reduce_every=1, stop_training_when_done=True, verbose=1, **config_overrides):
        super().__init__()
        self.config = resolve_config(config, config_overrides, ("config",) + CALLBACK_SETTINGS)
        self.start_accuracy = _check_start_accuracy(start_accuracy)
        self.reduce_every = check_integer(reduce_every, "reduce_every", minimum=1)
        self.stop_training_when_done = bool(stop_training_when_done)
        self.verbose = check_integer(verbose, "verbose", minimum=0)
        # Built now so that a bad rule name or parameter fails before training, not mid-fit.
        self._rule = get_rank_rule(self.config.rank_rule, **(self.config.rule_params or {}))

        self.calibration_data = inputs_only(calibration_data, "calibration_data", limit=self.config.calibration_samples)
        x_train, y_train = labelled(train_data, "train_data")
        x_val, y_val = labelled(validation_data, "validation_data")
        self._data = CompressionData(x_train=x_train, y_train=y_train, x_calibration=self.calibration_data,
                                     x_validation=x_val, y_validation=y_val)

        self.teacher_ = None
        self.student_ = None
        self.baseline_accuracy_ = None
        self.start_epoch_ = None
        self.history_ = []
        self.frozen_ = {}
        self.stopped_ = None
        self._state = None  # the iterative schedule's state (its `steps` are `history_`, its `frozen` `frozen_`)
        self._reference = None
        self._eligible = None
        self._graph_paths = None
        self._epochs_since_start = 0

    # -- Keras hooks ---------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        # Fail before the first epoch, not after it, for models RMT-KD cannot rebuild.
        eligible = [p for p, _ in candidate_layers(self.model, self.config.layers,
                                                   include_outputs=self.config.include_output_layers)]
        if not eligible:
            raise RMTKDError(
                "the model has no Dense or Conv2D layer to factorize"
                + ("" if self.config.include_output_layers else " (besides its output layer)")
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
        return self._val_accuracy(self.model) / 100.0

    def _start(self, epoch, gate_value):
        self.teacher_ = _copy_model(self.model)
        self.student_ = _copy_model(self.model)
        self._reference = ValidationReference(self.teacher_, self._data)
        self.baseline_accuracy_ = self._reference.accuracy
        self.start_epoch_ = int(epoch)
        self._epochs_since_start = 0
        self._graph_paths = {p for p, _ in iter_graph_layers(self.teacher_)}
        self._state = {**iterative.initial_state(), "original_params": int(self.teacher_.count_params()),
                       "original_flops": model_flops(self.teacher_), "steps": self.history_, "frozen": self.frozen_}
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
        """One RMT-KD step: layers that cannot shrink are skipped until one is factorized (or none is left)."""
        while self._done_reason() is None:
            self.student_, record = iterative.advance(
                self.student_, self._data, self.config, self._state, self._reference, self._rule, self._eligible,
                self._graph_paths, lambda message: self._log(f"RMT-KD (epoch {epoch + 1}) {message}"))
            outcome = ("not reducible" if "params_after" not in record
                       else "accepted" if record["accepted"] else "rolled back")
            record.update(epoch=int(epoch), outcome=outcome, params=int(self.student_.count_params()))
            if outcome != "not reducible":
                break  # one factorization per reduction epoch; a layer that cannot shrink costs no epoch
        reason = self._done_reason()
        if reason:
            self._finish(reason)

    def _done_reason(self):
        return iterative.stop_reason(self.student_, self._state, self.config, self._eligible)

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
        return accuracy(model, self._data.x_validation, self._data.y_validation, self.config.batch_size)

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
