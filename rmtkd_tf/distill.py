"""Self-distillation: train a factorized student to match its dense teacher.

After surgery (`rmtkd_tf.surgery.factorize_model`) the student starts close to
the teacher; RMT-KD then fine-tunes it with the classic Hinton loss

    L = alpha * CE(y, softmax(s)) + (1 - alpha) * T**2 * KL(softmax(t / T) || softmax(s / T))

where `s` and `t` are the student's and teacher's logits and `T` the
temperature. The `T**2` factor keeps the gradient of the soft term at the same
scale whatever `T` (its gradient shrinks as `1 / T**2`).

`distillation_loss` is the loss as a function; `SelfDistiller` is a
`keras.Model` wrapper whose `fit` trains the student against the frozen
teacher. Teacher logits are computed inside every step (never precomputed),
so data augmentation in the input pipeline stays valid.

Models that end in a softmax output probabilities rather than logits. They are
converted with `log(clip(p, epsilon, 1))`: the log-probabilities are logits up
to a per-example constant, which no softmax sees, so the temperature acts on
them exactly as on logits — *after* the log — except for probabilities that
underflowed below `epsilon` (their differences are lost). `SelfDistiller`
detects a final softmax by itself.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from rmtkd_tf.errors import RMTKDError


def distillation_loss(y_true, teacher_logits, student_logits, alpha=0.7, temperature=4.0, from_logits=True):
    """Hinton distillation loss, averaged over the batch.

    Args:
        y_true: integer labels of shape `(B,)` or `(B, 1)`, or one-hot (or soft)
            labels of shape `(B, C)`.
        teacher_logits, student_logits: `(B, C)` model outputs: logits, or
            probabilities if `from_logits=False` (see the module docstring:
            probabilities are turned into log-probabilities first, and the
            temperature acts after that log).
        alpha: weight of the hard-label cross-entropy, in `[0, 1]`.
        temperature: softmax temperature `T > 0` of the soft term.
        from_logits: whether the outputs are logits (True) or probabilities.

    Returns:
        `(total, ce, kl)` scalar tensors, with
        `total = alpha * ce + (1 - alpha) * T**2 * kl` (`kl` is reported
        without the `T**2` factor). A label outside `[0, C)` gives NaN inside a
        compiled function and a `ValueError` when called eagerly.

    Example:

    >>> import numpy as np
    >>> logits = np.array([[2.0, 0.0, -1.0]], "float32")
    >>> total, ce, kl = distillation_loss(np.array([0]), logits, logits, alpha=0.5)
    >>> round(float(kl), 6), bool(abs(float(total) - 0.5 * float(ce)) < 1e-6)
    (0.0, True)
    """
    check_hyperparameters(alpha, temperature)
    ce, kl = per_example_terms(y_true, teacher_logits, student_logits, temperature, from_logits, from_logits)
    ce = keras.ops.mean(ce)
    kl = keras.ops.mean(kl)
    total = alpha * ce + (1.0 - alpha) * temperature**2 * kl
    return total, ce, kl


def check_hyperparameters(alpha, temperature):
    """Raise `ValueError` unless `0 <= alpha <= 1` and `temperature > 0` (both finite numbers)."""
    try:
        alpha, temperature = float(alpha), float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"alpha and temperature must be numbers, got alpha={alpha!r}, temperature={temperature!r}")
    if not (0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be in [0, 1] (weight of the hard-label loss), got {alpha}")
    if not (math.isfinite(temperature) and temperature > 0.0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")


def per_example_terms(y_true, teacher_outputs, student_outputs, temperature, teacher_from_logits, student_from_logits):
    """Per-example `(ce, kl)` tensors of shape `outputs.shape[:-1]` (see `distillation_loss`)."""
    teacher_logits = tf.stop_gradient(_as_logits(teacher_outputs, teacher_from_logits))
    student_logits = _as_logits(student_outputs, student_from_logits)
    _check_output_shapes(teacher_logits, student_logits)
    student_logits = tf.cast(student_logits, teacher_logits.dtype)
    num_classes = student_logits.shape[-1]

    log_probs = tf.nn.log_softmax(student_logits, axis=-1)
    targets = _label_distribution(y_true, student_logits, num_classes)
    ce = -tf.reduce_sum(targets * log_probs, axis=-1)

    teacher_log_soft = tf.nn.log_softmax(teacher_logits / temperature, axis=-1)
    student_log_soft = tf.nn.log_softmax(student_logits / temperature, axis=-1)
    kl = tf.reduce_sum(tf.exp(teacher_log_soft) * (teacher_log_soft - student_log_soft), axis=-1)
    return ce, kl


def _as_logits(outputs, from_logits):
    outputs = tf.convert_to_tensor(outputs)
    if not outputs.dtype.is_floating:
        raise ValueError(f"model outputs must be floating point, got {outputs.dtype.name}")
    # float16/bfloat16 outputs (mixed precision) would lose the small soft-target differences.
    if outputs.dtype not in (tf.float32, tf.float64):
        outputs = tf.cast(outputs, tf.float32)
    if from_logits:
        return outputs
    epsilon = keras.config.epsilon()
    return tf.math.log(tf.clip_by_value(outputs, epsilon, 1.0))


def _check_output_shapes(teacher_logits, student_logits):
    if teacher_logits.shape.rank is None or student_logits.shape.rank is None:
        return
    if teacher_logits.shape.rank < 2:
        raise ValueError(
            f"model outputs must have shape (batch, classes), got {tuple(teacher_logits.shape)}"
        )
    if not teacher_logits.shape[1:].is_compatible_with(student_logits.shape[1:]):
        raise ValueError(
            f"teacher outputs {tuple(teacher_logits.shape)} and student outputs "
            f"{tuple(student_logits.shape)} have different shapes"
        )
    num_classes = student_logits.shape[-1]
    if num_classes is not None and num_classes < 2:
        raise ValueError(
            f"distillation needs softmax outputs over at least 2 classes, got {num_classes} output unit(s)"
        )


def _label_distribution(y_true, logits, num_classes):
    """Labels as a `(..., C)` float distribution; out-of-range integer labels become NaN rows."""
    y_true = tf.convert_to_tensor(y_true)
    logits_rank = logits.shape.rank
    label_rank = y_true.shape.rank
    if label_rank == logits_rank and y_true.shape[-1] == 1:
        y_true = tf.squeeze(y_true, axis=-1)
        label_rank -= 1
    if label_rank == logits_rank:
        if y_true.shape[-1] is not None and num_classes is not None and y_true.shape[-1] != num_classes:
            raise ValueError(
                f"one-hot labels have {y_true.shape[-1]} classes but the model outputs {num_classes}"
            )
        return tf.cast(y_true, logits.dtype)
    if label_rank != logits_rank - 1:
        raise ValueError(
            f"labels of shape {tuple(y_true.shape)} do not match outputs of shape {tuple(logits.shape)}: "
            "give integer labels of shape (batch,) or one-hot labels of shape (batch, classes)"
        )
    if y_true.dtype.is_floating:
        # Labels read from float arrays: they must still be whole numbers.
        labels = tf.cast(tf.round(y_true), tf.int64)
        whole = tf.equal(tf.cast(labels, y_true.dtype), y_true)
    else:
        labels = tf.cast(y_true, tf.int64)
        whole = tf.ones_like(labels, tf.bool)
    depth = tf.shape(logits, out_type=tf.int64)[-1]
    valid = whole & (labels >= 0) & (labels < depth)
    if tf.executing_eagerly() and not bool(tf.reduce_all(valid)):
        bad = y_true.numpy()[~valid.numpy()]
        raise ValueError(
            f"labels must be integers in [0, {int(depth)}), got {np.unique(bad)[:5].tolist()}"
        )
    one_hot = tf.one_hot(labels, tf.cast(depth, tf.int32), dtype=logits.dtype)
    # A bad label inside a compiled step cannot raise (not under XLA either): make it loud as NaN.
    nan = tf.constant(float("nan"), logits.dtype)
    return tf.where(valid[..., None], one_hot, nan)


def _final_layer(model):
    """The layer producing `model`'s single output, descending into nested models; None if unknown."""
    for _ in range(64):  # nesting depth guard
        if isinstance(model, keras.Sequential):
            layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
            if not layers:
                return None
            layer = layers[-1]
        else:
            try:
                outputs = model.outputs
            except (AttributeError, ValueError):
                return None
            if not outputs or len(outputs) != 1:
                return None
            history = getattr(outputs[0], "_keras_history", None)
            if history is None:
                return None
            layer = history[0]
        if isinstance(layer, keras.Model):
            model = layer
            continue
        return layer
    return None


