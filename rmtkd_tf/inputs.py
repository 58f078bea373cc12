"""What `rmtkd_tf.compress` and `RMTKDCallback` accept as data, turned into NumPy arrays.

Inputs `x` are an array or a dict of arrays (one per named model input); labels `y` are integer
class indices of shape `(n,)`. Accepted forms:

- arrays: `x` and `y` given separately, or as an `(x, y)` tuple (an `(x, y, sample_weight)` triple
  has its weights ignored);
- a finite `tf.data.Dataset` of `(x, y)` batches, as `model.fit` takes: it is iterated once and
  materialised into arrays in memory (RMT-KD reads every split several times: it shuffles the
  fine-tuning split each epoch, pairs students with the teacher on the same validation examples,
  and collects covariances on the calibration split); a dataset of inputs only is accepted for
  calibration data.

Every malformed input is refused with a one-line `RMTKDError` naming the argument.

>>> import numpy as np
>>> x, y = labelled((np.zeros((4, 2)), np.array([[0], [1], [1], [0]])), "train_data")
>>> x.shape, y.tolist()
((4, 2), [0, 1, 1, 0])
>>> import tensorflow as tf
>>> batches = tf.data.Dataset.from_tensor_slices((np.ones((5, 3), "float32"), np.arange(5) % 2)).batch(2)
>>> x, y = labelled(batches, "validation_data")
>>> x.shape, y.tolist()
((5, 3), [0, 1, 0, 1, 0])
>>> inputs_only(batches, "calibration_data", limit=3).shape
(3, 3)
"""

from __future__ import annotations

import numpy as np

from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.rows import n_rows, take_rows


def is_dataset(data):
    """Whether `data` is a `tf.data.Dataset`."""
    import tensorflow as tf

    return isinstance(data, tf.data.Dataset)


def _as_numpy(x):
    if isinstance(x, dict):
        return {name: np.asarray(value) for name, value in x.items()}
    return np.asarray(x)


def _row_count(x, name):
    """Rows of `x`; a dict's arrays must agree."""
    if isinstance(x, dict):
        if not x:
            raise RMTKDError(f"{name}: the input dict is empty")
        lengths = {len(np.asarray(v)) for v in x.values()}
        if len(lengths) != 1:
            raise RMTKDError(f"{name}: the arrays of an input dict must have the same length, got {sorted(lengths)}")
        return lengths.pop()
    if np.ndim(x) == 0:
        raise RMTKDError(f"{name} must be an array of examples, got a scalar")
    return len(x)


def _concat(parts):
    if isinstance(parts[0], dict):
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return np.concatenate(parts)


def materialise(dataset, name, limit=None, labelled=True):
    """`(x, y)` arrays from a finite dataset of batches (`y` None for a dataset of inputs); at most `limit` rows."""
    import tensorflow as tf

    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise RMTKDError(f"{name} is an infinite tf.data.Dataset (a repeat() without a count?); pass a finite one")
    xs, ys, count = [], [], 0
    for batch in dataset.as_numpy_iterator():
        if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
            x, y = batch[0], batch[1]
        elif isinstance(batch, (tuple, list)):
            raise RMTKDError(f"{name}: a dataset element must be x or (x, y), got a tuple of {len(batch)}")
        else:
            x, y = batch, None
        if labelled and y is None:
            raise RMTKDError(f"{name} must be a dataset of (x, y) batches; its elements have no labels")
        if isinstance(x, dict) and not x:
            raise RMTKDError(f"{name}: the input dict is empty")
        if np.ndim(next(iter(x.values())) if isinstance(x, dict) else x) == 0:
            raise RMTKDError(f"{name} must be a dataset of batches (call .batch(n)); its elements are scalars")
        xs.append(_as_numpy(x))
        ys.append(None if y is None else np.asarray(y))
        count += _row_count(xs[-1], name)
        if limit is not None and count >= limit:
            break
    if not xs:
        raise RMTKDError(f"{name} is empty")
    x = _concat(xs)
    y = None if ys[0] is None else np.concatenate(ys)
    if limit is not None and count > limit:
        x = take_rows(x, np.arange(limit))
        y = None if y is None else y[:limit]
    return x, y


