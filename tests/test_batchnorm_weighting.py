"""Folding a following BatchNormalization into the rank analysis (rmtkd_tf.output_weighting)."""

import numpy as np
import pytest

import keras

from rmtkd_tf.collection import candidate_layers, collect_activations
from rmtkd_tf.factorization import leading_eigenvectors, project_kernel, weighted_covariance
from rmtkd_tf.model_walk import following_batchnorm, iter_graph_layers
from rmtkd_tf.output_weighting import batchnorm_channel_scale, output_weighting
from rmtkd_tf.selection import decide_ranks
from rmtkd_tf.spectral import FixedRankRule
from rmtkd_tf.surgery import LayerFactors, factorize_model

CHANNELS = 8


def _conv_bn_model(head=False, seed=0):
    """Conv2D(8) -> BatchNormalization whose per-channel scales span three decades."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(CHANNELS, 3, padding="same", name="conv")(inputs)
    outputs = keras.layers.BatchNormalization(name="bn")(x)
    if head:
        x = keras.layers.ReLU()(outputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    gamma = rng.permutation(np.logspace(-2, 1, CHANNELS)) * rng.choice([-1.0, 1.0], CHANNELS)
    model.get_layer("bn").set_weights(
        [gamma, rng.normal(size=CHANNELS), rng.normal(size=CHANNELS), rng.uniform(0.5, 2.0, CHANNELS)]
    )
    x = rng.normal(size=(24, 6, 6, 4)).astype("float32")
    return model, x


def _graph(path_layers):
    return dict(path_layers)


def _functional(*middle, inputs_shape=(6, 6, 2)):
    inputs = keras.Input(inputs_shape)
    x = inputs
    for layer in middle:
        x = layer(x)
    return keras.Model(inputs, x)


def _sequential_built_by_add():
    model = keras.Sequential()
    model.add(keras.Input((6, 6, 2)))
    model.add(keras.layers.Conv2D(3, 3, name="conv"))
    model.add(keras.layers.BatchNormalization(name="bn"))
    model.add(keras.layers.ReLU())
    return model


def _nested():
    inner = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, name="conv"), keras.layers.BatchNormalization(name="bn")],
        name="inner",
    )
    inputs = keras.Input((5,))
    return keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))


def _also_feeds_another_layer():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    y = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, keras.layers.Add(name="add")([x, y]))


@pytest.mark.parametrize(
    "build, path, found, note",
    [
        (lambda: _functional(keras.layers.Conv2D(3, 3, name="conv"), keras.layers.BatchNormalization(name="bn")), "conv", True, None),
        (_sequential_built_by_add, "conv", True, None),
        (_nested, "inner/conv", True, None),
        (
            lambda: _functional(
                keras.layers.Conv2D(3, 3, data_format="channels_first", name="conv"),
                keras.layers.BatchNormalization(axis=1, name="bn"),
                inputs_shape=(2, 6, 6),
            ),
            "conv",
            True,
            None,
        ),
        (
            lambda: _functional(keras.layers.Conv2D(3, 3, activation="relu", name="conv"), keras.layers.BatchNormalization(name="bn")),
            "conv",
            False,
            "its relu activation comes before BatchNormalization 'bn'",
        ),
        (
            lambda: _functional(keras.layers.Conv2D(3, 3, name="conv"), keras.layers.ReLU(name="act"), keras.layers.BatchNormalization(name="bn")),
            "conv",
            False,
            "the ReLU layer 'act' comes before BatchNormalization 'bn'",
        ),
        (_also_feeds_another_layer, "conv", False, "its output also feeds 'add', not only BatchNormalization 'bn'"),
        (
            lambda: _functional(keras.layers.Dense(3, name="conv"), keras.layers.BatchNormalization(axis=1, name="bn"), inputs_shape=(5, 2)),
            "conv",
            False,
            "BatchNormalization 'bn' normalises axis 1, not the layer's channel axis",
        ),
        (lambda: _functional(keras.layers.Conv2D(3, 3, name="conv"), keras.layers.Flatten()), "conv", False, None),
    ],
    ids=["functional", "sequential-add", "nested", "channels-first", "relu-activation", "relu-layer", "two-consumers", "other-axis", "no-bn"],
)
def test_following_batchnorm(build, path, found, note):
    layer = _graph(iter_graph_layers(build()))[path]
    bn, why = following_batchnorm(layer)
    assert (bn is not None) == found
    if found:
        assert bn.name == "bn" and why is None
    elif note is None:
        assert why is None
    else:
        assert why.startswith(note)


def test_batchnorm_channel_scale_without_gamma_and_with_dead_channels():
    bn = keras.layers.BatchNormalization(scale=False, epsilon=0.25)
    bn.build((None, 2))
    bn.set_weights([np.zeros(2), np.zeros(2), np.array([0.0, 3.75])])  # beta, moving mean, moving variance
    np.testing.assert_allclose(batchnorm_channel_scale(bn), [2.0, 0.5])
    dead = keras.layers.BatchNormalization()
    dead.build((None, 2))
    dead.set_weights([np.zeros(2), np.zeros(2), np.zeros(2), np.ones(2)])
    assert batchnorm_channel_scale(dead) is None


def test_oblique_projection_is_the_weighted_pca_reconstruction():
    rng = np.random.default_rng(3)
    kernel, bias = rng.normal(size=(5, 4)), rng.normal(size=4)
    x = rng.normal(size=(60, 5))
    h = x @ kernel + bias
    mean = h.mean(0)
    scale = np.array([0.1, 1.0, 3.0, 10.0])
    _, basis = leading_eigenvectors(weighted_covariance(np.cov(h.T, bias=True), scale), 2)
    down, up, new_bias = project_kernel(kernel, bias, mean, basis, output_scale=scale)
    reconstruction = mean + (h - mean) @ np.diag(scale) @ basis @ basis.T @ np.diag(1 / scale)
    np.testing.assert_allclose(x @ down @ up + new_bias, reconstruction, atol=1e-10)
    with pytest.raises(ValueError, match="shape"):
        project_kernel(kernel, bias, mean, basis, output_scale=scale[:3])
    with pytest.raises(ValueError, match="positive"):
        project_kernel(kernel, bias, mean, basis, output_scale=-scale)


def test_full_rank_with_following_batchnorm_is_exact(tmp_path):
    model, x = _conv_bn_model(head=True)
    stats = collect_activations(model, x, layers=["conv"])["conv"]
    weighting = output_weighting(model.get_layer("conv"))
    assert weighting.metric == "post-batchnorm"
    _, basis = leading_eigenvectors(weighted_covariance(stats.covariance, weighting.scale), CHANNELS)
    student = factorize_model(model, {"conv": LayerFactors(basis, stats.mean, weighting.scale)})
    assert type(student.get_layer("conv")).__name__ == "LowRankConv2D"
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(student.predict(x, verbose=0), expected, atol=1e-5)
    path = tmp_path / "student.keras"
    student.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0), expected, atol=1e-5)


def _post_bn_error(model, x, fold_batchnorm, rank=2):
    layers = dict(candidate_layers(model, ["conv"]))
    statistics = collect_activations(model, x, layers=["conv"])
    decisions, factors = decide_ranks(layers, statistics, FixedRankRule(rank), fold_batchnorm=fold_batchnorm)
    assert decisions[0].rank == rank
    student = factorize_model(model, factors)
    error = student.predict(x, verbose=0) - model.predict(x, verbose=0)
    return float(np.mean(np.sum(error.astype(np.float64) ** 2, axis=-1))), decisions[0]


def test_folding_lowers_the_post_batchnorm_error_at_the_same_rank():
    model, x = _conv_bn_model()  # the model's output is the BN output: the error after BN
    folded, folded_decision = _post_bn_error(model, x, fold_batchnorm=True)
    plain, plain_decision = _post_bn_error(model, x, fold_batchnorm=False)
    assert folded_decision.metric == "post-batchnorm" and folded_decision.metric_note == "folds BatchNormalization 'bn'"
    assert plain_decision.metric == "pre-activation" and plain_decision.to_dict()["metric"] == "pre-activation"
    # The folded eigenvalues are post-BN variances: the dropped ones add up to the post-BN error.
    np.testing.assert_allclose(folded, folded_decision.eigenvalues[2:].sum(), rtol=1e-3)
    assert folded < 0.5 * plain


def test_refactorized_layer_before_batchnorm_is_analysed_in_its_post_batchnorm_bottleneck():
    model, x = _conv_bn_model()
    statistics = collect_activations(model, x, layers=["conv"])
    first, factors = decide_ranks(dict(candidate_layers(model, ["conv"])), statistics, FixedRankRule(4))
    student = factorize_model(model, factors)
    statistics = collect_activations(student, x, layers=["conv"])
    decisions, factors = decide_ranks(dict(candidate_layers(student, ["conv"])), statistics, FixedRankRule(2))
    assert decisions[0].metric == "bottleneck" and "'bn' is not folded again" in decisions[0].metric_note
    # After a folded cut the bottleneck holds the kept post-BN directions: its spectrum is theirs.
    np.testing.assert_allclose(decisions[0].eigenvalues, first[0].eigenvalues[:4], rtol=1e-4)
    assert decisions[0].dim == 4 and factors["conv"].output_scale is None
    smaller = factorize_model(student, factors)
    assert smaller.get_layer("conv").rank == 2
    # Exact at the bottleneck's full rank, as before the fold existed.
    full = {"conv": LayerFactors(leading_eigenvectors(statistics["conv"].covariance, 4)[1], statistics["conv"].mean)}
    np.testing.assert_allclose(
        factorize_model(student, full).predict(x, verbose=0), student.predict(x, verbose=0), atol=1e-5
    )


def test_nonlinear_layer_before_batchnorm_is_analysed_unweighted_with_the_reason():
    rng = np.random.default_rng(4)
    model = _functional(
        keras.layers.Conv2D(CHANNELS, 3, activation="relu", name="conv"), keras.layers.BatchNormalization(name="bn")
    )
    x = rng.normal(size=(8, 6, 6, 2)).astype("float32")
    statistics = collect_activations(model, x, layers=["conv"])
    decisions, factors = decide_ranks(dict(candidate_layers(model, ["conv"])), statistics, FixedRankRule(2))
    assert decisions[0].metric == "pre-activation" and "relu activation" in decisions[0].metric_note
    assert factors["conv"].output_scale is None
    np.testing.assert_allclose(decisions[0].eigenvalues, leading_eigenvectors(statistics["conv"].covariance, 0)[0])