def final_activation(model):
    """Name of the activation at the end of `model` (`"softmax"`, `"sigmoid"`, ...) or None.

    Recognises `Dense(..., activation=...)`-style layers (any layer with an
    `activation` attribute, `Activation` included) and `Softmax` layers.

    Example:

    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    >>> final_activation(m)
    'softmax'
    """
    layer = _final_layer(model)
    if layer is None:
        return None
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    name = getattr(activation, "__name__", None)
    return None if name in (None, "linear") else name


def outputs_are_logits(model):
    """False if `model` ends in a softmax (outputs are probabilities), True otherwise.

    Raises `ValueError` for a final sigmoid: per-unit probabilities are not a
    softmax distribution, and reading them as logits would be silently wrong.
    """
    name = final_activation(model)
    if name == "sigmoid":
        raise ValueError(
            f"model '{model.name}' ends in a sigmoid; SelfDistiller distils softmax classifiers "
            "(remove the sigmoid or use logits)"
        )
    return name != "softmax"


class SelfDistiller(keras.Model):
    """Trains `student` to match the frozen `teacher` with `distillation_loss`.

    `fit` reports `loss` (the distillation loss plus the student's own
    regularization losses), `ce`, `kl` (without the `T**2` factor) and
    `accuracy` (the student's), and `val_*` versions on validation data.
    `predict`/`evaluate`/`__call__` use the student. Inputs can be anything
    both models accept, dicts included (e.g. BERT `token_ids` +
    `padding_mask`); labels are integer or one-hot; sample weights scale each
    example, and a batch's loss is divided by its size, as Keras'
    `"sum_over_batch_size"` does.

    The teacher is set non-trainable and always runs with `training=False`
    (no dropout, BatchNorm moving statistics untouched). Whether outputs are
    logits or probabilities is detected per model from a final softmax
    (`student_from_logits`, `teacher_from_logits`).

    Under `tf.distribute` (create the models, the distiller and call
    `compile` inside `strategy.scope()`), each replica's loss is divided by
    the number of replicas, because the optimizer sums gradients across
    replicas: a step then equals the single-device step on the global batch.

    The distiller is a training wrapper: `save()` raises; save
    `distiller.student`. For checkpoints during `fit`, use
    `keras.callbacks.ModelCheckpoint(..., save_weights_only=True)` with a
    `.weights.h5` path and `distiller.load_weights`, or
    `EarlyStopping(restore_best_weights=True)`. Callbacks monitoring
    `val_accuracy` (or `val_ce`, `val_kl`) need an explicit `mode="max"`
    (`"min"`): Keras only infers the direction of `loss` and of metrics
    passed to `compile`.

    Args:
        student: the model being trained (e.g. from `factorize_model`).
        teacher: the reference model; frozen.
        alpha: weight of the hard-label cross-entropy, in `[0, 1]`.
        temperature: softmax temperature of the soft term, `> 0`.

    Example:

    >>> import numpy as np
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.models.clone_model(teacher)
    >>> distiller = SelfDistiller(student, teacher, alpha=0.5, temperature=2.0)
    >>> distiller.compile(optimizer="adam")
    >>> x, y = np.random.rand(16, 4).astype("float32"), np.arange(16) % 3
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'ce', 'kl', 'loss']
    """

    def __init__(self, student, teacher, alpha=0.7, temperature=4.0, feature_taps=None, feature_weight=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        check_hyperparameters(alpha, temperature)
        if not (float(feature_weight) >= 0.0):
            raise ValueError(f"feature_weight must be >= 0, got {feature_weight}")
        # Intermediate-feature distillation (rmtkd_tf.features): installed taps on both models.
        self.feature_taps = feature_taps
        self.feature_weight = float(feature_weight) if feature_taps is not None else 0.0
        for role, model in (("student", student), ("teacher", teacher)):
            if not isinstance(model, keras.layers.Layer):
                raise TypeError(f"{role} must be a Keras model, got {type(model).__name__}")
        if student is teacher:
            raise ValueError(
                "student and teacher are the same model; build the student as a copy "
                "(rmtkd_tf.surgery.factorize_model or keras.models.clone_model)"
            )
        self.student_from_logits = outputs_are_logits(student)
        self.teacher_from_logits = outputs_are_logits(teacher)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        teacher.trainable = False
        self.student = student
        self.teacher = teacher
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        if getattr(student, "built", False) and getattr(teacher, "built", False):
            self.built = True

    @property
    def from_logits(self):
        """True when both models output logits."""
        return self.student_from_logits and self.teacher_from_logits

    @property
    def metrics(self):
        own = [
            getattr(self, name, None)
            for name in ("loss_tracker", "ce_tracker", "kl_tracker", "accuracy_tracker")
        ]
        own = [m for m in own if m is not None]
        # Keep metrics passed to compile(metrics=...), but not compile's own
        # "loss" tracker: ours replaces it (same name).
        extra = [
            m for m in super().metrics if m.name != "loss" and not any(m is o for o in own)
        ]
        return own + extra

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        """Like `keras.Model.compile`, without `loss` (the distiller defines its own)."""
        if loss is not None:
            raise ValueError(
                "SelfDistiller computes its own loss (alpha * CE + (1 - alpha) * T**2 * KL); "
                "do not pass loss= to compile()"
            )
        super().compile(optimizer=optimizer, **kwargs)

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def _distillation_terms(self, x, y, sample_weight, student_outputs):
        """Per-replica batch means `(total, ce, kl)` and the per-example `(total, ce, kl)` weights."""
        if y is None:
            raise ValueError("SelfDistiller needs labels: pass (inputs, labels) to fit/evaluate")
        if isinstance(student_outputs, (list, tuple, dict)):
            raise ValueError("SelfDistiller distils single-output classifiers; the student has several outputs")
        teacher_outputs = self.teacher(x, training=False)
        ce, kl = per_example_terms(
            y,
            teacher_outputs,
            student_outputs,
            self.temperature,
            self.teacher_from_logits,
            self.student_from_logits,
        )
        if sample_weight is not None:
            weights = _broadcast_weights(sample_weight, ce)
            ce, kl = ce * weights, kl * weights
        # Divide by the number of examples (Keras' sum_over_batch_size), also when weighted.
        ce = tf.reduce_mean(ce)
        kl = tf.reduce_mean(kl)
        total = self.alpha * ce + (1.0 - self.alpha) * self.temperature**2 * kl
        if self.feature_weight > 0.0:
            from rmtkd_tf.features import feature_loss

            total = total + self.feature_weight * tf.cast(feature_loss(self.feature_taps), total.dtype)
        return total, ce, kl

    def _record_metrics(self, x, y, sample_weight, student_outputs, total, ce, kl):
        batch_size = tf.shape(tf.nest.flatten(student_outputs)[0])[0]
        self.loss_tracker.update_state(total, sample_weight=batch_size)
        self.ce_tracker.update_state(ce, sample_weight=batch_size)
        self.kl_tracker.update_state(kl, sample_weight=batch_size)
        self.accuracy_tracker.update_state(_sparse_labels(y, student_outputs), student_outputs, sample_weight)
        # Updates metrics given to compile(metrics=...) and returns every metric's result.
        logs = self.compute_metrics(x, y, student_outputs, sample_weight=sample_weight)
        from rmtkd_tf.distribute import spans_workers

        if spans_workers(tf.distribute.get_strategy()):
            # Across workers Keras averages each log over its axis 0 (keras 3.15: a scalar cannot be).
            logs = {name: tf.reshape(value, (1,)) for name, value in logs.items()}
        return logs

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.student.trainable_variables
        with tf.GradientTape() as tape:
            student_outputs = self.student(x, training=True)
            total, ce, kl = self._distillation_terms(x, y, sample_weight, student_outputs)
            regularization = self.student.losses
            if regularization:
                total = total + tf.cast(tf.add_n(regularization), total.dtype)
            # The optimizer sums gradients over replicas; each replica holds
            # 1/n of the global batch, so its batch mean is divided by n.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = total / replicas if replicas > 1 else total
            scaled = self.optimizer.scale_loss(scaled)  # identity unless LossScaleOptimizer
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return self._record_metrics(x, y, sample_weight, student_outputs, total, ce, kl)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        student_outputs = self.student(x, training=False)
        total, ce, kl = self._distillation_terms(x, y, sample_weight, student_outputs)
        regularization = self.student.losses
        if regularization:
            total = total + tf.cast(tf.add_n(regularization), total.dtype)
        return self._record_metrics(x, y, sample_weight, student_outputs, total, ce, kl)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras builds a model of a strategy on the first batch averaged over replicas, a reduce that fails
        # across workers (MultiWorkerMirroredStrategy): build on this worker's first replica batch instead.
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and data_batch is None and strategy is not None:
            from rmtkd_tf.distribute import spans_workers

            if spans_workers(strategy):
                for _, _, batches in iterator:
                    data_batch = tf.nest.map_structure(
                        lambda v: strategy.experimental_local_results(v)[0]
                        if isinstance(v, tf.distribute.DistributedValues) else v, next(batches))
                    break
                iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def save(self, *args, **kwargs):
        raise RMTKDError(
            "SelfDistiller is a training wrapper and is not saved; save the student instead: "
            "distiller.student.save('student.keras') (for ModelCheckpoint use save_weights_only=True)"
        )


def _broadcast_weights(sample_weight, per_example):
    weights = tf.cast(tf.convert_to_tensor(sample_weight), per_example.dtype)
    rank = per_example.shape.rank
    if weights.shape.rank is not None and rank is not None:
        if weights.shape.rank == rank + 1 and weights.shape[-1] == 1:
            weights = tf.squeeze(weights, axis=-1)
        while weights.shape.rank < rank:
            weights = weights[..., None]
    return tf.broadcast_to(weights, tf.shape(per_example))


def _sparse_labels(y, outputs):
    """Integer labels for the accuracy metric (argmax of one-hot labels)."""
    y = tf.convert_to_tensor(y)
    outputs_rank = tf.nest.flatten(outputs)[0].shape.rank
    if y.shape.rank == outputs_rank and y.shape[-1] != 1:
        return tf.argmax(y, axis=-1)
    return y
