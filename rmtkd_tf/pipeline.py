"""What the CLI runs: load a model and its data, analyze or compress, write outputs.

Kept separate from `cli/` so notebooks and scripts can call the same steps.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from rmtkd_tf.errors import RMTKDError


@dataclasses.dataclass
class Task:
    model: object
    model_path: Path
    data: object  # rmtkd_tf.compress.CompressionData
    splits: object  # rmtkd_tf.data.DataSplits
    description: str


def _input_shape(model):
    inputs = model.inputs
    if len(inputs) != 1:
        return None
    return tuple(inputs[0].shape[1:])


def _check_shape(model, x, spec):
    expected = _input_shape(model)
    if expected is None or isinstance(x, dict):
        return
    got = tuple(np.asarray(x).shape[1:])
    compatible = len(expected) == len(got) and all(e is None or e == g for e, g in zip(expected, got))
    if not compatible:
        raise RMTKDError(
            f"--data {spec} gives inputs of shape {got} but the model expects {expected}"
        )


def load_task(model_path, data_spec, unsafe=False, limit=None, seed=0, calibration_fraction=0.1,
              validation_fraction=0.1, log=print):
    """Load the model (safe mode unless `unsafe`) and split the data: calibration and validation from train."""
    from rmtkd_tf.compress import CompressionData
    from rmtkd_tf.data import load_data, split_train
    from rmtkd_tf.io import load_model

    log(f"loading model {model_path}")
    model = load_model(model_path, unsafe=unsafe)
    image_size = None
    shape = _input_shape(model)
    if shape is not None and len(shape) == 3 and shape[0] and shape[1]:
        image_size = (shape[0], shape[1])
    log(f"loading data {data_spec}")
    splits = load_data(str(data_spec), limit=limit, image_size=image_size, seed=seed)
    if splits.modality == "text":
        raise RMTKDError(
            "text data needs a model that takes raw strings (a keras-hub task with its preprocessor); "
            f"{model_path} takes {shape} inputs"
        )
    if len(splits.y_train) == 0:
        raise RMTKDError(f"--data {data_spec} has no training examples")
    _check_shape(model, splits.x_train, data_spec)
    parts = split_train(splits.x_train, splits.y_train, (calibration_fraction, validation_fraction), seed=seed)
    x_cal, x_val, x_rest = parts.take(splits.x_train)
    _, y_val, y_rest = parts.take(splits.y_train)
    y_cal = splits.y_train[parts.calibration]
    data = CompressionData(
        # Fine-tuning uses every training example except the held-out validation ones.
        x_train=np.concatenate([x_rest, x_cal]),
        y_train=np.concatenate([y_rest, y_cal]),
        x_calibration=x_cal,
        x_validation=x_val,
        y_validation=y_val,
        x_test=splits.x_test,
        y_test=splits.y_test,
    )
    description = splits.describe()
    log(f"data: {description}; calibration {len(x_cal)}, validation {len(x_val)}, fine-tuning {len(data.y_train)}")
    return Task(model=model, model_path=Path(model_path), data=data, splits=splits, description=description)


def analyze_model(task, rank_rule, rule_params, output_dir, plots=True, log=print):
    """Spectra of every Dense/Conv2D layer on the calibration split; writes spectra.json (+ PNGs)."""
    from rmtkd_tf.collection import candidate_layers, collect_activations
    from rmtkd_tf.io import write_json
    from rmtkd_tf.report import format_layer_table
    from rmtkd_tf.selection import decide_ranks
    from rmtkd_tf.spectral import estimate_noise_variance, get_rank_rule, plot_spectrum

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rule = get_rank_rule(rank_rule, **rule_params)
    layers = dict(candidate_layers(task.model))
    log(f"collecting activations of {len(layers)} layers on {len(task.data.x_calibration)} samples")
    statistics = collect_activations(task.model, task.data.x_calibration)
    decisions, _ = decide_ranks(layers, statistics, rule)
    entries = []
    for decision in decisions:
        entry = decision.to_dict(with_eigenvalues=True)
        if decision.eigenvalues is not None and decision.eigenvalues.max() > 0:
            fit = estimate_noise_variance(np.clip(decision.eigenvalues, 0, None), max(decision.n_samples, 1), tau=rule_params.get("tau", 0.5))
            entry["noise"] = fit.to_dict()
            if plots:
                png = output_dir / f"spectrum_{decision.path.replace('/', '__')}.png"
                plot_spectrum(decision.eigenvalues, fit, decision.rule_rank, f"{decision.path} (d={decision.dim}, n={decision.n_samples})", png)
                entry["plot"] = png.name
        entries.append(entry)
    write_json(output_dir / "spectra.json", {"model": str(task.model_path), "data": task.description, "rank_rule": rule.to_dict(), "layers": entries})
    log(f"wrote {output_dir / 'spectra.json'}")
    return {"layers": entries, "table": format_layer_table(decisions)}


def compress_task(task, config, output_dir, resume=False, export_precision="fp32", log=print):
    """Run the RMT-KD loop, save student.keras (+ .tflite) and report.json in `output_dir`."""
    from rmtkd_tf.compress import compress
    from rmtkd_tf.io import save_model, write_json

    output_dir = Path(output_dir)
    t0 = time.time()
    student, report = compress(task.model, task.data, config, output_dir, resume=resume, log=log)
    save_model(student, output_dir / "student.keras")
    report["model"] = str(task.model_path)
    report["data"] = task.description
    report["compression_wall_s"] = round(time.time() - t0, 1)
    if export_precision:
        report["export"] = {}
        from rmtkd_tf.export import export_tflite

        rep_x = task.data.x_calibration
        for name, model in (("teacher", task.model), ("student", student)):
            path = output_dir / f"{name}.tflite"
            log(f"exporting {path.name} ({export_precision})")
            export = export_tflite(
                model, path, precision=export_precision, representative_data=rep_x,
                verify_inputs=task.data.x_test if task.data.x_test is not None else task.data.x_validation,
                verify_labels=task.data.y_test if task.data.x_test is not None else task.data.y_validation,
            )
            report["export"][name] = export.to_dict()
    write_json(output_dir / "report.json", report)
    log(f"wrote {output_dir / 'report.json'}")
    return report
