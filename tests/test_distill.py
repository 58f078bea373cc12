"""Tests for rmtkd_tf.distill: the distillation loss and the SelfDistiller trainer."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from rmtkd_tf.distill import SelfDistiller, distillation_loss, final_activation, outputs_are_logits
from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.layers import LowRankDense

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- NumPy reference


def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_distillation_loss(y, teacher_logits, student_logits, alpha, temperature, sample_weight=None):
    teacher_logits = np.asarray(teacher_logits, np.float64)
    student_logits = np.asarray(student_logits, np.float64)
    ce = -np_log_softmax(student_logits)[np.arange(len(y)), y]
    log_pt = np_log_softmax(teacher_logits / temperature)
    log_ps = np_log_softmax(student_logits / temperature)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=-1)
    if sample_weight is not None:
        ce, kl = ce * sample_weight, kl * sample_weight
    ce, kl = ce.mean(), kl.mean()
    return alpha * ce + (1 - alpha) * temperature**2 * kl, ce, kl


def np_softmax(z):
    return np.exp(np_log_softmax(z))


def random_batch(seed=0, batch=6, classes=4, scale=3.0):
    rng = np.random.default_rng(seed)
    teacher = (scale * rng.normal(size=(batch, classes))).astype("float32")
    student = (scale * rng.normal(size=(batch, classes))).astype("float32")
    labels = rng.integers(0, classes, size=batch)
    return labels, teacher, student


def as_floats(values):
    return [float(v) for v in values]


HYPERPARAMETERS = [(0.7, 4.0), (0.0, 1.0), (1.0, 2.0), (0.3, 0.5), (0.5, 10.0)]


# ---------------------------------------------------------------- distillation_loss


@pytest.mark.parametrize("alpha,temperature", HYPERPARAMETERS)
def test_loss_matches_numpy_for_logits(alpha, temperature):
    labels, teacher, student = random_batch(seed=1)
    got = as_floats(distillation_loss(labels, teacher, student, alpha=alpha, temperature=temperature))
    expected = np_distillation_loss(labels, teacher, student, alpha, temperature)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The components are not trivially zero on this batch, so the check has teeth.
    assert expected[1] > 0.1 and expected[2] > 1e-3


@pytest.mark.parametrize("alpha,temperature", HYPERPARAMETERS)
def test_loss_with_probabilities_matches_loss_on_logits(alpha, temperature):
    # Log-probabilities are logits shifted by a per-example constant, so the
    # temperature (applied after the log) gives the same loss as on logits.
    labels, teacher, student = random_batch(seed=2)
    got = as_floats(
        distillation_loss(
            labels,
            np_softmax(teacher).astype("float32"),
            np_softmax(student).astype("float32"),
            alpha=alpha,
            temperature=temperature,
            from_logits=False,
        )
    )
    expected = np_distillation_loss(labels, teacher, student, alpha, temperature)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_probabilities_below_epsilon_are_clipped_before_the_log():
    labels = np.array([0, 1])
    teacher_logits = np.array([[0.0, -40.0, 2.0], [1.0, 0.0, -60.0]])
    student_logits = np.array([[1.0, 0.5, -45.0], [-50.0, 2.0, 0.0]])
    teacher_probs, student_probs = np_softmax(teacher_logits), np_softmax(student_logits)
    got = as_floats(distillation_loss(labels, teacher_probs, student_probs, 0.4, 3.0, from_logits=False))
    epsilon = keras.config.epsilon()
    expected = np_distillation_loss(
        labels,
        np.log(np.clip(teacher_probs, epsilon, 1.0)),
        np.log(np.clip(student_probs, epsilon, 1.0)),
        0.4,
        3.0,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # ...and therefore differs from the loss on the unclipped logits.
    assert abs(got[0] - np_distillation_loss(labels, teacher_logits, student_logits, 0.4, 3.0)[0]) > 1e-3


def test_one_hot_and_column_labels_match_sparse_labels():
    labels, teacher, student = random_batch(seed=3)
    sparse = as_floats(distillation_loss(labels, teacher, student))
    one_hot = as_floats(distillation_loss(np.eye(4, dtype="float32")[labels], teacher, student))
    column = as_floats(distillation_loss(labels[:, None], teacher, student))
    float_labels = as_floats(distillation_loss(labels.astype("float32"), teacher, student))
    np.testing.assert_allclose(one_hot, sparse, rtol=1e-6)
    np.testing.assert_allclose(column, sparse, rtol=1e-6)
    np.testing.assert_allclose(float_labels, sparse, rtol=1e-6)


def test_identical_models_have_zero_kl():
    labels, teacher, _ = random_batch(seed=4)
    total, ce, kl = distillation_loss(labels, teacher, teacher, alpha=0.25)
    assert abs(float(kl)) < 1e-6
    np.testing.assert_allclose(float(total), 0.25 * float(ce), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(alpha=1.5), "alpha"),
        (dict(alpha=-0.1), "alpha"),
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=float("inf")), "temperature"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, message):
    labels, teacher, student = random_batch()
    with pytest.raises(ValueError, match=message):
        distillation_loss(labels, teacher, student, **kwargs)


@pytest.mark.parametrize("bad_labels", [np.array([0, 1, 2, 4, 0, 1]), np.array([0, -1, 2, 3, 0, 1]), np.full(6, 1.5)])
def test_bad_labels_raise_eagerly(bad_labels):
    _, teacher, student = random_batch()
    with pytest.raises(ValueError, match="labels must be integers in \\[0, 4\\)"):
        distillation_loss(bad_labels, teacher, student)


def test_bad_labels_give_nan_inside_a_compiled_function():
    _, teacher, student = random_batch()
    compiled = tf.function(lambda y: distillation_loss(y, teacher, student)[0])
    assert np.isnan(float(compiled(tf.constant([0, 1, 2, 7, 0, 1]))))
    assert np.isfinite(float(compiled(tf.constant([0, 1, 2, 3, 0, 1]))))


def test_shape_mismatches_raise():
    labels, teacher, student = random_batch()
    with pytest.raises(ValueError, match="different shapes"):
        distillation_loss(labels, teacher, student[:, :3])
    with pytest.raises(ValueError, match="one-hot labels have 3 classes"):
        distillation_loss(np.eye(3)[labels % 3], teacher, student)
    with pytest.raises(ValueError, match="at least 2 classes"):
        distillation_loss(np.zeros(6, int), teacher[:, :1], student[:, :1])
    with pytest.raises(ValueError, match="do not match outputs"):
        distillation_loss(np.zeros((6, 2, 2), int), teacher, student)


# ---------------------------------------------------------------- models


def classifier(activation=None, inputs=5, hidden=16, classes=3, seed=0, name=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(classes, activation=activation, name="out"),
        ],
        name=name,
    )


def easy_task(n=256, inputs=5, classes=3, seed=0):
    """Linearly separable classes: labels are the argmax of a fixed linear map."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs)).astype("float32")
    projection = rng.normal(size=(inputs, classes)).astype("float32")
    return x, np.argmax(x @ projection, axis=1), projection


