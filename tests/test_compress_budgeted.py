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
