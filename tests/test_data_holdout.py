"""Where validation comes from: the data's own split, carved from train, half of test, or a data spec."""

import numpy as np
import pytest

import keras

from rmtkd_tf.data import DataLoadError, DataSplits, load_data
from rmtkd_tf.data.holdout import carved_from_train_warning, choose_validation, stratified_halves
from rmtkd_tf.pipeline import load_task, warn_if_validation_too_small

# --- loaders: a data set's own validation split ----------------------------------------------------------


@pytest.mark.parametrize("x_key, y_key", [("x_val", "y_val"), ("x_validation", "y_validation")])
def test_npz_validation_split_is_loaded(tmp_path, x_key, y_key):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((6, 3)), y_train=np.arange(6) % 2, x_test=np.ones((2, 3)), y_test=[0, 1],
             **{x_key: np.full((4, 3), 7.0), y_key: np.array([[1], [0], [1], [1]])})
    data = load_data(path)
    assert data.x_val.shape == (4, 3) and (data.x_val == 7).all() and data.y_val.tolist() == [1, 0, 1, 1]
    assert data.y_test.tolist() == [0, 1] and "4 val" in data.describe()


def test_npz_validation_split_beside_x_y_layout_and_limit(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((9, 2)), y=np.arange(9) % 3, x_val=np.arange(12).reshape(6, 2), y_val=np.arange(6) % 3)
    data = load_data(path, limit=3)
    assert len(data.y_train) == 3 and np.bincount(data.y_val).tolist() == [1, 1, 1]


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(x_val=np.zeros((2, 2))), "only one of x_val/y_val"),
        (dict(x_val=np.zeros((2, 2)), y_val=[0, 1], x_validation=np.zeros((2, 2)), y_validation=[0, 1]), "keep one"),
        (dict(x_val=np.zeros((2, 5)), y_val=[0, 1]), "differ in example shape"),
        (dict(x_val=np.zeros((3, 2)), y_val=[0, 1]), "inconsistent lengths"),
    ],
)
def test_npz_validation_split_errors(tmp_path, arrays, message):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((4, 2)), y_train=[0, 1, 0, 1], **arrays)
    with pytest.raises(DataLoadError, match=message):
        load_data(path)


def _png_tree(root, classes, per_class, seed=0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())


def test_image_folder_validation_folder_is_the_own_split(tmp_path):
    _png_tree(tmp_path / "train", ("a", "b"), 3)
    _png_tree(tmp_path / "validation", ("a", "b"), 2, seed=1)
    data = load_data(tmp_path)
    assert len(data.y_val) == 4 and choose_validation(data).origin == "own split"


# --- choose_validation -------------------------------------------------------------------------------------


def _splits(n_train=40, n_test=30, with_val=False, class_names=None):
    rng = np.random.default_rng(0)
    y_test = np.array([0] * 17 + [1] * 9 + [2] * 4, dtype=np.int64)[:n_test]
    extra = {}
    if with_val:
        extra = dict(x_val=rng.normal(size=(6, 3)), y_val=np.arange(6, dtype=np.int64) % 3)
    return DataSplits(rng.normal(size=(n_train, 3)), np.arange(n_train, dtype=np.int64) % 3,
                      np.arange(n_test * 3, dtype=float).reshape(n_test, 3), y_test, class_names, "tabular", "toy",
                      **extra)


def test_auto_prefers_the_own_split_and_train_carves_even_then():
    splits = _splits(with_val=True)
    own = choose_validation(splits, "auto")
    assert own.origin == "own split" and not own.carve_from_train and own.splits.y_val is splits.y_val
    carved = choose_validation(splits, "train")
    assert carved.origin == "carved from train" and carved.carve_from_train and carved.splits.x_val is None
    assert choose_validation(_splits(), "auto").carve_from_train


