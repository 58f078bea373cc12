"""Where the validation examples come from: `--validation auto | train | test-split | SPEC`.

The loop checks every step's accuracy drop on the validation split, so that split decides what
`--max-drop` means. Examples the teacher was trained on make a poor validation set: the teacher fits
them better than new data, and a student's drop there measures forgetting of memorised examples,
not the loss on new inputs. Hence the choices of `choose_validation`:

* `auto`: the data's own validation split when it has one (an .npz's `x_val`/`y_val`, an image
  folder's `val/` or `validation/`, SST-2's `dev.tsv`); otherwise carved from train, with a warning.
* `train`: carved from the training split (stratified), with the same warning.
* `test-split`: a stratified half of the TEST split, the test figures being reported on the other
  half only. For data without a validation split whose teacher saw all of train (e.g. CIFAR-10).
* a data spec (any format `--data` takes, with a single split): its rows are the validation set.

>>> import numpy as np
>>> from rmtkd_tf.data.loaders import DataSplits
>>> splits = DataSplits(np.zeros((8, 2)), np.arange(8) % 2, np.zeros((6, 2)), np.array([0, 0, 0, 1, 1, 1]), None, "tabular", "toy")
>>> choice = choose_validation(splits, "test-split")
>>> choice.origin, len(choice.splits.y_val), len(choice.splits.y_test), choice.carve_from_train
('half of test', 3, 3, False)
>>> choose_validation(splits, "auto").carve_from_train
True
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from rmtkd_tf.data.loaders import DataLoadError, DataSplits, load_data
from rmtkd_tf.rows import take_rows

VALIDATION_CHOICES = ("auto", "train", "test-split")
# `validation_origin` values (a data spec's origin is "file SPEC").
OWN_SPLIT, CARVED_FROM_TRAIN, HALF_OF_TEST = "own split", "carved from train", "half of test"


@dataclasses.dataclass(frozen=True)
class ValidationChoice:
    """The data splits to use and where their validation comes from.

    When `carve_from_train` is True the caller holds validation out of `splits`' training split (and
    `splits.x_val` is None); otherwise `splits.x_val`/`y_val` is the validation set. `origin` is one of
    "own split", "carved from train", "half of test" or "file SPEC"; `note` is what a report adds to
    the data's description (it says when the test figures are on half of the test split only).
    """

    splits: DataSplits
    origin: str
    carve_from_train: bool
    note: str


def choose_validation(
    splits: DataSplits,
    validation: str = "auto",
    *,
    limit: int | None = None,
    image_size=None,
    seed: int = 0,
) -> ValidationChoice:
    """Picks the validation set for `validation` (see the module docstring); `splits` is not modified.

    `limit`, `image_size` and `seed` are passed on to `load_data` when `validation` is a data spec;
    `seed` also draws the stratified halves of `test-split`.
    """
    validation = str(validation)
    if validation == "auto":
        if splits.y_val is not None and len(splits.y_val) > 0:
            return ValidationChoice(splits, OWN_SPLIT, False, f"validation: the data's own split ({len(splits.y_val)})")
        return _carved(splits)
    if validation == "train":
        return _carved(splits)
    if validation == "test-split":
        return _half_of_test(splits, seed)
    return _from_spec(splits, validation, limit=limit, image_size=image_size, seed=seed)


def stratified_halves(y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sorted index arrays covering `y`, each class split in half.

    A class of odd size gives its odd example to the first half, the next such class to the second,
    and so on, so the halves differ by at most one example overall and per class.

    >>> first, second = stratified_halves(np.array([0, 0, 0, 0, 1, 1, 2]), seed=0)
    >>> len(first), len(second), sorted(np.concatenate([first, second]).tolist()) == list(range(7))
    (4, 3, True)
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    first, second = [], []
    odd_to_first = True
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        half = len(members) // 2
        if len(members) % 2:
            half += odd_to_first
            odd_to_first = not odd_to_first
        first.append(members[:half])
        second.append(members[half:])
    if not first:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return (np.sort(np.concatenate(part)).astype(np.int64) for part in (first, second))


def carved_from_train_warning(n_examples: int | None = None, *, automatic: bool = True) -> str:
    """The one-line warning printed when validation is carved from the training split."""
    count = "" if n_examples is None else f" ({n_examples} examples)"
    reason = "the data has no validation split of its own, so " if automatic else ""
    return (
        f"warning: {reason}validation is carved from the training split{count}: the teacher was trained on "
        "these examples, so its validation accuracy is optimistic and a student's drop there measures forgetting "
        "of memorised examples rather than loss on new data; pass --validation test-split (half of the test "
        "split) or --validation PATH (held-out labelled data)"
    )


def _carved(splits: DataSplits) -> ValidationChoice:
    own_dropped = dataclasses.replace(splits, x_val=None, y_val=None)
    return ValidationChoice(own_dropped, CARVED_FROM_TRAIN, True, "validation: carved from the training split")


def _half_of_test(splits: DataSplits, seed: int) -> ValidationChoice:
    if splits.y_test is None or len(splits.y_test) < 2:
        raise DataLoadError(
            f"--validation test-split needs a test split of at least 2 examples; {splits.source} has "
            f"{'none' if splits.y_test is None else len(splits.y_test)}"
        )
    validation, test = stratified_halves(splits.y_test, seed=seed)
    halves = dataclasses.replace(
        splits,
        x_val=take_rows(splits.x_test, validation), y_val=splits.y_test[validation],
        x_test=take_rows(splits.x_test, test), y_test=splits.y_test[test],
    )
    note = (
        f"validation: half of the test split ({len(validation)} of {len(splits.y_test)}); "
        f"test figures are on the remaining half ({len(test)})"
    )
    return ValidationChoice(halves, HALF_OF_TEST, False, note)


def _from_spec(splits: DataSplits, spec: str, *, limit, image_size, seed) -> ValidationChoice:
    if not spec.startswith("tfds:") and not Path(spec).expanduser().exists():
        raise DataLoadError(
            f"--validation must be auto, train, test-split or a data path; {spec!r} is none of them (no such path)"
        )
    held_out = load_data(spec, limit=limit, image_size=image_size, seed=seed)
    extra = [name for name in ("test", "val") if getattr(held_out, f"y_{name}") is not None]
    if extra:
        raise DataLoadError(
            f"--validation {spec} holds a {' and a '.join(extra)} split besides its first one; give data with a "
            "single split (an .npz with x, y, one .tsv/.csv file, a folder of class folders)"
        )
    if held_out.modality != splits.modality:
        raise DataLoadError(f"--validation {spec} is {held_out.modality} data but --data is {splits.modality}")
    if held_out.modality != "text" and held_out.x_train.shape[1:] != splits.x_train.shape[1:]:
        raise DataLoadError(
            f"--validation {spec} has examples of shape {held_out.x_train.shape[1:]}, "
            f"the training data {splits.x_train.shape[1:]}"
        )
    labels = _labels_in_training_classes(held_out, splits, spec)
    with_validation = dataclasses.replace(splits, x_val=held_out.x_train, y_val=labels)
    note = f"validation: {spec} ({len(labels)})"
    return ValidationChoice(with_validation, f"file {spec}", False, note)


def _labels_in_training_classes(held_out: DataSplits, splits: DataSplits, spec: str) -> np.ndarray:
    """`held_out`'s labels as indices of the training data's classes (names matched when both have names).

    Separate files number their classes separately (e.g. a validation folder lacking one class would
    shift every later index), so named classes are matched by name.
    """
    if held_out.class_names is None and splits.class_names is None:
        return held_out.y_train
    if held_out.class_names is None or splits.class_names is None:
        named, unnamed = (spec, "--data") if splits.class_names is None else ("--data", spec)
        raise DataLoadError(f"{named} names its classes but {unnamed} numbers them; use the same kind of labels")
    unknown = sorted(set(held_out.class_names) - set(splits.class_names))
    if unknown:
        raise DataLoadError(f"--validation {spec} has classes {unknown[:5]} that the training data lacks")
    index = {name: i for i, name in enumerate(splits.class_names)}
    mapping = np.array([index[name] for name in held_out.class_names], dtype=np.int64)
    return mapping[held_out.y_train]
