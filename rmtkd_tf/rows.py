"""Rows of model inputs: an array, or a dict of arrays (one per named input) with as many rows each.

>>> import numpy as np
>>> x = {"token_ids": np.arange(6).reshape(3, 2), "padding_mask": np.ones((3, 2))}
>>> n_rows(x), take_rows(x, [2])["token_ids"].tolist(), n_rows(concat_rows(x, x))
(3, [[4, 5]], 6)
"""

from __future__ import annotations

import numpy as np


def take_rows(x, index):
    """Rows `index` of an array or of every array of a dict."""
    if isinstance(x, dict):
        return {k: np.asarray(v)[index] for k, v in x.items()}
    return np.asarray(x)[index]


def n_rows(x):
    """Number of examples in an array or a dict of arrays."""
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    return len(x)


def concat_rows(a, b):
    """The rows of `a` then those of `b` (arrays, or dicts of arrays with the same keys)."""
    if isinstance(a, dict):
        return {name: np.concatenate([a[name], b[name]]) for name in a}
    return np.concatenate([a, b])
