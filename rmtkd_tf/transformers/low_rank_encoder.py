"""`LowRankTransformerEncoder`: a keras-hub `TransformerEncoder` with factorized inner layers.

RMT-KD reduces a transformer inside its encoder blocks, where the width lives.
Its parts, in the order a token meets them:

- `"attention_query"`, `"attention_key"`, `"attention_value"`: the attention
  input projections `hidden -> heads x head_dim` (`EinsumDense`), replaced by
  a `LowRankAttentionProjection` `hidden -> k -> heads x head_dim`;
- `"attention_output"`: the attention output projection `heads x head_dim -> hidden`
  (the `MultiHeadAttention`'s `_output_dense`), replaced by a
  `LowRankAttentionOutput` `heads x head_dim -> k -> hidden`;
- `"ffn_intermediate"`: the feed-forward expansion `hidden -> intermediate`
  (`_feedforward_intermediate_dense`, 384 -> 1536 in MiniLM-L6), replaced by a
  `LowRankDense` `hidden -> k -> intermediate` (the activation stays after it);
- `"ffn_output"`: the feed-forward contraction `intermediate -> hidden`
  (`_feedforward_output_dense`), replaced by a `LowRankDense`
  `intermediate -> k -> hidden`.

Each part is analysed on its own output (pre-activation) covariance, tokens as
samples. The ranks are constructor arguments recorded in `get_config()`, and
`build()` creates the factorized sublayers, so a `.keras` file reloads into the
same structure (after `import rmtkd_tf`, which registers the class). Every
other sublayer, its name and its weights layout are those of `TransformerEncoder`.

**Joint query/key** (`joint_qk_rank=r`): the query and key projections stay
dense `EinsumDense` layers `hidden -> heads x r` (key dimension `r` instead of
`head_dim`; the value is untouched), holding the per-head factors of
`rmtkd_tf.joint_qk` (the best rank-`r` approximation of each head's
`W_q,h W_k,hᵀ` in the activation metric). The attention keeps its
`key_dim = head_dim`, hence its `1/√head_dim` score scale, which the factors
assume. It excludes `query_rank`/`key_rank`.

`encoder_parts(layer)` names the factorizable sublayers of any encoder, dense
or factorized; model walking, activation collection and surgery use it.
"""

from __future__ import annotations

import keras
import keras_hub
from keras import ops

from rmtkd_tf.arguments import check_integer
from rmtkd_tf.layers import LowRankDense
from rmtkd_tf.layers.shapes import leading_shape

QUERY_PART = "attention_query"
KEY_PART = "attention_key"
VALUE_PART = "attention_value"
ATTENTION_OUTPUT_PART = "attention_output"
FEEDFORWARD_PART = "ffn_intermediate"
FEEDFORWARD_OUTPUT_PART = "ffn_output"
# Part name -> the constructor argument holding its rank, in the order a token meets the parts.
PART_RANK_ARGUMENTS = {
    QUERY_PART: "query_rank",
    KEY_PART: "key_rank",
    VALUE_PART: "value_rank",
    ATTENTION_OUTPUT_PART: "attention_output_rank",
    FEEDFORWARD_PART: "feedforward_rank",
    FEEDFORWARD_OUTPUT_PART: "feedforward_output_rank",
}
ENCODER_PARTS = tuple(PART_RANK_ARGUMENTS)
# Part name -> (attribute path from the encoder to the owner of the sublayer, attribute of the sublayer).
_PART_LOCATIONS = {
    QUERY_PART: ("_self_attention_layer", "_query_dense"),
    KEY_PART: ("_self_attention_layer", "_key_dense"),
    VALUE_PART: ("_self_attention_layer", "_value_dense"),
    ATTENTION_OUTPUT_PART: ("_self_attention_layer", "_output_dense"),
    FEEDFORWARD_PART: (None, "_feedforward_intermediate_dense"),
    FEEDFORWARD_OUTPUT_PART: (None, "_feedforward_output_dense"),
}


def is_transformer_encoder(layer):
    """True for keras-hub `TransformerEncoder` layers (and subclasses such as `LowRankTransformerEncoder`)."""
    return isinstance(layer, keras_hub.layers.TransformerEncoder)


