"""BatchNorm statistics re-estimated on the model they normalise.

A factorized layer's output is close to the original's, not equal to it, and
every BatchNormalization after it still holds the teacher's moving mean and
variance. Re-estimating them on a few thousand training examples (forward
passes only, no gradient step) gives the student statistics of its own
activations. In the pruning literature this is "adaptive BN" (Li et al.,
EagleEye, ECCV 2020); PyTorch has it as `torch.optim.swa_utils.update_bn`.

The budgeted schedule uses it as a candidate beside "surgery alone" and
"distilled" (`CompressionConfig.recalibrate_batch_norm`): on small data the
first distillation epoch often costs more than it later wins back.

>>> import numpy as np, keras
>>> inputs = keras.Input((2,))
>>> model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(inputs))
>>> x = np.array([[1.0, 10.0], [3.0, 30.0]] * 32, dtype="float32")
>>> recalibrate_batch_norm(model, x, batch_size=64)
1
>>> keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean).round(3).tolist()
[2.0, 20.0]
"""

from __future__ import annotations

import keras

from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.rows import n_rows, take_rows


def batch_norms(model):
    """Every BatchNormalization layer of `model`, nested models included."""
    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)]


def trainable_batch_norms(model):
    """The BatchNormalization layers of `model` (nested models included) that a training pass updates.

    A frozen BatchNormalization (`trainable=False`) normalises with its moving statistics even in
    training mode (Keras 3), so it is neither updated here nor by distillation.
    """
    return [layer for layer in batch_norms(model) if layer.trainable]


def recalibrate_batch_norm(model, x, batch_size=64, max_samples=2048):
    """Re-estimate every trainable BatchNormalization's moving mean/variance as the plain average over `x`.

    Runs `model(batch, training=True)` eagerly on the first `max_samples` rows of `x` with momentum
    `i/(i+1)` on batch `i`, so each moving statistic becomes the average of the batch statistics (a
    cumulative average, as PyTorch's `update_bn`), then restores each layer's momentum. Layers that
    behave differently in training (Dropout, augmentation) do so during these passes, as they did
    when the model was trained. No weight other than the moving statistics changes.

    Args:
        model: a Keras model, changed in place.
        x: input rows (an array, or a dict of arrays for a multi-input model).
        batch_size: rows per pass.
        max_samples: at most this many rows of `x` are used.

    Returns:
        The number of BatchNormalization layers updated (0: the model has none, and nothing ran).
    """
    layers = trainable_batch_norms(model)
    if not layers:
        return 0
    count = min(n_rows(x), int(max_samples))
    if count == 0:
        raise RMTKDError("recalibrate_batch_norm needs at least one input example")
    batch_size = int(batch_size)
    momenta = [layer.momentum for layer in layers]
    try:
        for i, start in enumerate(range(0, count, batch_size)):
            for layer in layers:
                layer.momentum = i / (i + 1.0)
            model(take_rows(x, slice(start, min(start + batch_size, count))), training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)
