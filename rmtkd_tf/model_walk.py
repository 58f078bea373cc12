"""Naming and walking the layers of (possibly nested) Keras models.

A layer is identified by its *path*: the names of the models that contain it
and its own name, joined by "/" (e.g. `"encoder/dense_1"`). Paths are stable
across `keras.models.clone_model`, which keeps names, so statistics collected
on a teacher can be matched to the layers of its clone.

Some graph layers are *composite*: RMT-KD reduces layers inside them. A
keras-hub `TransformerEncoder` at `"bert_backbone/transformer_layer_0"` has
the parts `".../transformer_layer_0/attention_query"` (and `attention_key`,
`attention_value`: the attention input projections), `attention_output`,
`ffn_intermediate` (FFN expansion) and `ffn_output` (FFN contraction); see
`rmtkd_tf.transformers`. `iter_factorizable_layers` yields those parts in
place of their encoder.
"""

from __future__ import annotations

import sys

import keras
import numpy as np

FACTORIZABLE_TYPES = ("Dense", "Conv2D", "LowRankDense", "LowRankConv2D")


def is_graph_model(model):
    """True for Sequential and Functional models (including subclasses of Functional)."""
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def iter_graph_layers(model, prefix=""):
    """Yield `(path, layer)` for every layer of a Sequential/Functional model.

    Nested Sequential/Functional models are descended into (the nested model
    itself is not yielded). Other layers, including ones that own sublayers,
    are yielded as leaves.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = f"{prefix}{layer.name}"
        if is_graph_model(layer):
            yield from iter_graph_layers(layer, prefix=path + "/")
        else:
            yield path, layer


def composite_parts(layer):
    """`{part: sublayer}` of a composite layer RMT-KD reduces inside (a keras-hub TransformerEncoder), else None."""
    if "keras_hub" not in sys.modules:  # no keras-hub layer exists before keras-hub is imported
        return None
    from rmtkd_tf.transformers.low_rank_encoder import encoder_parts

    return encoder_parts(layer)


def iter_factorizable_layers(model):
    """`iter_graph_layers`, with each composite layer replaced by its parts at `<layer path>/<part>`."""
    for path, layer in iter_graph_layers(model):
        parts = composite_parts(layer)
        if parts is None:
            yield path, layer
        else:
            for part, sublayer in parts.items():
                yield f"{path}/{part}", sublayer


def output_layers(model):
    """The layers that produce the model's outputs (the classifier head, usually)."""
    layers = []
    for tensor in model.outputs:
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            layers.append(history[0])
    return layers


def layer_kind(layer):
    """`"dense"`, `"conv2d"` or None for layers RMT-KD does not factorize.

    The `EinsumDense` layers of multi-head attention count as `"dense"`: the
    output projection `"abcd,cde->abe"` is a Dense over the flattened
    `(heads, head_dim)` axes, and the query/key/value projections
    `"abc,cde->abde"` are Denses whose output is reshaped to `(heads, head_dim)`.
    """
    from rmtkd_tf.layers import LowRankConv2D, LowRankDense

    if (
        isinstance(layer, (keras.layers.Dense, LowRankDense))
        or is_attention_output_projection(layer)
        or is_attention_input_projection(layer)
    ):
        return "dense"
    if isinstance(layer, (keras.layers.Conv2D, LowRankConv2D)):
        return "conv2d"
    return None


ATTENTION_OUTPUT_EQUATION = "abcd,cde->abe"


def _is_einsum_dense(layer, equation, bias_axes):
    return (
        isinstance(layer, keras.layers.EinsumDense)
        and layer.equation == equation
        and getattr(layer, "bias_axes", None) in (None, bias_axes)
    )


def is_attention_output_projection(layer):
    """True for an `EinsumDense` contracting `(heads, head_dim)` into one output axis, with its bias on that axis."""
    return _is_einsum_dense(layer, ATTENTION_OUTPUT_EQUATION, "e")


ATTENTION_INPUT_EQUATION = "abc,cde->abde"


def is_attention_input_projection(layer):
    """True for an `EinsumDense` `(..., hidden) -> (..., heads, head_dim)` (query/key/value), bias on both output axes."""
    return _is_einsum_dense(layer, ATTENTION_INPUT_EQUATION, "de")


def dense_matrix_shape(layer):
    """`(fan_in, units)`: the Dense/Conv2D (or attention `EinsumDense`) kernel seen as a matrix.

    The output width `units` is the last kernel axis, except for the attention
    input projections, whose `(heads, head_dim)` output axes flatten into it.
    """
    shape = tuple(int(s) for s in layer.kernel.shape)
    if is_attention_input_projection(layer):
        return shape[0], int(np.prod(shape[1:]))
    return int(np.prod(shape[:-1])), shape[-1]


def find_layer(model, path):
    """The layer at `path` in `model` (see module docstring), composite layers and their parts included."""
    for candidate_path, layer in (*iter_graph_layers(model), *iter_factorizable_layers(model)):
        if candidate_path == path:
            return layer
    raise KeyError(f"no layer at path {path!r}")
