"""RMTKDCallback inside a user's `model.fit`: gating, reduction, rollback, isolation, stopping."""

import numpy as np
import pytest

import keras

import rmtkd_tf  # noqa: F401  (registers the factorized layers for load_model)
from rmtkd_tf.callbacks import RMTKDCallback
from rmtkd_tf.steps import accuracy
from rmtkd_tf.errors import RMTKDError, UnsupportedModelError


@pytest.fixture(scope="module")
def arrays():
    """A learnable 3-class problem whose inputs live near a 4-dim subspace of R^20."""
    rng = np.random.default_rng(0)
    n = 600
    latent = rng.normal(size=(n, 4))
    x = (latent @ rng.normal(size=(4, 20)) + 0.05 * rng.normal(size=(n, 20))).astype("float32")
    y = np.argmax(latent[:, :3], axis=1).astype("int64")
    return {"train": (x[:400], y[:400]), "calibration": x[:200], "val": (x[400:], y[400:])}


def _model(seed=0, metrics=("accuracy",), learning_rate=1e-3):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(64, activation="relu", name="hidden1"),
            keras.layers.Dense(64, activation="relu", name="hidden2"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=list(metrics),
    )
    return model


def _callback(arrays, **overrides):
    params = dict(batch_size=32, verbose=0, max_drop=5.0)
    params.update(overrides)
    return RMTKDCallback(arrays["calibration"], arrays["train"], arrays["val"], **params)


class _Recorder(keras.callbacks.Callback):
    """Records, at every epoch end, the logs and what the RMT-KD callback has done so far."""

    def __init__(self, rmtkd, arrays):
        super().__init__()
        self.rmtkd, self.arrays = rmtkd, arrays
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        x_val, y_val = self.arrays["val"]
        self.epochs.append(
            {
                "logs": dict(logs or {}),
                "measured": accuracy(self.model, x_val, y_val) / 100.0,
                "started": self.rmtkd.teacher_ is not None,
                "steps": len(self.rmtkd.history_),
                "weights": [w.copy() for w in self.model.get_weights()],
            }
        )


def _fit(model, arrays, callbacks, epochs, validation=True):
    x, y = arrays["train"]
    extra = {"validation_data": arrays["val"]} if validation else {}
    return model.fit(x, y, epochs=epochs, batch_size=32, callbacks=callbacks, verbose=0, **extra)


def test_nothing_happens_before_the_threshold_and_reduction_starts_after(arrays):
    model = _model(learning_rate=3e-4)  # slow enough to cross the threshold after a few epochs
    rmtkd = _callback(arrays, start_accuracy=0.85, reduce_every=2, epochs_per_step=0, max_drop=100.0)
    recorder = _Recorder(rmtkd, arrays)
    _fit(model, arrays, [rmtkd, recorder], epochs=12)

    gate = [e["logs"]["val_accuracy"] for e in recorder.epochs]
    assert gate[0] < 0.85, "the task must start below the threshold for this test to mean anything"
    assert rmtkd.start_epoch_ is not None, f"threshold never reached: {gate}"
    start = rmtkd.start_epoch_
    # The snapshot is taken at the first epoch whose logs["val_accuracy"] reaches the threshold.
    assert start == next(i for i, v in enumerate(gate) if v >= 0.85)
    for epoch, state in enumerate(recorder.epochs[:start]):
        assert not state["started"] and state["steps"] == 0
    assert recorder.epochs[start]["started"] and recorder.epochs[start]["steps"] == 0
    # Reductions only on every second epoch after the snapshot.
    assert rmtkd.history_, "no reduction after the threshold"
    assert all(r["epoch"] > start and (r["epoch"] - start) % 2 == 0 for r in rmtkd.history_)
    assert abs(rmtkd.baseline_accuracy_ - accuracy(rmtkd.teacher_, *arrays["val"])) < 1e-9


def test_threshold_without_val_accuracy_in_logs_is_measured_on_validation_data(arrays):
    model = _model(metrics=(), learning_rate=3e-4)  # no metrics, no validation in fit: logs lack val_accuracy
    rmtkd = _callback(arrays, start_accuracy=0.75, epochs_per_step=0, max_drop=100.0, reduce_every=50)
    recorder = _Recorder(rmtkd, arrays)
    _fit(model, arrays, [rmtkd, recorder], epochs=8, validation=False)
    assert "val_accuracy" not in recorder.epochs[0]["logs"]
    measured = [e["measured"] for e in recorder.epochs]
    assert measured[0] < 0.75
    assert rmtkd.start_epoch_ == next(i for i, v in enumerate(measured) if v >= 0.75), measured
    assert rmtkd.history_ == []  # reduce_every=50: the snapshot only


