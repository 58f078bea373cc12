"""Safe model loading and atomic file writes (nothing the user has is ever lost)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

from rmtkd_tf.errors import RMTKDError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "out.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = open(tmp, "w").write("hello")
    >>> open(target).read()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, payload):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=False, default=_json_default)
            fh.write("\n")


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_model(model, path):
    """`model.save(path)` through a temporary file, so a crash never leaves half a `.keras`."""
    with atomic_path(path) as tmp:
        os.remove(tmp)  # keras refuses to overwrite silently in some versions
        model.save(tmp)


def load_model(path, unsafe=False):
    """Load a `.keras` model with Keras safe mode unless `unsafe`; one-line errors for bad files."""
    import keras

    import rmtkd_tf  # noqa: F401  (registers the factorized layers)

    path = Path(path)
    if not path.exists():
        raise RMTKDError(f"model file not found: {path}")
    if path.is_dir():
        raise RMTKDError(f"{path} is a folder; pass a .keras file (SavedModel folders are not supported)")
    if path.suffix == ".h5":
        raise RMTKDError(f"{path} is a legacy HDF5 file; re-save it as .keras with Keras 3")
    if not zipfile.is_zipfile(path):
        raise RMTKDError(f"{path} is not a valid .keras file (not a zip archive)")
    try:
        return keras.models.load_model(path, safe_mode=not unsafe, compile=False)
    except ValueError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise RMTKDError(
                f"{path} contains a Lambda layer (arbitrary code); refusing in safe mode. "
                "Pass --unsafe only if you trust the file"
            ) from None
        raise RMTKDError(f"could not load {path}: {message}") from None
    except Exception as exc:  # corrupt archives raise many different types
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RMTKDError(f"could not load {path}: {message}") from None
