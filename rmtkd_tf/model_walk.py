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

FACTORIZABLE_TYPES = (
    "Dense", "Conv1D", "Conv2D", "SeparableConv2D",
    "LowRankDense", "LowRankConv1D", "LowRankConv2D", "LowRankSeparableConv2D",
)
# Kinds of convolution layer_kind() reports; their channel axis follows `data_format`.
CONV_KINDS = ("conv1d", "conv2d", "separable_conv2d")


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
    """The layers that produce the model's outputs (the classifier head, usually).

    Weightless single-input layers after the head are looked through: in
    keras.applications' MobileNetV3 the logits come from a 1x1 `Conv2D` followed by
    `Flatten` and an `Activation`, and that Conv2D is the head. A nested model
    producing an output is looked into.

    >>> inputs = keras.Input((1, 1, 8))
    >>> x = keras.layers.Conv2D(3, 1, name="logits")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Activation("softmax")(keras.layers.Flatten()(x)))
    >>> [layer.name for layer in output_layers(model)]
    ['logits']
    """
    layers = []
    for tensor in model.outputs:
        layer = _producer(tensor)
        while layer is not None:
            if is_graph_model(layer):
                inner = [_producer(t) for t in layer.outputs]
                layer = inner[0] if len(inner) == 1 else None
                continue
            inputs = _single_input(layer)
            if layer.weights or inputs is None or not isinstance(layer, keras.layers.Layer):
                break
            producer = _producer(inputs)
            if producer is None or isinstance(producer, keras.layers.InputLayer):
                break
            layer = producer
        if layer is not None:
            layers.append(layer)
    return layers


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history[0]


def _single_input(layer):
    """The one input tensor of `layer`'s one call in the graph, else None."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
        return None
    return nodes[0].input_tensors[0]


def layer_kind(layer):
    """`"dense"`, `"conv1d"`, `"conv2d"`, `"separable_conv2d"` or None for layers RMT-KD does not factorize.

    The `EinsumDense` layers of multi-head attention count as `"dense"`: the
    output projection `"abcd,cde->abe"` is a Dense over the flattened
    `(heads, head_dim)` axes, and the query/key/value projections
    `"abc,cde->abde"` are Denses whose output is reshaped to `(heads, head_dim)`.
    A `SeparableConv2D` is factorized in its pointwise (1x1) part only; a
    `DepthwiseConv2D` is not factorized at all (see `layer_support`).

    >>> layer_kind(keras.layers.Conv1D(4, 3)), layer_kind(keras.layers.DepthwiseConv2D(3))
    ('conv1d', None)
    """
    from rmtkd_tf.layers import LowRankConv1D, LowRankConv2D, LowRankDense, LowRankSeparableConv2D

    if (
        isinstance(layer, (keras.layers.Dense, LowRankDense))
        or is_attention_output_projection(layer)
        or is_attention_input_projection(layer)
    ):
        return "dense"
    if isinstance(layer, (keras.layers.Conv2D, LowRankConv2D)):
        return "conv2d"
    if isinstance(layer, (keras.layers.Conv1D, LowRankConv1D)):
        return "conv1d"
    if isinstance(layer, (keras.layers.SeparableConv2D, LowRankSeparableConv2D)):
        return "separable_conv2d"
    return None


def channels_first(layer):
    """True for a convolution (factorized or not) whose channel axis is 1 (`data_format="channels_first"`)."""
    return layer_kind(layer) in CONV_KINDS and getattr(layer, "data_format", "channels_last") == "channels_first"


def factorized_kernel(layer):
    """The kernel variable RMT-KD factorizes: a SeparableConv2D's pointwise kernel, else the layer's kernel."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        return layer.pointwise_kernel
    return layer.kernel


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
    """`(fan_in, units)`: the Dense/Conv (or attention `EinsumDense`) kernel seen as a matrix.

    For a SeparableConv2D it is the pointwise kernel: `fan_in` is the depthwise output's channels.

    The output width `units` is the last kernel axis, except for the attention
    input projections, whose `(heads, head_dim)` output axes flatten into it.
    """
    shape = tuple(int(s) for s in factorized_kernel(layer).shape)
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
    return 1 if channels_first(layer) else rank - 1


