"""The effective sample size streamed by `CovarianceAccumulator` and carried to the rank rules."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rmtkd_tf.collection import CovarianceAccumulator, LayerStatistics, collect_activations
from rmtkd_tf.selection import decide_ranks
from rmtkd_tf.spectral import MarchenkoPasturRule, effective_sample_size
from tests.test_spectral_effective_samples import ar1_groups


def test_streamed_estimate_equals_the_numpy_one_across_batches_with_padding_and_a_large_mean():
    rng = np.random.default_rng(0)
    # A mean 1e5 times the spread: raw power sums would lose every digit; the shift keeps them.
    samples = ar1_groups(120, 16, 20, 0.9, rng) * 0.01 + 1e3
    weights = (rng.random((120, 16)) > 0.3).astype(np.float64)
    weights[5] = 0.0  # a fully padded example is no example
    accumulator = CovarianceAccumulator(20)
    update = tf.function(accumulator.update)
    for chunk, chunk_weights in zip(np.array_split(samples, [1, 17, 60]), np.array_split(weights, [1, 17, 60])):
        update(tf.constant(chunk), tf.constant(chunk_weights))
    streamed, reference = accumulator.effective_sample_size(), effective_sample_size(samples, weights)
    assert streamed.n_examples == reference.n_examples == 119
    assert streamed.n_samples == reference.n_samples == int(weights.sum())
    assert streamed.design_effect == pytest.approx(reference.design_effect, rel=1e-6)
    assert streamed.n_effective == reference.n_effective
    assert 1.5 < streamed.design_effect < 10.0


def test_reset_clears_the_example_moments():
    accumulator = CovarianceAccumulator(3)
    accumulator.update(tf.constant(np.random.default_rng(1).normal(size=(10, 4, 3))))
    accumulator.reset()
    accumulator.update(tf.constant(np.random.default_rng(2).normal(size=(30, 3))))
    assert accumulator.effective_sample_size().n_examples == 30
    assert accumulator.effective_sample_size().n_effective == 30


def test_layer_statistics_default_to_the_nominal_sample_count():
    stats = LayerStatistics("d", "dense", 50, np.zeros(2), np.eye(2))
    assert (stats.n_effective, stats.n_examples, stats.design_effect) == (50, 50, 1.0)


def test_collected_conv_statistics_count_images_and_correlated_positions():
    # Seeded: the estimate's error depends on the random conv weights, not on the tests run before.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 8))
    # 1x1 convolution: the correlation between positions is that of the input (separable).
    hidden = keras.layers.Conv2D(6, 1, name="conv")(inputs)
    outputs = keras.layers.Dense(3, name="dense")(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, outputs)
    # Every 2x2 block of an image repeats one white-noise pixel: A has 4x4 blocks of ones,
    # tr(A²) = 4 n, so n_eff = n / 4 exactly.
    pixels = np.random.default_rng(3).normal(size=(128, 4, 4, 8))
    x = np.repeat(np.repeat(pixels, 2, axis=1), 2, axis=2).astype("float32")
    stats = collect_activations(model, x, batch_size=32)
    conv, dense = stats["conv"], stats["dense"]
    assert conv.n_samples == 128 * 64 and conv.n_examples == 128
    assert conv.n_effective == pytest.approx(128 * 64 / 4, rel=0.1)
    assert dense.n_samples == dense.n_examples == dense.n_effective == 128


def _dense_layer(units=16, fan_in=8):
    layer = keras.layers.Dense(units, name="d")
    layer.build((None, fan_in))
    return layer


def test_decide_ranks_gives_the_rule_n_effective_and_the_prior_noise():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4000, 16))
    covariance = np.cov(x.T, bias=True)
    stats = LayerStatistics("d", "dense", 4000, np.zeros(16), covariance, n_effective=250, n_examples=250)
    layer = _dense_layer()
    decisions, _ = decide_ranks({"d": layer}, {"d": stats}, MarchenkoPasturRule())
    assert decisions[0].rule["n_samples"] == 250 and decisions[0].rule["noise_source"] == "fitted"
    assert decisions[0].n_samples == 4000

    prior = dict(decisions[0].rule["noise"], sigma2=0.5)  # a lower noise level: more directions kept
    again, _ = decide_ranks({"d": layer}, {"d": stats}, MarchenkoPasturRule(), noise_priors={"d": prior})
    assert again[0].rule["noise_source"] == "prior" and again[0].rule["noise"]["sigma2"] == 0.5
    assert again[0].rule_rank == 16