def test_test_split_halves_are_disjoint_stratified_and_cover_the_test_split():
    splits = _splits()
    choice = choose_validation(splits, "test-split", seed=3)
    halves = choice.splits

    def rows(x):  # the test rows are distinct (arange), so sets of rows compare the splits
        return {tuple(row) for row in x}

    assert rows(halves.x_val).isdisjoint(rows(halves.x_test))
    assert rows(halves.x_val) | rows(halves.x_test) == rows(splits.x_test)
    counts_val, counts_test = np.bincount(halves.y_val, minlength=3), np.bincount(halves.y_test, minlength=3)
    assert (counts_val + counts_test).tolist() == [17, 9, 4] and np.abs(counts_val - counts_test).max() <= 1
    assert choice.origin == "half of test" and not choice.carve_from_train
    assert "remaining half (15)" in choice.note and "15 of 30" in choice.note
    np.testing.assert_array_equal(choice.splits.x_train, splits.x_train)  # train untouched
    assert splits.x_val is None and len(splits.y_test) == 30  # the input is not modified
    other_seed = choose_validation(splits, "test-split", seed=4).splits.x_val
    assert rows(other_seed) != rows(halves.x_val)


def test_stratified_halves_of_tiny_and_odd_classes():
    first, second = stratified_halves(np.array([5, 5, 5]), seed=0)
    assert (len(first), len(second)) == (2, 1) and set(first).isdisjoint(second)
    assert [len(h) for h in stratified_halves(np.zeros(0, np.int64))] == [0, 0]


def test_test_split_needs_a_test_split():
    no_test = DataSplits(np.zeros((4, 2)), np.array([0, 1, 0, 1]), None, None, None, "tabular", "toy")
    with pytest.raises(DataLoadError, match="test-split needs a test split"):
        choose_validation(no_test, "test-split")


def test_a_data_spec_becomes_the_validation_set(tmp_path):
    path = tmp_path / "held_out.npz"
    x_held = np.full((5, 3), 9.0)
    np.savez(path, x=x_held, y=[2, 1, 0, 2, 2])
    choice = choose_validation(_splits(), str(path))
    np.testing.assert_array_equal(choice.splits.x_val, x_held)
    assert choice.splits.y_val.tolist() == [2, 1, 0, 2, 2] and choice.origin == f"file {path}"
    assert len(choose_validation(_splits(), str(path), limit=3).splits.y_val) == 3


