import numpy as np
import pytest
import tensorflow as tf

import keras

from rmtkd_tf.collection import ActivationCollector, CovarianceAccumulator, collect_activations
from rmtkd_tf.errors import NonFiniteActivationError, RMTKDError, UnsupportedModelError


def _pre_activations_dense(layer, x):
    kernel, bias = layer.get_weights()
    return x @ kernel + bias


def test_accumulator_matches_numpy_cov_across_uneven_batches():
    rng = np.random.default_rng(0)
    # A large mean relative to the spread: the naive E[xxᵀ] − μμᵀ loses digits here.
    x = rng.normal(size=(1003, 6)) * 0.01 + 1e4
    acc = CovarianceAccumulator(6)
    for chunk in np.array_split(x, [1, 17, 500, 501]):
        acc.update(tf.constant(chunk, tf.float64))
    n, mean, cov, bad = acc.numpy()
    assert n == 1003 and bad == 0
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x.T, bias=True), rtol=1e-7, atol=1e-12)


def test_accumulator_weights_exclude_rows_and_nonfinite_rows_are_counted():
    acc = CovarianceAccumulator(2)
    x = np.array([[1.0, 2.0], [np.nan, 0.0], [3.0, 4.0], [100.0, 100.0]])
    acc.update(tf.constant(x), weights=tf.constant([1.0, 1.0, 1.0, 0.0]))
    n, mean, cov, bad = acc.numpy()
    assert (n, bad) == (2, 1)
    np.testing.assert_allclose(mean, [2.0, 3.0])
    np.testing.assert_allclose(cov, np.cov(np.array([[1.0, 2.0], [3.0, 4.0]]).T, bias=True))


def _small_model():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="dense")(x)
    return keras.Model(inputs, outputs)


def test_collect_activations_records_pre_activations_of_every_layer():
    rng = np.random.default_rng(1)
    model = _small_model()
    x = rng.normal(size=(37, 6, 6, 2)).astype("float32")
    stats = collect_activations(model, x, batch_size=8)
    assert set(stats) == {"conv", "dense"}
    # Conv2D: every output position is a sample.
    assert stats["conv"].n_samples == 37 * 4 * 4
    flat = keras.Model(model.inputs, model.layers[-2].output).predict(x, verbose=0)
    h = _pre_activations_dense(model.get_layer("dense"), flat.astype(np.float64))
    np.testing.assert_allclose(stats["dense"].covariance, np.cov(h.T, bias=True), rtol=1e-4, atol=1e-6)
    # Hooks are gone afterwards: the model behaves as before (softmax restored).
    out = model.predict(x[:2], verbose=0)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


def test_collector_callback_in_fit_evaluate_and_predict():
    rng = np.random.default_rng(2)
    model = _small_model()
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = rng.normal(size=(20, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 3, 20)

    in_fit = ActivationCollector(modes=("train",))
    model.fit(x, y, batch_size=5, epochs=2, validation_data=(x[:4], y[:4]), callbacks=[in_fit], verbose=0)
    assert in_fit.statistics_["dense"].n_samples == 40  # 2 epochs x 20, validation not recorded

    in_eval = ActivationCollector(layers=["dense"])
    model.evaluate(x, y, batch_size=7, callbacks=[in_eval], verbose=0)
    assert set(in_eval.statistics_) == {"dense"} and in_eval.statistics_["dense"].n_samples == 20

    in_predict = ActivationCollector()
    model.predict(x[:9], batch_size=4, callbacks=[in_predict], verbose=0)
    assert in_predict.statistics_["conv"].n_samples == 9 * 16
    # Compiled functions were reset: a later call runs without hooks and still works.
    assert model.predict(x[:3], verbose=0).shape == (3, 3)


def test_nan_activations_name_the_layer():
    model = _small_model()
    x = np.full((4, 6, 6, 2), np.nan, "float32")
    with pytest.raises(NonFiniteActivationError, match="layer 'conv'"):
        collect_activations(model, x)


def test_bad_calibration_inputs():
    model = _small_model()
    with pytest.raises(RMTKDError, match="empty"):
        collect_activations(model, np.zeros((0, 6, 6, 2), "float32"))
    with pytest.raises(RMTKDError, match="no factorizable layer"):
        collect_activations(model, np.zeros((2, 6, 6, 2), "float32"), layers=["nope"])

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3), "float32"))
    with pytest.raises(UnsupportedModelError, match="Sequential and Functional"):
        collect_activations(sub, np.zeros((2, 3), "float32"))


def test_dataset_with_labels_is_accepted():
    model = _small_model()
    ds = tf.data.Dataset.from_tensor_slices((np.ones((10, 6, 6, 2), "float32"), np.zeros(10))).batch(4)
    stats = collect_activations(model, ds)
    assert stats["dense"].n_samples == 10
