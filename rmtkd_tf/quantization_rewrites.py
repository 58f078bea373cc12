"""Export-time rewrites of Keras layers into forms that TFLite's quantizers (16x8 and int8) handle.

TFLite's int16-activation quantizer (`EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`) cannot
quantize three things a keras-hub BERT contains, and quantizes a fourth badly. `rmtkd_tf.export` traces
int8 and int8-mixed conversions under the same rewrites: the masked-softmax fill matters as much there
(an int8 step of ~4e6 for a calibrated range of ~1e9: every real score rounds to one value), and in full
int8 Keras' layer norm leaves a float NEG that the rewrite removes (int8-mixed keeps Keras' layer norm,
`layer_norm=False`, whose squared difference it keeps in float; full int8 keeps the plain gather,
`int8_embeddings=False`, so the graph stays integer):

- `keras.layers.Embedding` looks its ids up through `ops.take`, which wraps negative ids
  (`where(ids < 0, ids + n, ids)`): integer ADD / SELECT_V2 ops the quantizer tries to give an
  activation range and stops ("Max and min for dynamic tensors should be recorded during calibration").
  Rewritten as a plain `tf.gather` (the same rows for every valid id, 0 <= id < n). The quantizer would
  store a gathered table in int16 (an embedding table is most of a BERT's weights, so the file would be
  as large as fp16); with `int8_embeddings=True` the table is stored int8 with one scale per row
  (`max |row| / 127`, like the int8 weights of every other layer) and the looked-up rows are scaled back
  (GATHER int8, CAST, MUL): not the same function in float, but the weights' own int8 rounding.
- `keras.layers.LayerNormalization` lowers to SQUARED_DIFFERENCE and NEG, which have no 16x8 kernels.
  Rewritten as `c = x - mean(x)`, `var = mean(c * c)`, `c * (rsqrt(var + eps) * gamma) + beta`
  (MEAN, SUB, MUL, ADD, RSQRT all have 16x8 kernels).
- `keras.layers.Softmax` with a mask writes -1e9 at masked positions: calibration then records a
  range of ~1e9 for the softmax input, and its quantization step (~3e4 in int16) wipes out every real
  attention score. Rewritten with `min(x) - 30` at masked positions instead (a weight of e^-30 relative
  to the smallest real score, below float32 resolution of the result), keeping the range of real scores.

Keras' own `MultiHeadAttention` (not keras-hub's, which calls its `Softmax` layer itself) computes masked
attention with the fused `ops.dot_product_attention`, which fills masked scores with the float32 minimum;
under the rewrite it takes its explicit-scores path instead (einsum, its `Softmax` sublayer, einsum), so the
softmax rewrite applies there too (a query with every key masked then gets zero attention, as on Keras' own
explicit path, where the fused kernel averages all values; encoded texts always keep `[CLS]` and `[SEP]`).

Each rewrite computes the same function as the Keras layer in float (tested to float32 rounding; the one
exception is the fully masked attention row above). They
patch the `call` of the model's own layer instances only while the context is open (the model is
traced for conversion inside it) and restore them on exit; nothing is saved with the model.

>>> import keras, numpy as np
>>> layer = keras.layers.LayerNormalization()
>>> model = keras.Sequential([keras.Input((4,)), layer])
>>> x = np.array([[1.0, 2.0, 4.0, 8.0]], "float32")
>>> with quantization_friendly(model) as rewritten:
...     inside = keras.ops.convert_to_numpy(model(x))
>>> rewritten, bool(np.allclose(inside, keras.ops.convert_to_numpy(model(x)), atol=1e-6))
(['LayerNormalization'], True)
"""

from __future__ import annotations

import contextlib
import types

import keras

# Masked softmax positions get this far below the row's smallest score (e^-30 ~ 1e-13).
MASKED_SCORE_MARGIN = 30.0


def _layer_norm_call(self, inputs):
    ops = keras.ops
    low_precision = keras.backend.standardize_dtype(inputs.dtype) in ("float16", "bfloat16")
    x = ops.cast(inputs, "float32") if low_precision else inputs
    axis = self.axis
    mean = ops.mean(x, axis=axis, keepdims=True)
    centred = ops.subtract(x, mean)
    variance = ops.mean(ops.multiply(centred, centred), axis=axis, keepdims=True)
    inverse = ops.rsqrt(ops.add(variance, self.epsilon))
    shape = _broadcast_shape(x, axis)
    if self.scale:
        inverse = ops.multiply(inverse, ops.reshape(ops.cast(self.gamma, x.dtype), shape))
    outputs = ops.multiply(centred, inverse)
    if self.center:
        outputs = ops.add(outputs, ops.reshape(ops.cast(self.beta, x.dtype), shape))
    return ops.cast(outputs, self.compute_dtype)


def _broadcast_shape(x, axis):
    axes = [axis] if isinstance(axis, int) else list(axis)
    rank = len(x.shape)
    axes = [a % rank for a in axes]
    return [x.shape[i] if i in axes else 1 for i in range(rank)]


