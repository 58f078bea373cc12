"""RMT-KD in one call: `rmtkd_tf.compress(model, x, y, ...)` returns `(student, report)`.

It takes a trained Keras classifier (or its `.keras` path) and data as arrays, an `(x, y)` tuple, a
finite `tf.data.Dataset` or a data spec (the CLI's `--data`), splits them as the CLI does
(`rmtkd_tf.inputs`, `rmtkd_tf.pipeline`) and runs `rmtkd_tf.compression.run` in a run folder: yours
(`output_dir`, resumable, with `student.keras` and `report.json`) or a temporary one.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import keras
import numpy as np

from rmtkd_tf.collection import candidate_layers
from rmtkd_tf.compression import CompressionData, resolve_config
from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.io import load_model


# What `compress` takes besides data and a CompressionConfig's fields.
COMPRESS_SETTINGS = ("validation_data", "calibration_data", "test_data", "config", "output_dir", "resume", "overwrite",
                     "layers", "verbose")


def compress(model, x=None, y=None, *, validation_data=None, calibration_data=None, test_data=None, config=None,
             output_dir=None, resume=False, overwrite=False, layers=None, verbose=1, **config_overrides):
    """Compress a trained Keras classifier with RMT-KD; returns `(student, report)`.

    Args:
        model: a functional or Sequential Keras model whose output is class scores, or the path of its
            `.keras` file (loaded in safe mode). It is never modified.
        x, y: the training data: arrays (`x` an array or a dict of arrays, `y` integer class indices),
            an `(x, y)` tuple in `x`, a finite `tf.data.Dataset` of `(x, y)` batches in `x`
            (materialised into arrays in memory: every split is read several times), or a data spec
            string in `x`, as the CLI's `--data` takes (`.npz`, image or CIFAR folder, TSV/CSV; text
            data needs the model's `.keras` path, whose vocabulary lies beside it), or a
            `rmtkd_tf.compression.CompressionData` holding splits you prepared.
        validation_data: what `max_drop` is checked on, paired with `model` on the same examples:
            `(x, y)` arrays or a dataset. Default: a stratified 10% of the training examples, held out
            of fine-tuning (with a `warning:` line: the teacher has fitted them, so the check is
            optimistic). With a data spec in `x`: `None` (the data's own validation split, else carved
            from train), `"train"`, `"test-split"` or another data spec, as the CLI's `--validation`.
        calibration_data: inputs whose activation covariances pick the ranks (array, dict, `(x, y)`
            tuple or dataset; its first `calibration_samples` rows are used). Default: a stratified
            10% of the training examples (still used for fine-tuning).
        test_data: optional `(x, y)` or dataset, only for the report's test accuracies (a data spec
            brings its own test split).
        config: a `CompressionConfig` (or a dict of its fields); default `CompressionConfig()`.
        output_dir: the run folder, for `state.json`, `history.json`, the checkpoints, `student.keras`
            and `report.json` (`resume=True` continues an interrupted run there; `overwrite=True`
            starts over a folder that holds one). Default: a temporary folder, deleted at the end.
        layers: which layers may be factorized: a regex matched (`re.search`) against each candidate
            layer's path, a callable taking the layer and returning a bool, or a list of paths.
            Default: every Dense / Conv2D layer and transformer projection but the output layer.
        verbose: 0 silent, 1 one line per stage.
        **config_overrides: fields of `CompressionConfig` to change (`target_params=0.5`,
            `schedule="iterative"`, ...).

    Returns:
        `(student, report)`: the compressed model (uncompiled; it reloads after `import rmtkd_tf`) and a
        dict: `teacher` / `student` params, FLOPs and accuracies, `param_reduction`, `flop_reduction`,
        `layers` (path -> rank), what the schedule did.

    Raises:
        RMTKDError: bad data, settings or run folder, in one line (nothing of the user's is overwritten).

    Example:

    >>> import numpy as np, keras, rmtkd_tf
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(600, 16)).astype("float32")
    >>> y = x[:, :3].argmax(axis=1)
    >>> model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64, activation="relu"),
    ...                           keras.layers.Dense(64, activation="relu"), keras.layers.Dense(3)])
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> _ = model.fit(x, y, epochs=5, verbose=0)
    >>> student, report = rmtkd_tf.compress(model, x, y, target_params=0.5, distillation_epochs=1, verbose=0)
    >>> report["student"]["params"] <= 0.5 * report["teacher"]["params"]
    True
    """
    from rmtkd_tf.inputs import compression_data
    from rmtkd_tf.pipeline import Task, run_task, task_for_model
    from rmtkd_tf.run_folder import check_output_folder

    config = resolve_config(config, config_overrides, COMPRESS_SETTINGS)
    log = print if verbose else _silent
    spec = str(x) if isinstance(x, (str, Path)) else None
    model_path = Path(model) if isinstance(model, (str, Path)) else None
    if resume and output_dir is None:
        raise RMTKDError("resume=True needs the output_dir of the run to continue")
    if output_dir is not None:
        check_output_folder(output_dir, {"model": model_path, "data": spec}, overwrite=overwrite, resume=resume)
    if model_path is not None:
        model = load_model(model_path)
    elif not isinstance(model, keras.Model):
        raise RMTKDError(f"model must be a Keras model or the path of a .keras file, got {type(model).__name__}")
    if spec is not None:
        if y is not None or calibration_data is not None or test_data is not None:
            raise RMTKDError("with a data spec, pass no y, calibration_data or test_data: the spec holds the splits")
        if validation_data is not None and not isinstance(validation_data, (str, Path)):
            raise RMTKDError("with a data spec, validation_data is a spec too (or 'train', 'test-split')")
        task = task_for_model(model, spec, model_path=model_path, seed=config.seed,
                              validation=str(validation_data or "auto"), log=log)
    elif isinstance(x, CompressionData):  # splits prepared by the caller, as `rmtkd_tf.compression.run` takes them
        if any(v is not None for v in (y, validation_data, calibration_data, test_data)):
            raise RMTKDError("a CompressionData holds every split: pass no y, validation_data, calibration_data or test_data")
        task = Task(model=model, model_path=model_path, data=x, splits=None, description="prepared CompressionData",
                    validation_warning=None)
    else:
        if x is None:
            raise RMTKDError("no training data: pass x and y, an (x, y) tuple, a tf.data.Dataset or a data spec")
        data, description, warning = compression_data(
            model, x, y, validation_data=validation_data, calibration_data=calibration_data, test_data=test_data,
            seed=config.seed, calibration_samples=config.calibration_samples, log=log)
        task = Task(model=model, model_path=model_path, data=data, splits=None, description=description,
                    validation_warning=warning)
    if layers is not None:
        config = dataclasses.replace(config, layers=select_layers(model, layers, config.include_output_layers))
    if output_dir is None:
        with tempfile.TemporaryDirectory(prefix="rmtkd-") as folder:
            return run_task(task, config, Path(folder) / "run", export_precision=None, log=log, write_report=False)
    fingerprint = _fingerprint(task, model_path, spec, config)
    return run_task(task, config, output_dir, resume=resume, overwrite=overwrite, export_precision=None, log=log,
                    fingerprint=fingerprint)


def _silent(message):
    pass


def select_layers(model, layers, include_output_layers=False):
    """Paths of the candidate layers of `model` that `layers` selects (a regex, a callable or a list of paths).

    >>> import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="encoder_1"),
    ...                           keras.layers.Dense(8, name="decoder_1"), keras.layers.Dense(2, name="head")])
    >>> select_layers(model, "^encoder"), select_layers(model, lambda layer: layer.units == 8)
    (['encoder_1'], ['encoder_1', 'decoder_1'])
    """
    import re

    candidates = candidate_layers(model, include_outputs=include_output_layers)
    if isinstance(layers, str):
        try:
            pattern = re.compile(layers)
        except re.error as error:
            raise RMTKDError(f"layers={layers!r} is not a valid regular expression: {error}") from None
        chosen = [path for path, _ in candidates if pattern.search(path)]
    elif callable(layers):
        chosen = [path for path, layer in candidates if layers(layer)]
    else:
        known = {path for path, _ in candidates}
        chosen = list(layers)
        missing = [path for path in chosen if path not in known]
        if missing:
            raise RMTKDError(f"layers {missing} are not candidate layers of the model ({', '.join(sorted(known))})")
    if not chosen:
        raise RMTKDError(f"layers={layers!r} selects none of the candidate layers "
                         f"({', '.join(path for path, _ in candidates) or 'none'})")
    return chosen


def _fingerprint(task, model_path, spec, config):
    """What a resumed run must match: the model (file or weights), the data (spec or arrays), the settings."""
    import hashlib

    from rmtkd_tf.run_folder import data_fingerprint, file_sha256

    if model_path is not None:
        model = {"path": str(model_path), "sha256": file_sha256(model_path)}
    else:
        digest = hashlib.sha256()
        for weight in task.model.get_weights():
            digest.update(np.ascontiguousarray(weight).tobytes())
        model = {"path": None, "sha256": digest.hexdigest()}
    if spec is not None:
        data = data_fingerprint(spec)
    else:
        digest = hashlib.sha256()
        for name in ("x_train", "y_train", "x_calibration", "x_validation", "y_validation", "x_test", "y_test"):
            value = getattr(task.data, name)
            for array in (value.values() if isinstance(value, dict) else [value]):
                if array is not None:
                    digest.update(np.ascontiguousarray(array).tobytes())
        data = {"kind": "arrays", "spec": None, "sha256": digest.hexdigest()}
    settings = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    return {"model": model, "data": data, "settings": settings}
