"""Tests for the int16x8 / int8-mixed precisions, the exporter choice and `--precision auto`."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from rmtkd_tf import export as export_module  # noqa: E402
from rmtkd_tf.export import ExportError, export_tflite  # noqa: E402
from rmtkd_tf.precision_search import AUTO_ORDER, export_smallest_accurate  # noqa: E402


def mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)])


def layer_norm_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    hidden = keras.layers.LayerNormalization()(keras.layers.Dense(16, activation="gelu")(inputs))
    return keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(4)(hidden)))


def inputs(n=200, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 12)).astype("float32")


def activation_dtypes(path):
    """dtype names of the non-constant tensors the ops write."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    return {
        op["op_name"]: {details[i]["dtype"].__name__ for i in op["outputs"]}
        for op in interpreter._get_ops_details()
    }


def test_int16x8_has_int16_activations_and_float_io(tmp_path):
    model, x = mlp(), inputs()
    path = tmp_path / "m.tflite"
    report = export_tflite(model, path, precision="int16x8", representative_data=x, verify_inputs=x)
    dtypes = activation_dtypes(path)
    assert dtypes["FULLY_CONNECTED"] == {"int16"}
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    assert all(d["dtype"] == np.float32 for d in runner.get_input_details().values())
    assert report.verification["top1_agreement"] >= 0.95 and report.verification["max_abs_err"] < 0.05


def test_int16x8_refuses_layer_norm_models_and_writes_nothing(tmp_path):
    x = inputs()
    with pytest.raises(ExportError, match="int16x8"):
        export_tflite(layer_norm_model(), tmp_path / "m.tflite", precision="int16x8", representative_data=x)
    assert os.listdir(tmp_path) == []


def test_int8_mixed_keeps_the_fragile_ops_in_float(tmp_path):
    model, x = layer_norm_model(), inputs()
    export_tflite(model, tmp_path / "int8.tflite", precision="int8", representative_data=x)
    report = export_tflite(model, tmp_path / "mixed.tflite", precision="int8-mixed", representative_data=x,
                           verify_inputs=x)
    assert report.exporter == "saved-model" and "selective" in report.exporter_note
    mixed, full = activation_dtypes(tmp_path / "mixed.tflite"), activation_dtypes(tmp_path / "int8.tflite")
    for op in ("SOFTMAX", "GELU", "RSQRT"):
        assert mixed[op] == {"float32"}, op
        assert full[op] == {"int8"}, op
    assert mixed["FULLY_CONNECTED"] == {"int8"}
    assert report.verification["top1_agreement"] >= 0.9


def test_exporter_choice_and_fallback(tmp_path, monkeypatch):
    model, x = mlp(), inputs(20)
    assert export_tflite(model, tmp_path / "a.tflite").exporter == "keras-litert"
    forced = export_tflite(model, tmp_path / "b.tflite", exporter="saved-model")
    assert forced.exporter == "saved-model" and forced.exporter_note is None
    np.testing.assert_allclose(
        export_module.tflite_predict(tmp_path / "a.tflite", x), export_module.tflite_predict(tmp_path / "b.tflite", x),
        atol=1e-6,
    )
    # A Keras without format="litert": the SavedModel path, and the report says why.
    monkeypatch.setattr(export_module, "keras_has_litert_export", lambda: False)
    old = export_tflite(model, tmp_path / "c.tflite")
    assert old.exporter == "saved-model" and "no format='litert'" in old.exporter_note
    with pytest.raises(ValueError, match="keras-litert"):
        export_tflite(model, tmp_path / "d.tflite", exporter="keras-litert")


def test_keras_trace_failure_falls_back_to_saved_model(tmp_path, monkeypatch):
    def cannot_trace(*args):
        raise export_module._KerasTraceError("boom")

    monkeypatch.setattr(export_module, "_convert_with_keras", cannot_trace)
    report = export_tflite(mlp(), tmp_path / "m.tflite")
    assert report.exporter == "saved-model" and "boom" in report.exporter_note


def test_auto_takes_int8_when_it_holds(tmp_path):
    model = mlp()
    x = inputs(4000, seed=2)
    y = model.predict(x, verbose=0).argmax(-1)
    result = export_smallest_accurate(model, tmp_path / "m.tflite", x, y, representative_data=x[:200], max_drop=3.0)
    assert result.accepted and result.report.precision == "int8"
    assert [t.precision for t in result.trials] == ["int8"]
    trial = result.trials[0]
    assert trial.accepted and trial.drop_upper <= 3.0 and trial.size_bytes == result.report.size_bytes
    assert os.listdir(tmp_path) == ["m.tflite"]
    assert "int8" in result.format_table() and result.to_dict()["chosen"] == "int8"


