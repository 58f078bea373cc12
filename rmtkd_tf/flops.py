"""Parameter and FLOP counts of the layers RMT-KD touches."""

from __future__ import annotations

import keras
import numpy as np

from rmtkd_tf.model_walk import (  # noqa: F401  (output_positions_per_call re-exported)
    CONV_KINDS,
    iter_graph_layers,
    layer_kind,
    output_positions_per_call,
)

_DEPTHWISE_TYPES = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


def _output_positions(layer):
    """Positions per sample summed over every call of `layer` (1 for a Dense on vectors)."""
    return max(sum(output_positions_per_call(layer)), 1)


def layer_flops(layer):
    """Multiply-add FLOPs (2 per MAC) of one Dense/Conv/factorized (or depthwise) layer for one input sample.

    A depthwise convolution counts its `kh·kw·channels·depth_multiplier` MACs per output position (it
    is not factorized, but it is part of what a MobileNet computes); a SeparableConv2D its depthwise
    and pointwise parts.

    >>> import keras
    >>> inputs = keras.Input((8, 8, 4))
    >>> x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Conv2D(6, 1, name="pw")(x))
    >>> layer_flops(model.get_layer("dw")), layer_flops(model.get_layer("pw"))  # 2 * 64 * (3*3*4), 2 * 64 * 4*6
    (4608, 3072)
    """
    kind = layer_kind(layer)
    if kind is None:
        if isinstance(layer, _DEPTHWISE_TYPES) and layer.built:
            return 2 * int(np.prod(tuple(layer.kernel.shape))) * _output_positions(layer)
        from rmtkd_tf.model_walk import composite_parts

        if composite_parts(layer) is not None:  # a transformer encoder: count its dense parts
            from rmtkd_tf.transformers.flops import encoder_flops

            return int(encoder_flops(layer))
        return 0
    positions = _output_positions(layer)
    if hasattr(layer, "bottleneck"):
        fan_in = int(np.prod(tuple(layer.down_kernel.shape)[:-1]))
        units = int(getattr(layer, "units", None) or layer.filters)
        macs = fan_in * layer.rank + layer.rank * units
        if hasattr(layer, "depthwise_kernel"):
            macs += int(np.prod(tuple(layer.depthwise_kernel.shape)))
    elif kind == "separable_conv2d":
        macs = int(np.prod(tuple(layer.depthwise_kernel.shape))) + int(np.prod(tuple(layer.pointwise_kernel.shape)))
    else:
        kernel_shape = tuple(layer.kernel.shape)
        macs = int(np.prod(kernel_shape))
        if kind in CONV_KINDS:
            macs //= max(getattr(layer, "groups", 1), 1)
    return 2 * macs * positions


def model_flops(model):
    """FLOPs per sample of the model's Dense, Conv (depthwise included) layers and its transformer encoders (dense
    parts and attention products, `rmtkd_tf.transformers.encoder_flops`); activations and norms are not counted."""
    return int(sum(layer_flops(layer) for _, layer in iter_graph_layers(model)))
