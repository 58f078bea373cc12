"""FLOPs of a transformer encoder's matrix products, per input sequence.

`rmtkd_tf.flops.model_flops` counts the Dense/Conv2D layers of the model
graph; an encoder is one graph layer whose dense work happens inside it: the
query/key/value and output projections of its attention and the two FFN
layers, each applied at every token. `encoder_flops` counts those (2 FLOPs per
multiply-add, factorized layers as `fan_in·k + k·units`), times the number
of token positions of the encoder's output in the model graph, plus the two
attention products (scores `QKᵀ` and `scores·V`: `L²·heads·key_dim` and
`L²·heads·value_dim` multiply-adds for `L` tokens). Per-part RMT-KD leaves those two
unchanged (a joint query/key cut, `rmtkd_tf.joint_qk`, narrows the first to
`L²·heads·r`), and a FLOP-reduction bound that left them out would overstate what
factorizing the projections can buy (about 5% of MiniLM-L6's FLOPs at 128
tokens). Softmax, layer norms and activations are not counted, like
`model_flops` does not count activations.

Example:

>>> import keras, keras_hub
>>> inputs = keras.Input((10, 16))
>>> encoder = keras_hub.layers.TransformerEncoder(intermediate_dim=32, num_heads=2)
>>> _ = keras.Model(inputs, encoder(inputs))
>>> dense = 10 * 2 * (4 * 16 * 16 + 2 * 16 * 32)
>>> attention_products = 2 * 10 * 10 * (2 * 8 + 2 * 8)  # 2 heads of key_dim = value_dim = 8
>>> encoder_flops(encoder) == dense + attention_products
True
"""

from __future__ import annotations

import numpy as np

from rmtkd_tf.model_walk import output_positions_per_call
from rmtkd_tf.transformers.low_rank_encoder import is_transformer_encoder


def _attention_product_macs(encoder, length):
    """Multiply-adds of the score and weighted-value products of `encoder`'s attention at `length` tokens."""
    attention = getattr(encoder, "_self_attention_layer", None)
    if attention is None:
        return 0
    heads = int(getattr(attention, "_num_heads", 0) or 0)
    key_dim = int(getattr(attention, "_key_dim", 0) or 0)
    value_dim = int(getattr(attention, "_value_dim", None) or key_dim)
    return length * length * heads * (_score_dim(attention, key_dim) + value_dim)


def _score_dim(attention, key_dim):
    """Per-head width of the query/key the scores contract: `key_dim`, or `r` after a joint query/key cut."""
    query = getattr(attention, "_query_dense", None)
    if hasattr(query, "head_dim"):  # LowRankAttentionProjection
        return int(query.head_dim)
    kernel = getattr(query, "kernel", None)
    return int(kernel.shape[-1]) if kernel is not None and len(kernel.shape) == 3 else key_dim


def _dense_macs(layer):
    if hasattr(layer, "bottleneck"):
        fan_in = int(np.prod(tuple(layer.down_kernel.shape)[:-1]))
        return fan_in * layer.rank + layer.rank * int(layer.units)
    kernel = getattr(layer, "kernel", None)
    return 0 if kernel is None else int(np.prod(tuple(kernel.shape)))


def encoder_flops(encoder):
    """FLOPs per sample of `encoder`'s dense sublayers and attention products (0 if not an encoder)."""
    if not is_transformer_encoder(encoder) or not encoder.built:
        return 0
    leaves = [sub for sub in encoder._flatten_layers(include_self=False) if not list(sub._flatten_layers(include_self=False))]
    dense_macs = sum(_dense_macs(sub) for sub in leaves)
    lengths = output_positions_per_call(encoder) or [1]  # tokens of each call of the encoder
    attention_macs = sum(_attention_product_macs(encoder, length) for length in lengths)
    return 2 * (dense_macs * sum(lengths) + attention_macs)