def perfect_teacher(projection):
    inputs, classes = projection.shape
    teacher = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(classes, name="out")])
    teacher.get_layer("out").set_weights([4.0 * projection, np.zeros(classes, "float32")])
    return teacher


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def test_final_softmax_is_detected():
    assert final_activation(classifier("softmax")) == "softmax"
    assert not outputs_are_logits(classifier("softmax"))
    assert outputs_are_logits(classifier(None))

    softmax_layer = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Softmax()])
    activation_layer = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Activation("softmax")])
    inputs = keras.Input((5,))
    nested = keras.Model(inputs, classifier("softmax")(inputs))
    functional_logits = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Softmax()(inputs)))
    assert not outputs_are_logits(softmax_layer)
    assert not outputs_are_logits(activation_layer)
    assert not outputs_are_logits(nested)
    assert outputs_are_logits(functional_logits)  # the softmax is not the last layer

    distiller = SelfDistiller(classifier("softmax"), classifier(None))
    assert not distiller.student_from_logits and distiller.teacher_from_logits
    assert not distiller.from_logits
    with pytest.raises(ValueError, match="sigmoid"):
        SelfDistiller(classifier("sigmoid"), classifier(None))


def test_constructor_validates_arguments():
    teacher = classifier()
    with pytest.raises(ValueError, match="same model"):
        SelfDistiller(teacher, teacher)
    with pytest.raises(ValueError, match="alpha"):
        SelfDistiller(classifier(), teacher, alpha=2.0)
    with pytest.raises(ValueError, match="temperature"):
        SelfDistiller(classifier(), teacher, temperature=-1.0)
    with pytest.raises(TypeError, match="Keras model"):
        SelfDistiller(lambda x: x, teacher)
    distiller = SelfDistiller(classifier(), teacher)
    with pytest.raises(ValueError, match="own loss"):
        distiller.compile(optimizer="sgd", loss="mse")


