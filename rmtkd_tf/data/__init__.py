"""Data loading: turns a `--data SPEC` string into NumPy train/test arrays (see `load_data`).

Public: `load_data`, `DataSplits`, `split_train` / `TrainSplit` (stratified calibration and validation
draws from the training split), `choose_validation` / `ValidationChoice` (where validation comes from),
`DataLoadError`. The format readers live in `loaders`, `text` and `holdout`.
"""

from rmtkd_tf.data.holdout import ValidationChoice, choose_validation
from rmtkd_tf.data.loaders import DataLoadError, DataSplits, TrainSplit, load_data, split_train

__all__ = [
    "DataLoadError",
    "DataSplits",
    "TrainSplit",
    "ValidationChoice",
    "choose_validation",
    "load_data",
    "split_train",
]
