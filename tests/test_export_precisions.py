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


def test_int16x8_converts_layer_norm_models_through_the_rewrite(tmp_path):
    model, x = layer_norm_model(), inputs()
    path = tmp_path / "m.tflite"
    report = export_tflite(model, path, precision="int16x8", representative_data=x, verify_inputs=x)
    dtypes = activation_dtypes(path)
    for op in ("FULLY_CONNECTED", "MEAN", "RSQRT", "GELU", "SOFTMAX"):
        assert dtypes[op] == {"int16"}, op
    assert "SQUARED_DIFFERENCE" not in report.op_histogram and "NEG" not in report.op_histogram
    assert report.verification["top1_agreement"] >= 0.95 and report.verification["max_abs_err"] < 0.02
    assert not any("call" in vars(layer) for layer in model._flatten_layers())  # the rewrite is undone


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
    assert int16.precision == "int16x8" and int16.error is None and not int16.accepted
    assert all(t.drop_upper > 1.0 for t in result.trials if t.error is None)
    assert "int16x8" in result.format_table()


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
    # A lookup through keras.ops.take (not an Embedding layer, so not rewritten) wraps negative ids with
    # integer ops that the 16x8 quantizer cannot handle.
    keras.utils.set_random_seed(0)
    ids = keras.Input((6,), dtype="int32", name="token_ids")
    table = np.random.default_rng(0).normal(size=(20, 4)).astype("float32")
    model = keras.Model(ids, keras.layers.Dense(2)(keras.layers.Flatten()(keras.ops.take(table, ids, axis=0))))
    x = np.random.default_rng(0).integers(0, 20, (50, 6)).astype("int32")
    with pytest.raises(ExportError, match="integer input .*token_ids.* use int8-mixed or int8-dynamic"):
        export_tflite(model, tmp_path / "m.tflite", precision="int16x8", representative_data=x)
    assert os.listdir(tmp_path) == []


SEQ_LEN = 16


def tiny_bert(seed=0):
    import keras_hub

    from rmtkd_tf.transformers import bert_classifier

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=2 * SEQ_LEN, name="bert_backbone",
    )
    return bert_classifier(backbone, num_classes=3, sequence_length=SEQ_LEN, dropout=0.0)


def token_batch(n, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, SEQ_LEN + 1, n)
    mask = (np.arange(SEQ_LEN)[None, :] < lengths[:, None]).astype("int32")
    ids = rng.integers(5, 100, (n, SEQ_LEN)).astype("int32") * mask
    return {"token_ids": ids, "padding_mask": mask, "segment_ids": (rng.random((n, SEQ_LEN)) < 0.3) * mask}


def test_quantization_friendly_rewrite_is_the_same_function_in_float():
    from rmtkd_tf.quantization_rewrites import quantization_friendly

    model, x = tiny_bert(), token_batch(64)
    x["padding_mask"][0] = 0  # a fully masked row: softmax rows of zeros either way
    before = keras.ops.convert_to_numpy(model(x))
    with quantization_friendly(model) as rewritten:
        inside = keras.ops.convert_to_numpy(model(x))
    assert sorted(set(rewritten)) == ["Embedding", "LayerNormalization", "MultiHeadAttention",
                                      "ReversibleEmbedding", "Softmax"]
    # embeddings, embedding norm; per layer 2 norms, a softmax and the attention (explicit scores)
    assert len(rewritten) == 2 + 1 + 2 * 2 + 2 + 2
    np.testing.assert_allclose(inside, before, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), before, atol=0, rtol=0)


def test_int8_embeddings_round_each_row_to_int8():
    from rmtkd_tf.quantization_rewrites import quantization_friendly

    keras.utils.set_random_seed(0)
    ids = keras.Input((5,), dtype="int32")
    layer = keras.layers.Embedding(30, 8)
    model = keras.Model(ids, layer(ids))
    x = np.arange(30).reshape(6, 5).astype("int32")
    table = keras.ops.convert_to_numpy(layer.embeddings)
    with quantization_friendly(model, int8_embeddings=True):
        rows = keras.ops.convert_to_numpy(model(x))
    step = np.abs(table).max(axis=1) / 127
    error = np.abs(rows.reshape(30, 8) - table)
    assert np.all(error <= step[:, None] / 2 + 1e-7) and error.max() > 0


def test_int16x8_converts_a_keras_hub_bert_without_flex_ops(tmp_path):
    model, x = tiny_bert(), token_batch(120, seed=1)
    path = tmp_path / "bert.tflite"
    report = export_tflite(model, path, precision="int16x8", representative_data=x, verify_inputs=x)
    assert report.flex_ops == [] and "SQUARED_DIFFERENCE" not in report.op_histogram
    dtypes = activation_dtypes(path)
    for op in ("FULLY_CONNECTED", "BATCH_MATMUL", "SOFTMAX", "GELU", "RSQRT"):
        assert dtypes[op] == {"int16"}, op
    # A few ops stay float (mask casts, masked-softmax selects, mean pooling's division); DELEGATE is the
    # interpreter's XNNPACK node for them, not an op of the file.
    float_ops = {op for op, kinds in dtypes.items() if kinds == {"float32"}}
    assert float_ops <= {"CAST", "SELECT_V2", "ZEROS_LIKE", "DIV", "DEQUANTIZE", "DELEGATE"}
    assert report.verification["top1_agreement"] >= 0.97 and report.verification["max_abs_err"] < 0.05
