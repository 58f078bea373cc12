"""The budgeted schedule: analyse once, cut once, distil the final student from the original."""

import json

import numpy as np
import pytest

from rmtkd_tf.compression import CompressionConfig
from rmtkd_tf.compression import run as compress
from rmtkd_tf.errors import RMTKDError
from tests.test_compress import _task


@pytest.fixture(scope="module")
def task():
    return _task()


def _config(**overrides):
    params = dict(schedule="budgeted", distillation_epochs=1, batch_size=32, calibration_samples=200, seed=3,
                  max_drop=5.0)
    params.update(overrides)
    return CompressionConfig(**params)


def _read(path):
    return json.loads(path.read_text())


def test_target_params_is_met_with_one_cut_distilled_from_the_original(task, tmp_path):
    model, data = task
    before = [w.copy() for w in model.get_weights()]
    student, report = compress(model, data, _config(target_params=0.5), tmp_path / "run", log=lambda m: None)
    assert report["schedule"] == "budgeted" and report["cut_chosen_by"] == "target"
    assert report["student"]["params"] <= 0.5 * report["teacher"]["params"]
    assert report["student"]["flops"] < report["teacher"]["flops"]
    assert len(report["attempts"]) == 1 and report["attempts"][0]["epochs_done"] == 1
    # validation after every distillation epoch; the last one is the student the check scored
    attempt = report["attempts"][0]
    assert attempt["val_accuracy_by_epoch"] == [attempt["val_accuracy_after_distillation"]]
    from rmtkd_tf.report import KEPT_TEXT, format_summary

    assert attempt["kept"] in ("surgery", "distillation") and "val_accuracy_after_batch_norm" not in attempt
    assert format_summary(report).splitlines()[-1].startswith(f"kept: {KEPT_TEXT[attempt['kept']]} (validation %: cut ")
    assert set(report["layers"]) <= {"hidden1", "hidden2"}  # the head is left alone
    for path, entry in report["layers"].items():
        assert type(student.get_layer(path)).__name__ == "LowRankDense"
        assert student.get_layer(path).rank == entry["rank"]
    for w_before, w_after in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w_before, w_after)  # the teacher never changes
    assert model.trainable and all(layer.trainable for layer in model.layers)
    state = _read(tmp_path / "run" / "state.json")
    assert state["ladder"]["mp_cut"]["params"] >= state["ladder"]["deepest_cut"]["params"]
    assert (tmp_path / "run" / "checkpoints" / "final.keras").exists()


def test_search_without_target_stays_within_tolerance_before_training(task, tmp_path):
    model, data = task
    config = _config(search_tolerance=2.0, distillation_epochs=0)
    _, report = compress(model, data, config, tmp_path / "run", log=lambda m: None)
    assert report["cut_chosen_by"].startswith("search")
    searched = report["search"]
    assert searched and all(entry["drop"] is not None for entry in searched)
    chosen = report["attempts"][0]
    # No training: the chosen cut's validation drop is the one the search measured, within tolerance.
    assert chosen["val_accuracy_after_surgery"] >= report["teacher"]["val_accuracy"] - 2.0
    # Every searched cut deeper than the chosen one failed the tolerance.
    deeper = [e for e in searched if e["params"] < chosen["params"]]
    assert deeper and all(e["drop"] > 2.0 for e in deeper)


def test_a_student_outside_max_drop_backs_off_to_half_the_saving(task, tmp_path):
    model, data = task
    # Rank 1 everywhere (the fixed-rank rule calls every direction past the first noise), no distillation:
    # the searched cut loses ~40 of 100 validation examples, far outside max_drop = 20 points, and the cut
    # saving half as much loses none (the upper bound of a zero drop on 100 pairs is 3.7 points).
    config = _config(rank_rule="fixed-rank", rule_params={"rank": 1}, min_rank_ratio=0.0, max_drop=20.0,
                     search_tolerance=100.0, distillation_epochs=0, max_attempts=2)
    student, report = compress(model, data, config, tmp_path / "run", log=lambda m: None)
    first, second = report["attempts"]
    assert not first["accepted"] and first["validation_check"]["drop"] > 0
    assert second["accepted"] and second["index"] < first["index"]
    saved = report["teacher"]["params"] - first["params"], report["teacher"]["params"] - second["params"]
    assert 0.5 * saved[0] <= saved[1] < saved[0]  # the first ladder cut saving at least half as much
    assert report["student"]["params"] == second["params"]

    # With one attempt allowed nothing holds, and the model is returned as it was.
    config = _config(**{**config.__dict__, "max_attempts": 1})
    student, report = compress(model, data, config, tmp_path / "one", log=lambda m: None)
    assert "left as it was" in report["stopped"] and student is model and report["layers"] == {}


