"""`LowRankTransformerEncoder`: a keras-hub `TransformerEncoder` with factorized inner layers.

RMT-KD reduces a transformer inside its encoder blocks, where the width lives:

- `"ffn_intermediate"`: the feed-forward expansion `hidden -> intermediate`
  (`_feedforward_intermediate_dense`, 384 -> 1536 in MiniLM-L6), replaced by a
  `LowRankDense` `hidden -> k -> intermediate` (the activation stays after it);
- `"attention_output"`: the attention output projection `heads x head_dim -> hidden`
  (the `MultiHeadAttention`'s `_output_dense`), replaced by a
  `LowRankAttentionOutput` `heads x head_dim -> k -> hidden`.

The ranks are constructor arguments recorded in `get_config()`, and `build()`
creates the factorized sublayers, so a `.keras` file reloads into the same
structure (after `import rmtkd_tf`, which registers the class). Every other
sublayer, its name and its weights layout are those of `TransformerEncoder`.

`encoder_parts(layer)` names the factorizable sublayers of any encoder, dense
or factorized; model walking, activation collection and surgery use it.
"""

from __future__ import annotations

import keras
import keras_hub
from keras import ops

from rmtkd_tf.layers import LowRankDense

# Part name -> (config argument holding its rank, how to reach the sublayer).
FEEDFORWARD_PART = "ffn_intermediate"
ATTENTION_OUTPUT_PART = "attention_output"
PART_RANK_ARGUMENTS = {
    FEEDFORWARD_PART: "feedforward_rank",
    ATTENTION_OUTPUT_PART: "attention_output_rank",
}


def is_transformer_encoder(layer):
    """True for keras-hub `TransformerEncoder` layers (and subclasses such as `LowRankTransformerEncoder`)."""
    return isinstance(layer, keras_hub.layers.TransformerEncoder)


def encoder_parts(layer):
    """`{part: sublayer}` of a built transformer encoder (see the module docstring), or None for other layers.

    >>> import numpy as np
    >>> encoder = keras_hub.layers.TransformerEncoder(intermediate_dim=8, num_heads=2)
    >>> _ = encoder(np.zeros((1, 3, 4), "float32"))
    >>> {part: type(sub).__name__ for part, sub in encoder_parts(encoder).items()}
    {'ffn_intermediate': 'Dense', 'attention_output': 'EinsumDense'}
    """
    if not is_transformer_encoder(layer) or not layer.built:
        return None
    return {
        FEEDFORWARD_PART: layer._feedforward_intermediate_dense,
        ATTENTION_OUTPUT_PART: layer._self_attention_layer._output_dense,
    }


def encoder_ranks(layer):
    """`{part: rank}` of the factorized parts of an encoder (empty for a dense `TransformerEncoder`)."""
    if isinstance(layer, LowRankTransformerEncoder):
        return {part: rank for part, rank in layer.ranks.items() if rank is not None}
    return {}


@keras.saving.register_keras_serializable(package="rmtkd_tf")
class LowRankAttentionOutput(LowRankDense):
    """The attention output projection `(..., heads, head_dim) -> (..., units)` through `rank` features.

    `down_kernel` has shape `(heads, head_dim, rank)` (the layout of the
    `EinsumDense` it replaces, minus the output axis), `up_kernel` `(rank, units)`.

    >>> import numpy as np
    >>> layer = LowRankAttentionOutput(units=6, rank=2)
    >>> tuple(layer(np.ones((1, 5, 3, 4), "float32")).shape)
    (1, 5, 6)
    """

    def build(self, input_shape):
        heads, head_dim = input_shape[-2], input_shape[-1]
        self.down_kernel = self.add_weight(
            name="down_kernel", shape=(heads, head_dim, self.rank), initializer=self.kernel_initializer
        )
        self.up_kernel = self.add_weight(
            name="up_kernel", shape=(self.rank, self.units), initializer=self.kernel_initializer
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=3, axes={-2: heads, -1: head_dim})

    def bottleneck(self, inputs):
        """The rank-`k` features: `inputs` contracted over `(heads, head_dim)` with `down_kernel`."""
        return ops.einsum("...hd,hdk->...k", inputs, self.down_kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-2]) + (self.units,)


def _clone_initializer(initializer):
    # A fresh initializer object per sublayer, as keras-hub does (same config, new seed state).
    return initializer.__class__.from_config(initializer.get_config())