@pytest.mark.parametrize("activation", [None, "softmax"])
def test_evaluate_matches_distillation_loss(activation):
    x, y, _ = easy_task(n=32)
    teacher, student = classifier(activation, seed=1), classifier(activation, seed=2)
    distiller = SelfDistiller(student, teacher, alpha=0.6, temperature=3.0)
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)

    teacher_out, student_out = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    if activation == "softmax":
        teacher_out, student_out = np.log(teacher_out), np.log(student_out)
    expected = np_distillation_loss(y, teacher_out, student_out, 0.6, 3.0)
    np.testing.assert_allclose([logs["loss"], logs["ce"], logs["kl"]], expected, rtol=1e-4)
    np.testing.assert_allclose(logs["accuracy"], np.mean(np.argmax(student_out, 1) == y))

    # One-hot labels give the same losses and accuracy.
    one_hot_logs = distiller.evaluate(x, np.eye(3)[y], batch_size=32, return_dict=True, verbose=0)
    for key in ("loss", "ce", "kl", "accuracy"):
        np.testing.assert_allclose(one_hot_logs[key], logs[key], rtol=1e-6)

    # predict() and __call__ give the student's outputs.
    np.testing.assert_allclose(distiller.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6)


def test_sample_weights_scale_examples_and_divide_by_batch_size():
    x, y, _ = easy_task(n=16)
    teacher, student = classifier(seed=1), classifier(seed=2)
    distiller = SelfDistiller(student, teacher, alpha=0.5, temperature=2.0)
    distiller.compile(optimizer="sgd")
    weights = np.linspace(0.0, 2.0, 16).astype("float32")
    logs = distiller.evaluate(x, y, sample_weight=weights, batch_size=16, return_dict=True, verbose=0)
    expected = np_distillation_loss(
        y, teacher.predict(x, verbose=0), student.predict(x, verbose=0), 0.5, 2.0, sample_weight=weights
    )
    np.testing.assert_allclose([logs["loss"], logs["ce"], logs["kl"]], expected, rtol=1e-4)


def test_student_regularization_is_added_to_the_loss():
    x, y, _ = easy_task(n=16)
    keras.utils.set_random_seed(3)
    student = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L2(0.5))]
    )
    distiller = SelfDistiller(student, classifier(seed=1), alpha=0.5, temperature=2.0)
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    penalty = 0.5 * np.sum(student.layers[0].get_weights()[0] ** 2)
    np.testing.assert_allclose(logs["loss"], 0.5 * logs["ce"] + 0.5 * 4.0 * logs["kl"] + penalty, rtol=1e-5)


def test_fit_freezes_teacher_and_trains_student():
    x, y, _ = easy_task(n=64)
    keras.utils.set_random_seed(5)
    # BatchNorm and Dropout: training=False must leave the moving statistics alone.
    teacher = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(3),
        ]
    )
    student = keras.models.clone_model(teacher)
    teacher_before, student_before = weights_of(teacher), weights_of(student)
    distiller = SelfDistiller(student, teacher)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)

    assert not teacher.trainable
    for before, after in zip(teacher_before, weights_of(teacher)):
        np.testing.assert_array_equal(before, after)
    changed = [not np.array_equal(b, a) for b, a in zip(student_before, weights_of(student))]
    assert all(changed)  # kernels, biases, BatchNorm gamma/beta and moving statistics


