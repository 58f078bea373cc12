"""Tests for rmtkd_tf.data.loaders on small files written to tmp_path (no real data, no network)."""

import datetime
import pickle
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmtkd_tf.data import DataLoadError, DataSplits, load_data, split_train
from rmtkd_tf.data.loaders import balanced_subset, resize_images, tfds_features_to_xy
from rmtkd_tf.data import loaders

# --- npz -----------------------------------------------------------------------------------------------


def test_npz_keras_layout_squeezes_column_labels(tmp_path):
    x_train = np.arange(4 * 5 * 5 * 3, dtype=np.uint8).reshape(4, 5, 5, 3)
    x_test = np.ones((2, 5, 5, 3), np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, y_train=np.array([[0], [1], [1], [0]]), x_test=x_test, y_test=np.array([[1], [0]]))
    data = load_data(str(path))
    np.testing.assert_array_equal(data.x_train, x_train)
    assert data.y_train.dtype == np.int64 and data.y_train.tolist() == [0, 1, 1, 0]
    assert data.y_test.tolist() == [1, 0] and data.x_test.shape == (2, 5, 5, 3)
    assert data.modality == "image" and data.source == str(path) and data.class_names is None
    assert data.x_val is None and data.y_val is None


def test_npz_x_y_layout_has_no_test_split(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(5, 3)), y=np.array([0, 2, 1, 2, 0]))
    data = load_data(path)
    assert data.x_test is None and data.y_test is None
    assert data.modality == "tabular" and data.num_classes == 3
    assert "5 train / no test" in data.describe()


def test_npz_one_hot_and_integral_float_labels_become_indices(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((3, 2)), y_train=np.eye(3)[[2, 0, 1]], x_test=np.zeros((2, 2)),
             y_test=np.array([1.0, 0.0]))
    data = load_data(path)
    assert data.y_train.tolist() == [2, 0, 1] and data.y_test.tolist() == [1, 0]


def test_npz_text_arrays_are_text(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array(["good", "bad"]), y=np.array([1, 0]))
    assert load_data(path).modality == "text"


def test_npz_limit_is_class_balanced(tmp_path):
    path = tmp_path / "d.npz"
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    np.savez(path, x=np.arange(100).reshape(100, 1), y=y)
    data = load_data(path, limit=30, seed=3)
    assert np.bincount(data.y_train).tolist() == [10, 10, 10]
    # rows stay paired with their labels and in source order
    np.testing.assert_array_equal(y[data.x_train[:, 0]], data.y_train)
    assert (np.diff(data.x_train[:, 0]) > 0).all()


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(x=np.zeros((3, 2)), y=np.array([0, 1])), "inconsistent lengths.*x has 3 rows, y has 2"),
        (dict(a=np.zeros(3)), "unknown .npz layout"),
        (dict(x_train=np.zeros((2, 2)), y_train=np.array([0, 1]), x_test=np.zeros((1, 2))),
         "only one of x_test/y_test"),
        (dict(x=np.zeros((2, 2)), y=np.array([0.5, 1.0])), "non-integer values"),
        (dict(x=np.zeros((2, 2)), y=np.array([-1, 1])), "negative labels"),
        (dict(x=np.zeros((2, 2)), y=np.array([[0, 1], [1, 1]])), "not one-hot"),
        (dict(x=np.zeros((2, 2)), y=np.zeros((2, 1, 1), np.int64)), "shape"),
        (dict(x=np.zeros((0, 2)), y=np.zeros(0, np.int64)), "empty data set"),
        (dict(x_train=np.zeros((2, 2)), y_train=np.array([0, 1]), x_test=np.zeros((2, 3)), y_test=np.array([0, 1])),
         "differ in example shape"),
    ],
)
def test_npz_errors(tmp_path, arrays, message):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataLoadError, match=message):
        load_data(path)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataLoadError, match="cannot read"):
        load_data(path)