def test_auto_tries_in_order_and_writes_fp32_when_nothing_is_confirmed(tmp_path):
    # 30 validation examples cannot confirm a 1-point drop even for a lossless file.
    model = layer_norm_model()
    x = inputs(30, seed=3)
    y = model.predict(x, verbose=0).argmax(-1)
    result = export_smallest_accurate(model, tmp_path / "m.tflite", x, y, representative_data=inputs(100), max_drop=1.0)
    assert [t.precision for t in result.trials] == list(AUTO_ORDER)
    assert not result.accepted and result.report.precision == "fp32"
    int16 = result.trials[1]
    assert int16.error and "int16x8" in int16.error and not int16.accepted
    assert all(t.drop_upper > 1.0 for t in result.trials if t.error is None)
    assert "failed:" in result.format_table()


def test_auto_without_calibration_data_skips_calibrated_precisions(tmp_path):
    model = mlp()
    x = inputs(3000, seed=4)
    y = model.predict(x, verbose=0).argmax(-1)
    result = export_smallest_accurate(model, tmp_path / "m.tflite", x, y, max_drop=2.0)
    assert [t.error for t in result.trials[:3]] == ["no calibration data"] * 3
    assert result.report.precision == "int8-dynamic"


def test_compress_export_with_auto_records_the_trials(tmp_path):
    import json
    import types

    from rmtkd_tf.io import write_json
    from rmtkd_tf.pipeline import export_models

    teacher = mlp()
    x = inputs(3000, seed=5)
    y = teacher.predict(x, verbose=0).argmax(-1)
    data = types.SimpleNamespace(x_calibration=x[:200], x_validation=x[:2500], y_validation=y[:2500],
                                 x_test=x[2500:], y_test=y[2500:])
    task = types.SimpleNamespace(data=data)
    config = types.SimpleNamespace(max_drop=2.0, confidence=0.95)
    lines = []
    reports = export_models(task, {"teacher": teacher}, tmp_path, "auto", config, log=lines.append)
    report = reports["teacher"]
    assert report["precision"] == report["auto"]["chosen"] == "int8"
    assert report["verification"]["n"] == 500  # verified on the test split
    assert any("teacher: precision" in line for line in lines)  # the table went to the log
    write_json(tmp_path / "report.json", reports)
    assert json.loads((tmp_path / "report.json").read_text())["teacher"]["auto"]["tried"][0]["accepted"]


def test_compress_summary_says_precision_path_and_auto_trials():
    from rmtkd_tf.report import format_summary

    side = {"params": 10, "flops": 20, "val_accuracy": 90.0, "test_accuracy": 89.0}
    trial = {"precision": "int8", "exporter": "keras-litert", "size_bytes": 4096, "keras_accuracy": 0.9,
             "tflite_accuracy": 0.7, "drop": 20.0, "drop_upper": 25.0, "accepted": False, "error": None, "seconds": 1.0}
    fp32 = {**trial, "precision": "fp32", "tflite_accuracy": 0.9, "drop": 0.0, "drop_upper": 0.4, "accepted": True}
    export = {"precision": "fp32", "exporter": "keras-litert", "size_bytes": 8192,
              "verification": {"tflite_accuracy": 0.89, "top1_agreement": 1.0},
              "auto": {"chosen": "fp32", "accepted": True, "max_drop": 1.0, "confidence": 0.95,
                       "validation_examples": 1000, "tried": [trial, fp32]}}
    report = {"teacher": side, "student": side, "param_reduction": 0.0, "flop_reduction": 0.0,
              "export": {"student": export}, "stopped": "done"}
    text = format_summary(report)
    assert "student.tflite: fp32, via keras-litert (auto)" in text
    rows = [line.split() for line in text.splitlines() if line.startswith(("int8 ", "fp32 "))]
    assert rows[0][0] == "int8" and rows[0][-1] == "no" and rows[1][0] == "fp32" and rows[1][-1] == "yes"


def test_int16x8_names_the_integer_input_it_cannot_handle(tmp_path):
    keras.utils.set_random_seed(0)
    ids = keras.Input((6,), dtype="int32", name="token_ids")
    model = keras.Model(ids, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Embedding(20, 4)(ids))))
    x = np.random.default_rng(0).integers(0, 20, (50, 6)).astype("int32")
    with pytest.raises(ExportError, match="integer input .*token_ids.* use int8-mixed or int8-dynamic"):
        export_tflite(model, tmp_path / "m.tflite", precision="int16x8", representative_data=x)
    assert os.listdir(tmp_path) == []