def test_a_data_spec_with_named_classes_is_matched_by_name(tmp_path):
    # The validation folder lacks class "a": its own numbering would call "b" class 0.
    _png_tree(tmp_path / "val", ("b", "c"), 1)
    splits = DataSplits(np.zeros((3, 4, 4, 3), np.uint8), np.array([0, 1, 2]), None, None, ["a", "b", "c"], "image", "t")
    choice = choose_validation(splits, str(tmp_path / "val"))
    assert sorted(choice.splits.y_val.tolist()) == [1, 2]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.savez(p / "v.npz", x_train=np.zeros((2, 3)), y_train=[0, 1], x_test=np.zeros((2, 3)), y_test=[0, 1]),
         "single split"),
        (lambda p: np.savez(p / "v.npz", x=np.zeros((2, 4)), y=[0, 1]), "shape"),
        (lambda p: np.savez(p / "v.npz", x=np.zeros((2, 4, 4, 3)), y=[0, 1]), "image data but --data is tabular"),
        (lambda p: (p / "v.npz").write_text("x"), "not a valid .npz"),
    ],
)
def test_bad_validation_specs_are_one_line_errors(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(DataLoadError, match=message):
        choose_validation(_splits(), str(tmp_path / "v.npz"))


def test_unknown_validation_word_is_a_clear_error():
    with pytest.raises(DataLoadError, match="auto, train, test-split or a data path"):
        choose_validation(_splits(), "test")


def test_the_carved_warning_is_one_line_and_says_why():
    text = carved_from_train_warning(150)
    assert text.startswith("warning: ") and "\n" not in text and "150 examples" in text
    assert "optimistic" in text and "--validation test-split" in text
    assert "no validation split of its own" in text
    assert "no validation split of its own" not in carved_from_train_warning(automatic=False)


# --- load_task ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tabular_task(tmp_path_factory):
    """A tiny (untrained) classifier of 4 features and an .npz with train and test splits."""
    root = tmp_path_factory.mktemp("holdout")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model.save(root / "model.keras")
    rng = np.random.default_rng(0)
    np.savez(root / "data.npz", x_train=rng.normal(size=(120, 4)).astype("float32"), y_train=np.arange(120) % 3,
             x_test=rng.normal(size=(61, 4)).astype("float32"), y_test=np.arange(61) % 3)
    np.savez(root / "held_out.npz", x=rng.normal(size=(21, 4)).astype("float32"), y=np.arange(21) % 3)
    return root


def _load(root, validation, data="data.npz"):
    lines = []
    task = load_task(root / "model.keras", root / data, validation=validation, log=lines.append)
    return task, lines


def test_load_task_carves_from_train_with_a_loud_warning(tabular_task):
    task, lines = _load(tabular_task, "auto")
    assert task.data.validation_origin == "carved from train" and len(task.data.y_validation) == 12
    assert len(task.data.y_train) == 108 and len(task.data.y_test) == 61
    # compress_task logs the warning (test_cli_validation); analyze, which needs no validation, does not.
    assert task.validation_warning.startswith("warning: the data has no validation split of its own")
    assert "carved from the training split (12 examples)" in task.validation_warning
    assert "carved from the training split" in task.description and "carved" in " ".join(lines)
    explicit, _ = _load(tabular_task, "train")
    assert explicit.validation_warning.startswith("warning: validation is carved from the training split")


def test_load_task_test_split_reports_on_the_other_half(tabular_task):
    task, lines = _load(tabular_task, "test-split")
    assert task.data.validation_origin == "half of test"
    assert len(task.data.y_validation) == 31 and len(task.data.y_test) == 30
    assert len(task.data.y_train) == 120  # nothing of train held out
    assert "test figures are on the remaining half (30)" in task.description
    assert task.validation_warning is None and not any(line.startswith("warning: ") for line in lines)
    validation_rows = {row.tobytes() for row in task.data.x_validation}
    assert validation_rows.isdisjoint(row.tobytes() for row in task.data.x_test)


def test_load_task_takes_validation_from_a_data_spec(tabular_task):
    task, lines = _load(tabular_task, str(tabular_task / "held_out.npz"))
    assert task.data.validation_origin == f"file {tabular_task / 'held_out.npz'}"
    assert len(task.data.y_validation) == 21 and len(task.data.y_train) == 120 and len(task.data.y_test) == 61
    assert task.validation_warning is None and not any(line.startswith("warning: ") for line in lines)


def test_validation_size_warning_for_the_requested_max_drop(tabular_task):
    task, _ = _load(tabular_task, "test-split")
    lines = []
    config = type("Config", (), {"max_drop": 1.0, "confidence": 0.95})()
    assert warn_if_validation_too_small(task.data, config, lines.append) is not None
    assert len(lines) == 1 and lines[0].startswith("warning: 31 validation examples are too few")
    config.max_drop = 60.0
    assert warn_if_validation_too_small(task.data, config, lines.append) is None and len(lines) == 1


def test_a_text_spec_with_named_labels_is_matched_by_name(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.tsv").write_text("text\tlabel\ngood\tpos\nbad\tneg\nfine\tpos\n")
    (tmp_path / "data" / "test.tsv").write_text("text\tlabel\ngreat\tpos\nawful\tneg\n")
    (tmp_path / "held_out.tsv").write_text("text\tlabel\nsplendid\tpos\nlovely\tpos\n")  # no "neg": own index 0
    splits = load_data(tmp_path / "data")
    choice = choose_validation(splits, str(tmp_path / "held_out.tsv"))
    assert list(choice.splits.x_val) == ["splendid", "lovely"] and choice.splits.y_val.tolist() == [1, 1]
    halves = choose_validation(splits, "test-split").splits
    assert sorted(halves.x_val.tolist() + halves.x_test.tolist()) == ["awful", "great"]


def test_load_task_encodes_a_text_validation_spec_and_test_halves(tmp_path):
    from test_transformers_bert import SEQ_LEN, save_toy_bert, write_sentiment_tsv

    data = write_sentiment_tsv(tmp_path / "toy", n_train=40, n_test=12)
    held_out = write_sentiment_tsv(tmp_path / "held_out", n_train=10, n_test=0, seed=1) / "train.tsv"
    model_path = save_toy_bert(tmp_path)
    task = load_task(model_path, data, validation=str(held_out), log=lambda m: None)
    assert task.data.x_validation["token_ids"].shape == (10, SEQ_LEN) and len(task.data.y_train) == 40
    assert task.data.validation_origin == f"file {held_out}"
    halves = load_task(model_path, data, validation="test-split", log=lambda m: None)
    assert len(halves.data.y_validation) == len(halves.data.y_test) == 6
    assert halves.data.x_validation["token_ids"].shape == (6, SEQ_LEN)