def test_fit_reports_metrics_and_student_learns():
    x, y, projection = easy_task(n=320)
    x_train, y_train, x_val, y_val = x[:256], y[:256], x[256:], y[256:]
    teacher = perfect_teacher(projection)
    student = classifier(seed=7)
    distiller = SelfDistiller(student, teacher, alpha=0.7, temperature=4.0)
    distiller.compile(
        optimizer=keras.optimizers.Adam(0.01),
        metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")],
    )
    history = distiller.fit(
        x_train, y_train, validation_data=(x_val, y_val), batch_size=32, epochs=12, verbose=0
    ).history

    expected_keys = {"loss", "ce", "kl", "accuracy", "top2"}
    assert set(history) == expected_keys | {f"val_{k}" for k in expected_keys}
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["kl"][-1] < history["kl"][0] and history["ce"][-1] < history["ce"][0]
    assert history["val_accuracy"][-1] > 0.85
    assert np.mean(np.argmax(student.predict(x_val, verbose=0), 1) == y_val) > 0.85


def test_callbacks_on_val_accuracy_and_saving(tmp_path):
    x, y, projection = easy_task(n=96)
    distiller = SelfDistiller(classifier(seed=8), perfect_teacher(projection))
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    checkpoint = str(tmp_path / "best.weights.h5")
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=2, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(
            checkpoint, monitor="val_accuracy", mode="max", save_best_only=True, save_weights_only=True
        ),
    ]
    history = distiller.fit(
        x[:64], y[:64], validation_data=(x[64:], y[64:]), epochs=3, batch_size=16, callbacks=callbacks, verbose=0
    )
    assert "val_accuracy" in history.history and os.path.exists(checkpoint)

    # Both callbacks keep the best val_accuracy epoch: the checkpoint holds the restored weights.
    restored = SelfDistiller(classifier(seed=9), perfect_teacher(projection))
    restored.load_weights(checkpoint)
    for expected, got in zip(weights_of(distiller.student), weights_of(restored.student)):
        np.testing.assert_array_equal(expected, got)

    with pytest.raises(RMTKDError, match="save the student"):
        distiller.save(str(tmp_path / "distiller.keras"))
    full_checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "d.keras"), monitor="val_accuracy", mode="max")
    with pytest.raises(RMTKDError, match="save_weights_only=True"):
        distiller.fit(x, y, validation_data=(x, y), epochs=1, callbacks=[full_checkpoint], verbose=0)

    distiller.student.save(str(tmp_path / "student.keras"))
    reloaded = keras.models.load_model(str(tmp_path / "student.keras"))
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), distiller.predict(x, verbose=0), rtol=1e-5)


def test_dict_inputs():
    def text_classifier(seed):
        keras.utils.set_random_seed(seed)
        token_ids = keras.Input((6,), dtype="int32", name="token_ids")
        padding_mask = keras.Input((6,), dtype="bool", name="padding_mask")
        embedded = keras.layers.Embedding(20, 8)(token_ids)
        pooled = keras.layers.GlobalAveragePooling1D()(embedded, mask=padding_mask)
        outputs = keras.layers.Dense(2)(pooled)
        return keras.Model({"token_ids": token_ids, "padding_mask": padding_mask}, outputs)

    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, 20, size=(32, 6)).astype("int32")
    lengths = rng.integers(2, 7, size=32)
    padding_mask = np.arange(6)[None, :] < lengths[:, None]
    token_ids[~padding_mask] = 0
    labels = (token_ids[:, 0] % 2).astype("int32")
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}

    student = text_classifier(seed=1)
    before = weights_of(student)
    distiller = SelfDistiller(student, text_classifier(seed=2))
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    history = distiller.fit(inputs, labels, validation_data=(inputs, labels), batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["val_loss"]).all()
    assert not np.array_equal(before[0], weights_of(student)[0])
    assert distiller.predict(inputs, verbose=0).shape == (32, 2)


