"""Layer types beyond Dense/Conv2D: SeparableConv2D, Conv1D, grouped and depthwise convs, refusals, and docs/layers.md."""

import re
from pathlib import Path

import keras
import numpy as np
import pytest

import rmtkd_tf  # noqa: F401  (registers the factorized layers)
from rmtkd_tf.collection import candidate_layers, collect_activations
from rmtkd_tf.compression import CompressionConfig, CompressionData, run
from rmtkd_tf.errors import UnsupportedModelError
from rmtkd_tf.export import export_tflite
from rmtkd_tf.factorization import leading_eigenvectors
from rmtkd_tf.flops import model_flops
from rmtkd_tf.layers import LowRankConv1D, LowRankSeparableConv2D
from rmtkd_tf.model_walk import CANDIDATE, SKIPPED, layer_support, skipped_summary
from rmtkd_tf.output_weighting import output_weighting
from rmtkd_tf.selection import decide_ranks
from rmtkd_tf.spectral import get_rank_rule
from rmtkd_tf.surgery import LayerFactors, factorize_model

DOC = Path(__file__).resolve().parents[1] / "docs" / "layers.md"


def _randomise_batchnorms(model, rng):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2, gamma.shape), rng.normal(size=beta.shape),
                               rng.normal(size=mean.shape), rng.uniform(0.5, 2, variance.shape)])


def _mixed_model():
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.SeparableConv2D(12, 3, depth_multiplier=2, padding="same", name="sep")(inputs)
    x = keras.layers.BatchNormalization(name="sep_bn")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(8, 3, groups=4, padding="same", name="grouped")(x)
    x = keras.layers.Activation("hard_swish")(x)
    x = keras.layers.Reshape((100, 8))(x)
    x = keras.layers.Conv1D(10, 3, padding="causal", activation="relu6", name="causal")(x)
    x = keras.layers.Conv1D(6, 3, strides=2, name="strided")(x)
    x = keras.layers.BatchNormalization(name="strided_bn")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


def test_separable_conv1d_grouped_and_depthwise_through_surgery(tmp_path):
    rng = np.random.default_rng(0)
    model = _mixed_model()
    _randomise_batchnorms(model, rng)
    x = rng.normal(size=(32, 10, 10, 3)).astype("float32")
    layers = dict(candidate_layers(model))
    assert set(layers) == {"sep", "grouped", "causal", "strided", "logits"}  # not the depthwise conv
    assert skipped_summary(model).startswith("left as they are: 1 DepthwiseConv2D (filters each channel on its own")
    assert "; 1 Conv2D (grouped convolution (groups=4)" in skipped_summary(model)
    stats = collect_activations(model, x)
    assert (stats["sep"].kind, stats["sep"].dim, stats["sep"].n_samples) == ("separable_conv2d", 12, 3200)
    assert (stats["strided"].kind, stats["strided"].n_samples) == ("conv1d", 32 * 49)
    decisions = {d.path: d for d in decide_ranks(layers, stats, get_rank_rule("fixed-ratio", ratio=0.5))[0]}
    assert decisions["grouped"].skipped.startswith("grouped convolution (groups=4)")
    # The separable conv's BN and the strided Conv1D's BN are folded; its params leave the depthwise kernel out.
    assert decisions["sep"].metric == decisions["strided"].metric == "post-batchnorm"
    assert (decisions["sep"].fan_in, decisions["sep"].params_before) == (6, 6 * 12 + 12)
    with pytest.raises(UnsupportedModelError, match="^layer 'grouped': grouped convolution"):
        factorize_model(model, {"grouped": LayerFactors(np.eye(8), np.zeros(8))})

    def factors(statistics, rank=None):
        out = {}
        for path, s in statistics.items():
            if path != "grouped":
                weighting = output_weighting(layers[path]) if rank is None else None
                scale = None if weighting is None else weighting.scale
                cov = s.covariance if scale is None else s.covariance * scale[:, None] * scale[None, :]
                out[path] = LayerFactors(leading_eigenvectors(cov, rank or s.dim)[1], s.mean, scale)
        return out

    expected = model.predict(x, verbose=0)
    exact = factorize_model(model, factors(stats))
    kinds = {l.name: type(l).__name__ for l in exact.layers}
    assert kinds["sep"] == "LowRankSeparableConv2D" and kinds["causal"] == kinds["strided"] == "LowRankConv1D"
    assert kinds["dw"] == "DepthwiseConv2D" and kinds["grouped"] == "Conv2D"
    np.testing.assert_allclose(exact.predict(x, verbose=0), expected, atol=1e-4 * np.abs(expected).max())

    student = factorize_model(model, factors(stats, rank=3))
    assert model_flops(student) < model_flops(model)
    # Reduced again through the bottleneck (the depthwise kernel travels along), exact at full rank.
    again = collect_activations(student, x)
    assert again["sep"].dim == 3
    refactored = factorize_model(student, factors({p: s for p, s in again.items()}, rank=3))
    np.testing.assert_allclose(refactored.predict(x, verbose=0), student.predict(x, verbose=0), atol=1e-4)
    path = tmp_path / "student.keras"
    student.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), student.predict(x, verbose=0))
    report = export_tflite(reloaded, tmp_path / "student.tflite", verify_inputs=x[:4])
    assert report.flex_ops == [] and report.verification["max_abs_err"] < 1e-4
    assert report.op_histogram["DEPTHWISE_CONV_2D"] == 2  # the separable conv's and the plain depthwise conv


