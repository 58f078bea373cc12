import numpy as np
import pytest

import keras

from rmtkd_tf.collection import collect_activations
from rmtkd_tf.errors import UnsupportedModelError
from rmtkd_tf.factorization import leading_eigenvectors
from rmtkd_tf.model_walk import iter_graph_layers
from rmtkd_tf.surgery import LayerFactors, factorize_model


def _full_rank_factors(model, x, paths=None):
    stats = collect_activations(model, x)
    return {
        p: LayerFactors(leading_eigenvectors(s.covariance, s.dim)[1], s.mean)
        for p, s in stats.items()
        if paths is None or p in paths
    }


def _residual_nested_shared_model():
    inner = keras.Sequential([keras.Input((16,)), keras.layers.Dense(16, activation="relu", name="inner_dense")], name="inner")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, name="dense_a")(x)
    x = inner(x)
    shared = keras.layers.Dense(16, activation="tanh", name="shared")
    x = shared(shared(x))
    outputs = keras.layers.Dense(5, name="logits")(x)
    return keras.Model(inputs, outputs)


def test_full_rank_surgery_is_exact_on_residual_nested_shared_model(tmp_path):
    rng = np.random.default_rng(0)
    model = _residual_nested_shared_model()
    x = rng.normal(size=(40, 8, 8, 3)).astype("float32")
    factors = _full_rank_factors(model, x, ["conv_a", "conv_b", "dense_a", "inner/inner_dense", "shared"])
    student = factorize_model(model, factors)
    kinds = {p: type(l).__name__ for p, l in iter_graph_layers(student)}
    assert kinds["conv_a"] == "LowRankConv2D" and kinds["inner/inner_dense"] == "LowRankDense"
    assert kinds["shared"] == "LowRankDense" and kinds["bn"] == "BatchNormalization" and kinds["logits"] == "Dense"
    np.testing.assert_allclose(student.predict(x, verbose=0), model.predict(x, verbose=0), atol=2e-5)
    # The teacher is untouched and shares no variables with the student.
    assert not {id(v) for v in model.weights} & {id(v) for v in student.weights}
    path = tmp_path / "student.keras"
    student.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=2e-5)


def test_sequential_truncated_rank_keeps_other_weights():
    rng = np.random.default_rng(1)
    model = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(32, activation="relu", name="a"), keras.layers.Dense(4, name="b")]
    )
    x = rng.normal(size=(100, 10)).astype("float32")
    stats = collect_activations(model, x)
    _, basis = leading_eigenvectors(stats["a"].covariance, 5)
    student = factorize_model(model, {"a": LayerFactors(basis, stats["a"].mean)})
    assert isinstance(student, keras.Sequential)
    assert student.get_layer("a").rank == 5
    for w_teacher, w_student in zip(model.get_layer("b").get_weights(), student.get_layer("b").get_weights()):
        np.testing.assert_array_equal(w_teacher, w_student)
    assert student.count_params() == 10 * 5 + 5 * 32 + 32 + 32 * 4 + 4


def test_refactorizing_a_low_rank_layer_through_its_bottleneck():
    rng = np.random.default_rng(2)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(20, activation="relu", name="a"), keras.layers.Dense(3, name="b")])
    x = rng.normal(size=(200, 12)).astype("float32")
    teacher_stats = collect_activations(model, x)["a"]
    first = factorize_model(model, {"a": LayerFactors(leading_eigenvectors(teacher_stats.covariance, 8)[1], teacher_stats.mean)})
    stats = collect_activations(first, x)
    assert stats["a"].dim == 8  # the bottleneck, not the 20-wide output
    exact = factorize_model(first, _full_rank_factors(first, x, ["a"]))
    np.testing.assert_allclose(exact.predict(x, verbose=0), first.predict(x, verbose=0), atol=1e-4)
    smaller = factorize_model(first, {"a": LayerFactors(leading_eigenvectors(stats["a"].covariance, 4)[1], stats["a"].mean)})
    assert smaller.get_layer("a").rank == 4


def test_unsupported_layers_and_models():
    grouped = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Conv2D(4, 3, groups=2, name="g")])
    with pytest.raises(UnsupportedModelError, match="grouped"):
        factorize_model(grouped, {"g": LayerFactors(np.eye(4), np.zeros(4))})
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    with pytest.raises(KeyError):
        factorize_model(model, {"missing": LayerFactors(np.eye(2), np.zeros(2))})
