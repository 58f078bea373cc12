"""tools/batch_norm_candidates.py: a run's cut rebuilt from its re-estimated checkpoint, and the scored result."""

import json

import keras
import numpy as np
import pytest

from rmtkd_tf.batch_norm import recalibrate_batch_norm
from tools.batch_norm_candidates import cut_from_recalibrated, main


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def _images(n=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 6, 6, 3)).astype("float32")


def _recalibrated(teacher):
    student = keras.models.clone_model(teacher)
    student.set_weights(teacher.get_weights())
    recalibrate_batch_norm(student, _images() * 3.0 + 1.0, batch_size=32)  # statistics far from the teacher's
    return student


def test_the_cut_gets_the_teachers_statistics_back_and_predicts_as_before_recalibration():
    teacher = _model()
    student = _recalibrated(teacher)
    x = _images(8, seed=1)
    assert not np.allclose(student.predict(x, verbose=0), teacher.predict(x, verbose=0), atol=1e-4)
    assert cut_from_recalibrated(student, teacher) == 1
    np.testing.assert_allclose(student.predict(x, verbose=0), teacher.predict(x, verbose=0), atol=1e-5)

    renamed = keras.models.clone_model(_model(), clone_function=lambda layer: layer.__class__.from_config(
        {**layer.get_config(), "name": layer.name + "_2"}))
    with pytest.raises(SystemExit, match="bn_2"):
        cut_from_recalibrated(renamed, teacher)


def test_main_scores_the_three_candidates_paired_on_the_test_images(tmp_path):
    teacher = _model()
    x = _images(60, seed=2)
    y = teacher.predict(x, verbose=0).argmax(axis=1)  # the teacher is right on every image
    np.savez(tmp_path / "data.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    teacher.save(tmp_path / "teacher.keras")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    _recalibrated(teacher).save(run / "checkpoints" / "attempt_1_batch_norm.keras")
    teacher.save(run / "checkpoints" / "attempt_1.keras")  # a "distilled" student equal to the teacher
    (run / "state.json").write_text(json.dumps({"config": {"seed": 0, "target_flops": 0.5}, "attempts": [
        {"params": 10, "flops": 20, "val_accuracy_after_surgery": 50.0, "val_accuracy_after_batch_norm": 60.0,
         "val_accuracy_after_distillation": 55.0, "kept": "batch_norm"}]}))
    out = tmp_path / "result.json"
    argv = ["--teacher", str(tmp_path / "teacher.keras"), "--data", str(tmp_path / "data.npz"), "--runs", str(run),
            "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["kind"] == "batch_norm_candidates" and result["n_test"] == 60
    scored = result["runs"][0]
    assert scored["test_accuracy"]["cut"] == scored["test_accuracy"]["distilled"] == 100.0  # the cut is the teacher here
    assert scored["test_accuracy"]["cut_batch_norm"] < 100.0
    assert scored["batch_norm_minus_cut"]["gain"] == scored["test_accuracy"]["cut_batch_norm"] - 100.0
    assert scored["validation"] == {"cut": 50.0, "cut_batch_norm": 60.0, "distilled": 55.0}
    with pytest.raises(SystemExit, match="exists"):
        main(argv)  # a one-off never overwrites its result