def test_unreached_threshold_leaves_everything_untouched(arrays):
    model = _model(learning_rate=1e-4)
    rmtkd = _callback(arrays, start_accuracy=0.99)
    _fit(model, arrays, [rmtkd], epochs=2)
    assert rmtkd.teacher_ is None and rmtkd.student_ is None and rmtkd.history_ == []
    assert rmtkd.baseline_accuracy_ is None and rmtkd.stopped_ is None


def test_fit_with_validation_data_compresses_and_student_reloads(arrays, tmp_path):
    model = _model()
    _fit(model, arrays, [], epochs=15)  # the user's own training ...
    rmtkd = _callback(arrays, start_accuracy=None, epochs_per_step=1, stop_training_when_done=False)
    _fit(model, arrays, [rmtkd], epochs=4)  # ... then RMT-KD during further training

    assert rmtkd.start_epoch_ == 0
    accepted = [r for r in rmtkd.history_ if r["accepted"]]
    assert accepted, rmtkd.history_
    assert rmtkd.student_.count_params() < rmtkd.teacher_.count_params()
    assert rmtkd.student_.count_params() == rmtkd.history_[-1]["params"]
    assert all(r["val_drop"] <= 5.0 for r in accepted)
    # The Marchenko-Pastur rule finds the low-dimensional structure: ranks far below 64.
    ranks = [rank for r in accepted for rank in r["ranks"].values()]
    assert ranks and max(ranks) < 32
    assert type(rmtkd.student_.get_layer("logits")).__name__ == "Dense"  # the head is left alone
    student_acc = accuracy(rmtkd.student_, *arrays["val"])
    assert student_acc == pytest.approx(accepted[-1]["val_accuracy"])
    assert student_acc >= rmtkd.baseline_accuracy_ - 5.0

    path = tmp_path / "student.keras"
    rmtkd.student_.save(path)
    reloaded = keras.models.load_model(path)
    x_val = arrays["val"][0]
    np.testing.assert_allclose(reloaded.predict(x_val, verbose=0), rmtkd.student_.predict(x_val, verbose=0), atol=1e-5)
    assert reloaded.count_params() == rmtkd.student_.count_params()


def test_step_beyond_max_drop_is_rolled_back(arrays):
    model = _model()
    _fit(model, arrays, [], epochs=15)
    rmtkd = _callback(
        arrays, rank_rule="fixed-rank", rule_params={"rank": 1}, min_rank_ratio=0.0, max_drop=0.0, epochs_per_step=0,
        stop_training_when_done=False,
    )
    _fit(model, arrays, [rmtkd], epochs=2)  # epoch 1: snapshot; epoch 2: one step on hidden1

    assert len(rmtkd.history_) == 1
    record = rmtkd.history_[0]
    assert record["layers"] == ["hidden1"] and record["ranks"] == {"hidden1": 1}
    assert record["outcome"] == "rolled back" and not record["accepted"]
    assert record["val_drop"] > 0.0 and "max_drop" in record["reason"]
    assert "rolled back" in rmtkd.frozen_["hidden1"]
    # The student is still the snapshot: same layer type, same weights, same size.
    layer = rmtkd.student_.get_layer("hidden1")
    assert type(layer).__name__ == "Dense"
    np.testing.assert_array_equal(layer.get_weights()[0], rmtkd.teacher_.get_layer("hidden1").get_weights()[0])
    assert rmtkd.student_.count_params() == rmtkd.teacher_.count_params() == record["params"]


def test_users_model_is_not_modified_by_the_callbacks_distillation(arrays):
    model = _model()
    rmtkd = _callback(arrays, epochs_per_step=2, max_drop=100.0, stop_training_when_done=False)
    before, after = _Recorder(rmtkd, arrays), _Recorder(rmtkd, arrays)
    _fit(model, arrays, [before, rmtkd, after], epochs=3)

    assert rmtkd.history_ and any(r["losses"] for r in rmtkd.history_), "no distillation ran"
    for epoch, (b, a) in enumerate(zip(before.epochs, after.epochs)):
        for w_before, w_after in zip(b["weights"], a["weights"]):
            np.testing.assert_array_equal(w_before, w_after, err_msg=f"weights changed at epoch {epoch}")
    # SelfDistiller freezes its teacher: that must never be the user's model (nor the student).
    assert model.trainable and all(layer.trainable for layer in model.layers)
    assert rmtkd.student_.trainable_weights
    assert type(model.get_layer("hidden1")).__name__ == "Dense"
    # The snapshot is a copy with the weights of the end of epoch 1.
    for w_snapshot, w_epoch0 in zip(rmtkd.teacher_.get_weights(), before.epochs[0]["weights"]):
        np.testing.assert_array_equal(w_snapshot, w_epoch0)
    assert rmtkd.teacher_ is not model and rmtkd.student_ is not rmtkd.teacher_


