"""In-range inputs for timing a `.tflite`: token ids inside their embedding table, masks of ones.

A benchmark feeds the model synthetic inputs. Floats can be anything finite, but an integer input is
usually an index: token ids and segment ids select rows of an embedding table (a TFLite `GATHER` or
`EMBEDDING_LOOKUP`), and an id past the table's end is out of range (LiteRT returns an error or reads
garbage, and the timing would not be the model's). `integer_input_limits` follows each integer input
through the ops that carry an id unchanged or wrap a negative one (`CAST`, `RESHAPE`, `EXPAND_DIMS`,
`SQUEEZE`; the `LESS` / `ADD` / `SELECT_V2` of Keras' `Embedding`) to the lookups it indexes and
returns the smallest table's row count; `in_range_input` draws ids uniformly from `[0, rows)`. An integer
input that indexes no table (a padding mask, a flag) gets ones: for a mask, no padding, the full-length
work.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ids = in_range_input({"shape": [1, 6], "dtype": np.int32, "name": "ids"}, rng, limit=30522)
>>> bool(ids.min() >= 0 and ids.max() < 30522), ids.dtype
(True, dtype('int32'))
>>> in_range_input({"shape": [1, 4], "dtype": np.int32, "name": "mask"}, rng, limit=None).tolist()
[[1, 1, 1, 1]]
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

# TFLite ops an id flows through to its lookup (op name -> the input positions that carry it): moves
# and casts, and Keras' Embedding wrapping negative ids (`select(id < 0, id + rows, id)`).
_PASS_THROUGH = {
    "CAST": (0,), "RESHAPE": (0,), "EXPAND_DIMS": (0,), "SQUEEZE": (0,), "IDENTITY": (0,),
    "ADD": (0, 1), "SELECT": (1, 2), "SELECT_V2": (1, 2),
}
# op name -> (index of the ids among the op's inputs, index of the table)
_LOOKUPS = {"GATHER": (1, 0), "EMBEDDING_LOOKUP": (0, 1)}


def integer_input_limits(interpreter) -> dict[int, int | None]:
    """{input tensor index: rows of the smallest table it indexes, or None} for the integer inputs.

    `interpreter` is an allocated LiteRT (or tf.lite) `Interpreter`.
    """
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # the public API has no graph walk; stable across TF 2.x
    consumers: dict[int, list[dict]] = {}
    for op in ops:
        for position, tensor in enumerate(op["inputs"]):
            consumers.setdefault(int(tensor), []).append({**op, "position": position})
    limits = {}
    for detail in interpreter.get_input_details():
        if not np.issubdtype(np.dtype(detail["dtype"]), np.integer) or np.dtype(detail["dtype"]).itemsize < 4:
            continue  # int8 / int16 inputs are quantized activations, not ids
        limits[detail["index"]] = _smallest_table(detail["index"], consumers, tensors, seen=set())
    return limits


def _smallest_table(tensor, consumers, tensors, seen):
    if tensor in seen:
        return None
    seen.add(tensor)
    best = None
    for op in consumers.get(tensor, []):
        name = op["op_name"]
        rows = None
        if name in _LOOKUPS and op["position"] == _LOOKUPS[name][0]:
            table = int(op["inputs"][_LOOKUPS[name][1]])
            shape = tensors.get(table, {}).get("shape")
            if shape is not None and len(shape) >= 1 and int(shape[0]) > 0:
                rows = int(shape[0])
        elif op["position"] in _PASS_THROUGH.get(name, ()):
            for output in op["outputs"]:
                found = _smallest_table(int(output), consumers, tensors, seen)
                if found is not None:
                    rows = found if rows is None else min(rows, found)
        if rows is not None:
            best = rows if best is None else min(best, rows)
    return best


def in_range_input(detail: Mapping[str, Any], rng: np.random.Generator, limit: int | None) -> np.ndarray:
    """An integer array for `detail`: uniform ids in `[0, limit)`, or ones when `limit` is None."""
    shape = tuple(int(d) for d in detail["shape"])
    dtype = np.dtype(detail["dtype"])
    if limit is None:
        return np.ones(shape, dtype=dtype)
    return rng.integers(0, int(limit), size=shape).astype(dtype)