def class_indices(y, name):
    """`y` as 1-D int64 class indices (an `(n, 1)` column is flattened); one-line error otherwise."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise RMTKDError(
            f"{name} labels must be integer class indices of shape (n,), got shape {y.shape} "
            "(one-hot labels: pass np.argmax(y, axis=1))"
        )
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise RMTKDError(f"{name} labels must be integer class indices, got non-integer values")
    elif y.dtype.kind not in "iub":
        raise RMTKDError(f"{name} labels must be integer class indices, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise RMTKDError(f"{name} labels must be >= 0, got {int(y.min())}")
    return y.astype(np.int64)


def labelled(data, name, y=None):
    """`(x, y)` arrays from `data` (arrays with `y`, an `(x, y)` tuple, or a dataset of `(x, y)` batches)."""
    if data is None:
        raise RMTKDError(f"{name} is missing")
    if is_dataset(data):
        if y is not None:
            raise RMTKDError(f"{name} is a tf.data.Dataset, which carries its labels: do not pass y as well")
        x, y = materialise(data, name)
    elif y is None:
        if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
            raise RMTKDError(f"{name} must be an (x, y) pair of arrays, got {type(data).__name__}")
        x, y = data[0], data[1]
        if y is None:
            raise RMTKDError(f"{name} has no labels: pass (x, y)")
    else:
        x = data
    x = _as_numpy(x)
    n = _row_count(x, name)
    y = class_indices(y, name)
    if n != len(y):
        raise RMTKDError(f"{name}: x has {n} rows but y has {len(y)}")
    if n == 0:
        raise RMTKDError(f"{name} is empty")
    return x, y


def inputs_only(data, name, limit=None):
    """Model inputs from `data` (an array, a dict of arrays, an `(x, y)` tuple or a dataset); at most `limit` rows."""
    if data is None:
        raise RMTKDError(f"{name} is missing")
    if is_dataset(data):
        x, _ = materialise(data, name, limit=limit, labelled=False)
        return x
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):  # (x, y) or (x, y, sample_weight)
        data = data[0]
    x = _as_numpy(data)
    n = _row_count(x, name)
    if n == 0:
        raise RMTKDError(f"{name} is empty")
    return x if limit is None or n <= limit else take_rows(x, np.arange(limit))


def compression_data(model, x, y=None, *, validation_data=None, calibration_data=None, test_data=None, seed=0,
                     calibration_fraction=0.1, validation_fraction=0.1, calibration_samples=None, log=print):
    """A `CompressionData` for `model` from user arrays or datasets, checked as the CLI checks `--data`.

    Without `validation_data`, a stratified `validation_fraction` of the training examples is held out
    of fine-tuning to validate on (with the CLI's `warning:` line: the teacher has fitted those examples,
    so the check is optimistic). Without `calibration_data`, a stratified `calibration_fraction` of the
    training examples is the calibration split (still used for fine-tuning, as in the CLI).
    Returns `(data, description, validation_warning)`.
    """
    from rmtkd_tf.compression import CompressionData
    from rmtkd_tf.data import split_train
    from rmtkd_tf.data.holdout import carved_from_train_warning
    from rmtkd_tf.data.validation import validate_task_data
    from rmtkd_tf.rows import concat_rows

    x_train, y_train = labelled(x, "x", y=y)
    carve_validation = validation_data is None
    fractions = (0 if calibration_data is not None else calibration_fraction,
                 validation_fraction if carve_validation else 0)
    parts = split_train(y_train, y_train, fractions, seed=seed)  # (its x argument only gives the length)
    x_rest, y_rest = take_rows(x_train, parts.train), y_train[parts.train]
    if calibration_data is None:
        x_cal = take_rows(x_train, parts.calibration)
        x_rest, y_rest = concat_rows(x_rest, x_cal), np.concatenate([y_rest, y_train[parts.calibration]])
    else:
        x_cal = inputs_only(calibration_data, "calibration_data", limit=calibration_samples)
    if carve_validation:
        x_val, y_val = take_rows(x_train, parts.validation), y_train[parts.validation]
        origin, warning = "carved from train", carved_from_train_warning(len(y_val), automatic=True)
    else:
        (x_val, y_val), origin, warning = labelled(validation_data, "validation_data"), "validation_data", None
    x_test, y_test = (None, None) if test_data is None else labelled(test_data, "test_data")
    data = CompressionData(x_train=x_rest, y_train=y_rest, x_calibration=x_cal, x_validation=x_val,
                           y_validation=y_val, x_test=x_test, y_test=y_test, validation_origin=origin)
    validate_task_data(model, data, None, n_train_total=len(y_train),
                       calibration_fraction=calibration_fraction if calibration_data is None else None,
                       validation_fraction=validation_fraction if carve_validation else None, log=log)
    description = (f"arrays: {len(y_train)} training examples"
                   + ("" if y_test is None else f", {len(y_test)} test examples"))
    log(f"data: {description}; calibration {n_rows(x_cal)}, validation {len(y_val)} ({origin}), "
        f"fine-tuning {len(y_rest)}")
    return data, description, warning