def test_file_named_npz_that_is_not_one(tmp_path):
    path = tmp_path / "d.npz"
    path.write_text("hello")
    with pytest.raises(DataLoadError, match="not a valid .npz file"):
        load_data(path)


# --- CIFAR-10 python batches -----------------------------------------------------------------------------


def _write_cifar_batch(path, labels, rng):
    # Each row holds 1024 red, then 1024 green, then 1024 blue values (channel-major), as in the release.
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"fake", b"labels": list(labels), b"data": data, b"filenames": []}, f)
    return data


def _fake_cifar(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    first = _write_cifar_batch(folder / "data_batch_1", [0, 1, 2, 0, 1, 2], rng)
    second = _write_cifar_batch(folder / "data_batch_2", [2, 2, 0, 1, 0, 1], rng)
    test = _write_cifar_batch(folder / "test_batch", [1, 0, 2], rng)
    names = [b"cat", b"dog", b"frog"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    return folder, np.concatenate([first, second]), test


def test_cifar_python_batches_from_parent_folder(tmp_path):
    folder, train_rows, test_rows = _fake_cifar(tmp_path)
    data = load_data(tmp_path)
    assert data.x_train.shape == (12, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.y_train.tolist() == [0, 1, 2, 0, 1, 2, 2, 2, 0, 1, 0, 1]
    assert data.class_names == ["cat", "dog", "frog"] and data.modality == "image"
    # pixel (row 1, column 2) of image 3: red at 32 + 2, green at 1024 + 34, blue at 2048 + 34
    assert data.x_train[3, 1, 2].tolist() == train_rows[3, [34, 1024 + 34, 2048 + 34]].tolist()
    assert data.x_test.shape == (3, 32, 32, 3) and data.y_test.tolist() == [1, 0, 2]
    np.testing.assert_array_equal(data.x_test[0, :, :, 2].reshape(-1), test_rows[0, 2048:])
    # the batches folder itself works too
    np.testing.assert_array_equal(load_data(folder).x_train, data.x_train)


def test_cifar_limit_balanced_per_split(tmp_path):
    _fake_cifar(tmp_path)
    data = load_data(tmp_path, limit=6, seed=1)
    assert np.bincount(data.y_train).tolist() == [2, 2, 2]
    assert len(data.y_test) == 3


def test_cifar_pickle_with_other_objects_is_refused(tmp_path):
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"when": datetime.datetime(2020, 1, 1)}, f)
    with pytest.raises(DataLoadError, match="refusing to load datetime"):
        load_data(tmp_path)


def test_cifar_batch_of_wrong_shape(tmp_path):
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataLoadError, match=r"not a CIFAR-10 batch.*\(2, 100\)"):
        load_data(tmp_path)


def test_cifar_folder_without_train_batches(tmp_path):
    _write_cifar_batch(tmp_path / "test_batch", [0], np.random.default_rng(0))
    with pytest.raises(DataLoadError, match="no data_batch"):
        load_data(tmp_path)


# --- image folders ------------------------------------------------------------------------------------


def _save_image(path, pixels):
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    encode = tf.io.encode_jpeg if path.suffix == ".jpg" else tf.io.encode_png
    path.write_bytes(encode(pixels).numpy())


def _image_tree(root, classes=("dog", "cat"), per_class=3, size=(6, 5), channels=3, seed=0):
    """PNG images whose first pixel encodes (class index in sorted order, image number)."""
    rng = np.random.default_rng(seed)
    for class_index, name in enumerate(sorted(classes)):
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(*size, channels), dtype=np.uint8)
            pixels[0, 0, 0] = class_index
            _save_image(root / name / f"{i:03d}.png", pixels)


