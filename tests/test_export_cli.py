"""Tests for the `rmtkd-tf export` click command (`cli/export_cmd.py`)."""

import json
import os
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from cli import export_cmd  # noqa: E402
from cli.export_cmd import export  # noqa: E402
from rmtkd_tf.export import tflite_predict  # noqa: E402


@keras.saving.register_keras_serializable(package="rmtkd_tf_tests")
class CliDeterminant(keras.layers.Layer):
    """Needs the Flex op `MatrixDeterminant` in TFLite."""

    def call(self, inputs):
        return tf.expand_dims(tf.linalg.det(tf.reshape(inputs, (-1, 3, 3))), -1)


def small_image_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(6, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4),
        ]
    )


def fake_splits(n_train=60, n_test=50, seed=0):
    rng = np.random.default_rng(seed)
    return types.SimpleNamespace(
        x_train=rng.normal(size=(n_train, 8, 8, 3)).astype("float32"),
        y_train=rng.integers(0, 4, n_train),
        x_test=rng.normal(size=(n_test, 8, 8, 3)).astype("float32"),
        y_test=rng.integers(0, 4, n_test),
        modality="image",
    )


@pytest.fixture
def saved_model(tmp_path):
    model = small_image_model()
    path = tmp_path / "model.keras"
    model.save(path)
    return model, path


def run(args):
    return CliRunner().invoke(export, [str(arg) for arg in args])


def test_fp32_export_writes_file_and_summary(saved_model, tmp_path):
    model, model_path = saved_model
    output = tmp_path / "model.tflite"
    report_json = tmp_path / "report.json"
    result = run([model_path, "-o", output, "--report-json", report_json])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "CONV_2D x1" in result.output
    assert "verified" not in result.output  # no --data, nothing to verify on
    x = fake_splits().x_test
    np.testing.assert_allclose(tflite_predict(output, x), model.predict(x, verbose=0), atol=1e-5)
    report = json.loads(report_json.read_text())
    assert report["precision"] == "fp32" and report["flex_ops"] == []


def test_int8_with_data_calibrates_on_train_and_verifies_on_test(saved_model, tmp_path, monkeypatch):
    _, model_path = saved_model
    calls = []
    splits = fake_splits()

    def fake_load_data(spec, *, limit=None, image_size=None, seed=0):
        calls.append((spec, limit, image_size, seed))
        return splits

    monkeypatch.setattr(export_cmd, "_load_data", fake_load_data)
    output = tmp_path / "model_int8.tflite"
    result = run(
        [model_path, "-o", output, "--precision", "int8", "--data", "toy",
         "--representative-samples", 40, "--verify-samples", 30, "--report-json", tmp_path / "r.json"]
    )
    assert result.exit_code == 0, result.output
    assert calls == [("toy", 40, (8, 8), 0)]
    assert "verified on 30 test samples" in result.output and "accuracy keras" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["precision"] == "int8"
    assert report["verification"]["n"] == 30
    assert report["verification"]["top1_agreement"] >= 0.8


def test_npz_data_through_the_real_loader(saved_model, tmp_path):
    _, model_path = saved_model
    splits = fake_splits(n_train=40, n_test=40)
    npz = tmp_path / "toy.npz"
    np.savez(npz, x_train=splits.x_train, y_train=splits.y_train, x_test=splits.x_test, y_test=splits.y_test)
    result = run([model_path, "-o", tmp_path / "m.tflite", "--precision", "fp16", "--data", npz])
    assert result.exit_code == 0, result.output
    assert "verified on 40 test samples" in result.output


