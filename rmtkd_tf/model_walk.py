"""Naming and walking the layers of (possibly nested) Keras models.

A layer is identified by its *path*: the names of the models that contain it
and its own name, joined by "/" (e.g. `"encoder/dense_1"`). Paths are stable
across `keras.models.clone_model`, which keeps names, so statistics collected
on a teacher can be matched to the layers of its clone.
"""

from __future__ import annotations

import keras

FACTORIZABLE_TYPES = ("Dense", "Conv2D", "LowRankDense", "LowRankConv2D")


def is_graph_model(model):
    """True for Sequential and Functional models (including subclasses of Functional)."""
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def iter_graph_layers(model, prefix=""):
    """Yield `(path, layer)` for every layer of a Sequential/Functional model.

    Nested Sequential/Functional models are descended into (the nested model
    itself is not yielded). Other layers, including ones that own sublayers,
    are yielded as leaves.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = f"{prefix}{layer.name}"
        if is_graph_model(layer):
            yield from iter_graph_layers(layer, prefix=path + "/")
        else:
            yield path, layer


def output_layers(model):
    """The layers that produce the model's outputs (the classifier head, usually)."""
    layers = []
    for tensor in model.outputs:
        history = getattr(tensor, "_keras_history", None)
        if history is not None:
            layers.append(history[0])
    return layers


def layer_kind(layer):
    """`"dense"`, `"conv2d"` or None for layers RMT-KD does not factorize."""
    from rmtkd_tf.layers import LowRankConv2D, LowRankDense

    if isinstance(layer, (keras.layers.Dense, LowRankDense)):
        return "dense"
    if isinstance(layer, (keras.layers.Conv2D, LowRankConv2D)):
        return "conv2d"
    return None


def find_layer(model, path):
    """The layer at `path` in `model` (see module docstring)."""
    for candidate_path, layer in iter_graph_layers(model):
        if candidate_path == path:
            return layer
    raise KeyError(f"no layer at path {path!r}")
