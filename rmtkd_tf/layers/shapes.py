"""Reshape targets and matrix products that convert to constant-shape TFLite graphs.

Keras' TensorFlow `ops.matmul` on a `(batch, tokens, d)` tensor reads the input's shape at run time
(SHAPE, GATHER, REDUCE_PROD, PACK, CONCATENATION around each product in the converted graph), because
the exported batch axis is unknown. In a factorized MiniLM-L6 that was ~400 small ops per inference,
outside the XNNPACK delegate. These helpers reshape to constant shapes instead (`-1` for the one unknown
axis), so the products become plain `FULLY_CONNECTED` ops between constant reshapes.

>>> import numpy as np
>>> x = np.ones((2, 3, 4), "float32")
>>> tuple(matmul_last_axis(x, np.ones((4, 5), "float32")).shape)
(2, 3, 5)
>>> leading_shape(x, 1)
(2, 3)
"""

from keras import ops


def leading_shape(tensor, trailing):
    """The shape of `tensor` without its last `trailing` axes, as a reshape target.

    Static sizes where they are known and `-1` for a single unknown one (the batch axis of an exported
    model); only with two or more unknown sizes is the shape read at run time.
    """
    static = tuple(tensor.shape)[: len(tensor.shape) - trailing]
    if sum(size is None for size in static) <= 1:
        return tuple(-1 if size is None else int(size) for size in static)
    dynamic = ops.shape(tensor)
    return tuple(dynamic[: len(static)])


def matmul_last_axis(inputs, kernel):
    """`inputs @ kernel` over the last axis of `inputs` (any rank >= 2), as one 2-D product."""
    if len(inputs.shape) <= 2:
        return ops.matmul(inputs, kernel)
    leading = leading_shape(inputs, 1)
    flat = ops.reshape(inputs, (-1, int(inputs.shape[-1])))
    return ops.reshape(ops.matmul(flat, kernel), leading + (int(kernel.shape[-1]),))
