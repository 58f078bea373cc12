"""Loading a data set from a `--data SPEC` string into NumPy arrays.

`load_data(spec)` reads, by what `spec` points at:

* `path.npz`: keys `x_train, y_train, x_test, y_test` (the `keras.datasets` layout) or `x, y`, with an
  optional validation split `x_val, y_val` (or `x_validation, y_validation`) beside `x_train, y_train`.
* a CIFAR-10 "python version" folder (`data_batch_1..5`, `test_batch`, `batches.meta`), or its parent
  holding `cifar-10-batches-py/`.
* an image folder: `<root>/train/<class>/*.jpg` (+ optional `<root>/test/<class>/...` and
  `<root>/val/<class>/...`), or `<root>/<class>/*` with no test split.
* a CSV/TSV file of text and labels, or a folder with `train.tsv`, `dev.tsv`, `test.tsv` (or `.csv`).
* `tfds:NAME[:TRAIN_SPLIT,TEST_SPLIT]`, e.g. `tfds:cifar10` or `tfds:glue/sst2` (needs network).

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "toy.npz")
>>> np.savez(path, x=np.zeros((6, 3), np.float32), y=np.array([[0], [1], [2], [0], [1], [2]]))
>>> data = load_data(path)
>>> data.x_train.shape, data.y_train.tolist(), data.x_test, data.modality
((6, 3), [0, 1, 2, 0, 1, 2], None, 'tabular')
>>> parts = split_train(data.x_train, data.y_train, fractions=(0.5, 0.0), seed=0)
>>> sorted(data.y_train[parts.calibration].tolist())
[0, 1, 2]
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rmtkd_tf.arguments import check_int_tuple, check_integer
from rmtkd_tf.errors import DataLoadError

MODALITIES = ("image", "text", "tabular")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")  # what tf.io.decode_image reads
TEXT_EXTENSIONS = (".tsv", ".csv")
# Feature names that tfds data sets use for the input and the label, in order of preference.
TFDS_INPUT_KEYS = ("image", "sentence", "text", "description", "document", "content", "review")
TFDS_LABEL_KEYS = ("label", "labels")
# glue/sst2's "test" split has no labels (-1); its labelled "validation" split is what papers report.
TFDS_DEFAULT_SPLITS = {"glue/sst2": ("train", "validation")}
# Keys of an .npz's own validation split (beside x_train/y_train), in either spelling.
NPZ_VALIDATION_KEYS = (("x_val", "y_val"), ("x_validation", "y_validation"))


@dataclass
class DataSplits:
    """A data set as NumPy arrays: `y_*` are int64 class indices, `x_test`/`y_test` may be None.

    `x_val`/`y_val` hold a separate labelled split when the source has one (SST-2's `dev.tsv`, an image
    folder's `val/` or `validation/`, an .npz's `x_val`/`y_val`); it is never the test split.

    >>> import numpy as np
    >>> DataSplits(np.zeros((4, 2)), np.array([0, 1, 0, 1]), None, None, None, "tabular", "toy").describe()
    'toy: tabular, 4 train / no test, 2 classes, x (2,) float64'
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    class_names: list[str] | None
    modality: str
    source: str
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise DataLoadError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        for name in ("train", "test", "val"):
            x, y = getattr(self, f"x_{name}"), getattr(self, f"y_{name}")
            if (x is None) != (y is None):
                raise DataLoadError(f"x_{name} and y_{name} must both be given or both be None")
            if x is None:
                continue
            if len(x) != len(y):
                raise DataLoadError(f"inconsistent lengths: x_{name} has {len(x)} rows, y_{name} has {len(y)}")
            if name == "train" and len(x) == 0:
                raise DataLoadError(f"empty data set: {self.source} has no training examples")
            if y.dtype != np.int64 or y.ndim != 1:
                raise DataLoadError(f"y_{name} must be a 1-D int64 array, got {y.dtype} of shape {y.shape}")
        if self.x_train is None:
            raise DataLoadError("x_train is required")

    @property
    def num_classes(self) -> int:
        """`len(class_names)`, or one more than the largest label when the classes have no names."""
        if self.class_names is not None:
            return len(self.class_names)
        labels = [y for y in (self.y_train, self.y_test, self.y_val) if y is not None and len(y)]
        return int(max(y.max() for y in labels)) + 1

    def describe(self) -> str:
        """One line: source, modality, split sizes, number of classes and the shape of one example."""
        sizes = f"{len(self.x_train)} train"
        if self.x_val is not None:
            sizes += f" / {len(self.x_val)} val"
        sizes += f" / {len(self.x_test)} test" if self.x_test is not None else " / no test"
        if self.modality == "text":
            example = "x str"
        else:
            example = f"x {tuple(self.x_train.shape[1:])} {self.x_train.dtype}"
        return f"{self.source}: {self.modality}, {sizes}, {self.num_classes} classes, {example}"


