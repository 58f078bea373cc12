"""Padding tokens out of the covariance: the encoder's `padding_mask`, handed to its inner layers' hooks.

Inside a transformer encoder every token position is one sample of the
inner layers' pre-activations. Padding positions are not text: their
activations are whatever the model computes for `[PAD]`, and counting them
would bias the covariance towards that one vector (and inflate `n`, which sets
the Marchenko–Pastur edge). The inner `Dense` does not see the mask, but its
encoder gets `padding_mask` in the same call. `PaddingMaskStash` wraps the
encoder's `call` while hooks are installed: the mask is kept for the duration
of the call (the same trace), and `sample_weights` gives it to the inner
layers' hooks as per-token weights (1 real, 0 padding).
"""

from __future__ import annotations

import keras  # noqa: F401  (doctest namespace)
from keras.src.backend import get_keras_mask


class PaddingMaskStash:
    """Keeps the `padding_mask` of the current call of `encoder` for hooks on its sublayers.

    Shared by the hooks of all the parts of one encoder: `install`/`remove` are
    reference-counted, so the `call` is wrapped once whatever the number of
    hooks, and restored when the last one is removed.

    Example:

    >>> import numpy as np, keras_hub
    >>> encoder = keras_hub.layers.TransformerEncoder(intermediate_dim=8, num_heads=2)
    >>> _ = encoder(np.zeros((1, 3, 4), "float32"))
    >>> stash = PaddingMaskStash(encoder)
    >>> stash.install()
    >>> seen = []
    >>> dense = encoder._feedforward_intermediate_dense
    >>> original = dense.call
    >>> dense.call = lambda x: seen.append(stash.sample_weights(x)) or original(x)
    >>> _ = encoder(np.zeros((1, 3, 4), "float32"), padding_mask=np.array([[1, 1, 0]]))
    >>> del dense.call
    >>> stash.remove()
    >>> keras.ops.convert_to_numpy(seen[0]).tolist()
    [[1, 1, 0]]
    """

    def __init__(self, encoder):
        self.encoder = encoder
        self.mask = None
        self._installs = 0

    def install(self):
        self._installs += 1
        if self._installs > 1:
            return
        original_call = self.encoder.call

        def stashing_call(inputs, padding_mask=None, attention_mask=None, **kwargs):
            # As keras-hub does: an explicit padding_mask wins over a Keras mask carried by the inputs.
            self.mask = padding_mask if padding_mask is not None else get_keras_mask(inputs)
            try:
                return original_call(inputs, padding_mask=padding_mask, attention_mask=attention_mask, **kwargs)
            finally:
                self.mask = None

        self.encoder.call = stashing_call

    def remove(self):
        if self._installs == 0:
            return
        self._installs -= 1
        if self._installs == 0:
            del self.encoder.call
            self.mask = None

    def sample_weights(self, inputs):
        """The mask `(batch, seq_len)` (bool or 0/1) of the current encoder call, as per-token weights; None: no mask."""
        return self.mask