def test_image_folder_train_test_layout(tmp_path):
    _image_tree(tmp_path / "train", per_class=4)
    _image_tree(tmp_path / "test", per_class=2, seed=1)
    data = load_data(tmp_path)
    assert data.class_names == ["cat", "dog"] and data.modality == "image"
    assert data.x_train.shape == (8, 6, 5, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (4, 6, 5, 3)
    # labels follow sorted folder names, and each image kept its own label through the shuffle
    np.testing.assert_array_equal(data.x_train[:, 0, 0, 0], data.y_train)
    np.testing.assert_array_equal(data.x_test[:, 0, 0, 0], data.y_test)
    assert np.bincount(data.y_train).tolist() == [4, 4]


def test_image_folder_pixels_are_exact_for_png(tmp_path):
    pixels = np.random.default_rng(5).integers(0, 256, size=(4, 7, 3), dtype=np.uint8)
    _save_image(tmp_path / "only" / "a.png", pixels)
    np.testing.assert_array_equal(load_data(tmp_path).x_train[0], pixels)


def test_image_folder_shuffle_is_seeded(tmp_path):
    _image_tree(tmp_path, per_class=6)
    first, again, other = (load_data(tmp_path, seed=s).y_train for s in (0, 0, 1))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert sorted(first.tolist()) == [0] * 6 + [1] * 6
    assert first.tolist() != sorted(first.tolist())  # not grouped by class


def test_image_folder_flat_layout_reads_jpeg_ignores_other_files(tmp_path):
    for name in ("b", "a"):
        _save_image(tmp_path / name / "x.jpg", np.full((4, 4, 3), 200, np.uint8))
        (tmp_path / name / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    data = load_data(tmp_path)
    assert data.class_names == ["a", "b"] and data.x_test is None
    assert data.x_train.shape == (2, 4, 4, 3)
    assert np.abs(data.x_train.astype(int) - 200).max() <= 2  # JPEG is lossy


def test_image_folder_val_split(tmp_path):
    _image_tree(tmp_path / "train")
    _image_tree(tmp_path / "val", per_class=1)
    data = load_data(tmp_path)
    assert data.x_test is None and data.x_val.shape[0] == 2 and sorted(data.y_val.tolist()) == [0, 1]


def test_image_folder_limit_decodes_only_chosen_files(tmp_path, monkeypatch):
    _image_tree(tmp_path / "train", classes=("a", "b", "c"), per_class=5)
    _image_tree(tmp_path / "test", classes=("a", "b", "c"), per_class=5)
    decoded = []
    real_decode = loaders._decode_images
    def counting_decode(files, *args):
        decoded.append(len(files))
        return real_decode(files, *args)

    monkeypatch.setattr(loaders, "_decode_images", counting_decode)
    data = load_data(tmp_path, limit=6, seed=2)
    assert decoded == [6, 6]
    assert np.bincount(data.y_train).tolist() == [2, 2, 2] and np.bincount(data.y_test).tolist() == [2, 2, 2]
    np.testing.assert_array_equal(data.x_train[:, 0, 0, 0], data.y_train)


def test_grey_images_keep_one_channel_and_mixed_become_rgb(tmp_path):
    _save_image(tmp_path / "grey" / "g" / "1.png", np.full((3, 3, 1), 9, np.uint8))
    _save_image(tmp_path / "grey" / "g" / "2.png", np.full((3, 3, 1), 7, np.uint8))
    assert load_data(tmp_path / "grey").x_train.shape == (2, 3, 3, 1)
    _save_image(tmp_path / "mixed" / "g" / "1.png", np.full((3, 3, 1), 9, np.uint8))
    _save_image(tmp_path / "mixed" / "c" / "2.png", np.full((3, 3, 4), 5, np.uint8))  # RGBA: alpha dropped
    mixed = load_data(tmp_path / "mixed")
    assert mixed.x_train.shape == (2, 3, 3, 3)
    assert sorted(mixed.x_train[:, 0, 0, 0].tolist()) == [5, 9]


def test_mixed_sizes_error_and_image_size_resizes(tmp_path):
    _save_image(tmp_path / "a" / "1.png", np.full((4, 4, 3), 10, np.uint8))
    _save_image(tmp_path / "a" / "2.png", np.full((8, 6, 3), 30, np.uint8))
    with pytest.raises(DataLoadError, match="mixed shapes.*4x4, 8x6.*image_size"):
        load_data(tmp_path)
    data = load_data(tmp_path, image_size=(4, 4))
    assert data.x_train.shape == (2, 4, 4, 3) and data.x_train.dtype == np.uint8
    assert sorted(data.x_train[:, 2, 2, 0].tolist()) == [10, 30]  # constant images stay constant


def test_image_size_as_int_applies_to_every_split(tmp_path):
    _image_tree(tmp_path / "train", size=(6, 6))
    _image_tree(tmp_path / "test", size=(10, 10))
    with pytest.raises(DataLoadError, match="mixed shapes across the splits"):
        load_data(tmp_path)
    data = load_data(tmp_path, image_size=8)
    assert data.x_train.shape[1:] == (8, 8, 3) and data.x_test.shape[1:] == (8, 8, 3)


def test_undecodable_image_is_named(tmp_path):
    _save_image(tmp_path / "a" / "1.png", np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "a" / "2.jpg").write_bytes(b"not really a jpeg")
    with pytest.raises(DataLoadError, match=r"cannot decode image .*2\.jpg"):
        load_data(tmp_path)


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataLoadError, match="empty data set: no .* images"):
        load_data(tmp_path / "empty")
    _image_tree(tmp_path / "split" / "train", classes=("a", "b"))
    _image_tree(tmp_path / "split" / "test", classes=("a", "zebra"))
    with pytest.raises(DataLoadError, match=r"classes \['zebra'\]"):
        load_data(tmp_path / "split")
    (tmp_path / "noclasses" / "train").mkdir(parents=True)
    with pytest.raises(DataLoadError, match="no class sub-folders"):
        load_data(tmp_path / "noclasses")


# --- text folders and files ----------------------------------------------------------------------------


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_sst2_like_folder_exposes_dev_as_validation(tmp_path):
    header = "sentence\tlabel\n"
    _write(tmp_path / "train.tsv", header + "good \t1\nbad \t0\nfine \t1\n")
    _write(tmp_path / "dev.tsv", header + "meh \t0\n")
    _write(tmp_path / "test.tsv", header + "great \t1\nawful \t0\n")
    data = load_data(tmp_path)
    assert data.modality == "text" and data.class_names is None and data.num_classes == 2
    assert data.x_train.dtype == object and list(data.x_train) == ["good ", "bad ", "fine "]
    assert data.y_train.tolist() == [1, 0, 1]
    assert list(data.x_val) == ["meh "] and data.y_val.tolist() == [0]
    assert data.y_test.tolist() == [1, 0]
    assert data.describe() == f"{tmp_path}: text, 3 train / 1 val / 2 test, 2 classes, x str"


def test_agnews_like_folder_trains_on_dev(tmp_path):
    _write(tmp_path / "dev.tsv", "It #39;s a goal\tSports\nVote today\tWorld\nStocks up\tBusiness\n")
    _write(tmp_path / "test.tsv", "Chips\tSci/Tech\nMatch\tSports\n")
    with pytest.raises(DataLoadError, match=r"\['Sci/Tech'\] do not occur in the train split"):
        load_data(tmp_path)
    _write(tmp_path / "dev.tsv", "It #39;s a goal\tSports\nVote today\tWorld\nStocks up\tBusiness\nChips\tSci/Tech\n")
    data = load_data(tmp_path)
    assert data.class_names == ["Business", "Sci/Tech", "Sports", "World"]
    assert data.x_train[0] == "It's a goal" and data.y_train.tolist() == [2, 3, 0, 1]
    assert data.y_test.tolist() == [1, 2] and data.x_val is None


def test_single_csv_file_and_limit(tmp_path):
    rows = "".join(f"text {i},{'pos' if i % 4 else 'neg'}\n" for i in range(40))
    path = _write(tmp_path / "reviews.csv", "text,label\n" + rows)
    data = load_data(path, limit=10, seed=4)
    assert data.x_test is None and data.class_names == ["neg", "pos"]
    assert np.bincount(data.y_train).tolist() == [5, 5]
    for text, label in zip(data.x_train, data.y_train):
        assert (int(text.split()[1]) % 4 != 0) == bool(label)


def test_text_folder_errors(tmp_path):
    (tmp_path / "a").mkdir()
    _write(tmp_path / "a" / "train.tsv", "x\t1\n")
    _write(tmp_path / "a" / "train.csv", "x,1\n")
    with pytest.raises(DataLoadError, match="both train.tsv and train.csv"):
        load_data(tmp_path / "a")
    (tmp_path / "b").mkdir()
    _write(tmp_path / "b" / "test.tsv", "x\t1\n")
    with pytest.raises(DataLoadError, match="no train.tsv/dev.tsv"):
        load_data(tmp_path / "b")


# --- dispatch and argument errors -------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(DataLoadError, match="data path not found: .*nope"):
        load_data(str(tmp_path / "nope"))


def test_unknown_file_format(tmp_path):
    path = _write(tmp_path / "data.json", "{}")
    with pytest.raises(DataLoadError, match="unknown data format"):
        load_data(path)


def test_folder_with_nothing_recognisable(tmp_path):
    _write(tmp_path / "readme.md", "hi")
    with pytest.raises(DataLoadError, match="unknown data format.*folder"):
        load_data(tmp_path)


@pytest.mark.parametrize("limit", [0, -3, 2.5, True, "10"])
def test_bad_limit(tmp_path, limit):
    with pytest.raises(DataLoadError, match="limit must be a positive integer"):
        load_data(tmp_path, limit=limit)


@pytest.mark.parametrize("size", [0, (3,), (3, -1), "big", (2.5, 3)])
def test_bad_image_size(tmp_path, size):
    with pytest.raises(DataLoadError, match="image_size must be"):
        load_data(tmp_path, image_size=size)


def test_image_size_resizes_npz_images_and_ignores_tabular(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.full((2, 4, 4), 50, np.uint8), y=np.array([0, 1]))
    data = load_data(path, image_size=(8, 2))
    assert data.x_train.shape == (2, 8, 2) and data.x_train.dtype == np.uint8 and (data.x_train == 50).all()
    np.savez(path, x=np.zeros((2, 3)), y=np.array([0, 1]))
    assert load_data(path, image_size=8).x_train.shape == (2, 3)


# --- tfds ------------------------------------------------------------------------------------------------


class _FakeLabelFeature:
    names = ["neg", "pos"]


class _FakeInfo:
    features = {"label": _FakeLabelFeature()}


def _fake_tfds(monkeypatch, load):
    module = types.SimpleNamespace(load=load, as_numpy=lambda tree: tree)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)