def encoder_parts(layer):
    """`{part: sublayer}` of a built transformer encoder (see the module docstring), or None for other layers.

    >>> import numpy as np
    >>> encoder = keras_hub.layers.TransformerEncoder(intermediate_dim=8, num_heads=2)
    >>> _ = encoder(np.zeros((1, 3, 4), "float32"))
    >>> {part: type(sub).__name__ for part, sub in encoder_parts(encoder).items()}  # doctest: +NORMALIZE_WHITESPACE
    {'attention_query': 'EinsumDense', 'attention_key': 'EinsumDense', 'attention_value': 'EinsumDense',
     'attention_output': 'EinsumDense', 'ffn_intermediate': 'Dense', 'ffn_output': 'Dense'}
    """
    if not is_transformer_encoder(layer) or not layer.built:
        return None
    return {part: getattr(_part_owner(layer, part), attribute) for part, (_, attribute) in _PART_LOCATIONS.items()}


def _part_owner(encoder, part):
    owner_attribute = _PART_LOCATIONS[part][0]
    return encoder if owner_attribute is None else getattr(encoder, owner_attribute)


def joint_qk_rank(layer):
    """The per-head key dimension of an encoder whose query and key are factorized jointly, else None."""
    return getattr(layer, "joint_qk_rank", None) if isinstance(layer, LowRankTransformerEncoder) else None


def joint_qk_parts(graph_layers):
    """`{"<encoder>/attention_query" and "/attention_key": entry}` of every encoder in `graph_layers` (the
    `(path, layer)` pairs of `rmtkd_tf.model_walk.iter_graph_layers(model)`; taken as an argument so that this
    module does not import `model_walk`, which imports it) whose query and
    key are factorized jointly; `entry`: `joint_qk_rank` (per head), `heads`, `rank` (`heads x joint_qk_rank`,
    the projection's width and the most rank it can have) and `params_after` (the projection's parameters)."""
    parts = {}
    for path, layer in graph_layers:
        rank = joint_qk_rank(layer)
        if rank is None:
            continue
        attention = layer._self_attention_layer
        heads = int(attention._num_heads)
        for part, dense in (("attention_query", attention._query_dense), ("attention_key", attention._key_dense)):
            parts[f"{path}/{part}"] = {"joint_qk_rank": int(rank), "heads": heads, "rank": heads * int(rank),
                                       "params_after": int(dense.count_params())}
    return parts


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
        # reshape + matmul, not einsum("...hd,hdk->...k"): TensorFlow's gradient of an ellipsis einsum
        # materialises a large intermediate (measured 250x slower fine-tuning); same weights either way.
        heads, head_dim = tuple(self.down_kernel.shape)[:2]
        leading = leading_shape(inputs, 2)
        flat = ops.reshape(inputs, (-1, heads * head_dim))
        hidden = ops.matmul(flat, ops.reshape(self.down_kernel, (heads * head_dim, self.rank)))
        return ops.reshape(hidden, leading + (self.rank,))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-2]) + (self.units,)


