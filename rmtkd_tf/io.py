"""Safe model loading and atomic file writes (nothing the user has is ever lost)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import re
import zipfile
from pathlib import Path

from rmtkd_tf.atomic import atomic_path, current_umask, match_umask  # noqa: F401  (re-exported)
from rmtkd_tf.errors import RMTKDError

# Set inside `unsafe_loading()`: models (and checkpoints of a run on them) may hold Lambda code.
_UNSAFE = contextvars.ContextVar("rmtkd_tf_unsafe_loading", default=False)


def json_safe(value):
    """`value` with NaN/Inf floats (Python or NumPy) replaced by None, NumPy values made plain.

    >>> json_safe({"loss": float("nan"), "acc": [1.5, float("inf")]})
    {'loss': None, 'acc': [1.5, None]}
    """
    import numpy as np

    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, payload):
    """Write `payload` as JSON atomically; NaN/Inf become null, so the file is always valid JSON."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            # allow_nan=False: a non-finite float that slipped past json_safe fails here, not in a reader.
            json.dump(json_safe(payload), fh, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
            fh.write("\n")


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_model(model, path):
    """`model.save(path)` through a temporary file, so a crash never leaves half a `.keras`."""
    with atomic_path(path) as tmp:
        os.remove(tmp)  # keras refuses to overwrite silently in some versions
        model.save(tmp)


@contextlib.contextmanager
def unsafe_loading(enabled=True):
    """Within the block, models and the checkpoints of a run on them may hold Lambda code.

    `--unsafe` means the user trusts the model: loading it, cloning its layers during surgery (Keras
    rebuilds a Lambda from its config) and reloading its checkpoints on `--resume` then all run outside
    Keras safe mode. Outside the block everything stays in safe mode.
    """
    if not enabled:
        yield
        return
    from keras.src.saving.serialization_lib import SafeModeScope

    token = _UNSAFE.set(True)
    try:
        with SafeModeScope(False):
            yield
    finally:
        _UNSAFE.reset(token)


def load_model(path, unsafe=False):
    """Load a `.keras` model with Keras safe mode unless `unsafe`; one-line errors for bad files."""
    import keras

    import rmtkd_tf.layers  # noqa: F401  (registers the factorized layers)
    import rmtkd_tf.transformers  # noqa: F401  (and the transformer ones)

    unsafe = unsafe or _UNSAFE.get()
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
        hint = missing_class_hint(str(exc))
        if hint:
            raise RMTKDError(f"could not load {path}: {hint}") from None
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RMTKDError(f"could not load {path}: {message[:300]}") from None


def missing_class_hint(message):
    """For Keras' "Could not locate class" error: which class is missing and what to import.

    >>> missing_class_hint("Could not locate class 'Swish'. Make sure ... {'module': 'mylib.layers', 'class_name': 'Swish'}")
    "it uses the class 'Swish' from module mylib.layers, which is not registered; import mylib.layers (or pass it in custom_objects) before loading"
    >>> missing_class_hint("something else") is None
    True
    """
    found = re.search(r"Could not locate (?:class|function) '([^']+)'", message)
    if not found:
        return None
    name = found.group(1)
    module = re.search(r"'module': '([^']+)', 'class_name': '" + re.escape(name) + "'", message)
    registered = re.search(r"'registered_name': '([^'>]+)>" + re.escape(name) + "'", message)
    if registered and registered.group(1) == "rmtkd_tf":
        return f"it uses the rmtkd-tf layer '{name}'; run `import rmtkd_tf` before keras.models.load_model"
    if registered and not module:
        return (f"it uses the class '{name}' registered by package '{registered.group(1)}', which is not registered "
                "now; import the module that registers it (or pass it in custom_objects) before loading")
    if module and module.group(1).startswith("rmtkd_tf"):
        return f"it uses the rmtkd-tf layer '{name}'; run `import rmtkd_tf` before keras.models.load_model"
    if module:
        return (f"it uses the class '{name}' from module {module.group(1)}, which is not registered; "
                f"import {module.group(1)} (or pass it in custom_objects) before loading")
    return f"it uses the class '{name}', which is not registered; import the module defining it before loading"