def test_tfds_fetch_failure_is_a_clear_error(monkeypatch):
    def load(name, **kwargs):
        raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

    _fake_tfds(monkeypatch, load)
    with pytest.raises(DataLoadError, match=r"could not fetch the tfds data set 'cifar10'.*local files") as error:
        load_data("tfds:cifar10")
    assert "\n" not in str(error.value)


def test_tfds_success_path_maps_features_and_default_splits(monkeypatch):
    calls = []

    def load(name, *, split, **kwargs):
        calls.append((name, split, kwargs))
        train = {"sentence": np.array([b"good", b"bad", b"ok"]), "label": np.array([1, 0, 1]), "idx": np.arange(3)}
        test = {"sentence": np.array([b"fine"]), "label": np.array([1]), "idx": np.arange(1)}
        return [train, test], _FakeInfo()

    _fake_tfds(monkeypatch, load)
    data = load_data("tfds:glue/sst2")
    assert calls[0][0] == "glue/sst2" and calls[0][1] == ["train", "validation"]
    assert calls[0][2]["download"] is True
    assert list(data.x_train) == ["good", "bad", "ok"] and data.y_test.tolist() == [1]
    assert data.class_names == ["neg", "pos"] and data.modality == "text"
    load_data("tfds:ag_news_subset:train[:10%],test")
    assert calls[1][1] == ["train[:10%]", "test"]