@pytest.mark.parametrize("padding", ["valid", "same", "causal"])
def test_low_rank_conv1d_at_full_rank_equals_conv1d(padding):
    rng = np.random.default_rng(1)
    conv = keras.layers.Conv1D(5, 3, padding=padding, dilation_rate=2, activation="relu")
    x = rng.normal(size=(2, 9, 4)).astype("float32")
    expected = keras.ops.convert_to_numpy(conv(x))
    kernel, bias = conv.get_weights()
    layer = LowRankConv1D(5, 5, 3, padding=padding, dilation_rate=2, activation="relu")
    layer.build(x.shape)
    layer.set_weights([kernel, np.eye(5, dtype="float32")[None], bias])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5)
    assert layer.compute_output_shape(x.shape) == conv.compute_output_shape(x.shape)
    assert LowRankConv1D.from_config(layer.get_config()).get_config() == layer.get_config()


def test_low_rank_separable_conv2d_at_full_rank_equals_separable_conv2d():
    rng = np.random.default_rng(2)
    conv = keras.layers.SeparableConv2D(6, 3, strides=2, depth_multiplier=2, padding="same")
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(conv(x))
    depthwise, pointwise, bias = conv.get_weights()
    layer = LowRankSeparableConv2D(6, 6, 3, strides=2, depth_multiplier=2, padding="same")
    layer.build(x.shape)
    layer.set_weights([depthwise, pointwise, np.eye(6, dtype="float32")[None, None], bias])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5)
    assert layer.compute_output_shape(x.shape) == conv.compute_output_shape(x.shape)
    assert LowRankSeparableConv2D.from_config(layer.get_config()).get_config() == layer.get_config()


@pytest.mark.parametrize("bad", [{"rank": 2.5}, {"rank": 0}, {"filters": True}, {"kernel_size": (3, 3)},
                                 {"padding": "full"}, {"strides": 2, "dilation_rate": 2}])
def test_low_rank_conv1d_refuses_bad_arguments(bad):
    arguments = {"filters": 4, "rank": 2, "kernel_size": 3, **bad}
    with pytest.raises(ValueError):
        LowRankConv1D(**arguments)


@pytest.mark.parametrize("bad", [{"rank": 1.0}, {"depth_multiplier": 0}, {"kernel_size": (3,)}])
def test_low_rank_separable_conv2d_refuses_bad_arguments(bad):
    with pytest.raises(ValueError):
        LowRankSeparableConv2D(**{"filters": 4, "rank": 2, "kernel_size": 3, **bad})


