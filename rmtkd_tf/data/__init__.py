"""Data loading: turns a `--data SPEC` string into NumPy train/test arrays (see `load_data`)."""

from rmtkd_tf.data.holdout import VALIDATION_CHOICES, ValidationChoice, choose_validation, stratified_halves
from rmtkd_tf.data.loaders import (
    DataLoadError,
    DataSplits,
    TrainSplit,
    balanced_subset,
    load_data,
    resize_images,
    split_train,
    tfds_features_to_xy,
)
from rmtkd_tf.data.text import labels_to_indices, read_delimited_text, unescape_html, unescape_line_breaks

__all__ = [
    "DataLoadError",
    "DataSplits",
    "TrainSplit",
    "VALIDATION_CHOICES",
    "ValidationChoice",
    "balanced_subset",
    "choose_validation",
    "labels_to_indices",
    "load_data",
    "read_delimited_text",
    "resize_images",
    "split_train",
    "stratified_halves",
    "tfds_features_to_xy",
    "unescape_html",
    "unescape_line_breaks",
]
