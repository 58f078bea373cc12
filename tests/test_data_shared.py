"""Loads the real data sets in ../shared/data with small limits (skipped where that folder is absent)."""

import time

import numpy as np
import pytest

from rmtkd_tf.data import load_data, split_train

pytestmark = pytest.mark.shared_data

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_cifar10_jpeg_folders_limit_is_fast_and_balanced(shared_data):
    start = time.perf_counter()
    data = load_data(str(shared_data / "cifar10"), limit=200, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, f"limit=200 took {elapsed:.1f}s: it must not decode all 60,000 files"
    assert data.class_names == CIFAR10_CLASSES and data.modality == "image"
    assert data.x_train.shape == (200, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (200, 32, 32, 3)
    assert np.bincount(data.y_train).tolist() == [20] * 10 and np.bincount(data.y_test).tolist() == [20] * 10
    assert 50 < data.x_train.mean() < 200  # real photographs, not blank decodes
    parts = split_train(data.x_train, data.y_train, (0.1, 0.1), seed=0)
    assert np.bincount(data.y_train[parts.calibration]).tolist() == [2] * 10


def test_sst2_folder(shared_data):
    data = load_data(str(shared_data / "sst2"), limit=100, seed=0)
    assert data.modality == "text" and data.class_names is None and data.num_classes == 2
    assert len(data.x_train) == len(data.x_val) == len(data.x_test) == 100
    assert "sentence" not in set(data.x_train.tolist())  # the header row is not an example
    assert all(isinstance(text, str) for text in data.x_test)
    assert np.bincount(data.y_test).tolist() == [50, 50]


def test_sst2_full_sizes_match_the_readme(shared_data):
    data = load_data(str(shared_data / "sst2"))
    # dev.tsv keeps only the dev phrases that are no substring of a train row (see ../shared/data/README.md).
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (60614, 764, 872)
    train_text = "\n".join(data.x_train)
    assert not any(text in train_text for text in data.x_val[:50])  # validation the teacher has not seen


def test_agnews_folder(shared_data):
    data = load_data(str(shared_data / "agnews"))
    assert data.class_names == ["Business", "Sci/Tech", "Sports", "World"]
    assert (len(data.x_train), len(data.x_test)) == (10001, 7600) and data.x_val is None
    assert np.bincount(data.y_test).tolist() == [1900] * 4
    assert not any(" #39;" in text or "&lt;" in text or "&amp;" in text for text in data.x_train)
    assert sum("'" in text for text in data.x_train) > 1000


def test_validation_choices_on_real_data(shared_data):
    from rmtkd_tf.data.holdout import choose_validation

    sst2 = choose_validation(load_data(str(shared_data / "sst2"), limit=100, seed=0))
    assert sst2.origin == "own split" and len(sst2.splits.y_val) == 100  # dev.tsv, not carved from train
    cifar = load_data(str(shared_data / "cifar10"), limit=200, seed=0)
    assert choose_validation(cifar).carve_from_train  # CIFAR-10 has no validation split of its own
    halves = choose_validation(cifar, "test-split", seed=0).splits
    assert np.bincount(halves.y_val).tolist() == [10] * 10 and np.bincount(halves.y_test).tolist() == [10] * 10
