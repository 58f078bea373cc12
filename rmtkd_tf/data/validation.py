"""Checks that a task's data fit its model, before anything is trained or written.

`validate_task_data(model, data, spec)` refuses, in one line each (`DataValidationError`):

- a model whose output is not a vector of class scores (a regression head, a single sigmoid unit,
  several outputs): RMT-KD's distillation and accuracy need >= 2 classes;
- labels outside the model's classes (label 50 on a 10-class model would give NaN losses);
- NaN or Inf in any input array;
- input shapes that differ from the model's (every split, not only train);
- fewer than `MIN_CALIBRATION_EXAMPLES` calibration or `MIN_VALIDATION_EXAMPLES` validation examples,
  saying how many training examples the fractions then need.

(A validation set too small to accept a student within `--max-drop` gets a warning from
`rmtkd_tf.pipeline.warn_if_validation_too_small`.)

>>> import numpy as np, keras
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
>>> check_labels_fit_model(model, {"train": np.array([0, 3, 1])})
>>> check_labels_fit_model(model, {"train": np.array([0, 50])})
Traceback (most recent call last):
...
rmtkd_tf.errors.DataValidationError: train labels go up to 50 but the model has 4 outputs (classes 0..3); ...
"""

from __future__ import annotations

import numpy as np

from rmtkd_tf.errors import DataValidationError

MIN_CALIBRATION_EXAMPLES = 2
MIN_VALIDATION_EXAMPLES = 5


def _arrays(x):
    if x is None:
        return []
    if isinstance(x, dict):
        return [np.asarray(v) for v in x.values()]
    if isinstance(x, (list, tuple)):
        return [np.asarray(v) for v in x]
    return [np.asarray(x)]


def _n_rows(x):
    arrays = _arrays(x)
    return len(arrays[0]) if arrays else 0


def model_num_classes(model) -> int:
    """The number of classes a single-output classifier scores; refuses other models in one line."""
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1:
        raise DataValidationError(
            f"the model has {len(outputs)} outputs; rmtkd-tf compresses classifiers with one output of class scores"
        )
    shape = tuple(outputs[0].shape)
    n_classes = shape[-1] if shape else None
    if len(shape) != 2 or n_classes is None or n_classes < 2:
        raise DataValidationError(
            f"the model's output has shape {shape}; rmtkd-tf compresses classifiers whose output is "
            "(batch, classes) with >= 2 classes (a regression or single-sigmoid head cannot be distilled "
            "by class probabilities)"
        )
    return int(n_classes)


def check_labels_fit_model(model, labels: dict) -> None:
    """Every label array in `labels` (name -> array) lies in `0 .. classes - 1` of `model`."""
    n_classes = model_num_classes(model)
    for name, y in labels.items():
        if y is None or len(y) == 0:
            continue
        y = np.asarray(y)
        if y.min() < 0 or y.max() >= n_classes:
            bad = int(y.max()) if y.max() >= n_classes else int(y.min())
            raise DataValidationError(
                f"{name} labels go up to {bad} but the model has {n_classes} outputs (classes 0..{n_classes - 1}); "
                "the data and the model do not match" if bad >= 0 else
                f"{name} labels include {bad}; class indices must be >= 0"
            )


def check_finite(x, name: str) -> None:
    """No NaN or Inf in the float arrays of `x`."""
    for array in _arrays(x):
        if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
            finite = np.isfinite(array)
            if not finite.all():
                rows = np.flatnonzero(~finite.reshape(len(array), -1).all(axis=1)) if array.ndim else [0]
                raise DataValidationError(
                    f"{name} holds NaN or Inf values ({len(rows)} example(s), the first at row {int(rows[0])}); "
                    "clean the data first"
                )


def check_input_shape(model, x, name: str, spec) -> None:
    """`x` (an array) has the model's input shape (None dimensions match anything)."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or x is None or isinstance(x, (dict, list, tuple)):
        return
    expected = tuple(inputs[0].shape[1:])
    got = tuple(np.asarray(x).shape[1:])
    if len(expected) != len(got) or not all(e is None or e == g for e, g in zip(expected, got)):
        where = f"--data {spec}: " if spec is not None else ""
        raise DataValidationError(f"{where}{name} inputs have shape {got} but the model expects {expected}")


def check_counts(n_calibration: int, n_validation: int, n_train_total: int, calibration_fraction=None,
                 validation_fraction=None, log=print) -> None:
    """Enough calibration and validation examples (`log` is kept for callers; nothing is logged)."""
    for what, n, minimum, fraction in (
        ("calibration", n_calibration, MIN_CALIBRATION_EXAMPLES, calibration_fraction),
        ("validation", n_validation, MIN_VALIDATION_EXAMPLES, validation_fraction),
    ):
        if n < minimum:
            need = ""
            if fraction:
                need = f" (with --{what}-fraction {fraction:g}, at least {int(np.ceil(minimum / fraction))} training examples)"
            raise DataValidationError(
                f"only {n} {what} examples from {n_train_total} training examples; at least {minimum} are needed{need}"
            )


def validate_task_data(model, data, spec, *, calibration_fraction=None, validation_fraction=None, n_train_total=None,
                       log=print) -> None:
    """All the checks above on a `rmtkd_tf.compression.CompressionData` built for `model` from `--data spec`
    (`spec` None: from arrays given in Python)."""
    check_labels_fit_model(
        model, {"training": data.y_train, "validation": data.y_validation, "test": data.y_test}
    )
    for name in ("train", "calibration", "validation", "test"):
        x = getattr(data, f"x_{name}")
        check_finite(x, f"--data {spec}: the {name} inputs" if spec is not None else f"the {name} inputs")
        check_input_shape(model, x, name, spec)
    n_train_total = len(data.y_train) if n_train_total is None else n_train_total
    check_counts(_n_rows(data.x_calibration), _n_rows(data.x_validation), n_train_total,
                 calibration_fraction, validation_fraction, log=log)
