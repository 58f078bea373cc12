"""Models saved before `LowRankConvBase` existed still load, with the same configs, weights and outputs.

tests/data/layers/low_rank_convs.keras was saved by tools/make_low_rank_conv_fixture.py at commit 21bff69,
when each low-rank convolution was a stand-alone `keras.layers.Layer`; the .npz holds its inputs and the
outputs that code computed.
"""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import keras

from rmtkd_tf.layers import LowRankConv1D, LowRankConv2D, LowRankSeparableConv2D

FIXTURE = Path(__file__).parent / "data" / "layers" / "low_rank_convs.keras"
CLASSES = {"LowRankConv1D": LowRankConv1D, "LowRankConv2D": LowRankConv2D,
           "LowRankSeparableConv2D": LowRankSeparableConv2D}

# The config keys each class wrote when the fixture was saved (besides keras.layers.Layer's own).
CONV_KEYS = ["filters", "rank", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
             "activation", "use_bias", "kernel_initializer", "bias_initializer"]
OWN_KEYS = {
    "LowRankConv1D": CONV_KEYS,
    "LowRankConv2D": CONV_KEYS,
    "LowRankSeparableConv2D": CONV_KEYS + ["depth_multiplier", "depthwise_initializer"],
}


def _saved_layer_entries():
    with zipfile.ZipFile(FIXTURE) as archive:
        config = json.loads(archive.read("config.json"))
    return [entry for entry in config["config"]["layers"] if entry["class_name"] in CLASSES]


def test_fixture_was_saved_under_the_registered_names():
    entries = _saved_layer_entries()
    assert sorted({entry["class_name"] for entry in entries}) == sorted(CLASSES)
    for entry in entries:
        assert entry["registered_name"] == f"rmtkd_tf>{entry['class_name']}"
        assert keras.saving.get_registered_name(CLASSES[entry["class_name"]]) == entry["registered_name"]


def test_saved_model_loads_with_the_same_outputs():
    model = keras.models.load_model(FIXTURE)
    recorded = np.load(FIXTURE.with_suffix(".npz"))
    outputs = model.predict({"seq": recorded["seq"], "img": recorded["img"]}, verbose=0)
    np.testing.assert_allclose(outputs, recorded["outputs"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("entry", _saved_layer_entries(), ids=lambda entry: entry["config"]["name"])
def test_loaded_layers_have_the_saved_configs_and_weights(entry):
    model = keras.models.load_model(FIXTURE)
    layer = model.get_layer(entry["config"]["name"])
    assert type(layer) is CLASSES[entry["class_name"]]
    saved = entry["config"]
    layer_keys = set(keras.layers.Layer(name="x").get_config())
    assert sorted(set(saved) - layer_keys) == sorted(OWN_KEYS[entry["class_name"]])
    # get_config() holds tuples where the JSON holds lists: compare through JSON. The saved dtype policy
    # carries keras' own bookkeeping (a shared-object id), which is no part of these layers' format.
    config = json.loads(json.dumps(layer.get_config()))
    assert {k: v for k, v in config.items() if k != "dtype"} == {k: v for k, v in saved.items() if k != "dtype"}
    # Re-created from the saved config (as keras does on load), the layer rebuilds the same weights in order.
    rebuilt = CLASSES[entry["class_name"]].from_config(saved)
    rebuilt.build(model.get_layer(entry["config"]["name"]).input.shape)
    assert [w.path.split("/")[-1] for w in rebuilt.weights] == [w.path.split("/")[-1] for w in layer.weights]
    assert [tuple(w.shape) for w in rebuilt.weights] == [tuple(w.shape) for w in layer.weights]