def test_training_stops_when_the_parameter_target_is_met(arrays):
    model = _model()
    rmtkd = _callback(
        arrays, rank_rule="fixed-ratio", rule_params={"ratio": 0.25}, target_params=0.9,
        epochs_per_step=0, max_drop=100.0,
    )
    history = _fit(model, arrays, [rmtkd], epochs=20)
    assert rmtkd.stopped_ and "target" in rmtkd.stopped_
    assert rmtkd.student_.count_params() <= 0.9 * rmtkd.teacher_.count_params()
    assert model.stop_training
    assert len(history.history["loss"]) < 20


def test_stop_training_when_done_false_lets_fit_run_on(arrays):
    model = _model()
    rmtkd = _callback(
        arrays, rank_rule="fixed-ratio", rule_params={"ratio": 0.25}, epochs_per_step=0,
        max_drop=100.0, stop_training_when_done=False,
    )
    history = _fit(model, arrays, [rmtkd], epochs=8)
    # hidden1 (20 -> 64) cannot save parameters at rank 16; hidden2 is reduced until it floors out.
    assert rmtkd.stopped_ == "no layer can be reduced further"
    assert rmtkd.history_[-1]["epoch"] < 7, "compression should finish before the last epoch"
    assert not model.stop_training
    assert len(history.history["loss"]) == 8


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"start_accuracy": 85}, "fraction"),
        ({"start_accuracy": -0.1}, "fraction"),
        ({"reduce_every": 0}, "reduce_every"),
        ({"epochs_per_step": -1}, "epochs_per_step"),
        ({"rank_rule": "svd"}, "unknown rank rule"),
        ({"rank_rule": "fixed-rank", "rule_params": {"ratio": 2}}, "unknown parameter"),
        ({"max_drop": -1.0}, "max_drop"),
        ({"target_params": 1.5}, "target_params"),
        ({"alpha": 2.0}, "alpha"),
        ({"learning_rate": 0.0}, "learning_rate"),
    ],
)
def test_bad_parameters_fail_at_construction(arrays, overrides, message):
    with pytest.raises(ValueError, match=message):
        _callback(arrays, **overrides)


def test_bad_data_fails_at_construction(arrays):
    x, y = arrays["train"]
    with pytest.raises(ValueError, match="one-hot"):
        RMTKDCallback(arrays["calibration"], (x, np.eye(3)[y]), arrays["val"])
    with pytest.raises(ValueError, match="rows"):
        RMTKDCallback(arrays["calibration"], (x, y[:-1]), arrays["val"])
    with pytest.raises(ValueError, match=r"\(x, y\) pair"):
        RMTKDCallback(arrays["calibration"], x, arrays["val"])
    with pytest.raises(ValueError, match="empty"):
        RMTKDCallback(x[:0], arrays["train"], arrays["val"])


def test_subclassed_model_is_refused_before_training(arrays):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, inputs):
            return self.dense(inputs)

    model = Subclassed()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(UnsupportedModelError, match="subclassed"):
        _fit(model, arrays, [_callback(arrays)], epochs=1)


def test_model_with_only_an_output_layer_is_refused(arrays):
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(3, name="logits")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(RMTKDError, match="no Dense or Conv2D"):
        _fit(model, arrays, [_callback(arrays)], epochs=1)


def test_settings_are_a_compression_config_and_keywords_map_to_its_fields(arrays):
    from rmtkd_tf.compression import CompressionConfig

    config = CompressionConfig(max_drop=2.0, epochs_per_step=0, batch_size=32)
    rmtkd = RMTKDCallback(arrays["calibration"], arrays["train"], arrays["val"], config, verbose=0)
    assert rmtkd.config == config
    # The old keyword form still works: each keyword is a field of the config.
    rmtkd = _callback(arrays, rank_rule="fixed-rank", rule_params={"rank": 2}, learning_rate=5e-4)
    # The rule is recorded resolved (rmtkd_tf.spectral.rank_rules.serialize), its parameters with it.
    assert (rmtkd.config.rank_rule, rmtkd.config.rule_params, rmtkd.config.learning_rate) == (
        {"class_name": "FixedRankRule", "config": {"rank": 2}}, None, 5e-4)
    with pytest.raises(RMTKDError, match="unknown setting.*max_dorp.*start_accuracy"):
        _callback(arrays, max_dorp=1.0)


def test_the_callback_runs_the_iterative_schedules_step(arrays, monkeypatch):
    """One step function: the callback's steps go through `rmtkd_tf.steps.reduction_step`."""
    from rmtkd_tf.schedules import iterative

    calls = []
    real = iterative.reduction_step

    def spy(*args, **kwargs):
        calls.append(args[4])  # the group of layers
        return real(*args, **kwargs)

    monkeypatch.setattr(iterative, "reduction_step", spy)
    model = _model()
    rmtkd = _callback(arrays, epochs_per_step=0, max_drop=100.0, stop_training_when_done=False)
    _fit(model, arrays, [rmtkd], epochs=3)
    assert calls and calls == [record["layers"] for record in rmtkd.history_]