@pytest.mark.parametrize("spec, message", [("tfds:", "needs a data set name"), ("tfds:mnist:a,b,c", "TRAIN_SPLIT")])
def test_tfds_bad_specs(spec, message):
    with pytest.raises(DataLoadError, match=message):
        load_data(spec)


def test_tfds_feature_mapping():
    images = np.zeros((2, 4, 4, 3), np.uint8)
    x, y, modality = tfds_features_to_xy({"image": images, "label": np.array([3, 1]), "id": np.array([b"a", b"b"])})
    assert x is images and y.tolist() == [3, 1] and y.dtype == np.int64 and modality == "image"
    x, _, modality = tfds_features_to_xy(
        {"title": np.array([b"T"]), "description": np.array(["caf\u00e9".encode()]), "label": np.array([0])}
    )
    assert modality == "text" and list(x) == ["caf\u00e9"]  # description wins over title, as for ag_news_subset
    with pytest.raises(DataLoadError, match=r"cannot map tfds features \['audio', 'label'\]"):
        tfds_features_to_xy({"audio": np.zeros((1, 3)), "label": np.array([0])})


# --- split_train ---------------------------------------------------------------------------------------


def test_split_train_is_stratified_disjoint_and_complete():
    y = np.array([0] * 600 + [1] * 300 + [2] * 100)
    parts = split_train(np.zeros(len(y)), y, fractions=(0.1, 0.2), seed=0)
    assert np.bincount(y[parts.calibration]).tolist() == [60, 30, 10]
    assert np.bincount(y[parts.validation]).tolist() == [120, 60, 20]
    everything = np.concatenate([parts.calibration, parts.validation, parts.train])
    assert sorted(everything.tolist()) == list(range(len(y)))
    assert all(p.dtype == np.int64 for p in (parts.calibration, parts.validation, parts.train))