def _replace_sublayer(owner, attribute, new_layer):
    """Put `new_layer` in `owner.<attribute>` in place of the layer built there, untracking the old one."""
    old_layer = getattr(owner, attribute)
    # Keep the position in the tracked list, so the order of `owner.weights` stays that of the dense encoder.
    owner._tracker.replace_tracked_value("layers", old_layer, new_layer)
    setattr(owner, attribute, new_layer)


@keras.saving.register_keras_serializable(package="rmtkd_tf")
class LowRankTransformerEncoder(keras_hub.layers.TransformerEncoder):
    """A `keras_hub.layers.TransformerEncoder` whose FFN expansion and/or attention output are factorized.

    Args:
        intermediate_dim, num_heads, dropout, activation, layer_norm_epsilon,
            kernel_initializer, bias_initializer, normalize_first: as in
            `keras_hub.layers.TransformerEncoder`.
        feedforward_rank: rank `k` of the FFN expansion `hidden -> k ->
            intermediate_dim` (a `LowRankDense`, activation after it), or None
            to keep it dense.
        attention_output_rank: rank of the attention output projection
            `heads x head_dim -> k -> hidden` (a `LowRankAttentionOutput`), or
            None to keep it dense.

    Example:

    >>> import numpy as np
    >>> encoder = LowRankTransformerEncoder(intermediate_dim=32, num_heads=2, feedforward_rank=4)
    >>> tuple(encoder(np.zeros((2, 5, 16), "float32"), padding_mask=np.ones((2, 5), bool)).shape)
    (2, 5, 16)
    >>> type(encoder_parts(encoder)["ffn_intermediate"]).__name__, encoder_ranks(encoder)
    ('LowRankDense', {'ffn_intermediate': 4})
    """

    def __init__(self, intermediate_dim, num_heads, feedforward_rank=None, attention_output_rank=None, **kwargs):
        super().__init__(intermediate_dim, num_heads, **kwargs)
        self.feedforward_rank = _check_rank(feedforward_rank, "feedforward_rank")
        self.attention_output_rank = _check_rank(attention_output_rank, "attention_output_rank")

    @property
    def ranks(self):
        """`{part: rank or None}` for every factorizable part."""
        return {FEEDFORWARD_PART: self.feedforward_rank, ATTENTION_OUTPUT_PART: self.attention_output_rank}

    def build(self, inputs_shape):
        # The dense encoder first (every sublayer, named and ordered as keras-hub does), then the
        # factorized parts replace their dense counterparts before the layer is locked.
        super().build(inputs_shape)
        if self.feedforward_rank is not None:
            feedforward = LowRankDense(
                units=self.intermediate_dim,
                rank=self.feedforward_rank,
                activation=self.activation,
                kernel_initializer=_clone_initializer(self.kernel_initializer),
                bias_initializer=_clone_initializer(self.bias_initializer),
                dtype=self.dtype_policy,
                name="feedforward_intermediate_dense",
            )
            feedforward.build(inputs_shape)
            _replace_sublayer(self, "_feedforward_intermediate_dense", feedforward)
        if self.attention_output_rank is not None:
            attention = self._self_attention_layer
            dense_output = attention._output_dense
            heads, head_dim = tuple(dense_output.kernel.shape)[:2]
            projection = LowRankAttentionOutput(
                units=int(inputs_shape[-1]),
                rank=self.attention_output_rank,
                kernel_initializer=_clone_initializer(self.kernel_initializer),
                bias_initializer=_clone_initializer(self.bias_initializer),
                dtype=self.dtype_policy,
                name=dense_output.name,
            )
            with keras.name_scope(attention.name, caller=attention):  # variable paths as in the dense encoder
                projection.build(tuple(inputs_shape[:-1]) + (heads, head_dim))
            _replace_sublayer(attention, "_output_dense", projection)
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update(feedforward_rank=self.feedforward_rank, attention_output_rank=self.attention_output_rank)
        return config


def _check_rank(rank, name):
    if rank is None:
        return None
    if isinstance(rank, bool) or int(rank) != rank or int(rank) < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {rank!r}")
    return int(rank)


def low_rank_encoder_like(encoder, ranks):
    """An unbuilt `LowRankTransformerEncoder` with `encoder`'s configuration and `ranks` (`{part: rank}`).

    Parts not in `ranks` keep the rank they have in `encoder` (None: dense).
    """
    unknown = set(ranks) - set(PART_RANK_ARGUMENTS)
    if unknown:
        raise ValueError(f"unknown encoder parts {sorted(unknown)}; known: {sorted(PART_RANK_ARGUMENTS)}")
    config = encoder.get_config()
    for part, rank in ranks.items():
        config[PART_RANK_ARGUMENTS[part]] = int(rank)
    return LowRankTransformerEncoder.from_config(config)
