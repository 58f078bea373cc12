"""`rmtkd_tf.compress(model, x, y, ...)`: the one-call API, its inputs, layer filters and run folders."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

import keras
import tensorflow as tf

import rmtkd_tf
from rmtkd_tf.compression import CompressionData
from rmtkd_tf.errors import RMTKDError, RunFolderError
from rmtkd_tf.inputs import inputs_only, labelled


@pytest.fixture(scope="module")
def task():
    """A 3-class problem near a 4-dim subspace of R^20 and a trained MLP (hidden1, hidden2, logits)."""
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(600, 4))
    x = (latent @ rng.normal(size=(4, 20)) + 0.05 * rng.normal(size=(600, 20))).astype("float32")
    y = np.argmax(latent[:, :3], axis=1).astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(64, activation="relu", name="hidden1"),
                              keras.layers.Dense(64, activation="relu", name="hidden2"), keras.layers.Dense(3, name="logits")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:500], y[:500], epochs=10, batch_size=32, verbose=0)
    return model, x, y


# Fast settings: cut to a target, no distillation.
FAST = dict(target_params=0.6, distillation_epochs=0, calibration_samples=256, verbose=0)


def test_arrays_in_student_and_report_out_model_untouched_temporary_folder_removed(task, monkeypatch):
    model, x, y = task
    folders = []

    class Recorded(tempfile.TemporaryDirectory):
        def __enter__(self):
            folders.append(Path(super().__enter__()))
            return str(folders[-1])

    monkeypatch.setattr(tempfile, "TemporaryDirectory", Recorded)
    before = [w.copy() for w in model.get_weights()]
    student, report = rmtkd_tf.compress(model, x[:500], y[:500], test_data=(x[500:], y[500:]), **FAST)
    assert report["student"]["params"] <= 0.6 * report["teacher"]["params"]
    assert student.count_params() == report["student"]["params"]
    assert report["teacher"]["test_accuracy"] is not None and report["validation"]["origin"] == "carved from train"
    assert "logits" not in report["layers"]
    for w_before, w_after in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w_before, w_after)
    assert len(folders) == 1 and not folders[0].exists()  # the temporary run folder is gone


def test_tuple_dataset_and_arrays_are_the_same_data(task):
    model, x, y = task
    dataset = tf.data.Dataset.from_tensor_slices((x[:500], y[:500])).batch(64)
    for form in ((x[:500], y[:500]), dataset):
        x_got, y_got = labelled(form, "x")
        np.testing.assert_array_equal(x_got, x[:500])
        np.testing.assert_array_equal(y_got, y[:500])
    _, from_arrays = rmtkd_tf.compress(model, x[:500], y[:500], **FAST)
    _, from_dataset = rmtkd_tf.compress(model, dataset, validation_data=dataset.take(2), calibration_data=dataset,
                                        **FAST)
    _, from_tuple = rmtkd_tf.compress(model, (x[:500], y[:500]), **FAST)
    assert from_tuple["layers"] == from_arrays["layers"]
    prepared = CompressionData(x_train=x[:500], y_train=y[:500], x_calibration=x[:200], x_validation=x[500:],
                               y_validation=y[500:])
    _, from_prepared = rmtkd_tf.compress(model, prepared, **FAST)
    assert from_prepared["validation"]["examples"] == 100
    assert from_dataset["validation"] == {"origin": "validation_data", "examples": 128}


def test_layers_by_regex_callable_or_paths(task):
    model, x, y = task
    _, report = rmtkd_tf.compress(model, x, y, layers="^hidden2$", **FAST)
    assert set(report["layers"]) <= {"hidden2"}
    _, by_callable = rmtkd_tf.compress(model, x, y, layers=lambda layer: layer.name == "hidden2", **FAST)
    assert by_callable["layers"] == report["layers"]
    with pytest.raises(RMTKDError, match="selects none"):
        rmtkd_tf.compress(model, x, y, layers="^conv", **FAST)
    with pytest.raises(RMTKDError, match="not candidate layers"):
        rmtkd_tf.compress(model, x, y, layers=["nope"], **FAST)


def test_output_dir_keeps_the_run_refuses_a_rerun_and_resumes_only_the_same_inputs(task, tmp_path):
    model, x, y = task
    out = tmp_path / "run"
    student, report = rmtkd_tf.compress(model, x, y, output_dir=out, **FAST)
    assert {"state.json", "history.json", "student.keras", "report.json", "fingerprint.json"} <= {
        p.name for p in out.iterdir()}
    assert json.loads((out / "report.json").read_text())["student"]["params"] == report["student"]["params"]
    reloaded = keras.models.load_model(out / "student.keras")
    np.testing.assert_allclose(reloaded.predict(x[:8], verbose=0), student.predict(x[:8], verbose=0), atol=1e-5)
    with pytest.raises(RunFolderError, match="already holds a run"):
        rmtkd_tf.compress(model, x, y, output_dir=out, **FAST)
    _, resumed = rmtkd_tf.compress(model, x, y, output_dir=out, resume=True, **FAST)
    assert resumed["student"]["params"] == report["student"]["params"]
    with pytest.raises(RunFolderError, match="the data"):
        rmtkd_tf.compress(model, x[:550], y[:550], output_dir=out, resume=True, **FAST)
    with pytest.raises(RMTKDError, match="output_dir"):
        rmtkd_tf.compress(model, x, y, resume=True, **FAST)


def test_data_spec_and_model_path(task, tmp_path):
    model, x, y = task
    np.savez(tmp_path / "data.npz", x_train=x[:500], y_train=y[:500], x_test=x[500:], y_test=y[500:])
    model.save(tmp_path / "teacher.keras")
    _, report = rmtkd_tf.compress(str(tmp_path / "teacher.keras"), tmp_path / "data.npz", **FAST)
    assert report["teacher"]["test_accuracy"] is not None
    assert report["model"] == str(tmp_path / "teacher.keras")
    with pytest.raises(RMTKDError, match="data spec"):
        rmtkd_tf.compress(model, str(tmp_path / "data.npz"), y, **FAST)


def test_config_object_and_keyword_overrides(task):
    model, x, y = task
    config = rmtkd_tf.CompressionConfig(target_params=0.9, distillation_epochs=0, calibration_samples=256)
    _, report = rmtkd_tf.compress(model, x, y, config=config, target_params=0.6, verbose=0)
    assert report["student"]["params"] <= 0.6 * report["teacher"]["params"]
    assert config.target_params == 0.9  # the caller's config is not changed
    with pytest.raises(RMTKDError, match="unknown setting.*max_dorp"):
        rmtkd_tf.compress(model, x, y, max_dorp=1.0)
    with pytest.raises(RMTKDError, match="unknown setting"):
        rmtkd_tf.compress(model, x, y, config={"schedule": "budgeted", "epochs": 3})


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x, y: rmtkd_tf.compress(m, x, np.eye(3)[y], verbose=0), "one-hot"),
        (lambda m, x, y: rmtkd_tf.compress(m, x, y[:-1], verbose=0), "rows"),
        (lambda m, x, y: rmtkd_tf.compress(m, x, y + 5, verbose=0), "labels go up to"),
        (lambda m, x, y: rmtkd_tf.compress(m, x[:, :5], y, verbose=0), "shape"),
        (lambda m, x, y: rmtkd_tf.compress(m, tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat(),
                                           verbose=0), "infinite"),
        (lambda m, x, y: rmtkd_tf.compress(m, verbose=0), "no training data"),
        (lambda m, x, y: rmtkd_tf.compress("model.h5_not_there", x, y, verbose=0), "not found|no such|does not exist"),
        (lambda m, x, y: rmtkd_tf.compress(object(), x, y, verbose=0), "Keras model"),
    ],
)
def test_bad_input_is_one_line_error(task, call, message):
    model, x, y = task
    with pytest.raises(RMTKDError, match=message) as error:
        call(model, x, y)
    assert "\n" not in str(error.value)


def test_calibration_inputs_take_the_first_rows_of_any_form():
    x = np.arange(20, dtype="float32").reshape(10, 2)
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(3)
    np.testing.assert_array_equal(inputs_only(dataset, "calibration_data", limit=4), x[:4])
    np.testing.assert_array_equal(inputs_only((x, np.zeros(10)), "calibration_data"), x)
    with pytest.raises(RMTKDError, match="empty"):
        inputs_only(x[:0], "calibration_data")


def test_package_exports():
    assert {"compress", "CompressionConfig", "RMTKDCallback", "export_tflite"} <= set(rmtkd_tf.__all__)
    assert all(hasattr(rmtkd_tf, name) for name in rmtkd_tf.__all__)
    assert "unescape_html" not in __import__("rmtkd_tf.data", fromlist=["_"]).__all__
