"""Scoring a Keras classifier example by example, for the paired comparisons of `rmtkd_tf.acceptance`.

Kept apart from `acceptance` so that the statistics stay free of TensorFlow.

>>> import numpy as np, keras
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
>>> model.set_weights([np.eye(2, dtype="float32")])  # predicts the larger coordinate
>>> per_example_correct(model, np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]), np.array([0, 0, 0])).tolist()
[True, False, True]
"""

from __future__ import annotations

import numpy as np

from rmtkd_tf.errors import RMTKDError


def per_example_correct(model, x, y, batch_size: int = 256) -> np.ndarray:
    """One bool per example: whether `model`'s top-1 class equals the label `y`.

    `x` is the model input (an array, or a dict of arrays for multi-input models such as BERT), `y`
    int class indices of shape `(n,)` or `(n, 1)`. The outputs may be logits or probabilities (only
    their argmax is used). Feed the same `x, y` to teacher and student for a paired comparison.
    """
    labels = np.asarray(y).reshape(-1)
    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    if n != len(labels):
        raise RMTKDError(f"inputs have {n} rows but there are {len(labels)} labels")
    if n == 0:
        return np.zeros(0, dtype=bool)
    from rmtkd_tf.distribute import local_predict, predict_locally

    # Across workers, Keras would shard x: every worker scores every example itself (same weights, same result).
    outputs = local_predict(model, x, batch_size) if predict_locally(model) else model.predict(x, batch_size=batch_size, verbose=0)
    if isinstance(outputs, (list, tuple, dict)):
        raise RMTKDError("per-example accuracy needs a model with a single output of class scores")
    outputs = np.asarray(outputs)
    if outputs.ndim != 2 or outputs.shape[0] != n:
        raise RMTKDError(f"expected class scores of shape ({n}, classes), got {outputs.shape}")
    return np.argmax(outputs, axis=-1) == labels
