"""Stop a run the moment training produces NaN or Inf: a NaN student is never accepted nor saved.

>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
>>> ensure_finite_training(model, {"loss": 0.5}, "step 1")
>>> model.layers[0].kernel.assign(np.full((2, 2), np.nan, "float32"))  # doctest: +ELLIPSIS
<...>
>>> ensure_finite_training(model, {"loss": 0.5}, "step 1")
Traceback (most recent call last):
...
rmtkd_tf.errors.NonFiniteTrainingError: training diverged at step 1: the weights of layer 'dense...' hold NaN or Inf; ...
"""

from __future__ import annotations

import math

import numpy as np

from rmtkd_tf.errors import NonFiniteTrainingError

ADVICE = "lower --learning-rate, check the data and labels; nothing was saved from this step"


def ensure_finite_weights(model, when: str) -> None:
    """Raise `NonFiniteTrainingError` if any weight of `model` is NaN or Inf."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for weight in layer.weights:
            if not np.isfinite(np.asarray(weight)).all():
                raise NonFiniteTrainingError(
                    f"training diverged at {when}: the weights of layer '{layer.name}' hold NaN or Inf; {ADVICE}"
                )


def ensure_finite_training(model, logs, when: str) -> None:
    """Raise `NonFiniteTrainingError` if a logged loss or a weight of `model` is NaN or Inf."""
    for name, value in (logs or {}).items():
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise NonFiniteTrainingError(f"training diverged at {when}: {name} is {value}; {ADVICE}")
    ensure_finite_weights(model, when)
