"""Per-example correctness of Keras models, and its agreement with the loop's accuracy."""

import numpy as np
import pytest

import keras

from rmtkd_tf.acceptance import paired_accuracy_drop
from rmtkd_tf.steps import accuracy
from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.evaluation import per_example_correct


def _classifier(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])


def test_per_example_correct_agrees_with_accuracy_and_pairs_teacher_with_student():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(70, 5)).astype("float32"), rng.integers(0, 3, 70)
    teacher, student = _classifier(0), _classifier(1)
    teacher_correct = per_example_correct(teacher, x, y, batch_size=16)
    student_correct = per_example_correct(student, x, y[:, None])  # (n, 1) labels too
    assert teacher_correct.dtype == bool and teacher_correct.shape == (70,)
    assert 100 * teacher_correct.mean() == pytest.approx(accuracy(teacher, x, y))
    estimate = paired_accuracy_drop(teacher_correct, student_correct)
    assert estimate.drop == pytest.approx(accuracy(teacher, x, y) - accuracy(student, x, y))
    assert estimate.lower <= estimate.drop <= estimate.upper


def test_dict_inputs_and_empty_and_mismatched():
    inputs = {"a": keras.Input((2,), name="a"), "b": keras.Input((2,), name="b")}
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Concatenate()([inputs["a"], inputs["b"]])))
    x = {"a": np.ones((4, 2), "float32"), "b": np.zeros((4, 2), "float32")}
    assert per_example_correct(model, x, np.zeros(4, int)).shape == (4,)
    assert per_example_correct(model, {k: v[:0] for k, v in x.items()}, np.zeros(0, int)).shape == (0,)
    with pytest.raises(RMTKDError, match="4 rows but there are 3 labels"):
        per_example_correct(model, x, np.zeros(3, int))