def test_factorized_student_trains_under_the_distiller():
    from rmtkd_tf.collection import collect_activations
    from rmtkd_tf.surgery import LayerFactors, factorize_model

    x, _, _ = easy_task(n=128, inputs=6)
    keras.utils.set_random_seed(11)
    teacher = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="out"),
        ]
    )
    y = np.argmax(teacher.predict(x, verbose=0), axis=1)
    statistics = collect_activations(teacher, x, layers=["hidden"])["hidden"]
    eigenvalues, eigenvectors = np.linalg.eigh(statistics.covariance)
    basis = eigenvectors[:, np.argsort(eigenvalues)[::-1][:4]]
    student = factorize_model(teacher, {"hidden": LayerFactors(basis, statistics.mean)})
    assert isinstance(student.get_layer("hidden"), LowRankDense)

    teacher_before, student_before = weights_of(teacher), weights_of(student)
    distiller = SelfDistiller(student, teacher, alpha=0.5, temperature=2.0)
    distiller.compile(optimizer=keras.optimizers.Adam(0.005))
    history = distiller.fit(x, y, batch_size=32, epochs=6, verbose=0).history

    assert history["loss"][-1] < history["loss"][0]
    for before, after in zip(teacher_before, weights_of(teacher)):
        np.testing.assert_array_equal(before, after)
    low_rank = student.get_layer("hidden")
    assert not np.array_equal(student_before[0], np.array(low_rank.down_kernel))
    assert history["accuracy"][-1] > 0.8


# ---------------------------------------------------------------- tf.distribute

MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, os
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np
    from rmtkd_tf.distill import SelfDistiller, distillation_loss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5)).astype("float32")
    y = rng.integers(0, 3, size=16)
    sample_weight = rng.uniform(0.5, 1.5, size=16).astype("float32")

    def make_model(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([
            keras.Input((5,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3),
        ])

    teacher_weights = make_model(1).get_weights()
    student_weights = make_model(2).get_weights()

    def make_distiller():
        teacher, student = make_model(3), make_model(4)
        teacher.set_weights(teacher_weights)
        student.set_weights(student_weights)
        distiller = SelfDistiller(student, teacher, alpha=0.6, temperature=3.0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
        return distiller

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = make_distiller()
    single = make_distiller()

    result = {"replicas": strategy.num_replicas_in_sync, "initial_weights": [w.tolist() for w in student_weights]}
    direct = distillation_loss(y, single.teacher(x), single.student(x), alpha=0.6, temperature=3.0)
    result["direct"] = [float(v) for v in direct]
    for name, distiller in (("mirrored", mirrored), ("single", single)):
        logs = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
        result[name + "_eval"] = [logs["loss"], logs["ce"], logs["kl"]]
        # One full-batch SGD step: equal updates only if the loss is scaled per replica.
        distiller.fit(x, y, sample_weight=sample_weight, batch_size=16, epochs=1, shuffle=False, verbose=0)
        result[name + "_weights"] = [w.tolist() for w in distiller.student.get_weights()]
    history = mirrored.fit(x, y, batch_size=8, epochs=15, verbose=0).history
    result["mirrored_losses"] = history["loss"]
    result["keys"] = sorted(history)
    print("RESULT " + json.dumps(result))
    """
)


def test_mirrored_strategy_on_two_cpu_replicas():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
    completed = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, env=env, timeout=300, cwd=REPO_ROOT
    )
    lines = [l for l in completed.stdout.splitlines() if l.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])

    assert result["replicas"] == 2
    np.testing.assert_allclose(result["mirrored_eval"], result["direct"], rtol=1e-5)
    np.testing.assert_allclose(result["single_eval"], result["direct"], rtol=1e-5)
    for mirrored, single in zip(result["mirrored_weights"], result["single_weights"]):
        np.testing.assert_allclose(np.array(mirrored), np.array(single), rtol=1e-5, atol=1e-6)
    # The step moved the weights (otherwise the equality above would prove nothing).
    moved = [np.abs(np.array(a) - np.array(b)).max() for a, b in zip(result["single_weights"], result["initial_weights"])]
    assert min(moved) > 1e-3
    assert result["keys"] == ["accuracy", "ce", "kl", "loss"]
    losses = result["mirrored_losses"]
    assert losses[-1] < losses[0]
