"""`run_layer_test`: the checks every rmtkd_tf layer must pass, after keras' `testing.TestCase.run_layer_test`.

For one layer class and its constructor arguments: build and call (output shape, `compute_output_shape`),
weight counts, `get_config` / `from_config` (same config, same outputs with the same weights), a `.keras`
save / load inside a Functional model (same class, config and outputs), one training step (gradients reach
every trainable weight), and the dtype policies: `dtype="float16"` (float16 outputs and variables, Keras'
meaning of a plain dtype), `dtype="mixed_float16"` and the global `keras.config.set_dtype_policy("mixed_float16")`
(float16 outputs, float32 variables, the float32 layer's function to half precision; a mixed model saved as
`.keras` reloads mixed).
"""

import keras
import numpy as np


def _numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def _dtype(tensor):
    return keras.backend.standardize_dtype(tensor.dtype)


def _call(layer, inputs, call_kwargs):
    return layer(inputs, **call_kwargs)


def _functional(layer, inputs, call_kwargs):
    """A Functional model `[inputs, *call_kwargs] -> layer(inputs, **call_kwargs)` and its feed list."""
    main = keras.Input(inputs.shape[1:], dtype=str(inputs.dtype), name="inputs")
    extra = {name: keras.Input(value.shape[1:], dtype=str(value.dtype), name=name) for name, value in call_kwargs.items()}
    model = keras.Model([main, *extra.values()], layer(main, **extra))
    return model, [inputs, *call_kwargs.values()]


def _check_policy(layer_cls, init_kwargs, inputs, call_kwargs, reference, variable_dtype, dtype=None):
    """A fresh layer under a policy: float16 outputs, `variable_dtype` variables, the reference's function."""
    kwargs = dict(init_kwargs) if dtype is None else {**init_kwargs, "dtype": dtype}
    layer = layer_cls(**kwargs)
    outputs = _call(layer, inputs, call_kwargs)
    where = f"{layer_cls.__name__} with dtype {dtype or keras.config.dtype_policy().name}"
    assert _dtype(outputs) == "float16", f"{where}: output dtype {_dtype(outputs)}"
    assert layer.compute_dtype == "float16" and layer.variable_dtype == variable_dtype, where
    wrong = {w.path: _dtype(w) for w in layer.weights if "float" in _dtype(w) and _dtype(w) != variable_dtype}
    assert not wrong, f"{where}: variables not in {variable_dtype}: {wrong}"
    # With the float32 layer's weights it computes the same function, to half precision.
    layer.set_weights(reference.get_weights())
    expected = _numpy(_call(reference, inputs, call_kwargs))
    got = _numpy(_call(layer, inputs, call_kwargs)).astype("float32")
    np.testing.assert_allclose(got, expected, rtol=1e-2, atol=1e-2 * max(1.0, float(np.abs(expected).max())),
                               err_msg=where)
    return layer, outputs


def run_layer_test(layer_cls, init_kwargs, inputs, tmp_path, call_kwargs=None, expected_output_shape=None,
                   expected_num_trainable_weights=None, expected_num_non_trainable_weights=0):
    """Run the checks of the module docstring; `inputs` is one array, `call_kwargs` extra call arrays."""
    call_kwargs = dict(call_kwargs or {})
    keras.utils.set_random_seed(0)

    # Build and call.
    layer = layer_cls(**init_kwargs)
    outputs = _call(layer, inputs, call_kwargs)
    assert layer.built
    assert tuple(outputs.shape) == tuple(expected_output_shape), (tuple(outputs.shape), expected_output_shape)
    assert _dtype(outputs) == "float32"
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights, [w.path for w in layer.trainable_weights]
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    try:
        computed = layer.compute_output_shape(inputs.shape)
    except NotImplementedError:
        computed = None
    if computed is not None:
        assert tuple(computed) == tuple(expected_output_shape), (computed, expected_output_shape)
    expected = _numpy(outputs)

    # get_config / from_config.
    config = layer.get_config()
    rebuilt = layer_cls.from_config(config)
    assert rebuilt.get_config() == config
    _call(rebuilt, inputs, call_kwargs)
    rebuilt.set_weights(layer.get_weights())
    np.testing.assert_allclose(_numpy(_call(rebuilt, inputs, call_kwargs)), expected, rtol=1e-5, atol=1e-5)

    # .keras save / load in a Functional model (a symbolic call: the batch axis is None).
    model, feed = _functional(layer, inputs, call_kwargs)
    assert tuple(model.output.shape) == (None, *expected_output_shape[1:]), model.output.shape
    path = tmp_path / f"{layer_cls.__name__}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    reloaded_layer = next(lay for lay in reloaded.layers if lay.name == layer.name)
    assert type(reloaded_layer) is layer_cls
    assert reloaded_layer.get_config() == config
    np.testing.assert_allclose(_numpy(reloaded(feed)), expected, rtol=1e-5, atol=1e-5)

    # One training step: every trainable weight moves.
    target = np.random.default_rng(0).normal(size=expected.shape).astype("float32")
    model.compile(keras.optimizers.SGD(0.1), "mse")
    before = [w.numpy().copy() for w in layer.trainable_weights]
    model.train_on_batch(feed, target)
    frozen = [w.path for w, old in zip(layer.trainable_weights, before) if np.array_equal(w.numpy(), old)]
    assert not frozen, f"{layer_cls.__name__}: no gradient reached {frozen}"

    # Precision policies.
    _check_policy(layer_cls, init_kwargs, inputs, call_kwargs, layer, "float16", dtype="float16")
    _check_policy(layer_cls, init_kwargs, inputs, call_kwargs, layer, "float32", dtype="mixed_float16")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        _check_policy(layer_cls, init_kwargs, inputs, call_kwargs, layer, "float32")
        mixed_layer = layer_cls(**init_kwargs)
        model, feed = _functional(mixed_layer, inputs, call_kwargs)
        assert _dtype(model(feed)) == "float16"
        path = tmp_path / f"{layer_cls.__name__}_mixed.keras"
        model.save(path)
    finally:
        keras.config.set_dtype_policy(previous)
    # A mixed-precision model reloads mixed, under the default policy.
    reloaded = keras.models.load_model(path)
    reloaded_layer = next(lay for lay in reloaded.layers if lay.name == mixed_layer.name)
    assert reloaded_layer.dtype_policy.name == "mixed_float16"
    assert _dtype(reloaded(feed)) == "float16"
    assert all(_dtype(w) == "float32" for w in reloaded_layer.weights if "float" in _dtype(w))
    np.testing.assert_allclose(_numpy(reloaded(feed)).astype("float32"), _numpy(model(feed)).astype("float32"))
    return layer