def _embedding_call(self, inputs, *args, **kwargs):
    if args or kwargs.get("reverse"):  # ReversibleEmbedding's output projection: unchanged
        return type(self).call(self, inputs, *args, **kwargs)
    import tensorflow as tf

    ids = inputs if inputs.dtype in (tf.int32, tf.int64) else tf.cast(inputs, tf.int32)
    return keras.ops.cast(tf.gather(self.embeddings, ids), self.compute_dtype)


def _int8_embedding_call(layer):
    """A `call` for `layer` that looks its rows up in an int8 copy of the table (scale per row)."""
    import numpy as np
    import tensorflow as tf

    table = np.asarray(keras.ops.convert_to_numpy(layer.embeddings), dtype=np.float32)
    peak = np.abs(table).max(axis=1, keepdims=True)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    quantized = np.clip(np.round(table / scale), -127, 127).astype(np.int8)

    def call(self, inputs, *args, **kwargs):
        if args or kwargs.get("reverse"):
            return type(self).call(self, inputs, *args, **kwargs)
        ids = inputs if inputs.dtype in (tf.int32, tf.int64) else tf.cast(inputs, tf.int32)
        rows = tf.cast(tf.gather(tf.constant(quantized), ids), tf.float32) * tf.gather(tf.constant(scale), ids)
        return keras.ops.cast(rows, self.compute_dtype)

    return call


def _softmax_call(self, inputs, mask=None):
    axis = self.axis
    if isinstance(axis, (tuple, list)) and len(axis) == 1:
        axis = axis[0]
    if mask is None or not isinstance(axis, int):
        return type(self).call(self, inputs, mask=mask)
    ops = keras.ops
    if keras.backend.standardize_dtype(mask.dtype) != "bool":
        mask = ops.greater(mask, ops.cast(0.5, mask.dtype))
    floor = ops.subtract(ops.min(inputs, axis=axis, keepdims=True), MASKED_SCORE_MARGIN)
    outputs = keras.activations.softmax(ops.where(mask, inputs, floor), axis=axis)
    return ops.where(mask, outputs, ops.cast(0.0, outputs.dtype))


def _attention_scores_call(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, **kwargs):
    """Keras' explicit-scores attention (einsum, its `Softmax` sublayer, einsum) instead of `ops.dot_product_attention`.

    The fused op masks with the float32 minimum (a calibrated range of ~3e38); the explicit path goes
    through the layer's `Softmax`, which `_softmax_call` rewrites. Same function in float, except (Keras'
    own difference between its two paths) for a query whose every key is masked: the fused kernel
    averages all the values, the explicit path gives zero attention.
    """
    outputs, scores = type(self)._compute_attention(self, query, key, value, attention_mask, training, True,
                                                    **kwargs)
    return outputs, (scores if return_attention_scores else None)


def _rewrite_for(layer, int8_embeddings, layer_norm=True):
    """`(method name, replacement)` for `layer`, or None when it is left as it is."""
    if isinstance(layer, keras.layers.MultiHeadAttention):
        keras_own = type(layer)._compute_attention is keras.layers.MultiHeadAttention._compute_attention
        if not keras_own or getattr(layer, "_flash_attention", None):
            return None
        return "_compute_attention", _attention_scores_call
    call = _call_rewrite_for(layer, int8_embeddings, layer_norm)
    return None if call is None else ("call", call)


def _call_rewrite_for(layer, int8_embeddings, layer_norm):
    """The replacement `call` for `layer`, or None when it is left as it is."""
    if isinstance(layer, keras.layers.LayerNormalization):
        if not layer_norm or getattr(layer, "rms_scaling", False):
            return None
        return _layer_norm_call
    if isinstance(layer, keras.layers.Embedding):
        if getattr(layer, "quantization_mode", None) or getattr(layer, "mask_zero", False):
            return None
        return _int8_embedding_call(layer) if int8_embeddings else _embedding_call
    if isinstance(layer, keras.layers.Softmax):
        return _softmax_call
    return None


@contextlib.contextmanager
def quantization_friendly(model, int8_embeddings=False, layer_norm=True):
    """Within the context, `model`'s LayerNormalization / Embedding / Softmax layers compute in quantizable ops.

    Args:
        model: a built Keras model; its layers are patched in place until the context closes.
        int8_embeddings: look embeddings up in an int8 copy of their tables (see the module doc).
        layer_norm: rewrite LayerNormalization too (False keeps Keras' own, whose variance is one
            SQUARED_DIFFERENCE op that int8-mixed keeps in float).

    Yields the class names of the layers rewritten (one entry per layer instance, model order).
    """
    patched = []
    try:
        for layer in model._flatten_layers(include_self=False, recursive=True):
            rewrite = _rewrite_for(layer, int8_embeddings, layer_norm)
            if rewrite is None or rewrite[0] in layer.__dict__:
                continue
            name, method = rewrite
            object.__setattr__(layer, name, types.MethodType(method, layer))
            patched.append((layer, name))
        yield [type(layer).__name__ for layer, _ in patched]
    finally:
        for layer, name in patched:
            layer.__dict__.pop(name, None)
