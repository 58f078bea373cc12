"""`rmtkd-tf bench` feeds integer (token-id) inputs values inside their embedding tables."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from rmtkd_tf.bench.host import LoadedTfliteModel  # noqa: E402
from rmtkd_tf.export import export_tflite  # noqa: E402


def text_model(vocabulary=37, segments=2):
    keras.utils.set_random_seed(0)
    token_ids = keras.Input((16,), dtype="int32", name="token_ids")
    segment_ids = keras.Input((16,), dtype="int32", name="segment_ids")
    padding_mask = keras.Input((16,), dtype="int32", name="padding_mask")
    hidden = keras.layers.Embedding(vocabulary, 8)(token_ids) + keras.layers.Embedding(segments, 8)(segment_ids)
    mask = keras.ops.expand_dims(keras.ops.cast(padding_mask, "float32"), -1)
    pooled = keras.ops.sum(hidden * mask, axis=1)
    return keras.Model({"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask},
                       keras.layers.Dense(2)(pooled))


def test_token_ids_stay_inside_their_tables_and_masks_are_ones(tmp_path):
    path = tmp_path / "text.tflite"
    export_tflite(text_model(), path)
    loaded = LoadedTfliteModel(path, seed=3)
    names = [detail["name"] for detail in loaded.interpreter.get_input_details()]
    arrays = dict(zip(names, loaded.input_arrays))
    token_ids = next(array for name, array in arrays.items() if "token_ids" in name)
    segment_ids = next(array for name, array in arrays.items() if "segment_ids" in name)
    padding_mask = next(array for name, array in arrays.items() if "padding_mask" in name)
    assert token_ids.min() >= 0 and token_ids.max() < 37
    assert token_ids.max() >= 8  # the whole table is used, not only a few first rows
    assert set(np.unique(segment_ids)) <= {0, 1}
    assert np.all(padding_mask == 1)
    loaded.run(2)  # and the model runs on them


def test_given_inputs_are_used_as_they_are(tmp_path):
    path = tmp_path / "text.tflite"
    export_tflite(text_model(), path)
    details = LoadedTfliteModel(path).interpreter.get_input_details()
    given = {d["name"]: np.zeros(d["shape"], dtype=d["dtype"]) for d in details}
    loaded = LoadedTfliteModel(path, inputs=given)
    assert all(np.all(array == 0) for array in loaded.input_arrays)