def test_resume_continues_an_interrupted_distillation(task, tmp_path):
    model, data = task
    config = _config(target_params=0.5, distillation_epochs=2)
    full, full_report = compress(model, data, config, tmp_path / "full", log=lambda m: None)

    def interrupt_when_distilling(message):
        if message.startswith("distilling"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compress(model, data, config, tmp_path / "resumed", log=interrupt_when_distilling)
    with pytest.raises(RMTKDError, match="--resume"):
        compress(model, data, config, tmp_path / "resumed", log=lambda m: None)
    resumed, resumed_report = compress(model, data, config, tmp_path / "resumed", resume=True, log=lambda m: None)
    assert resumed_report["layers"] == full_report["layers"]
    by_epoch = resumed_report["attempts"][0]["val_accuracy_by_epoch"]
    assert len(by_epoch) == 2 and by_epoch == pytest.approx(full_report["attempts"][0]["val_accuracy_by_epoch"], abs=1.0)
    np.testing.assert_allclose(resumed.predict(data.x_test, verbose=0), full.predict(data.x_test, verbose=0), atol=1e-4)
    # A finished run resumed again returns the same student without redoing anything.
    again, _ = compress(model, data, config, tmp_path / "resumed", resume=True,
                        log=lambda m: (_ for _ in ()).throw(AssertionError(m)) if m.startswith("distilling") else None)
    np.testing.assert_allclose(again.predict(data.x_test, verbose=0), full.predict(data.x_test, verbose=0), atol=1e-4)


class _InterruptAfterEpoch:
    """A run log that raises KeyboardInterrupt once distillation epoch `epoch` is checkpointed."""

    def __init__(self, epoch):
        self.epoch = epoch

    def __call__(self, message):
        pass

    def event(self, name, **values):
        if name == "epoch" and values["epoch"] == self.epoch:
            raise KeyboardInterrupt


def _optimizer_state(path):
    with np.load(path) as saved:
        return {name: saved[name] for name in saved.files}


def test_resume_mid_distillation_restores_the_optimizer_and_continues_exactly(task, tmp_path, monkeypatch):
    from rmtkd_tf.schedules import budgeted

    model, data = task
    config = _config(target_params=0.5, distillation_epochs=3)
    steps_per_epoch = int(np.ceil(len(data.y_train) / config.batch_size))
    full, full_report = compress(model, data, config, tmp_path / "full", log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        compress(model, data, config, tmp_path / "resumed", log=_InterruptAfterEpoch(1))
    assert _read(tmp_path / "resumed" / "state.json")["attempts"][0]["epochs_done"] == 1
    saved_path = tmp_path / "resumed" / "checkpoints" / "attempt_1.optimizer.npz"
    saved = _optimizer_state(saved_path)  # read now: the resumed run rewrites it after each epoch
    assert int(saved["iterations"]) == steps_per_epoch
    assert any(np.any(value != 0) for name, value in saved.items() if name != "iterations")  # Adam's moments

    restored = {}
    original = budgeted._EpochCheckpoint.on_train_begin

    def recording(callback, logs=None):
        original(callback, logs)
        restored["iterations"] = int(callback.model.optimizer.iterations)
        restored["variables"] = [np.array(v) for v in callback.model.optimizer.variables]

    monkeypatch.setattr(budgeted._EpochCheckpoint, "on_train_begin", recording)
    resumed, resumed_report = compress(model, data, config, tmp_path / "resumed", resume=True, log=lambda m: None)
    # The optimizer starts where the interrupted run left it: step count and every moment.
    assert restored["iterations"] == steps_per_epoch
    assert len(restored["variables"]) == len(saved) - 1
    for index, value in enumerate(restored["variables"]):
        np.testing.assert_array_equal(value, saved[f"variable_{index}"])
    # ... and ends where the uninterrupted run ended: the same optimizer state and the same student.
    assert resumed_report["layers"] == full_report["layers"]
    end_full = _optimizer_state(tmp_path / "full" / "checkpoints" / "attempt_1.optimizer.npz")
    end_resumed = _optimizer_state(saved_path)
    assert int(end_full["iterations"]) == int(end_resumed["iterations"]) == 3 * steps_per_epoch
    for name in end_full:
        np.testing.assert_allclose(end_resumed[name], end_full[name], rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(resumed.predict(data.x_test, verbose=0), full.predict(data.x_test, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_feature_distillation_matches_factorized_layers_to_the_teacher(task, tmp_path):
    import keras

    from rmtkd_tf.features import FeatureTaps, factorized_paths, feature_loss
    from rmtkd_tf.steps import distil

    model, data = task
    student, report = compress(model, data, _config(target_params=0.5, distillation_epochs=0), tmp_path / "run",
                               log=lambda m: None)
    paths = factorized_paths(student, model)
    assert paths and set(paths) == set(report["layers"])

    def relative_error(candidate):
        with FeatureTaps(candidate, model, paths) as taps:
            candidate(data.x_train[:200]), model(data.x_train[:200])
            return float(feature_loss(taps))

    errors = {}
    for weight in (0.0, 1000.0):  # the same start, seed and schedule, with and without the feature term
        candidate = keras.models.clone_model(student)
        candidate.set_weights(student.get_weights())
        distil(candidate, model, data, _config(feature_weight=weight, learning_rate=1e-3), 2, seed=0)
        errors[weight] = relative_error(candidate)
        # The taps are gone afterwards: both models' layers have their own call again.
        assert all("call" not in find_layer.__dict__ for find_layer in (candidate.get_layer(p) for p in paths))
        assert all("call" not in model.get_layer(p).__dict__ for p in paths)
    assert errors[1000.0] < errors[0.0]


def test_optimizer_state_round_trip_and_the_checkpoints_it_does_not_fit(tmp_path):
    import keras

    from rmtkd_tf.schedules.budgeted import load_optimizer_state, optimizer_state_path, save_optimizer_state

    weights = keras.Variable(np.ones((3, 2), "float32"))
    optimizer = keras.optimizers.Adam(0.1)
    for _ in range(4):
        optimizer.apply([keras.ops.ones((3, 2))], [weights])
    path = optimizer_state_path(tmp_path / "attempt_1.keras")
    assert path.name == "attempt_1.optimizer.npz"
    assert load_optimizer_state(path, 4) is None  # a checkpoint written before optimizer states were saved
    save_optimizer_state(optimizer, path)
    assert load_optimizer_state(path, 3) is None  # from another step than the student checkpoint
    store = load_optimizer_state(path, 4)
    fresh = keras.optimizers.Adam(0.1)
    fresh.build([weights])
    fresh.load_own_variables(store)
    assert int(fresh.iterations) == 4
    for a, b in zip(fresh.variables, optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _batch_norm_task(seed=0):
    """`_task`'s data on a model with a BatchNormalization after its first layer, whose moving statistics
    are then shifted off (as stale statistics are after a cut): re-estimating them is worth many points."""
    import keras

    from tests.test_compress import _task

    _, data = _task(seed)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((20,)),
        keras.layers.Dense(64, name="hidden1"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(),
        keras.layers.Dense(64, activation="relu", name="hidden2"),
        keras.layers.Dense(3, name="logits"),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, epochs=15, batch_size=32, verbose=0)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(bn.moving_mean + 2.0 * keras.ops.sqrt(bn.moving_variance))
    return model, data


@pytest.fixture(scope="module")
def batch_norm_task():
    return _batch_norm_task()


def test_search_scores_cuts_after_their_batch_norm_statistics_are_re_estimated(batch_norm_task, tmp_path):
    model, data = batch_norm_task
    best = {}
    for recalibrate in (False, True):
        config = _config(search_tolerance=100.0, distillation_epochs=0, recalibrate_batch_norm=recalibrate)
        _, report = compress(model, data, config, tmp_path / str(recalibrate), log=lambda m: None)
        best[recalibrate] = max(entry["val_accuracy_before_training"] for entry in report["search"])
    assert best[True] > best[False] + 10.0


def test_an_attempt_keeps_the_re_estimated_surgery_when_distillation_makes_it_worse(
        batch_norm_task, tmp_path, monkeypatch):
    import keras

    from rmtkd_tf.schedules import budgeted
    from rmtkd_tf.steps import accuracy

    model, data = batch_norm_task

    def ruinous_distillation(student, *args, **kwargs):
        for variable in student.trainable_variables:
            variable.assign(keras.ops.zeros_like(variable))
        return {}

    monkeypatch.setattr(budgeted, "distil", ruinous_distillation)
    assert budgeted.kept_candidate({"val_accuracy_after_surgery": 1.0, "val_accuracy_after_distillation": 2.0}) == \
        "distillation"
    config = _config(target_params=0.5, recalibrate_batch_norm=True)
    student, report = compress(model, data, config, tmp_path / "run", log=lambda m: None)
    attempt = report["attempts"][0]
    assert attempt["val_accuracy_after_batch_norm"] > attempt["val_accuracy_after_surgery"] + 10.0
    assert attempt["val_accuracy_after_distillation"] < attempt["val_accuracy_after_batch_norm"]
    assert attempt["kept"] == "batch_norm" and not attempt["kept_distillation"]
    # The returned student is the re-estimated surgery, not the ruined one nor the plain surgery.
    assert accuracy(student, data.x_validation, data.y_validation) == attempt["val_accuracy_after_batch_norm"]
    assert (tmp_path / "run" / "checkpoints" / "attempt_1_batch_norm.keras").exists()
    from rmtkd_tf.report import format_summary

    kept_line = format_summary(report).splitlines()[-1]
    assert kept_line.startswith("kept: the cut with re-estimated BatchNorm statistics")
    assert f"BatchNorm re-estimated {attempt['val_accuracy_after_batch_norm']:.2f}" in kept_line


def test_distillation_starts_from_the_re_estimated_statistics(batch_norm_task, tmp_path):
    model, data = batch_norm_task
    config = _config(target_params=0.5, recalibrate_batch_norm=True, distillation_epochs=0)
    student, report = compress(model, data, config, tmp_path / "run", log=lambda m: None)
    attempt = report["attempts"][0]
    # No epoch: the "distilled" student is the one distillation started from, scored like the re-estimated one,
    # and a tie keeps the candidate that took no gradient step.
    assert attempt["val_accuracy_after_distillation"] == attempt["val_accuracy_after_batch_norm"]
    assert attempt["kept"] == "batch_norm"
    teacher_mean = np.asarray(model.get_layer("bn").moving_mean)
    assert not np.allclose(np.asarray(student.get_layer("bn").moving_mean), teacher_mean)


def test_recalibrating_a_model_without_batch_norm_changes_nothing(task, tmp_path):
    model, data = task
    plain, _ = compress(model, data, _config(target_params=0.5, recalibrate_batch_norm=False), tmp_path / "plain",
                        log=lambda m: None)
    asked, report = compress(model, data, _config(target_params=0.5, recalibrate_batch_norm=True), tmp_path / "asked",
                             log=lambda m: None)
    assert "val_accuracy_after_batch_norm" not in report["attempts"][0]
    np.testing.assert_allclose(asked.predict(data.x_test, verbose=0), plain.predict(data.x_test, verbose=0), atol=1e-5)


def test_recalibrate_batch_norm_is_on_by_default_and_a_boolean():
    assert CompressionConfig().recalibrate_batch_norm is True
    assert _config(schedule="iterative").recalibrate_batch_norm is True  # the iterative loop ignores it
    with pytest.raises(RMTKDError, match="true or false"):
        _config(recalibrate_batch_norm="yes")