def test_split_train_is_deterministic_by_seed():
    y = np.repeat(np.arange(4), 25)
    first, again, other = (split_train(y, y, (0.2, 0.2), seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(first.calibration, again.calibration)
    np.testing.assert_array_equal(first.validation, again.validation)
    assert not np.array_equal(first.calibration, other.calibration)


def test_split_train_counts_and_take():
    y = np.array([0, 1] * 10)
    x = np.arange(20) * 10
    parts = split_train(x, y, fractions=(4, 0), seed=0)
    calibration, validation, train = parts.take(x)
    assert len(calibration) == 4 and len(validation) == 0 and len(train) == 16
    assert np.bincount(y[parts.calibration]).tolist() == [2, 2]
    np.testing.assert_array_equal(calibration, x[parts.calibration])


def test_split_train_tiny_fraction_keeps_one_and_never_overfills_classes():
    y = np.array([0] * 9 + [1])
    parts = split_train(y, y, fractions=(0.01, 0.85), seed=0)
    assert len(parts.calibration) == 1
    assert len(parts.validation) == 8 and len(parts.train) == 1
    assert len(set(parts.calibration) | set(parts.validation) | set(parts.train)) == 10


@pytest.mark.parametrize(
    "x, y, fractions, message",
    [
        (np.zeros(3), np.array([0, 1]), (0.1, 0.1), "inconsistent lengths"),
        (np.zeros(2), np.array([0.0, 1.0]), (0.1, 0.1), "integer class indices"),
        (np.zeros(0), np.zeros(0, np.int64), (0.1, 0.1), "empty"),
        (np.zeros(4), np.array([0, 1, 0, 1]), (1.0, 0.0), r"in \[0, 1\)"),
        (np.zeros(4), np.array([0, 1, 0, 1]), (-0.1, 0.0), r"in \[0, 1\)"),
        (np.zeros(4), np.array([0, 1, 0, 1]), (3, 2), "need more than the 4"),
        (np.zeros(4), np.array([0, 1, 0, 1]), (-1, 0), ">= 0"),
        (np.zeros(4), np.array([0, 1, 0, 1]), (0.1,), r"\(calibration, validation\)"),
    ],
)
def test_split_train_errors(x, y, fractions, message):
    with pytest.raises(DataLoadError, match=message):
        split_train(x, y, fractions, seed=0)


# --- small helpers -------------------------------------------------------------------------------------


def test_balanced_subset_gives_scarce_classes_all_they_have():
    y = np.array([0] * 10 + [1] * 2 + [2] * 10)
    keep = balanced_subset(y, 11, seed=0)
    assert np.bincount(y[keep]).tolist() == [4, 2, 5] or np.bincount(y[keep]).tolist() == [5, 2, 4]
    assert len(keep) == len(set(keep.tolist())) == 11
    assert balanced_subset(y, 100, seed=0).tolist() == list(range(22))


def test_resize_images_keeps_dtype_and_layout():
    grey = np.full((2, 4, 4), 255, np.uint8)
    assert resize_images(grey, (2, 3)).shape == (2, 2, 3)
    assert (resize_images(grey, (8, 8)) == 255).all()
    floats = np.random.default_rng(0).random((1, 4, 4, 2)).astype(np.float32)
    assert resize_images(floats, (4, 4)) is floats
    assert resize_images(floats, (2, 2)).dtype == np.float32


def test_data_splits_validates_itself():
    y = np.array([0, 1])
    with pytest.raises(DataLoadError, match="inconsistent lengths: x_test has 3 rows"):
        DataSplits(np.zeros((2, 1)), y, np.zeros((3, 1)), y, None, "tabular", "s")
    with pytest.raises(DataLoadError, match="modality"):
        DataSplits(np.zeros((2, 1)), y, None, None, None, "audio", "s")
    with pytest.raises(DataLoadError, match="int64"):
        DataSplits(np.zeros((2, 1)), y.astype(np.int32), None, None, None, "tabular", "s")
    with pytest.raises(DataLoadError, match="both be given"):
        DataSplits(np.zeros((2, 1)), y, np.zeros((2, 1)), None, None, "tabular", "s")
    data = DataSplits(np.zeros((2, 3, 3, 1), np.uint8), y, None, None, ["a", "b", "c"], "image", "s")
    assert data.num_classes == 3 and data.describe() == "s: image, 2 train / no test, 3 classes, x (3, 3, 1) uint8"



@settings(max_examples=40, deadline=None)
@given(
    class_sizes=st.lists(st.integers(2, 30), min_size=1, max_size=5),
    calibration=st.floats(0.0, 0.45),
    validation=st.floats(0.0, 0.45),
    seed=st.integers(0, 2**16),
)
def test_split_train_properties(class_sizes, calibration, validation, seed):
    y = np.repeat(np.arange(len(class_sizes)), class_sizes)
    np.random.default_rng(seed).shuffle(y)
    parts = split_train(y, y, (calibration, validation), seed=seed)
    n = len(y)
    everything = np.concatenate([parts.calibration, parts.validation, parts.train])
    assert sorted(everything.tolist()) == list(range(n))  # disjoint and complete
    for part, fraction in ((parts.calibration, calibration), (parts.validation, validation)):
        assert len(part) == (max(1, round(fraction * n)) if fraction > 0 else 0)
    # stratified: each class gets its proportional share of the calibration set, up to rounding
    ideal = len(parts.calibration) * np.array(class_sizes) / n
    got = np.bincount(y[parts.calibration], minlength=len(class_sizes))
    assert (np.abs(got - ideal) < 1 + 1e-9).all()
