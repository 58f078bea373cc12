"""FLOPs of the dense sublayers of a transformer encoder, per input sequence.

`rmtkd_tf.flops.model_flops` counts the Dense/Conv2D layers of the model
graph; an encoder is one graph layer whose dense work happens inside it: the
query/key/value and output projections of its attention and the two FFN
layers, each applied at every token. `encoder_flops` counts those (2 FLOPs per
multiply-add, factorized layers as `fan_in·k + k·units`), times the number
of token positions of the encoder's output in the model graph. Like
`model_flops`, it leaves out everything that is not a dense layer (here the
attention score and value products, softmax and layer norms).

Example:

>>> import keras, keras_hub
>>> inputs = keras.Input((10, 16))
>>> encoder = keras_hub.layers.TransformerEncoder(intermediate_dim=32, num_heads=2)
>>> _ = keras.Model(inputs, encoder(inputs))
>>> encoder_flops(encoder) == 10 * 2 * (4 * 16 * 16 + 2 * 16 * 32)
True
"""

from __future__ import annotations

import numpy as np

from rmtkd_tf.transformers.low_rank_encoder import is_transformer_encoder


def _sequence_positions(encoder):
    positions = 0
    for node in getattr(encoder, "_inbound_nodes", []):
        for tensor in node.output_tensors:
            shape = tuple(tensor.shape)
            positions += int(np.prod([s for s in shape[1:-1] if s is not None]))
    return max(positions, 1)


def _dense_macs(layer):
    if hasattr(layer, "bottleneck"):
        fan_in = int(np.prod(tuple(layer.down_kernel.shape)[:-1]))
        return fan_in * layer.rank + layer.rank * int(layer.units)
    kernel = getattr(layer, "kernel", None)
    return 0 if kernel is None else int(np.prod(tuple(kernel.shape)))


def encoder_flops(encoder):
    """FLOPs per sample of `encoder`'s dense sublayers (0 for a layer that is not a transformer encoder)."""
    if not is_transformer_encoder(encoder) or not encoder.built:
        return 0
    leaves = [sub for sub in encoder._flatten_layers(include_self=False) if not list(sub._flatten_layers(include_self=False))]
    return 2 * sum(_dense_macs(sub) for sub in leaves) * _sequence_positions(encoder)