def test_missing_and_corrupt_model_files_are_one_line_errors(tmp_path):
    result = run([tmp_path / "absent.keras", "-o", tmp_path / "m.tflite"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: no such model file: {tmp_path / 'absent.keras'}"]

    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"this is not a zip archive")
    result = run([corrupt, "-o", tmp_path / "m.tflite"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot load {corrupt}")
    assert not (tmp_path / "m.tflite").exists()


def test_flex_model_is_refused_naming_the_op(tmp_path):
    inputs = keras.Input((9,))
    model = keras.Model(inputs, keras.layers.Dense(2)(CliDeterminant()(inputs)))
    model_path = tmp_path / "det.keras"
    model.save(model_path)
    result = run([model_path, "-o", tmp_path / "det.tflite"])
    assert result.exit_code == 1
    last_line = result.output.strip().splitlines()[-1]
    assert last_line.startswith("Error:") and "MatrixDeterminant" in last_line
    assert not (tmp_path / "det.tflite").exists()


def test_int8_without_data_and_output_onto_input_are_refused(saved_model, tmp_path):
    _, model_path = saved_model
    result = run([model_path, "-o", tmp_path / "m.tflite", "--precision", "int8"])
    assert result.exit_code == 1 and "needs --data" in result.output
    before = model_path.read_bytes()
    result = run([model_path, "-o", model_path])
    assert result.exit_code == 1 and "is the input model" in result.output
    assert model_path.read_bytes() == before


def test_lambda_model_needs_unsafe(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Lambda(lambda t: t * 2.0), keras.layers.Dense(3)]
    )
    model_path = tmp_path / "lambda.keras"
    model.save(model_path)
    result = run([model_path, "-o", tmp_path / "l.tflite"])
    assert result.exit_code == 1 and "--unsafe" in result.output
    assert not (tmp_path / "l.tflite").exists()
    result = run([model_path, "-o", tmp_path / "l.tflite", "--unsafe"])
    assert result.exit_code == 0, result.output
    x = np.ones((2, 5), "float32")
    np.testing.assert_allclose(tflite_predict(tmp_path / "l.tflite", x), model.predict(x, verbose=0), atol=1e-5)


def test_text_data_for_an_image_model_is_refused(saved_model, tmp_path, monkeypatch):
    # Text is tokenized for BERT-style models only (tests/test_export_text_cli.py); an image model says so.
    _, model_path = saved_model
    text = types.SimpleNamespace(
        x_train=np.array(["a film", "a book"], dtype=object), y_train=np.array([0, 1]),
        x_test=np.array(["a play"], dtype=object), y_test=np.array([1]), modality="text",
    )
    monkeypatch.setattr(export_cmd, "_load_data", lambda spec, **kwargs: text)
    result = run([model_path, "-o", tmp_path / "m.tflite", "--data", "sst2"])
    assert result.exit_code == 1 and "token_ids" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.shared_data
def test_int8_export_on_real_cifar10_images(shared_data, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    model_path = tmp_path / "cifar.keras"
    model.save(model_path)
    report_json = tmp_path / "r.json"
    result = run(
        [model_path, "-o", tmp_path / "cifar.tflite", "--precision", "int8",
         "--data", shared_data / "cifar10", "--representative-samples", 50,
         "--verify-samples", 50, "--report-json", report_json]
    )
    assert result.exit_code == 0, result.output
    verification = json.loads(report_json.read_text())["verification"]
    assert verification["n"] == 50
    assert verification["top1_agreement"] >= 0.8
    assert verification["keras_accuracy"] is not None


def test_auto_prints_what_it_tried_and_records_it(saved_model, tmp_path, monkeypatch):
    model, model_path = saved_model
    splits = fake_splits(n_train=60, n_test=40)
    # Labels the Keras model gets right: the drop then is the .tflite's alone.
    splits.y_test = model.predict(splits.x_test, verbose=0).argmax(-1)
    monkeypatch.setattr(export_cmd, "_load_data", lambda spec, **kwargs: splits)
    output, report_json = tmp_path / "auto.tflite", tmp_path / "auto.json"
    result = run([model_path, "-o", output, "--precision", "auto", "--data", "toy", "--max-drop", 50,
                  "--report-json", report_json])
    assert result.exit_code == 0, result.output
    assert "auto: scoring precisions on 40 examples of the test split" in result.output
    assert "precision  exporter" in result.output and "accepted" in result.output
    report = json.loads(report_json.read_text())
    assert report["auto"]["chosen"] == report["precision"] == "int8"
    assert report["auto"]["tried"][0]["precision"] == "int8" and report["auto"]["tried"][0]["accepted"]
    assert report["exporter"] in ("keras-litert", "saved-model")


def test_auto_and_calibrated_precisions_need_data(saved_model, tmp_path):
    _, model_path = saved_model
    for precision in ("auto", "int16x8", "int8-mixed"):
        result = run([model_path, "-o", tmp_path / "m.tflite", "--precision", precision])
        assert result.exit_code == 1 and f"--precision {precision} needs --data" in result.output
    assert not (tmp_path / "m.tflite").exists()


def test_sizes_are_labelled_in_binary_units():
    assert export_cmd._format_size(2048) == "2.0 KiB"
    assert export_cmd._format_size(3 * 1024 * 1024) == "3.0 MiB"
    assert export_cmd._format_size(100) == "100 B"


def test_op_summary_counts_add_up(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    hidden = keras.layers.LayerNormalization()(keras.layers.Dense(16, activation="gelu")(inputs))
    model = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(4)(hidden)))
    model_path = tmp_path / "ln.keras"
    model.save(model_path)
    result = run([model_path, "-o", tmp_path / "ln.tflite"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("wrote"))
    total = int(line.split(" ops: ")[0].rsplit(", ", 1)[1])
    listed = sum(int(part.split(" x")[1]) for part in line.split(" ops: ")[1].split(", ") if " x" in part)
    unlisted = int(line.split("more op type")[1].split("(")[1].split(" ops)")[0])
    assert listed + unlisted == total  # what is not listed is counted