@dataclass(frozen=True)
class TrainSplit:
    """Disjoint index arrays into the train split: `calibration`, `validation` and the remaining `train`.

    Each is sorted int64. `take(array)` returns `(array[calibration], array[validation], array[train])`.
    """

    calibration: np.ndarray
    validation: np.ndarray
    train: np.ndarray

    def take(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return array[self.calibration], array[self.validation], array[self.train]


def load_data(
    spec: str,
    *,
    limit: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    seed: int = 0,
) -> DataSplits:
    """Loads the data set that `spec` names (see the module docstring for the formats).

    Args:
        spec: a path, or `tfds:NAME[:TRAIN_SPLIT,TEST_SPLIT]`.
        limit: keep at most this many examples per split, drawn with the same number per class
            (classes with fewer examples give their share to the others), seeded by `seed`. Image
            folders decode only the chosen files. The kept examples stay in source order.
        image_size: `(height, width)` or one int; images of another size are resized (bilinear, as
            `keras.utils.image_dataset_from_directory` does) and rounded back to their dtype.
            Ignored for text and tabular data.
        seed: seeds `limit`'s draw and the shuffle of image folders (whose files come grouped by class).

    Raises:
        DataLoadError: a missing path, an unknown format, an empty data set, inconsistent x/y lengths,
            images of mixed shapes without `image_size`, a tfds data set that cannot be fetched, ...
    """
    limit = check_integer(limit, "limit", allow_none=True, error=DataLoadError)
    image_size = _normalize_image_size(image_size)
    spec = str(spec)
    if spec.startswith("tfds:"):
        data = _load_tfds(spec, limit=limit, seed=seed)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DataLoadError(f"data path not found: {spec}")
        try:
            data = _load_path(path, spec, limit=limit, image_size=image_size, seed=seed)
        except DataLoadError:
            raise
        except Exception as error:  # a malformed file can fail anywhere in a parser (numpy, zipfile, csv, ...)
            raise DataLoadError(f"cannot read {spec}: malformed data ({_one_line(error)})") from None
    if image_size is not None and data.modality == "image":
        for name in ("train", "test", "val"):
            x = getattr(data, f"x_{name}")
            if x is not None:
                setattr(data, f"x_{name}", resize_images(x, image_size))
    return data


def split_train(
    x: Sequence | np.ndarray,
    y: np.ndarray,
    fractions: tuple[float, float] = (0.1, 0.1),
    *,
    seed: int = 0,
) -> TrainSplit:
    """Draws calibration and validation subsets from the TRAIN split, stratified by class.

    Ranks are chosen on the calibration subset and checked on the validation subset, so the test split
    never influences them: pass only train arrays here. The rest of the train split is `train`.

    Args:
        x: the train inputs (only their length is used, to check it against `y`).
        y: 1-D integer class indices of the train split.
        fractions: `(calibration, validation)`, each a fraction in [0, 1) of the train split or an int
            count of examples. Each class contributes in proportion to its size (largest remainders
            get the leftover examples); a non-zero fraction keeps at least one example.
        seed: the draw is a deterministic function of `(y, fractions, seed)`.

    >>> import numpy as np
    >>> y = np.array([0] * 8 + [1] * 2)
    >>> parts = split_train(np.zeros(10), y, fractions=(0.5, 0.2), seed=1)
    >>> np.bincount(y[parts.calibration]).tolist(), np.bincount(y[parts.validation]).tolist(), len(parts.train)
    ([4, 1], [2], 3)
    """
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataLoadError(f"y must be 1-D integer class indices, got {y.dtype} of shape {y.shape}")
    n = len(y)
    if len(x) != n:
        raise DataLoadError(f"inconsistent lengths: x has {len(x)} rows, y has {n}")
    if n == 0:
        raise DataLoadError("empty data set: cannot split an empty train split")
    if len(fractions) != 2:
        raise DataLoadError(f"fractions must be (calibration, validation), got {fractions!r}")
    counts = [_count_from_fraction(f, n, name) for f, name in zip(fractions, ("calibration", "validation"))]
    if sum(counts) > n:
        raise DataLoadError(
            f"calibration ({counts[0]}) and validation ({counts[1]}) need more than the {n} train examples"
        )

    rng = np.random.default_rng(seed)
    classes, class_of = np.unique(y, return_inverse=True)
    members = [rng.permutation(np.flatnonzero(class_of == c)) for c in range(len(classes))]
    sizes = np.array([len(m) for m in members])
    calibration_per_class = _allocate(counts[0], sizes, capacity=sizes)
    validation_per_class = _allocate(counts[1], sizes, capacity=sizes - calibration_per_class)
    parts: tuple[list, list, list] = ([], [], [])
    for shuffled, n_cal, n_val in zip(members, calibration_per_class, validation_per_class):
        parts[0].append(shuffled[:n_cal])
        parts[1].append(shuffled[n_cal : n_cal + n_val])
        parts[2].append(shuffled[n_cal + n_val :])
    calibration, validation, train = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return TrainSplit(calibration=calibration, validation=validation, train=train)


def resize_images(images: np.ndarray, image_size: tuple[int, int], batch_size: int = 1024) -> np.ndarray:
    """Resizes `(n, h, w[, c])` images to `image_size` (bilinear), keeping their dtype and channel layout.

    Integer images are rounded and clipped back to their dtype's range. Images already of that size are
    returned unchanged. Works in batches so that the float copy stays small.
    """
    height, width = _normalize_image_size(image_size)
    if images.ndim not in (3, 4):
        raise DataLoadError(f"cannot resize images of shape {images.shape}: expected (n, h, w) or (n, h, w, c)")
    if images.shape[1:3] == (height, width):
        return images
    import tensorflow as tf

    had_channel_axis = images.ndim == 4
    source = images if had_channel_axis else images[..., None]
    resized = np.empty((len(source), height, width, source.shape[-1]), dtype=images.dtype)
    for start in range(0, len(source), batch_size):
        batch = tf.image.resize(source[start : start + batch_size].astype(np.float32), (height, width)).numpy()
        if np.issubdtype(images.dtype, np.integer):
            info = np.iinfo(images.dtype)
            batch = np.clip(np.round(batch), info.min, info.max)
        resized[start : start + batch_size] = batch
    return resized if had_channel_axis else resized[..., 0]


def tfds_features_to_xy(features: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, str]:
    """Picks the input and label arrays out of a tfds feature dict (as `tfds.load(batch_size=-1)` gives).

    Inputs are the first of `TFDS_INPUT_KEYS` present (`image`, `sentence`, `description`, ...); byte
    strings are decoded as UTF-8 into an object array of `str`.

    >>> import numpy as np
    >>> features = {"sentence": np.array([b"fine", b"bad"]), "label": np.array([1, 0]), "idx": np.arange(2)}
    >>> x, y, modality = tfds_features_to_xy(features)
    >>> list(x), y.tolist(), modality
    (['fine', 'bad'], [1, 0], 'text')
    """
    input_key = next((key for key in TFDS_INPUT_KEYS if key in features), None)
    label_key = next((key for key in TFDS_LABEL_KEYS if key in features), None)
    if input_key is None or label_key is None:
        raise DataLoadError(
            f"cannot map tfds features {sorted(features)} to inputs and labels: expected one of "
            f"{TFDS_INPUT_KEYS} and one of {TFDS_LABEL_KEYS}"
        )
    x = np.asarray(features[input_key])
    y = _as_class_indices(np.asarray(features[label_key]), f"tfds feature {label_key!r}")
    if x.dtype.kind in "SOU":
        strings = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in x.reshape(-1)]
        x = np.empty(len(strings), dtype=object)
        x[:] = strings
        return x, y, "text"
    return x, y, _modality_of(x)


