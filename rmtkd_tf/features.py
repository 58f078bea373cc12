"""Intermediate-feature distillation: match the student's factorized layers to the teacher's.

Logit distillation tells a student only what the teacher concludes. A factorized
layer has a direct target as well: the output of the layer it replaced, which
has the same shape in the teacher. `FeatureTaps` records the outputs of chosen
layers (by path, in both models) during a forward pass, and `feature_loss`
turns them into

    L_feat = mean over layers of  ||s_l − t_l||² / ||t_l||²

(a relative squared error per layer, so wide and narrow layers weigh alike;
the teacher side is a constant). `SelfDistiller(..., feature_taps=taps,
feature_weight=beta)` adds `beta · L_feat` to the Hinton loss. On pretrained
transformers, with a few thousand fine-tuning texts, the extra per-layer
signal is what makes a one-shot cut recoverable (FitNets, Romero et al. 2015;
TinyBERT's hidden-state loss, Jiao et al. 2020).

The taps wrap each layer's `call` while installed (like the covariance hooks
of `rmtkd_tf.collection`), so they work inside compiled train steps; `remove()`
(or leaving the `with` block) restores the layers.

Example:
>>> import keras, numpy as np
>>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="h"), keras.layers.Dense(2)])
>>> student = keras.models.clone_model(teacher)
>>> student.set_weights(teacher.get_weights())
>>> x = np.ones((5, 4), "float32")
>>> with FeatureTaps(student, teacher, ["h"]) as taps:
...     _ = student(x), teacher(x)
...     float(feature_loss(taps))
0.0
"""

from __future__ import annotations

import keras
import tensorflow as tf

from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.model_walk import find_layer


class _Tap:
    def __init__(self, layer, store, key):
        self.layer, self.store, self.key = layer, store, key

    def install(self):
        original = self.layer.call
        store, key = self.store, self.key

        def tapped_call(*args, **kwargs):
            outputs = original(*args, **kwargs)
            store[key] = outputs
            return outputs

        self.layer.call = tapped_call

    def remove(self):
        if "call" in self.layer.__dict__:
            del self.layer.call


class FeatureTaps:
    """Records the outputs of the layers at `paths` in `student` and in `teacher` on every forward pass."""

    def __init__(self, student, teacher, paths):
        self.paths = list(paths)
        self.student_outputs, self.teacher_outputs = {}, {}
        self._taps = []
        for path in self.paths:
            try:
                student_layer, teacher_layer = find_layer(student, path), find_layer(teacher, path)
            except KeyError:
                raise RMTKDError(f"feature distillation: no layer '{path}' in both the student and the teacher") from None
            if student_layer is teacher_layer:
                raise RMTKDError(f"feature distillation: '{path}' is the same layer object in both models")
            self._taps += [_Tap(student_layer, self.student_outputs, path),
                           _Tap(teacher_layer, self.teacher_outputs, path)]

    def install(self):
        for tap in self._taps:
            tap.install()
        return self

    def remove(self):
        for tap in self._taps:
            tap.remove()
        self.student_outputs.clear()
        self.teacher_outputs.clear()

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.remove()


def feature_loss(taps):
    """Mean over the tapped layers of the relative squared error of the student's output (0 without taps)."""
    losses = []
    for path in taps.paths:
        student, teacher = taps.student_outputs.get(path), taps.teacher_outputs.get(path)
        if student is None or teacher is None:
            raise RMTKDError(f"feature distillation: layer '{path}' was not called in the forward pass")
        teacher = tf.stop_gradient(tf.cast(teacher, tf.float32))
        error = tf.reduce_sum(tf.square(tf.cast(student, tf.float32) - teacher))
        losses.append(error / (tf.reduce_sum(tf.square(teacher)) + keras.config.epsilon()))
    return tf.add_n(losses) / len(losses) if losses else tf.constant(0.0)


def factorized_paths(student, teacher):
    """Paths of the layers that are factorized in `student` and differ from `teacher`'s (the feature targets)."""
    from rmtkd_tf.collection import candidate_layers

    paths = []
    for path, layer in candidate_layers(student):
        try:
            other = find_layer(teacher, path)
        except KeyError:
            continue
        if hasattr(layer, "bottleneck") and getattr(other, "rank", None) != layer.rank:
            paths.append(path)
    return paths
