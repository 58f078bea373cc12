import json

import numpy as np
import pytest

import keras

from rmtkd_tf.compression import CompressionConfig, CompressionData
from rmtkd_tf.compression import run as compress
from rmtkd_tf.errors import RMTKDError


def _task(seed=0, n=600):
    """A learnable 3-class problem whose inputs live near a 4-dim subspace of R^20."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 4))
    x = (latent @ rng.normal(size=(4, 20)) + 0.05 * rng.normal(size=(n, 20))).astype("float32")
    y = (np.argmax(latent[:, :3], axis=1)).astype("int64")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((20,)),
            keras.layers.Dense(64, activation="relu", name="hidden1"),
            keras.layers.Dense(64, activation="relu", name="hidden2"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x[:400], y[:400], epochs=15, batch_size=32, verbose=0)
    data = CompressionData(
        x_train=x[:400], y_train=y[:400], x_calibration=x[:200],
        x_validation=x[400:500], y_validation=y[400:500], x_test=x[500:], y_test=y[500:],
    )
    return model, data


@pytest.fixture(scope="module")
def task():
    return _task()


def _config(**overrides):
    # These tests are about the paper's iterative loop; the budgeted schedule has test_compress_budgeted.py.
    # max_drop 10: a step is accepted on the upper bound of its paired drop, and 100 validation examples
    # put one lost example at 5.45 points (rmtkd_tf.acceptance).
    params = dict(schedule="iterative", epochs_per_step=1, batch_size=32, calibration_samples=200, max_steps=6, seed=3,
                  max_drop=10.0)
    params.update(overrides)
    return CompressionConfig(**params)


def test_compress_reduces_parameters_keeps_teacher_and_writes_history(task, tmp_path):
    model, data = task
    before = [w.copy() for w in model.get_weights()]
    student, report = compress(model, data, _config(), tmp_path / "run", log=lambda m: None)
    assert report["student"]["params"] < report["teacher"]["params"]
    assert report["student"]["flops"] < report["teacher"]["flops"]
    assert "logits" not in report["layers"]  # the classifier head is left alone by default
    for w_before, w_after in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w_before, w_after)  # the teacher never changes
    # ... and it is not left frozen by the distiller, nor is the student.
    assert model.trainable and all(layer.trainable for layer in model.layers)
    assert student.trainable_weights and all(layer.trainable for layer in student.layers)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["steps"] and all("wall_s" in s for s in history["steps"])
    accepted = [s for s in history["steps"] if s["accepted"]]
    assert accepted and all((tmp_path / "run" / "checkpoints" / f"step_{s['step']:03d}.keras").exists() for s in accepted)
    assert report["teacher"]["test_accuracy"] is not None


def test_final_distillation_keeps_the_better_model_and_says_which(task, tmp_path):
    model, data = task
    messages = []
    compress(model, data, _config(max_steps=1, final_epochs=1), tmp_path / "run", log=messages.append)
    final = json.loads((tmp_path / "run" / "state.json").read_text())["final_distillation"]
    line = next(m for m in messages if m.startswith("final distillation from the original teacher: val acc"))
    assert line.endswith("(kept)" if final["kept"] else "(discarded: the model before it scores higher on validation)")
    # whichever was kept, the student returned scores the better of the two on validation
    kept_accuracy = max(final["val_accuracy_before"], final["val_accuracy_after"])
    assert final["validation_check"]["val_accuracy"] == pytest.approx(kept_accuracy)


def test_step_breaking_max_drop_is_rolled_back(task, tmp_path):
    model, data = task
    config = _config(rank_rule="fixed-rank", rule_params={"rank": 1}, max_drop=0.0, epochs_per_step=0, max_steps=2)
    student, report = compress(model, data, config, tmp_path / "run", log=lambda m: None)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    rejected = [s for s in history["steps"] if not s["accepted"]]
    assert rejected and "max_drop" in rejected[0]["reason"]
    for step in rejected:
        for path in step["layers"]:
            # The rolled-back layer is still the teacher's Dense, with the teacher's weights.
            assert type(student.get_layer(path)).__name__ == "Dense"
            np.testing.assert_array_equal(student.get_layer(path).get_weights()[0], model.get_layer(path).get_weights()[0])
            assert "rolled back" in report["frozen_layers"][path]


def test_target_params_stops_the_loop(task, tmp_path):
    model, data = task
    config = _config(rank_rule="fixed-ratio", rule_params={"ratio": 0.25}, target_params=0.9, epochs_per_step=0)
    _, report = compress(model, data, config, tmp_path / "run", log=lambda m: None)
    assert report["stopped"].startswith("parameter target reached")
    assert report["accepted_steps"] == 1


def test_resume_after_interruption_gives_the_same_result(task, tmp_path):
    model, data = task
    config = _config(max_steps=3)
    full, full_report = compress(model, data, config, tmp_path / "full", log=lambda m: None)

    calls = {"n": 0}

    def crash_on_third_step(message):
        if message.startswith("step 2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compress(model, data, config, tmp_path / "resumed", log=crash_on_third_step)
    with pytest.raises(RMTKDError, match="--resume"):
        compress(model, data, config, tmp_path / "resumed", log=lambda m: None)
    resumed, resumed_report = compress(model, data, config, tmp_path / "resumed", resume=True, log=lambda m: None)
    assert resumed_report["layers"] == full_report["layers"]
    np.testing.assert_allclose(
        resumed.predict(data.x_test, verbose=0), full.predict(data.x_test, verbose=0), atol=1e-5
    )
    with pytest.raises(RMTKDError, match="different settings"):
        compress(model, data, _config(max_steps=4), tmp_path / "resumed", resume=True, log=lambda m: None)


def test_invalid_configs():
    with pytest.raises(RMTKDError, match="target_params"):
        CompressionConfig(target_params=2.0)
    with pytest.raises(RMTKDError, match="order"):
        CompressionConfig(order="random")
    with pytest.raises(RMTKDError, match="schedule"):
        CompressionConfig(schedule="greedy")
    with pytest.raises(RMTKDError, match="target_flops"):
        CompressionConfig(target_flops=0.0)
    with pytest.raises(RMTKDError, match="allocation_cost"):
        CompressionConfig(allocation_cost="latency")


def test_rolled_back_group_is_retried_in_halves_and_only_the_failing_layer_freezes(task, tmp_path):
    model, data = task
    # Rank 1 without fine-tuning: cutting hidden1 costs ~17 validation points, hidden2 (whose output feeds a
    # 3-class head) nothing. The all-at-once step fails as a whole; its halves are retried shallow first.
    config = _config(rank_rule="fixed-rank", rule_params={"rank": 1}, max_drop=10.0, epochs_per_step=0,
                     order="all-at-once", max_steps=5)
    messages = []
    student, report = compress(model, data, config, tmp_path / "split", log=messages.append)
    history = json.loads((tmp_path / "split" / "history.json").read_text())
    assert [(s["layers"], s["accepted"]) for s in history["steps"]][:3] == [
        (["hidden1", "hidden2"], False), (["hidden1"], False), (["hidden2"], True)]
    assert "rolled back at step 2: validation drop" in report["frozen_layers"]["hidden1"]
    # the log says why a step was rolled back: its drop's upper bound against max_drop
    rolled_back = [m for m in messages if "rolled back" in m]
    assert rolled_back and all("upper bound" in m and "max_drop 10.0" in m for m in rolled_back)
    assert type(student.get_layer("hidden1")).__name__ == "Dense"
    assert type(student.get_layer("hidden2")).__name__ == "LowRankDense"
    # Without splitting, the failed group freezes both layers and the student is the teacher.
    no_split = _config(**{**config.__dict__, "split_on_rollback": False})
    student, report = compress(model, data, no_split, tmp_path / "no_split", log=lambda m: None)
    history = json.loads((tmp_path / "no_split" / "history.json").read_text())
    assert [s["layers"] for s in history["steps"]] == [["hidden1", "hidden2"]]
    assert set(report["frozen_layers"]) == {"hidden1", "hidden2"}
    assert student.count_params() == model.count_params()