def _input_rank(consumer, producer):
    for node in consumer._inbound_nodes:
        for tensor in node.input_tensors:
            if tensor._keras_history.operation is producer:
                return len(tensor.shape)
    return None


def following_batchnorm(layer):
    """`(batchnorm, None)` if a BatchNormalization directly and solely consumes `layer`'s output, else `(None, why)`.

    Foldable means: `layer` is a Dense/Conv (or factorized) layer with a
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


# What RMT-KD does with each layer type: see docs/layers.md (the table there is checked against these).
CANDIDATE = "candidate"
SKIPPED = "skipped"


def _skip_reasons():
    """`[(layer classes, why they are not candidates)]`, first match wins (most specific first)."""
    layers = keras.layers
    depthwise = "filters each channel on its own: no channel-mixing matrix to factorize (the 1x1 convs around it are)"
    return [
        ((layers.DepthwiseConv2D, layers.DepthwiseConv1D), depthwise),
        ((layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose), "transposed convolutions are not factorized"),
        ((layers.Conv3D,), "3-D convolutions are not factorized"),
        ((layers.SeparableConv1D,), "SeparableConv1D is not factorized (SeparableConv2D is)"),
        ((layers.Embedding,), "an embedding is a table lookup, not a matrix product"),
        ((layers.EinsumDense,), "only the attention projections' EinsumDense equations are factorized"),
        ((layers.MultiHeadAttention,), "its projections are factorized only inside a keras-hub TransformerEncoder"),
        ((layers.RNN, layers.LSTM, layers.GRU, layers.SimpleRNN, layers.Bidirectional, layers.ConvLSTM2D),
         "recurrent layers are not factorized"),
        ((layers.TimeDistributed,), "the layer it wraps is not walked into"),
        ((layers.BatchNormalization,), "a per-channel affine map, nothing to factorize (it sets the metric of the Dense/Conv right before it)"),
    ]


def unsupported_reason(layer):
    """Why a candidate-kind `layer` cannot be factorized (grouped, quantized, LoRA, ...), or None if it can."""
    kind = layer_kind(layer)
    if kind is None:
        return f"{type(layer).__name__} layers are not factorized"
    if kind in CONV_KINDS and getattr(layer, "groups", 1) != 1:
        return f"grouped convolution (groups={layer.groups}): its block-diagonal kernel is not factorized"
    if getattr(layer, "quantization_mode", None):
        return f"quantized layer ({layer.quantization_mode}) is not factorized"
    if getattr(layer, "lora_enabled", False):
        return "LoRA-enabled layer is not factorized; merge LoRA weights first"
    return None


def layer_support(layer):
    """`(status, reason)`: `("candidate", None)` if RMT-KD factorizes `layer`, else `("skipped", why)`.

    A keras-hub `TransformerEncoder` is a candidate through its six parts
    (`composite_parts`). Skipped layers stay in the student as they are. The
    layers that make a whole model unusable are `refusal_reason`'s.

    >>> layer_support(keras.layers.Conv2D(8, 1))
    ('candidate', None)
    >>> layer_support(keras.layers.DepthwiseConv2D(3))[1]
    'filters each channel on its own: no channel-mixing matrix to factorize (the 1x1 convs around it are)'
    >>> layer_support(keras.layers.Conv2D(8, 3, groups=2))
    ('skipped', 'grouped convolution (groups=2): its block-diagonal kernel is not factorized')
    """
    if layer_kind(layer) is not None:
        reason = unsupported_reason(layer)
        return (CANDIDATE, None) if reason is None else (SKIPPED, reason)
    if _is_transformer_encoder(layer):
        return CANDIDATE, None
    for classes, reason in _skip_reasons():
        if isinstance(layer, classes):
            return SKIPPED, reason
    if not layer.weights and layer.built:
        return SKIPPED, "no weights: nothing to factorize"
    return SKIPPED, f"{type(layer).__name__} layers are not factorized"


def _is_transformer_encoder(layer):
    if "keras_hub" not in sys.modules:
        return False
    from rmtkd_tf.transformers.low_rank_encoder import is_transformer_encoder

    return is_transformer_encoder(layer)


_BUILTIN_MODULES = ("keras.", "keras_hub.", "rmtkd_tf.")


def _safe_mode():
    """Whether Keras deserializes in safe mode now (its default; off only inside `SafeModeScope(False)`)."""
    from keras.src.saving.serialization_lib import in_safe_mode

    return in_safe_mode() is not False


def refusal_reason(layer):
    """Why a model holding `layer` cannot be rebuilt by surgery (which clones every layer from its config), else None.

    Keras' and keras-hub's own layers always rebuild, except a `Lambda` around a
    Python `lambda` (not deserialized in Keras' safe mode: allowed inside
    `rmtkd_tf.io.unsafe_loading()`, i.e. `--unsafe`, which turns safe mode off);
    a custom layer rebuilds when its `get_config()` gives back its constructor arguments.

    >>> refusal_reason(keras.layers.Dense(3)) is None
    True
    >>> refusal_reason(keras.layers.Lambda(lambda x: x, name="lam"))  # doctest: +ELLIPSIS
    "Lambda layer 'lam' wraps a Python function and cannot be rebuilt safely; ...
    >>> from keras.src.saving.serialization_lib import SafeModeScope
    >>> with SafeModeScope(False):  # what --unsafe does
    ...     refusal_reason(keras.layers.Lambda(lambda x: x, name="lam")) is None
    True
    """
    if isinstance(layer, keras.layers.Lambda) and _safe_mode():
        return (
            f"Lambda layer '{layer.name}' wraps a Python function and cannot be rebuilt safely; "
            "replace it by a custom layer registered with keras.saving.register_keras_serializable, "
            "or pass --unsafe if you trust the model's code"
        )
    if type(layer).__module__.startswith(_BUILTIN_MODULES) or is_graph_model(layer):
        return None
    try:
        type(layer).from_config(layer.get_config())
    except Exception as exc:  # noqa: BLE001  (any failure means: cannot be rebuilt)
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return (
            f"{type(layer).__name__} layer '{layer.name}' cannot be rebuilt from its get_config() ({first_line}); "
            "make get_config() return its constructor arguments and register it with "
            "keras.saving.register_keras_serializable"
        )
    return None


def check_rebuildable(model):
    """Raise `UnsupportedModelError` (one line) if surgery cannot rebuild `model`; see `refusal_reason`."""
    from rmtkd_tf.errors import UnsupportedModelError

    if not is_graph_model(model):
        raise UnsupportedModelError(
            f"{type(model).__name__} is a subclassed Keras model; rmtkd-tf can rebuild Sequential and "
            "Functional models (nested ones too) and keras-hub tasks"
        )
    for path, layer in iter_graph_layers(model):
        reason = refusal_reason(layer)
        if reason:
            raise UnsupportedModelError(f"cannot rebuild the model: {reason}" if path == layer.name
                                        else f"cannot rebuild the model at '{path}': {reason}")


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


def skipped_summary(model):
    """One line on the layers with weights that RMT-KD leaves as they are, grouped by reason; None if there are none.

    Only layers skipped for a specific reason are listed (depthwise, grouped, transposed convs, embeddings,
    recurrent layers, ...): not weightless layers, normalisations or other layers with no matrix product.

    >>> inputs = keras.Input((8, 8, 4))
    >>> x = keras.layers.DepthwiseConv2D(3, name="dw")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Conv2D(4, 1, groups=2, name="g")(x))
    >>> print(skipped_summary(model))
    left as they are: 1 DepthwiseConv2D (filters each channel on its own: no channel-mixing matrix to factorize (the 1x1 convs around it are)); 1 Conv2D (grouped convolution (groups=2): its block-diagonal kernel is not factorized)
    """
    groups = {}
    for _, layer in iter_graph_layers(model):
        status, reason = layer_support(layer)
        generic = reason == f"{type(layer).__name__} layers are not factorized"
        if status == SKIPPED and layer.weights and not generic and not isinstance(layer, keras.layers.BatchNormalization):
            groups.setdefault((type(layer).__name__, reason), []).append(layer)
    if not groups:
        return None
    parts = [f"{len(layers)} {name} ({reason})" for (name, reason), layers in groups.items()]
    return "left as they are: " + "; ".join(parts)
