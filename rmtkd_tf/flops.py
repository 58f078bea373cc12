"""Parameter and FLOP counts of the layers RMT-KD touches."""

from __future__ import annotations

import numpy as np

from rmtkd_tf.model_walk import iter_graph_layers, layer_kind, output_positions_per_call  # noqa: F401  (re-exported)


def _output_positions(layer):
    """Positions per sample summed over every call of `layer` (1 for a Dense on vectors)."""
    return max(sum(output_positions_per_call(layer)), 1)


def layer_flops(layer):
    """Multiply-add FLOPs (2 per MAC) of one Dense/Conv2D/factorized layer for one input sample."""
    kind = layer_kind(layer)
    if kind is None:
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
    else:
        kernel_shape = tuple(layer.kernel.shape)
        macs = int(np.prod(kernel_shape))
        if kind == "conv2d":
            macs //= max(getattr(layer, "groups", 1), 1)
    return 2 * macs * positions


def model_flops(model):
    """FLOPs per sample of the model's Dense and Conv2D layers and its transformer encoders (dense parts and
    attention products, `rmtkd_tf.transformers.encoder_flops`); activations and norms are not counted."""
    return int(sum(layer_flops(layer) for _, layer in iter_graph_layers(model)))
