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


# Layers that apply an elementwise nonlinearity: one between a layer and its BatchNormalization stops the fold.
_ACTIVATION_LAYER_TYPES = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
    keras.layers.Softmax,
)


def output_consumers(layer):
    """The distinct layers that take `layer`'s output as input, over every graph it was called in.

    Keras records a node for each call; a Sequential built with `add()` also
    keeps the nodes of its intermediate graphs, which at most lack consumers.
    Reads Keras's private `_outbound_nodes`: if a Keras version drops it, no
    consumer is found and nothing is folded (the unweighted analysis), not an error.
    """
    consumers = {}
    for node in getattr(layer, "_outbound_nodes", []):
        consumers.setdefault(id(node.operation), node.operation)
    return list(consumers.values())


def _channel_axis(layer, rank):
    if layer_kind(layer) == "conv2d" and getattr(layer, "data_format", "channels_last") == "channels_first":
        return 1
    return rank - 1


def _input_rank(consumer, producer):
    for node in consumer._inbound_nodes:
        for tensor in node.input_tensors:
            if tensor._keras_history.operation is producer:
                return len(tensor.shape)
    return None


def following_batchnorm(layer):
    """`(batchnorm, None)` if a BatchNormalization directly and solely consumes `layer`'s output, else `(None, why)`.

    Foldable means: `layer` is a Dense/Conv2D (or factorized) layer with a
    linear activation, its output goes to that BatchNormalization and to
    nothing else, and the BatchNormalization normalises the layer's channel
    axis. `why` says why a BatchNormalization that is there cannot be folded
    (a nonlinearity in between, another consumer, another axis), and is None
    when there is no BatchNormalization to speak of. Works in Functional and
    Sequential models, nested ones included, as long as the layer and its
    BatchNormalization are in the same (sub)model. A layer whose output is
    also an output of its model cannot be told apart from the layer alone;
    do not rely on the fold for such a layer.

    >>> inputs = keras.Input((6, 6, 2))
    >>> x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    >>> model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x))
    >>> bn, why = following_batchnorm(model.get_layer("conv"))
    >>> bn.name, why
    ('bn', None)
    >>> inputs = keras.Input((6, 6, 2))
    >>> x = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(inputs)
    >>> model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(x))
    >>> following_batchnorm(model.get_layer("conv"))
    (None, "its relu activation comes before BatchNormalization 'bn' (nonlinear, cannot be folded)")
    """
    if layer_kind(layer) is None or is_attention_input_projection(layer) or is_attention_output_projection(layer):
        return None, None
    consumers = output_consumers(layer)
    batchnorms = [c for c in consumers if isinstance(c, keras.layers.BatchNormalization)]
    if len(consumers) == 1 and isinstance(consumers[0], _ACTIVATION_LAYER_TYPES):
        after = [c for c in output_consumers(consumers[0]) if isinstance(c, keras.layers.BatchNormalization)]
        if after:
            return None, (
                f"the {type(consumers[0]).__name__} layer '{consumers[0].name}' comes before "
                f"BatchNormalization '{after[0].name}' (nonlinear, cannot be folded)"
            )
        return None, None
    if not batchnorms:
        return None, None
    bn = batchnorms[0]
    if len(consumers) > 1:
        others = ", ".join(sorted(f"'{c.name}'" for c in consumers if c is not bn))
        return None, f"its output also feeds {others}, not only BatchNormalization '{bn.name}'"
    activation = getattr(getattr(layer, "activation", None), "__name__", "linear")
    if activation != "linear":
        return None, f"its {activation} activation comes before BatchNormalization '{bn.name}' (nonlinear, cannot be folded)"
    rank = _input_rank(bn, layer)
    if rank is None or not isinstance(bn.axis, int) or bn.axis % rank != _channel_axis(layer, rank):
        return None, f"BatchNormalization '{bn.name}' normalises axis {bn.axis}, not the layer's channel axis"
    return bn, None


def output_positions_per_call(layer):
    """Spatial (or token) positions per sample of each output of `layer` in the model graph, one per call.

    1 for an output without such axes (a Dense on vectors); a `(batch, tokens, d)` output counts its tokens.
    """
    counts = []
    for node in getattr(layer, "_inbound_nodes", []):
        for tensor in node.output_tensors:
            shape = tuple(tensor.shape)
            counts.append(int(np.prod([s for s in shape[1:-1] if s is not None])) if len(shape) > 2 else 1)
    return counts