# --- formats -------------------------------------------------------------------------------------------


def _load_path(path: Path, spec: str, *, limit, image_size, seed) -> DataSplits:
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return _load_npz(path, spec, limit=limit, seed=seed)
        if suffix in TEXT_EXTENSIONS:
            return _load_text_files(spec, train=path, val=None, test=None, limit=limit, seed=seed)
        raise DataLoadError(
            f"unknown data format: {spec} (expected .npz, .tsv, .csv, a folder, or tfds:NAME)"
        )
    if (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    if any((path / name).is_file() for name in ("data_batch_1", "test_batch", "batches.meta")):
        return _load_cifar_python(path, spec, limit=limit, seed=seed)
    text_files = {role: _find_text_file(path, role) for role in ("train", "dev", "test")}
    if any(text_files.values()):
        train, val = text_files["train"], text_files["dev"]
        if train is None:  # AG News ships dev + test: the dev split is the training data.
            train, val = val, None
        if train is None:
            raise DataLoadError(f"{spec} has a test file but no train.tsv/dev.tsv (or .csv) to train on")
        return _load_text_files(spec, train=train, val=val, test=text_files["test"], limit=limit, seed=seed)
    if (path / "train").is_dir():
        splits = {"train": path / "train"}
        for role, names in (("test", ("test",)), ("val", ("val", "validation"))):
            folder = next((path / name for name in names if (path / name).is_dir()), None)
            if folder is not None:
                splits[role] = folder
        return _load_image_folders(spec, splits, limit=limit, image_size=image_size, seed=seed)
    if any(entry.is_dir() and not entry.name.startswith(".") for entry in path.iterdir()):
        return _load_image_folders(spec, {"train": path}, limit=limit, image_size=image_size, seed=seed)
    raise DataLoadError(
        f"unknown data format: {spec} is a folder without CIFAR batches, train/dev/test .tsv/.csv files "
        "or class sub-folders"
    )


def _load_npz(path: Path, spec: str, *, limit, seed) -> DataSplits:
    if not zipfile.is_zipfile(path):
        raise DataLoadError(f"cannot read {spec}: not a valid .npz file (an .npz is a zip archive of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as error:
        # allow_pickle=False: an object array (e.g. text) would run pickle code; refuse, say why.
        raise DataLoadError(f"cannot read {spec}: {error}") from None
    except Exception as error:  # OSError, EOFError, zipfile.BadZipFile, zlib.error, ... from a damaged archive
        raise DataLoadError(f"cannot read {spec}: not a valid .npz file ({_one_line(error)})") from None
    if {"x_train", "y_train"} <= arrays.keys():
        split_keys = {"train": ("x_train", "y_train")}
        if {"x_test", "y_test"} <= arrays.keys():
            split_keys["test"] = ("x_test", "y_test")
        elif "x_test" in arrays or "y_test" in arrays:
            raise DataLoadError(f"{spec} has only one of x_test/y_test")
    elif {"x", "y"} <= arrays.keys():
        split_keys = {"train": ("x", "y")}
    else:
        raise DataLoadError(
            f"unknown .npz layout in {spec}: keys {sorted(arrays)}; expected x_train, y_train, x_test, y_test or x, y"
        )
    validation_keys = _npz_validation_keys(arrays, spec)
    if validation_keys is not None:
        split_keys["val"] = validation_keys
    splits = {}
    for role, (x_key, y_key) in split_keys.items():
        x, y = arrays[x_key], _as_class_indices(arrays[y_key], f"{y_key} in {spec}")
        if len(x) != len(y):
            raise DataLoadError(f"inconsistent lengths in {spec}: {x_key} has {len(x)} rows, {y_key} has {len(y)}")
        keep = balanced_subset(y, limit, seed)
        splits[role] = (x[keep], y[keep])
    for role in ("test", "val"):
        if role in splits and splits[role][0].shape[1:] != splits["train"][0].shape[1:]:
            raise DataLoadError(
                f"{split_keys['train'][0]} and {split_keys[role][0]} in {spec} differ in example shape: "
                f"{splits['train'][0].shape[1:]} vs {splits[role][0].shape[1:]}"
            )
    x_train, y_train = splits["train"]
    x_test, y_test = splits.get("test", (None, None))
    x_val, y_val = splits.get("val", (None, None))
    return DataSplits(x_train, y_train, x_test, y_test, None, _modality_of(x_train), spec, x_val, y_val)


def _npz_validation_keys(arrays: dict, spec: str) -> tuple[str, str] | None:
    """`("x_val", "y_val")` or `("x_validation", "y_validation")` when the .npz has that split, else None."""
    present = [(x_key, y_key) for x_key, y_key in NPZ_VALIDATION_KEYS if x_key in arrays or y_key in arrays]
    if len(present) > 1:
        raise DataLoadError(f"{spec} has both x_val/y_val and x_validation/y_validation; keep one")
    if not present:
        return None
    x_key, y_key = present[0]
    if not {x_key, y_key} <= arrays.keys():
        raise DataLoadError(f"{spec} has only one of {x_key}/{y_key}")
    return x_key, y_key


def _load_cifar_python(folder: Path, spec: str, *, limit, seed) -> DataSplits:
    train_files = sorted(folder.glob("data_batch_*"), key=lambda p: (len(p.name), p.name))
    if not train_files:
        raise DataLoadError(f"{spec} looks like a CIFAR-10 python folder but has no data_batch_* files")
    x_train, y_train = _read_cifar_batches(train_files)
    x_test = y_test = None
    if (folder / "test_batch").is_file():
        x_test, y_test = _read_cifar_batches([folder / "test_batch"])
    class_names = None
    if (folder / "batches.meta").is_file():
        meta = _unpickle(folder / "batches.meta")
        names = meta.get(b"label_names", meta.get("label_names"))
        if names is not None:
            class_names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    keep = balanced_subset(y_train, limit, seed)
    x_train, y_train = x_train[keep], y_train[keep]
    if x_test is not None:
        keep = balanced_subset(y_test, limit, seed)
        x_test, y_test = x_test[keep], y_test[keep]
    _check_labels_fit(class_names, [y_train, y_test], spec)
    return DataSplits(x_train, y_train, x_test, y_test, class_names, "image", spec)


def _read_cifar_batches(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for file in files:
        batch = _unpickle(file)
        data = np.asarray(batch.get(b"data", batch.get("data")))
        batch_labels = batch.get(b"labels", batch.get("labels"))
        if batch_labels is not None and not isinstance(batch_labels, (list, tuple, np.ndarray)):
            raise DataLoadError(f"{file} is not a CIFAR-10 batch: 'labels' is a {type(batch_labels).__name__}, not a list")
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or batch_labels is None or data.dtype.kind not in "uif":
            raise DataLoadError(
                f"{file} is not a CIFAR-10 batch: expected 'data' of shape (n, 3072) and 'labels', "
                f"got data of shape {data.shape}"
            )
        if len(batch_labels) != len(data):
            raise DataLoadError(f"inconsistent lengths in {file}: {len(data)} images, {len(batch_labels)} labels")
        # Rows are channel-major (1024 red, 1024 green, 1024 blue values), hence NCHW -> NHWC.
        images.append(data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(_as_class_indices(np.asarray(batch_labels), f"labels in {file}"))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and NumPy arrays only: a pickle found on disk must not run arbitrary code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays pickled with protocol 5
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            # Protocol 2 stores bytes as _codecs.encode(text, "latin1"): allow that and nothing else.
            return _latin1_encode
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    if not isinstance(text, str) or str(encoding).lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


def _unpickle(file: Path) -> dict:
    try:
        with open(file, "rb") as handle:
            content = _ArrayOnlyUnpickler(handle, encoding="bytes").load()
    except Exception as error:  # malformed pickles raise almost anything: OverflowError, MemoryError, KeyError, ...
        raise DataLoadError(f"cannot read CIFAR pickle {file}: {_one_line(error)}") from None
    if not isinstance(content, dict):
        raise DataLoadError(f"cannot read CIFAR pickle {file}: expected a dict, got {type(content).__name__}")
    return content


def _find_text_file(folder: Path, role: str) -> Path | None:
    found = [folder / f"{role}{ext}" for ext in TEXT_EXTENSIONS if (folder / f"{role}{ext}").is_file()]
    if len(found) > 1:
        raise DataLoadError(f"{folder} has both {found[0].name} and {found[1].name}; keep one")
    return found[0] if found else None


def _load_text_files(spec: str, *, train: Path, val: Path | None, test: Path | None, limit, seed) -> DataSplits:
    from rmtkd_tf.data.text import labels_to_indices, read_delimited_text

    files = {role: file for role, file in (("train", train), ("val", val), ("test", test)) if file is not None}
    texts, raw_labels = {}, {}
    for role, file in files.items():
        texts[role], raw_labels[role] = read_delimited_text(file)
    roles = list(files)  # train first: it defines the class names
    label_arrays, class_names = labels_to_indices([raw_labels[role] for role in roles])
    splits = {}
    for role, labels in zip(roles, label_arrays):
        keep = balanced_subset(labels, limit, seed)
        splits[role] = (texts[role][keep], labels[keep])
    x_test, y_test = splits.get("test", (None, None))
    x_val, y_val = splits.get("val", (None, None))
    return DataSplits(*splits["train"], x_test, y_test, class_names, "text", spec, x_val, y_val)


def _load_image_folders(spec: str, split_folders: dict[str, Path], *, limit, image_size, seed) -> DataSplits:
    class_names = _class_folders(split_folders["train"])
    if not class_names:
        raise DataLoadError(f"empty data set: {split_folders['train']} has no class sub-folders")
    splits = {}
    for role, folder in split_folders.items():
        folder_classes = _class_folders(folder)
        unknown = sorted(set(folder_classes) - set(class_names))
        if unknown:
            raise DataLoadError(f"{folder} has classes {unknown[:5]} that {split_folders['train']} lacks")
        files, labels = [], []
        for name in folder_classes:
            class_files = _image_files(folder / name)
            files += class_files
            labels += [class_names.index(name)] * len(class_files)
        if not files:
            raise DataLoadError(f"empty data set: no {'/'.join(IMAGE_EXTENSIONS)} images under {folder}")
        labels = np.array(labels, dtype=np.int64)
        # Files come grouped by class; shuffle once so that slicing (e.g. validation_split) sees every class.
        keep = np.random.default_rng(seed).permutation(balanced_subset(labels, limit, seed))
        splits[role] = (_decode_images([files[i] for i in keep], folder, image_size), labels[keep])
    shapes = {role: x.shape[1:] for role, (x, _) in splits.items()}
    if len(set(shapes.values())) > 1:
        sizes_differ = len({shape[:2] for shape in shapes.values()}) > 1
        hint = "; pass image_size=(height, width) to resize them" if sizes_differ and not image_size else ""
        raise DataLoadError(f"images of mixed shapes across the splits of {spec}: {shapes}{hint}")
    x_test, y_test = splits.get("test", (None, None))
    x_val, y_val = splits.get("val", (None, None))
    return DataSplits(*splits["train"], x_test, y_test, class_names, "image", spec, x_val, y_val)


def _class_folders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: Path) -> list[str]:
    """Image files under `folder` and its sub-folders, in sorted order (as Keras lists them)."""
    found = []
    for directory, subdirectories, names in os.walk(folder):
        subdirectories.sort()
        found += [
            os.path.join(directory, name)
            for name in sorted(names)
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
        ]
    return found


def _decode_images(files: list[str], folder: Path, image_size: tuple[int, int] | None) -> np.ndarray:
    """Decodes image files in parallel with tf.data into `(n, h, w, c)` uint8.

    tf.io decodes rather than PIL because its pixels are those of `keras.utils.image_dataset_from_directory`
    (PIL's JPEG decoder differs by up to 5 levels on CIFAR-10's JPEGs) and it is about twice as fast.
    Channels: alpha is dropped; if some images are grey and some colour, the grey ones are repeated to RGB;
    if all are grey, c = 1. With `image_size`, images of another size are resized (`resize_images`).
    """
    import tensorflow as tf

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)
        return tf.reshape(image, [-1]), tf.shape(image)

    dataset = (
        tf.data.Dataset.from_tensor_slices(files)
        .map(tf.autograph.experimental.do_not_convert(decode), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ragged_batch(1024)
    )
    images = []
    try:
        for flat_batch, shapes in dataset:
            values, row_splits = flat_batch.flat_values.numpy(), flat_batch.row_splits.numpy()
            for i, shape in enumerate(shapes.numpy()):
                images.append(values[row_splits[i] : row_splits[i + 1]].reshape(shape))
    except tf.errors.OpError:
        raise DataLoadError(f"cannot decode image {_first_undecodable(files)}") from None
    images = [_drop_alpha(image) for image in images]
    if len({image.shape[-1] for image in images}) > 1:
        images = [np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image for image in images]
    if image_size is not None:
        images = _resize_each(images, image_size)
    sizes = sorted({image.shape[:2] for image in images})
    if len(sizes) > 1:
        raise DataLoadError(
            f"images of mixed shapes under {folder}: {', '.join(f'{h}x{w}' for h, w in sizes[:4])}"
            f"{', ...' if len(sizes) > 4 else ''}; pass image_size=(height, width) to resize them"
        )
    return np.stack(images)


def _first_undecodable(files: list[str]) -> str:
    import tensorflow as tf

    for file in files:
        try:
            tf.io.decode_image(tf.io.read_file(file), expand_animations=False)
        except tf.errors.OpError as error:
            return f"{file}: {error.message.splitlines()[0] if error.message else type(error).__name__}"
    return "(unknown file)"


def _resize_each(images: list[np.ndarray], image_size: tuple[int, int]) -> list[np.ndarray]:
    """Resizes the images whose size is not `image_size`, one batch per distinct shape."""
    by_shape: dict[tuple, list[int]] = {}
    for index, image in enumerate(images):
        if image.shape[:2] != image_size:
            by_shape.setdefault(image.shape, []).append(index)
    for indices in by_shape.values():
        for index, image in zip(indices, resize_images(np.stack([images[i] for i in indices]), image_size)):
            images[index] = image
    return images


def _drop_alpha(image: np.ndarray) -> np.ndarray:
    return image[..., :3] if image.shape[-1] == 4 else image[..., :1] if image.shape[-1] == 2 else image


def _load_tfds(spec: str, *, limit, seed) -> DataSplits:
    name, _, split_text = spec[len("tfds:") :].partition(":")
    if not name:
        raise DataLoadError(f"tfds spec needs a data set name: tfds:NAME[:TRAIN_SPLIT,TEST_SPLIT], got {spec!r}")
    if split_text:
        split_names = tuple(s.strip() for s in split_text.split(","))
        if len(split_names) not in (1, 2) or not all(split_names):
            raise DataLoadError(f"tfds splits must be TRAIN_SPLIT[,TEST_SPLIT], got {split_text!r}")
    else:
        split_names = TFDS_DEFAULT_SPLITS.get(name, ("train", "test"))
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataLoadError(f"cannot load {spec}: tensorflow-datasets is not installed") from None
    try:
        loaded, info = tfds.load(name, split=list(split_names), batch_size=-1, with_info=True, download=True)
        arrays = [tfds.as_numpy(split) for split in loaded]
    except Exception as error:  # tfds raises many kinds (network, unknown name, bad split): all mean "no data"
        reason = _one_line(error)[:200]
        if isinstance(error, ImportError) or not _network_reachable():
            # Offline, tfds fails somewhere on its download path, often with an unrelated ImportError.
            reason = f"no network connection to download it? tensorflow-datasets said: {reason}"
        raise DataLoadError(
            f"could not fetch the tfds data set {name!r} with splits {list(split_names)} ({reason}); "
            "pass local files instead (an .npz, an image folder, a CIFAR-10 python folder or .tsv/.csv files)"
        ) from None
    splits = []
    for features in arrays:
        x, y, modality = tfds_features_to_xy(features)
        keep = balanced_subset(y, limit, seed)
        splits.append((x[keep], y[keep]))
    class_names = _tfds_class_names(info)
    x_test, y_test = splits[1] if len(splits) > 1 else (None, None)
    _check_labels_fit(class_names, [splits[0][1], y_test], spec)
    return DataSplits(*splits[0], x_test, y_test, class_names, modality, spec)


def _network_reachable(host="storage.googleapis.com", port=443, timeout=3.0) -> bool:
    """Whether tfds' download server answers (a quick TCP connect)."""
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300]}" if text else type(error).__name__


def _tfds_class_names(info) -> list[str] | None:
    """The names of a tfds `ClassLabel` label feature, or None (e.g. a regression or unnamed label)."""
    features = getattr(info, "features", None)
    for key in TFDS_LABEL_KEYS:
        try:
            names = getattr(features[key], "names", None)
        except (KeyError, TypeError):
            continue
        return [str(name) for name in names] if names else None
    return None


# --- helpers -------------------------------------------------------------------------------------------


def balanced_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most `limit` examples, as equal a number per class as the classes allow.

    >>> labels = np.array([0, 0, 0, 0, 1, 2, 2, 2])
    >>> keep = balanced_subset(labels, 6, seed=0)
    >>> len(keep), np.bincount(labels[keep]).tolist()
    (6, [3, 1, 2])
    """
    labels = np.asarray(labels)
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, class_of = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(class_of == c) for c in range(len(classes))]
    # Water-filling: the smallest classes take all they have up to an equal share, the rest split the remainder.
    take = np.zeros(len(classes), dtype=np.int64)
    remaining = limit
    for position, c in enumerate(sorted(range(len(classes)), key=lambda c: (len(members[c]), c))):
        take[c] = min(len(members[c]), remaining // (len(classes) - position))
        remaining -= take[c]
    chosen = [rng.choice(m, size=k, replace=False) for m, k in zip(members, take)]
    return np.sort(np.concatenate(chosen))


def _allocate(total: int, sizes: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Splits `total` over classes in proportion to `sizes`, never above `capacity` (largest remainders)."""
    ideal = total * sizes / sizes.sum()
    counts = np.minimum(np.floor(ideal).astype(np.int64), capacity)
    order = np.argsort(-(ideal - np.floor(ideal)), kind="stable")
    while counts.sum() < total:
        for c in order:
            if counts.sum() == total:
                break
            if counts[c] < capacity[c]:
                counts[c] += 1
    return counts


def _count_from_fraction(fraction, n: int, name: str) -> int:
    if isinstance(fraction, (bool, np.bool_)):
        raise DataLoadError(f"{name} fraction must be a number, got {fraction!r}")
    if isinstance(fraction, (int, np.integer)):
        if fraction < 0:
            raise DataLoadError(f"{name} count must be >= 0, got {fraction}")
        return int(fraction)
    if not isinstance(fraction, (float, np.floating)) or not 0.0 <= fraction < 1.0:
        raise DataLoadError(f"{name} fraction must be in [0, 1) or an int count, got {fraction!r}")
    return max(1, round(fraction * n)) if fraction > 0 else 0


def _as_class_indices(y: np.ndarray, what: str) -> np.ndarray:
    """Accepts (n,), (n, 1) or one-hot (n, k) integer-valued labels; returns (n,) int64."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and y.shape[1] > 1:
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise DataLoadError(f"{what} has shape {y.shape} but is not one-hot; expected class indices (n,)")
        y = y.argmax(axis=1)
    if y.ndim != 1:
        raise DataLoadError(f"{what} must be class indices of shape (n,) or (n, 1), got shape {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating) or y.dtype == bool):
        raise DataLoadError(f"{what} must be integer class indices, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating) and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise DataLoadError(f"{what} has non-integer values; expected class indices")
    if y.size and y.min() < 0:
        raise DataLoadError(f"{what} has negative labels ({int(y.min())}); expected class indices >= 0")
    return y.astype(np.int64)


def _check_labels_fit(class_names, label_arrays, spec) -> None:
    if class_names is None:
        return
    for y in label_arrays:
        if y is not None and y.size and y.max() >= len(class_names):
            raise DataLoadError(f"{spec}: label {int(y.max())} is out of range for {len(class_names)} class names")


def _modality_of(x: np.ndarray) -> str:
    if x.dtype.kind in "SUO":
        return "text"
    return "image" if x.ndim >= 3 else "tabular"


def _normalize_image_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    return check_int_tuple(image_size, "image_size", error=DataLoadError)  # (height, width)
