"""Tests for `rmtkd_tf.export`: TFLite conversion, Flex refusal, atomic writes, verification."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from rmtkd_tf import export as export_module  # noqa: E402
from rmtkd_tf.export import (  # noqa: E402
    CALIBRATED_PRECISIONS,
    PRECISIONS,
    ExportError,
    ExportReport,
    FlexOpsError,
    export_tflite,
    tflite_predict,
)


class Determinant(keras.layers.Layer):
    """Calls `tf.linalg.det`: TFLite has no builtin for `MatrixDeterminant`, only a Flex kernel."""

    def call(self, inputs):
        return tf.expand_dims(tf.linalg.det(tf.reshape(inputs, (-1, 3, 3))), -1)


class InverseErf(keras.layers.Layer):
    """Calls `tf.math.erfinv`, which has neither a TFLite builtin nor a Flex kernel."""

    def call(self, inputs):
        return tf.math.erfinv(inputs)


def dense_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(5),
        ]
    )


def conv_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Conv2D(8, 1),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5),
        ]
    )


def random_inputs(model, n=64, seed=1):
    shape = (n,) + tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def files_in(directory):
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("make_model", [dense_model, conv_model], ids=["dense", "conv"])
def test_converts_without_flex_and_matches_keras(tmp_path, make_model, precision):
    model = make_model()
    x = random_inputs(model)
    path = tmp_path / f"model_{precision}.tflite"
    report = export_tflite(
        model,
        path,
        precision=precision,
        representative_data=x if precision in CALIBRATED_PRECISIONS else None,
        verify_inputs=x,
    )
    assert isinstance(report, ExportReport)
    assert report.exporter == ("saved-model" if precision == "int8-mixed" else "keras-litert")
    assert path.is_file() and report.size_bytes == path.stat().st_size
    assert report.path == str(path) and report.precision == precision
    assert report.flex_ops == []
    assert not any(name.startswith("Flex") for name in report.op_histogram)
    assert report.n_ops == sum(report.op_histogram.values())
    assert report.op_histogram.get("FULLY_CONNECTED", 0) >= 1
    if make_model is conv_model:
        assert report.op_histogram["CONV_2D"] == 2
    verification = report.verification
    assert verification["n"] == len(x)
    assert verification["top1_agreement"] >= 0.9
    # Float conversions are near-exact; int8 is within quantization error of the logits.
    tolerance = 0.25 if precision in CALIBRATED_PRECISIONS else 1e-2
    assert verification["max_abs_err"] < tolerance
    assert verification["mean_abs_err"] <= verification["max_abs_err"]
    assert verification["keras_accuracy"] is None and verification["tflite_accuracy"] is None
    assert files_in(tmp_path) == [path.name]  # no temp files left behind


def test_int8_has_int8_input_and_output_tensors(tmp_path):
    model = conv_model()
    x = random_inputs(model)
    path = tmp_path / "int8.tflite"
    export_tflite(model, path, precision="int8", representative_data=x)
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    (input_detail,) = runner.get_input_details().values()
    (output_detail,) = runner.get_output_details().values()
    assert input_detail["dtype"] == np.int8 and output_detail["dtype"] == np.int8
    scale, zero_point = input_detail["quantization"]
    assert scale > 0

    # tflite_predict quantizes float inputs and dequantizes outputs; check it against doing
    # the documented recipe by hand.
    quantized = np.clip(np.round(x[:5] / scale) + zero_point, -128, 127).astype(np.int8)
    (raw,) = runner(**{next(iter(runner.get_input_details())): quantized}).values()
    out_scale, out_zero_point = output_detail["quantization"]
    by_hand = (raw.astype(np.float32) - out_zero_point) * out_scale
    np.testing.assert_allclose(tflite_predict(path, x[:5]), by_hand, rtol=0, atol=1e-6)
    np.testing.assert_allclose(tflite_predict(path, x[:5]), model.predict(x[:5], verbose=0), atol=0.25)


def test_fp16_and_int8_dynamic_shrink_large_weights(tmp_path):
    # Dynamic-range quantization skips tensors under 1024 elements, so use 256x256 kernels.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((256,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(256)]
    )
    sizes = {
        precision: export_tflite(model, tmp_path / f"{precision}.tflite", precision=precision).size_bytes
        for precision in ("fp32", "fp16", "int8-dynamic")
    }
    assert sizes["fp32"] > 2 * 256 * 256 * 4  # two float32 kernels
    assert sizes["fp16"] < 0.6 * sizes["fp32"]
    assert sizes["int8-dynamic"] < 0.35 * sizes["fp32"]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_low_rank_pairs_stay_conv2d_and_fully_connected(tmp_path, precision):
    # What RMT-KD produces: kxk conv (no bias) -> 1x1 conv, and Dense (no bias) -> Dense.
    # The converter must not fold the pair back into one op.
    keras.utils.set_random_seed(0)
    conv_pair = keras.Sequential(
        [
            keras.Input((16, 16, 32)),
            keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
            keras.layers.Conv2D(64, 1),
        ]
    )
    dense_pair = keras.Sequential(
        [keras.Input((128,)), keras.layers.Dense(8, use_bias=False), keras.layers.Dense(128)]
    )
    for model, expected in ((conv_pair, {"CONV_2D": 2}), (dense_pair, {"FULLY_CONNECTED": 2})):
        x = random_inputs(model, n=16)
        report = export_tflite(
            model,
            tmp_path / "pair.tflite",
            precision=precision,
            representative_data=x if precision == "int8" else None,
        )
        assert report.op_histogram == expected


def test_flex_op_is_refused_with_its_name_and_nothing_written(tmp_path):
    inputs = keras.Input((9,))
    model = keras.Model(inputs, keras.layers.Dense(2)(Determinant()(inputs)))
    path = tmp_path / "det.tflite"
    with pytest.raises(FlexOpsError) as caught:
        export_tflite(model, path)
    message = str(caught.value)
    assert "MatrixDeterminant" in message and "\n" not in message
    assert caught.value.flex_ops == ["MatrixDeterminant"]
    assert files_in(tmp_path) == []


def test_op_without_any_kernel_is_refused(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, InverseErf()(inputs))
    with pytest.raises(FlexOpsError, match="Erfinv") as caught:
        export_tflite(model, tmp_path / "erfinv.tflite")
    assert caught.value.custom_ops == ["Erfinv"] and caught.value.flex_ops == []
    assert files_in(tmp_path) == []


def test_flatbuffer_scan_catches_flex_ops_the_converter_let_through(tmp_path, monkeypatch):
    # Convert with SELECT_TF_OPS on purpose, then make export_tflite "receive" that graph:
    # the post-conversion scan of the operator codes must refuse it.
    inputs = keras.Input((9,))
    model = keras.Model(inputs, keras.layers.Dense(2)(Determinant()(inputs)))
    saved_model_dir = str(tmp_path / "saved_model")
    model.export(saved_model_dir, format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    flex_flatbuffer = converter.convert()

    histogram, custom_ops = export_module._scan_operators(flex_flatbuffer)
    assert custom_ops == ["FlexMatrixDeterminant"]
    assert histogram["FlexMatrixDeterminant"] == 1 and histogram["FULLY_CONNECTED"] == 1

    monkeypatch.setattr(export_module, "_convert", lambda *args: flex_flatbuffer)
    out_dir = tmp_path / "out"
    with pytest.raises(FlexOpsError, match="MatrixDeterminant"):
        export_tflite(model, out_dir / "det.tflite", exporter="saved-model")
    assert not out_dir.exists() or files_in(out_dir) == []


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous model")

    def failing_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(export_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        export_tflite(dense_model(), path)
    assert path.read_bytes() == b"previous model"
    assert files_in(tmp_path) == ["model.tflite"]


def test_failed_conversion_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous model")
    inputs = keras.Input((9,))
    model = keras.Model(inputs, keras.layers.Dense(2)(Determinant()(inputs)))
    with pytest.raises(FlexOpsError):
        export_tflite(model, path)
    assert path.read_bytes() == b"previous model"
    assert files_in(tmp_path) == ["model.tflite"]


def test_refuses_keras_paths_and_bad_arguments(tmp_path):
    model = dense_model()
    with pytest.raises(ValueError, match="Keras model path"):
        export_tflite(model, tmp_path / "model.keras")
    with pytest.raises(ValueError, match="precision must be one of"):
        export_tflite(model, tmp_path / "m.tflite", precision="int4")
    with pytest.raises(ValueError, match="needs representative_data"):
        export_tflite(model, tmp_path / "m.tflite", precision="int8")
    with pytest.raises(ValueError, match="verify_labels were given without verify_inputs"):
        export_tflite(model, tmp_path / "m.tflite", verify_labels=np.zeros(4, int))
    with pytest.raises(ValueError, match="keras.Model"):
        export_tflite(lambda v: v, tmp_path / "m.tflite")
    assert files_in(tmp_path) == []


def test_labels_give_accuracy_of_both_models(tmp_path):
    model = dense_model()
    x = random_inputs(model, n=100)
    keras_classes = model.predict(x, verbose=0).argmax(-1)
    labels = keras_classes.copy()
    labels[:10] = (labels[:10] + 1) % 5  # 10 wrong labels -> Keras accuracy 0.9 exactly
    report = export_tflite(
        model, tmp_path / "m.tflite", verify_inputs=x, verify_labels=labels
    )
    verification = report.verification
    assert verification["keras_accuracy"] == pytest.approx(0.9)
    assert verification["tflite_accuracy"] == pytest.approx(0.9)
    one_hot = np.eye(5)[labels]
    report = export_tflite(model, tmp_path / "m.tflite", verify_inputs=x, verify_labels=one_hot)
    assert report.verification["keras_accuracy"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="verify_labels shape"):
        export_tflite(model, tmp_path / "m.tflite", verify_inputs=x, verify_labels=labels[:50])


def test_single_sigmoid_unit_is_read_as_binary_classifier(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, activation="sigmoid")])
    x = random_inputs(model, n=50)
    labels = (model.predict(x, verbose=0)[:, 0] > 0.5).astype(int)
    report = export_tflite(model, tmp_path / "b.tflite", verify_inputs=x, verify_labels=labels)
    assert report.verification["keras_accuracy"] == 1.0
    assert report.verification["top1_agreement"] == 1.0


def test_tflite_predict_batches_and_matches_keras(tmp_path):
    model = conv_model()
    x = random_inputs(model, n=30)
    path = tmp_path / "m.tflite"
    export_tflite(model, path)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(tflite_predict(path, x, batch_size=7), expected, atol=1e-5)
    np.testing.assert_allclose(tflite_predict(str(path), x), expected, atol=1e-5)
    with pytest.raises(FileNotFoundError):
        tflite_predict(tmp_path / "missing.tflite", x)
    with pytest.raises(ValueError, match="batch_size"):
        tflite_predict(path, x, batch_size=0)


def two_input_model(as_dict):
    keras.utils.set_random_seed(0)
    token_ids = keras.Input((6,), name="token_ids")
    padding_mask = keras.Input((4,), name="padding_mask")
    hidden = keras.layers.Concatenate()(
        [keras.layers.Dense(8, activation="relu")(token_ids), padding_mask]
    )
    outputs = keras.layers.Dense(3)(hidden)
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask} if as_dict else [token_ids, padding_mask]
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_model_with_two_named_inputs(tmp_path, precision):
    model = two_input_model(as_dict=True)
    rng = np.random.default_rng(2)
    x = {"token_ids": rng.normal(size=(40, 6)), "padding_mask": rng.normal(size=(40, 4))}
    path = tmp_path / "two.tflite"
    report = export_tflite(
        model,
        path,
        precision=precision,
        representative_data=x if precision == "int8" else None,
        verify_inputs=x,
    )
    assert report.verification["n"] == 40
    assert report.verification["top1_agreement"] >= 0.9
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    assert sorted(runner.get_input_details()) == ["padding_mask", "token_ids"]
    predictions = tflite_predict(path, x, batch_size=16)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(predictions, expected, atol=1e-5 if precision == "fp32" else 0.25)
    with pytest.raises(ValueError, match="pass a dict keyed by input name"):
        tflite_predict(path, x["token_ids"])
    with pytest.raises(ValueError, match="do not match"):
        tflite_predict(path, {"token_ids": x["token_ids"]})


def test_list_input_model_accepts_lists_and_dicts(tmp_path):
    model = two_input_model(as_dict=False)
    rng = np.random.default_rng(3)
    token_ids, padding_mask = rng.normal(size=(20, 6)), rng.normal(size=(20, 4))
    report = export_tflite(model, tmp_path / "l.tflite", verify_inputs=[token_ids, padding_mask])
    assert report.verification["max_abs_err"] < 1e-4
    report = export_tflite(
        model,
        tmp_path / "l.tflite",
        verify_inputs={"padding_mask": padding_mask, "token_ids": token_ids},
    )
    assert report.verification["max_abs_err"] < 1e-4
    with pytest.raises(ValueError, match="missing model inputs"):
        export_tflite(model, tmp_path / "l.tflite", verify_inputs={"token_ids": token_ids})
    with pytest.raises(ValueError, match="different numbers of rows"):
        export_tflite(model, tmp_path / "l.tflite", verify_inputs=[token_ids, padding_mask[:5]])


def test_int8_calibrates_from_a_batched_dataset_of_pairs(tmp_path):
    model = dense_model()
    x = random_inputs(model, n=48)
    labels = np.zeros(48, dtype="int64")
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(16)
    report = export_tflite(
        model, tmp_path / "ds.tflite", precision="int8", representative_data=dataset, verify_inputs=x
    )
    assert report.verification["top1_agreement"] >= 0.9
    unbatched = tf.data.Dataset.from_tensor_slices(x)
    report = export_tflite(
        model,
        tmp_path / "ds.tflite",
        precision="int8",
        representative_data=unbatched,
        verify_inputs=x,
        max_representative_samples=10,
    )
    assert report.verification["top1_agreement"] >= 0.9


def test_export_error_for_untraceable_model_is_one_line(tmp_path):
    class NotBuilt(keras.Model):
        def call(self, inputs):
            return inputs

    with pytest.raises(ExportError, match="not yet been built") as caught:
        export_tflite(NotBuilt(), tmp_path / "x.tflite")
    assert "\n" not in str(caught.value)
    assert files_in(tmp_path) == []


def test_report_to_dict_is_json_serializable(tmp_path):
    import json

    model = dense_model()
    report = export_tflite(model, tmp_path / "m.tflite", verify_inputs=random_inputs(model, n=8))
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert set(as_dict) == {
        "path", "precision", "size_bytes", "n_ops", "op_histogram", "flex_ops",
        "verification", "wall_time_s", "exporter", "exporter_note",
    }
    assert set(as_dict["verification"]) == {
        "n", "max_abs_err", "mean_abs_err", "top1_agreement", "keras_accuracy", "tflite_accuracy",
    }
    assert as_dict["wall_time_s"] > 0


def test_uint8_images_are_quantized_not_wrapped_for_int8_models(tmp_path):
    # uint8 pixels fed to an int8-input model must be quantized as values, not cast (200 -> -56).
    import keras as _keras

    rng = np.random.default_rng(0)
    model = _keras.Sequential([_keras.Input((4, 4, 1)), _keras.layers.Flatten(), _keras.layers.Dense(3)])
    pixels = rng.integers(0, 256, size=(64, 4, 4, 1)).astype("uint8")
    path = tmp_path / "m.tflite"
    export_tflite(model, path, precision="int8", representative_data=pixels.astype("float32"))
    from_uint8 = tflite_predict(path, pixels)
    from_float = tflite_predict(path, pixels.astype("float32"))
    np.testing.assert_array_equal(from_uint8, from_float)