@keras.saving.register_keras_serializable(package="rmtkd_tf")
class LowRankAttentionProjection(LowRankDense):
    """An attention input projection `(..., hidden) -> (..., heads, head_dim)` through `rank` features.

    Replaces the query/key/value `EinsumDense` of multi-head attention:
    `down_kernel` has shape `(hidden, rank)`, `up_kernel` `(rank, heads,
    head_dim)` and the bias `(heads, head_dim)`, so the output has the layout the
    attention expects. As a matrix it is a `LowRankDense` with
    `units = heads * head_dim`.

    >>> import numpy as np
    >>> layer = LowRankAttentionProjection(num_heads=3, head_dim=4, rank=2)
    >>> tuple(layer(np.ones((1, 5, 6), "float32")).shape), layer.units
    ((1, 5, 3, 4), 12)
    """

    def __init__(self, num_heads, head_dim, rank, **kwargs):
        kwargs.pop("units", None)  # derived: heads * head_dim
        num_heads = check_integer(num_heads, "num_heads")
        head_dim = check_integer(head_dim, "head_dim")
        super().__init__(units=num_heads * head_dim, rank=rank, **kwargs)
        self.num_heads = num_heads
        self.head_dim = head_dim

    def build(self, input_shape):
        input_dim = input_shape[-1]
        self.down_kernel = self.add_weight(
            name="down_kernel", shape=(input_dim, self.rank), initializer=self.kernel_initializer
        )
        self.up_kernel = self.add_weight(
            name="up_kernel", shape=(self.rank, self.num_heads, self.head_dim), initializer=self.kernel_initializer
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.num_heads, self.head_dim), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})

    def expand(self, hidden):
        # reshape + matmul rather than an ellipsis einsum (slow gradient in TensorFlow, see LowRankAttentionOutput).
        leading = leading_shape(hidden, 1)
        flat = ops.matmul(ops.reshape(hidden, (-1, self.rank)), ops.reshape(self.up_kernel, (self.rank, self.units)))
        outputs = ops.reshape(flat, leading + (self.num_heads, self.head_dim))
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_heads, self.head_dim)

    def get_config(self):
        config = super().get_config()
        config.pop("units")
        config.update(num_heads=self.num_heads, head_dim=self.head_dim)
        return config


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
    """A `keras_hub.layers.TransformerEncoder` whose attention and/or FFN layers are factorized.

    Args:
        intermediate_dim, num_heads, dropout, activation, layer_norm_epsilon,
            kernel_initializer, bias_initializer, normalize_first: as in
            `keras_hub.layers.TransformerEncoder`.
        query_rank, key_rank, value_rank: ranks of the attention input
            projections `hidden -> k -> heads x head_dim`
            (`LowRankAttentionProjection`), or None to keep them dense.
        attention_output_rank: rank of the attention output projection
            `heads x head_dim -> k -> hidden` (a `LowRankAttentionOutput`), or
            None to keep it dense.
        feedforward_rank: rank `k` of the FFN expansion `hidden -> k ->
            intermediate_dim` (a `LowRankDense`, activation after it), or None
            to keep it dense.
        feedforward_output_rank: rank of the FFN contraction
            `intermediate_dim -> k -> hidden` (a `LowRankDense`), or None.
        joint_qk_rank: key dimension `r` of every head's query and key
            (dense `EinsumDense` projections `hidden -> heads x r`, see the
            module docstring), or None; excludes `query_rank` and `key_rank`.

    Example:

    >>> import numpy as np
    >>> encoder = LowRankTransformerEncoder(intermediate_dim=32, num_heads=2, feedforward_rank=4, query_rank=3)
    >>> tuple(encoder(np.zeros((2, 5, 16), "float32"), padding_mask=np.ones((2, 5), bool)).shape)
    (2, 5, 16)
    >>> type(encoder_parts(encoder)["ffn_intermediate"]).__name__, encoder_ranks(encoder)
    ('LowRankDense', {'attention_query': 3, 'ffn_intermediate': 4})
    """

    def __init__(
        self,
        intermediate_dim,
        num_heads,
        feedforward_rank=None,
        attention_output_rank=None,
        query_rank=None,
        key_rank=None,
        value_rank=None,
        feedforward_output_rank=None,
        joint_qk_rank=None,
        **kwargs,
    ):
        ranks = {
            "query_rank": query_rank,
            "key_rank": key_rank,
            "value_rank": value_rank,
            "attention_output_rank": attention_output_rank,
            "feedforward_rank": feedforward_rank,
            "feedforward_output_rank": feedforward_output_rank,
        }
        ranks = {name: check_integer(rank, name, allow_none=True) for name, rank in ranks.items()}
        joint_qk_rank = check_integer(joint_qk_rank, "joint_qk_rank", allow_none=True)
        if joint_qk_rank is not None and (ranks["query_rank"] is not None or ranks["key_rank"] is not None):
            raise ValueError("joint_qk_rank factorizes query and key together: leave query_rank and key_rank None")
        super().__init__(check_integer(intermediate_dim, "intermediate_dim"), check_integer(num_heads, "num_heads"),
                         **kwargs)
        for name, rank in ranks.items():
            setattr(self, name, rank)
        self.joint_qk_rank = joint_qk_rank

    @property
    def ranks(self):
        """`{part: rank or None}` for every factorizable part."""
        return {part: getattr(self, argument) for part, argument in PART_RANK_ARGUMENTS.items()}

    def build(self, inputs_shape):
        # The dense encoder first (every sublayer, named and ordered as keras-hub does), then the
        # factorized parts replace their dense counterparts before the layer is locked.
        super().build(inputs_shape)
        if self.joint_qk_rank is not None:
            self._build_joint_qk(inputs_shape)
        for part, rank in self.ranks.items():
            if rank is None:
                continue
            owner = _part_owner(self, part)
            _, attribute = _PART_LOCATIONS[part]
            dense = getattr(owner, attribute)
            replacement, input_shape = self._factorized_part(part, dense, rank, inputs_shape)
            if owner is self:
                replacement.build(input_shape)
            else:
                with keras.name_scope(owner.name, caller=owner):  # variable paths as in the dense encoder
                    replacement.build(input_shape)
            _replace_sublayer(owner, attribute, replacement)
        self.built = True

    def _build_joint_qk(self, inputs_shape):
        """Query and key `EinsumDense` of per-head width `joint_qk_rank`, in place of the built ones."""
        attention = self._self_attention_layer
        head_dim = int(attention._key_dim)
        if not 1 <= self.joint_qk_rank <= head_dim:
            raise ValueError(f"joint_qk_rank must be in [1, key_dim={head_dim}], got {self.joint_qk_rank}")
        for attribute in ("_query_dense", "_key_dense"):
            dense = getattr(attention, attribute)
            config = dense.get_config()
            output_shape = list(config["output_shape"])
            output_shape[-1] = self.joint_qk_rank
            config.update(output_shape=output_shape,
                          kernel_initializer=keras.initializers.serialize(_clone_initializer(self.kernel_initializer)),
                          bias_initializer=keras.initializers.serialize(_clone_initializer(self.bias_initializer)))
            replacement = keras.layers.EinsumDense.from_config(config)
            with keras.name_scope(attention.name, caller=attention):
                replacement.build(tuple(inputs_shape))
            _replace_sublayer(attention, attribute, replacement)

    def _factorized_part(self, part, dense, rank, inputs_shape):
        """`(unbuilt factorized layer, its input shape)` in place of the built dense sublayer `dense`."""
        common = dict(
            rank=rank,
            kernel_initializer=_clone_initializer(self.kernel_initializer),
            bias_initializer=_clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name=dense.name,
        )
        hidden = int(inputs_shape[-1])
        leading = tuple(inputs_shape[:-1])
        if part in (QUERY_PART, KEY_PART, VALUE_PART):
            _, heads, head_dim = tuple(dense.kernel.shape)
            return LowRankAttentionProjection(num_heads=heads, head_dim=head_dim, **common), leading + (hidden,)
        if part == ATTENTION_OUTPUT_PART:
            heads, head_dim = tuple(dense.kernel.shape)[:2]
            return LowRankAttentionOutput(units=hidden, **common), leading + (heads, head_dim)
        if part == FEEDFORWARD_PART:
            return LowRankDense(units=self.intermediate_dim, activation=self.activation, **common), leading + (hidden,)
        return LowRankDense(units=hidden, **common), leading + (self.intermediate_dim,)

    def get_config(self):
        config = super().get_config()
        config.update({argument: getattr(self, argument) for argument in PART_RANK_ARGUMENTS.values()})
        config["joint_qk_rank"] = self.joint_qk_rank
        return config


def low_rank_encoder_like(encoder, ranks, joint_qk_rank=None):
    """An unbuilt `LowRankTransformerEncoder` with `encoder`'s configuration and `ranks` (`{part: rank}`).

    Parts not in `ranks` keep the rank they have in `encoder` (None: dense), and so does
    the joint query/key rank unless `joint_qk_rank` is given.
    """
    unknown = set(ranks) - set(PART_RANK_ARGUMENTS)
    if unknown:
        raise ValueError(f"unknown encoder parts {sorted(unknown)}; known: {sorted(PART_RANK_ARGUMENTS)}")
    config = encoder.get_config()
    for part, rank in ranks.items():
        config[PART_RANK_ARGUMENTS[part]] = check_integer(rank, f"rank of {part}")
    if joint_qk_rank is not None:
        config["joint_qk_rank"] = check_integer(joint_qk_rank, "joint_qk_rank")
    return LowRankTransformerEncoder.from_config(config)
