"""Every layer rmtkd_tf registers passes `layer_harness.run_layer_test`; layer arguments are checked like Keras'."""

import keras
import numpy as np
import pytest
from layer_harness import run_layer_test

import rmtkd_tf  # noqa: F401  (registers the layers)
from rmtkd_tf.layers import LowRankConv2D, LowRankDense
from rmtkd_tf.transformers.bert import MaskedMeanPooling
from rmtkd_tf.transformers.low_rank_encoder import (
    LowRankAttentionOutput,
    LowRankAttentionProjection,
    LowRankTransformerEncoder,
)

RNG = np.random.default_rng(0)
SEQUENCE = RNG.normal(size=(2, 5, 8)).astype("float32")
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)

# (class, constructor arguments, input, call arguments, output shape, trainable weights)
CASES = [
    (LowRankDense, {"units": 5, "rank": 2, "activation": "relu"}, RNG.normal(size=(2, 3)).astype("float32"), {},
     (2, 5), 3),
    (LowRankDense, {"units": 4, "rank": 3, "use_bias": False}, SEQUENCE, {}, (2, 5, 4), 2),
    (LowRankConv2D, {"filters": 4, "rank": 2, "kernel_size": 3, "strides": 2, "padding": "same", "activation": "tanh"},
     RNG.normal(size=(2, 8, 8, 3)).astype("float32"), {}, (2, 4, 4, 4), 3),
    (LowRankConv2D, {"filters": 3, "rank": 1, "kernel_size": (3, 1), "dilation_rate": (2, 1)},
     RNG.normal(size=(2, 7, 6, 2)).astype("float32"), {}, (2, 3, 6, 3), 3),
    (LowRankAttentionOutput, {"units": 6, "rank": 2}, RNG.normal(size=(2, 5, 3, 4)).astype("float32"), {},
     (2, 5, 6), 3),
    (LowRankAttentionProjection, {"num_heads": 3, "head_dim": 4, "rank": 2}, RNG.normal(size=(2, 5, 6)).astype("float32"),
     {}, (2, 5, 3, 4), 3),
    (LowRankTransformerEncoder, {"intermediate_dim": 16, "num_heads": 2, "feedforward_rank": 4, "query_rank": 3,
                                 "key_rank": 3, "value_rank": 2, "attention_output_rank": 2,
                                 "feedforward_output_rank": 3},
     SEQUENCE, {"padding_mask": MASK}, (2, 5, 8), 22),
    (LowRankTransformerEncoder, {"intermediate_dim": 16, "num_heads": 2, "feedforward_rank": 4, "normalize_first": True},
     SEQUENCE, {"padding_mask": MASK}, (2, 5, 8), 17),
    (MaskedMeanPooling, {}, SEQUENCE, {"padding_mask": MASK.astype("int32")}, (2, 8), 0),
]


@pytest.mark.parametrize("layer_cls, init_kwargs, inputs, call_kwargs, output_shape, n_trainable", CASES,
                         ids=lambda value: value.__name__ if isinstance(value, type) else None)
def test_layer_harness(layer_cls, init_kwargs, inputs, call_kwargs, output_shape, n_trainable, tmp_path):
    run_layer_test(layer_cls, init_kwargs, inputs, tmp_path, call_kwargs=call_kwargs,
                   expected_output_shape=output_shape, expected_num_trainable_weights=n_trainable)


def test_every_registered_layer_has_a_harness_case():
    registered = {name.split(">", 1)[1] for name, obj in keras.saving.get_custom_objects().items()
                  if name.startswith("rmtkd_tf>") and isinstance(obj, type) and issubclass(obj, keras.layers.Layer)}
    assert registered == {case[0].__name__ for case in CASES}


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: LowRankDense(units=2.5, rank=1), "units must be a positive integer, got 2.5"),
        (lambda: LowRankDense(units=4, rank=2.0), "rank must be a positive integer, got 2.0"),
        (lambda: LowRankDense(units=0, rank=1), "units must be a positive integer, got 0"),
        (lambda: LowRankDense(units=4, rank=True), "rank must be a positive integer, got True"),
        (lambda: LowRankDense(units="4", rank=1), "units must be a positive integer, got '4'"),
        (lambda: LowRankConv2D(filters=4.5, rank=2, kernel_size=3), "filters must be a positive integer, got 4.5"),
        (lambda: LowRankConv2D(filters=4, rank=-1, kernel_size=3), "rank must be a positive integer, got -1"),
        (lambda: LowRankConv2D(filters=4, rank=2, kernel_size=2.5), "kernel_size must be a positive integer or a tuple"),
        (lambda: LowRankConv2D(filters=4, rank=2, kernel_size=(3, 3, 3)), "kernel_size must be"),
        (lambda: LowRankConv2D(filters=4, rank=2, kernel_size=3, strides=(1, 0)), "strides must be"),
        (lambda: LowRankConv2D(filters=4, rank=2, kernel_size=3, strides=2, dilation_rate=2),
         "strides > 1 cannot be combined with dilation_rate > 1"),
        (lambda: LowRankConv2D(filters=4, rank=2, kernel_size=3, padding="causal"), "padding"),
        (lambda: LowRankAttentionProjection(num_heads=2.5, head_dim=4, rank=2), "num_heads must be a positive integer"),
        (lambda: LowRankAttentionProjection(num_heads=2, head_dim=0, rank=2), "head_dim must be a positive integer"),
        (lambda: LowRankAttentionOutput(units=6, rank=1.5), "rank must be a positive integer, got 1.5"),
        (lambda: LowRankTransformerEncoder(16, 2, feedforward_rank=2.5),
         "feedforward_rank must be a positive integer or None, got 2.5"),
        (lambda: LowRankTransformerEncoder(16, 2, query_rank=0), "query_rank must be a positive integer or None, got 0"),
        (lambda: LowRankTransformerEncoder(16.5, 2), "intermediate_dim must be a positive integer, got 16.5"),
    ],
)
def test_non_integer_arguments_are_refused_like_keras_dense(factory, message):
    with pytest.raises(ValueError) as info:
        factory()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_numpy_integers_are_accepted_as_plain_ints():
    layer = LowRankDense(units=np.int64(4), rank=np.int32(2))
    assert type(layer.units) is int and type(layer.rank) is int
    assert LowRankConv2D(np.int64(4), np.int64(2), kernel_size=np.int64(3)).kernel_size == (3, 3)
    # The same reference: keras' Dense refuses a float width.
    with pytest.raises(ValueError):
        keras.layers.Dense(2.5)
