"""BatchNorm statistics re-estimated on the model they normalise (rmtkd_tf.batch_norm)."""

import keras
import numpy as np
import pytest

from rmtkd_tf.batch_norm import recalibrate_batch_norm, trainable_batch_norms
from rmtkd_tf.errors import RMTKDError


def _moving(layer):
    return (keras.ops.convert_to_numpy(layer.moving_mean).copy(),
            keras.ops.convert_to_numpy(layer.moving_variance).copy())


def _rows(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(loc=[1.0, -2.0, 5.0], scale=[1.0, 3.0, 0.5], size=(n, 3)).astype("float32")


def test_statistics_become_the_average_of_the_batch_statistics_and_momentum_is_restored():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(inputs))
    x = _rows()
    assert recalibrate_batch_norm(model, x, batch_size=32) == 1
    layer = model.get_layer("bn")
    batches = x.reshape(3, 32, 3)
    mean, variance = _moving(layer)
    np.testing.assert_allclose(mean, batches.mean(axis=1).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(variance, batches.var(axis=1).mean(axis=0), rtol=1e-4)
    assert layer.momentum == 0.99
    assert recalibrate_batch_norm(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), x) == 0
    with pytest.raises(RMTKDError, match="at least one input"):
        recalibrate_batch_norm(model, x[:0])


def test_only_the_first_max_samples_rows_count():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(inputs))
    x = np.concatenate([_rows(64), _rows(64, seed=1) + 100.0])  # rows past max_samples are far off
    recalibrate_batch_norm(model, x, batch_size=16, max_samples=64)
    np.testing.assert_allclose(_moving(model.get_layer("bn"))[0], x[:64].mean(axis=0), rtol=1e-5)


def test_frozen_layers_stay_nested_layers_follow_and_other_weights_never_change():
    keras.utils.set_random_seed(0)
    inner_inputs = keras.Input((3,))
    inner = keras.Model(inner_inputs, keras.layers.BatchNormalization(name="inner_bn")(
        keras.layers.Dense(3, name="dense")(inner_inputs)), name="inner")
    inputs = keras.Input((3,))
    frozen = keras.layers.BatchNormalization(name="frozen_bn")
    model = keras.Model(inputs, frozen(inner(inputs)))
    frozen.trainable = False
    assert [layer.name for layer in trainable_batch_norms(model)] == ["inner_bn"]
    kernel = keras.ops.convert_to_numpy(inner.get_layer("dense").kernel).copy()
    frozen_before = _moving(frozen)
    x = _rows(64)
    assert recalibrate_batch_norm(model, x, batch_size=64) == 1
    dense_out = x @ kernel + keras.ops.convert_to_numpy(inner.get_layer("dense").bias)
    np.testing.assert_allclose(_moving(inner.get_layer("inner_bn"))[0], dense_out.mean(axis=0), rtol=1e-4, atol=1e-5)
    for before, after in zip(frozen_before, _moving(frozen)):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(kernel, keras.ops.convert_to_numpy(inner.get_layer("dense").kernel))


def test_dict_inputs_of_a_multi_input_model():
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    model = keras.Model({"a": a, "b": b}, keras.layers.BatchNormalization(name="bn")(keras.layers.Add()([a, b])))
    x = {"a": _rows(48), "b": _rows(48, seed=1)}
    assert recalibrate_batch_norm(model, x, batch_size=48) == 1
    np.testing.assert_allclose(_moving(model.get_layer("bn"))[0], (x["a"] + x["b"]).mean(axis=0), rtol=1e-5)


def test_momentum_is_restored_when_a_pass_fails():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn", momentum=0.9)(inputs))
    with pytest.raises(Exception):
        recalibrate_batch_norm(model, np.zeros((8, 5), dtype="float32"))  # wrong width
    assert model.get_layer("bn").momentum == 0.9
