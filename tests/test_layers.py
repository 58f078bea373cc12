import numpy as np
import pytest

import keras

from rmtkd_tf.factorization import break_even_rank, low_rank_parameter_count, project_kernel
from rmtkd_tf.layers import LowRankConv2D, LowRankDense


def _orthonormal(d, seed=0):
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0]


def test_low_rank_dense_reproduces_dense_at_full_rank():
    rng = np.random.default_rng(0)
    dense = keras.layers.Dense(7, activation="relu")
    x = rng.normal(size=(5, 11)).astype("float32")
    expected = keras.ops.convert_to_numpy(dense(x))
    kernel, bias = dense.get_weights()
    mean = rng.normal(size=7)
    down, up, new_bias = project_kernel(kernel, bias, mean, _orthonormal(7))
    layer = LowRankDense(7, 7, activation="relu")
    layer.build((None, 11))
    layer.set_weights([down, up, new_bias])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5)


def test_low_rank_conv2d_reproduces_conv_at_full_rank():
    rng = np.random.default_rng(1)
    conv = keras.layers.Conv2D(6, 3, strides=2, padding="same", dilation_rate=1, activation="tanh")
    x = rng.normal(size=(2, 9, 9, 4)).astype("float32")
    expected = keras.ops.convert_to_numpy(conv(x))
    kernel, bias = conv.get_weights()
    down, up, new_bias = project_kernel(kernel, bias, rng.normal(size=6), _orthonormal(6, 1))
    layer = LowRankConv2D(6, 6, kernel_size=3, strides=2, padding="same", activation="tanh")
    layer.build(x.shape)
    layer.set_weights([down, up.reshape(1, 1, 6, 6), new_bias])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5)


def test_truncated_projection_is_the_pca_reconstruction():
    # With U the top-k eigenvectors, the factorized layer outputs μ + (h − μ) U Uᵀ.
    rng = np.random.default_rng(2)
    kernel, bias = rng.normal(size=(5, 4)), rng.normal(size=4)
    x = rng.normal(size=(50, 5))
    h = x @ kernel + bias
    mean = h.mean(0)
    basis = _orthonormal(4, 3)[:, :2]
    down, up, new_bias = project_kernel(kernel, bias, mean, basis)
    np.testing.assert_allclose(x @ down @ up + new_bias, mean + (h - mean) @ basis @ basis.T, atol=1e-10)


@pytest.mark.parametrize(
    "layer,inputs",
    [
        (LowRankDense(5, 2, activation="gelu", name="lrd"), np.ones((1, 3), "float32")),
        (LowRankConv2D(4, 2, kernel_size=(3, 1), strides=(1, 2), padding="valid", name="lrc"), np.ones((1, 6, 6, 2), "float32")),
    ],
)
def test_serialization_round_trip(tmp_path, layer, inputs):
    model = keras.Sequential([keras.Input(inputs.shape[1:]), layer])
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert type(reloaded.layers[-1]) is type(layer)
    assert reloaded.layers[-1].get_config() == layer.get_config()
    np.testing.assert_allclose(reloaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0))


def test_parameter_counts_and_break_even():
    layer = LowRankDense(8, 3)
    layer.build((None, 10))
    assert layer.count_params() == low_rank_parameter_count(10, 8, 3) == 10 * 3 + 3 * 8 + 8
    k = break_even_rank(100, 100)
    assert low_rank_parameter_count(100, 100, k) < 100 * 100 + 100 <= low_rank_parameter_count(100, 100, k + 1)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="rank"):
        LowRankDense(4, 0)
    with pytest.raises(ValueError, match="padding"):
        LowRankConv2D(4, 2, 3, padding="causal")
    with pytest.raises(ValueError, match="basis"):
        project_kernel(np.zeros((3, 4)), None, None, np.zeros((3, 2)))