class _Scaler:
    factor = 2.0


class _Unconfigurable(keras.layers.Layer):
    """A custom layer taking an object Keras cannot serialise, with no get_config() of its own."""

    def __init__(self, scaler, **kwargs):
        super().__init__(**kwargs)
        self.scaler = scaler

    def call(self, inputs):
        return inputs * self.scaler.factor


def _tiny_data(model, n=40):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    y = rng.integers(0, 2, size=n)
    return CompressionData(x, y, x, x, y)


@pytest.mark.parametrize("make_layer, message", [
    (lambda: keras.layers.Lambda(lambda t: t * 2.0, name="double"),
     "cannot rebuild the model: Lambda layer 'double' wraps a Python function and cannot be rebuilt safely; "),
    (lambda: _Unconfigurable(_Scaler(), name="custom"),
     "cannot rebuild the model: _Unconfigurable layer 'custom' cannot be rebuilt from its get_config() ("),
])
def test_models_surgery_cannot_rebuild_are_refused_in_one_line_before_calibration(tmp_path, make_layer, message):
    inputs = keras.Input((6,))
    x = make_layer()(keras.layers.Dense(8, name="hidden")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    with pytest.raises(UnsupportedModelError) as raised:
        factorize_model(model, {})
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    with pytest.raises(UnsupportedModelError, match=re.escape(message)):
        run(model, _tiny_data(model), CompressionConfig(), tmp_path / "run")
    assert not (tmp_path / "run" / "state.json").exists()


def _doc_rows(section):
    text = DOC.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in body.splitlines() if line.startswith("| `")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


# docs/layers.md's first column -> an instance of that case (built where `layer_support` needs it).
_DOC_LAYERS = {
    "`Dense`": lambda: keras.layers.Dense(3),
    "`Conv2D`": lambda: keras.layers.Conv2D(3, 1),
    "`Conv1D`": lambda: keras.layers.Conv1D(3, 3),
    "`SeparableConv2D`": lambda: keras.layers.SeparableConv2D(3, 3),
    "`DepthwiseConv2D`": lambda: keras.layers.DepthwiseConv2D(3),
    "`DepthwiseConv1D`": lambda: keras.layers.DepthwiseConv1D(3),
    "`Conv2D(groups>1)`": lambda: keras.layers.Conv2D(4, 3, groups=2),
    "`Conv1D(groups>1)`": lambda: keras.layers.Conv1D(4, 3, groups=2),
    "`Conv2DTranspose`": lambda: keras.layers.Conv2DTranspose(3, 3),
    "`Conv3D`": lambda: keras.layers.Conv3D(3, 3),
    "`SeparableConv1D`": lambda: keras.layers.SeparableConv1D(3, 3),
    "`Embedding`": lambda: keras.layers.Embedding(10, 3),
    "`EinsumDense` (other than attention projections)": lambda: keras.layers.EinsumDense("ab,bc->ac", (3,)),
    "`MultiHeadAttention` (outside a keras-hub encoder)": lambda: keras.layers.MultiHeadAttention(2, 4),
    "`LSTM`": lambda: keras.layers.LSTM(3),
    "`GRU`": lambda: keras.layers.GRU(3),
    "`TimeDistributed`": lambda: keras.layers.TimeDistributed(keras.layers.Dense(3)),
    "`BatchNormalization`": lambda: keras.layers.BatchNormalization(),
}


def test_docs_layer_table_matches_layer_support():
    candidates, skipped = _doc_rows("Candidates"), _doc_rows("Skipped")
    checked = 0
    for name, make in _DOC_LAYERS.items():
        status, reason = layer_support(make())
        if name in candidates:
            assert candidates[name][0] == status == CANDIDATE, name
        else:
            assert skipped[name] == [SKIPPED, reason], name
        checked += 1
    assert checked == len(_DOC_LAYERS)
    relu = keras.layers.ReLU()
    relu.build((None, 3))
    assert skipped["`ReLU`, `Activation`, `Add`, pooling, ..."] == list(layer_support(relu))
