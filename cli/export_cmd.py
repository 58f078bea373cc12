"""`rmtkd-tf export`: convert a `.keras` model to a `.tflite` file (builtin ops only) and verify it.

Example:

    rmtkd-tf export student.keras -o student_int8.tflite --precision int8 --data cifar10

    rmtkd-tf export student.keras -o student.tflite --precision auto --data cifar10 --max-drop 1

    rmtkd-tf export run/student.keras -o student_int8.tflite --precision int8 --data /path/to/sst2

With `--data`, calibration samples (int8, int16x8, int8-mixed) come from the training split and
verification samples from the test split of `rmtkd_tf.data.load_data(SPEC)`. Raw text (SST-2, AG News,
any CSV/TSV) is tokenized for a BERT-style model exactly as `rmtkd-tf compress` does
(`rmtkd_tf.pipeline.encode_text_splits`): with the vocabulary beside the model (`student.keras` ->
`student.vocab.txt`, which compress writes into its run folder) or `--tokenizer`, to the model's
sequence length. `--precision auto`
tries int8, int16x8, int8-mixed, int8-dynamic, fp16, fp32 in that order and writes the first whose
accuracy on the data's validation split (its test split when it has none) is within `--max-drop`
points of the Keras model (`rmtkd_tf.precision_search`), printing what it tried.
"""

from __future__ import annotations

import os
import types

import click
import numpy as np

# The library's values, read without importing TensorFlow (see cli.library_constants).
from cli.library_constants import CALIBRATED_PRECISIONS, EXPORTERS, PRECISIONS


def _load_data(spec, *, limit=None, image_size=None, seed=0):
    # Imported lazily: the data module pulls in readers that `export` without --data never needs.
    from rmtkd_tf.data import load_data

    return load_data(spec, limit=limit, image_size=image_size, seed=seed)


def _load_model(model_path, unsafe):
    import keras

    import rmtkd_tf  # noqa: F401  (registers the factorized layers for deserialization)

    if not os.path.isfile(model_path):
        raise click.ClickException(f"no such model file: {model_path}")
    try:
        return keras.models.load_model(model_path, safe_mode=not unsafe, compile=False)
    except Exception as error:  # Keras raises ValueError, OSError, zipfile errors, ...
        message = _first_line(error)
        from rmtkd_tf.io import missing_class_hint

        hint = missing_class_hint(str(error))
        if hint:
            raise click.ClickException(f"cannot load {model_path}: {hint}") from None
        if "safe_mode" in message and not unsafe:
            raise click.ClickException(
                f"cannot load {model_path} in safe mode (it contains code, e.g. a Lambda layer); "
                "pass --unsafe only if you trust the file"
            ) from error
        raise click.ClickException(f"cannot load {model_path}: {message}") from error


def _first_line(error, limit=300):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = lines[0] if lines else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _tokenized(model, model_path, splits, tokenizer):
    """`splits` with its texts encoded as `compress` encodes them (`rmtkd_tf.pipeline.encode_text_splits`:
    the vocabulary beside the model, `name.vocab.txt`, unless `--tokenizer` names one)."""
    from rmtkd_tf.errors import RMTKDError
    from rmtkd_tf.pipeline import encode_text_splits

    try:
        x_train, x_test, x_val, _ = encode_text_splits(model, model_path, splits, tokenizer,
                                                       log=lambda line: click.echo(line, err=True))
    except (RMTKDError, ValueError, OSError) as error:
        raise click.ClickException(_first_line(error)) from None
    return types.SimpleNamespace(**{**vars(splits), "x_train": x_train, "x_test": x_test, "x_val": x_val,
                                    "modality": "tokens"})


def _image_size(model):
    """(height, width) of a single image input, so the loader resizes to what the model takes."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) == 1 and len(inputs[0].shape) == 4:
        height, width = inputs[0].shape[1], inputs[0].shape[2]
        if height is not None and width is not None:
            return (int(height), int(width))
    return None


def _n_rows(x):
    if isinstance(x, dict):
        x = next(iter(x.values()))
    elif isinstance(x, (list, tuple)):
        x = x[0]
    return len(x)


def _take(x, indices):
    if isinstance(x, dict):
        return {key: np.asarray(value)[indices] for key, value in x.items()}
    if isinstance(x, (list, tuple)):
        return [np.asarray(value)[indices] for value in x]
    return np.asarray(x)[indices]


def _random_subset(x, y, size, seed):
    """At most `size` rows drawn without replacement (data folders are often sorted by class)."""
    n = _n_rows(x)
    indices = np.sort(np.random.default_rng(seed).permutation(n)[: min(size, n)])
    return _take(x, indices), (None if y is None else np.asarray(y)[indices])


def _format_size(n_bytes):
    """Binary units, labelled as such: 1 KiB = 1024 bytes."""
    for unit in ("B", "KiB", "MiB"):
        if n_bytes < 1024 or unit == "MiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024


@click.command("export")
@click.argument("model_path", metavar="MODEL.keras", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False),
    help="Destination .tflite file (written atomically).",
)
@click.option(
    "--precision", type=click.Choice(PRECISIONS + ("auto",)), default="fp32", show_default=True,
    help="fp16: float16 weights; int8-dynamic: int8 weights; int8: full integer; int16x8: int16 "
         "activations, int8 weights; int8-mixed: int8 with softmax/GELU/layer-norm ops in float; "
         "auto: the first of int8, int16x8, int8-mixed, int8-dynamic, fp16, fp32 within --max-drop. "
         "int8, int16x8, int8-mixed and auto need --data.",
)
@click.option(
    "--max-drop", type=click.FloatRange(min=0), default=1.0, show_default=True,
    help="auto: accuracy points the .tflite may lose against the Keras model (upper bound of the paired "
         "drop on the validation split, or the test split when the data has none).",
)
@click.option(
    "--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
    show_default=True, help="auto: level of that drop's confidence interval.",
)
@click.option(
    "--exporter", type=click.Choice(EXPORTERS), default="auto", show_default=True,
    help="auto: Keras' own model.export(format='litert') where this Keras has it, else SavedModel + "
         "TFLiteConverter.from_saved_model (int8-mixed always takes the latter).",
)
@click.option(
    "--data", "data_spec", default=None, metavar="SPEC",
    help="Data set for rmtkd_tf.data.load_data: train split calibrates int8, test split verifies. "
         "Raw text (CSV/TSV) is tokenized with the vocabulary beside the model, as compress does.",
)
@click.option(
    "--tokenizer", type=click.Path(exists=True), default=None,
    help="Text data: vocab.txt or HF folder to encode it with (default: <model>.vocab.txt, as compress).",
)
@click.option(
    "--representative-samples", default=200, show_default=True, type=click.IntRange(min=1),
    help="Calibration samples drawn from the train split (int8, int16x8, int8-mixed, auto).",
)
@click.option(
    "--verify-samples", default=1000, show_default=True, type=click.IntRange(min=0),
    help="Test samples the .tflite is checked on (0: skip verification).",
)
@click.option("--seed", default=0, show_default=True, help="Seed for sampling the data.")
@click.option(
    "--validation-samples", default=2000, show_default=True, type=click.IntRange(min=1),
    help="auto: validation examples the precisions are scored on.",
)
@click.option(
    "--report-json", default=None, type=click.Path(dir_okay=False),
    help="Also write the export report as JSON here.",
)
@click.option(
    "--unsafe", is_flag=True,
    help="Load the model with safe_mode=False (runs code stored in it, e.g. Lambda layers).",
)
@click.option("--overwrite", is_flag=True, help="Let -o / --report-json replace files that are not a .tflite / JSON report.")
def export(
    model_path, output_path, precision, max_drop, confidence, exporter, data_spec, tokenizer, representative_samples,
    verify_samples, seed, validation_samples, report_json, unsafe, overwrite,
):
    """Convert MODEL.keras to a .tflite that uses TFLite builtin ops only, and verify it."""
    from rmtkd_tf.errors import RMTKDError
    from rmtkd_tf.run_folder import check_output_file, looks_like_json, looks_like_tflite, refuse_overlap

    if not os.path.isfile(model_path):
        raise click.ClickException(f"no such model file: {model_path}")
    inputs = {"model": model_path, "data": data_spec, "tokenizer": tokenizer}
    try:
        check_output_file(output_path, inputs, overwrite=overwrite, replaceable=looks_like_tflite, kind=".tflite model")
        if report_json is not None:
            check_output_file(report_json, inputs, overwrite=overwrite, replaceable=looks_like_json,
                              kind="JSON report", option="--report-json")
            refuse_overlap(report_json, [output_path] if os.path.exists(output_path) else [], output_is_folder=False)
            if os.path.abspath(report_json) == os.path.abspath(output_path):
                raise RMTKDError("--report-json and -o name the same file; give two paths")
    except RMTKDError as error:
        raise click.ClickException(str(error)) from None
    calibrated = precision in CALIBRATED_PRECISIONS or precision == "auto"
    if calibrated and data_spec is None:
        what = "to score the precisions" if precision == "auto" else "to calibrate activations"
        raise click.ClickException(f"--precision {precision} needs --data SPEC {what}")
    model = _load_model(model_path, unsafe)

    representative, verify_x, verify_y, validation_x, validation_y = None, None, None, None, None
    wanted = max(representative_samples if calibrated else 0, verify_samples,
                 validation_samples if precision == "auto" else 0)
    if data_spec is not None and wanted > 0:
        try:
            splits = _load_data(data_spec, limit=wanted, image_size=_image_size(model), seed=seed)
        except (OSError, ValueError) as error:  # DataLoadError is a ValueError
            raise click.ClickException(
                f"cannot load data {data_spec!r}: {_first_line(error)}"
            ) from error
        if getattr(splits, "modality", None) == "text":
            splits = _tokenized(model, model_path, splits, tokenizer)
        elif tokenizer is not None:
            raise click.ClickException(f"--tokenizer was given but --data {data_spec} is "
                                       f"{getattr(splits, 'modality', 'numeric')} data, not text")
        if calibrated:
            representative, _ = _random_subset(
                splits.x_train, None, representative_samples, seed
            )
        if precision == "auto":
            source = "validation"
            if getattr(splits, "x_val", None) is not None:
                validation_x, validation_y = _random_subset(splits.x_val, splits.y_val, validation_samples, seed + 2)
            elif splits.x_test is not None:
                source = "test"
                validation_x, validation_y = _random_subset(splits.x_test, splits.y_test, validation_samples, seed + 2)
            else:
                raise click.ClickException(f"--precision auto: {data_spec} has neither a validation nor a test split")
            click.echo(f"auto: scoring precisions on {len(validation_y)} examples of the {source} split", err=True)
        if verify_samples > 0 and splits.x_test is None:
            click.echo(f"note: {data_spec} has no test split; skipping verification", err=True)
        elif verify_samples > 0:
            verify_x, verify_y = _random_subset(
                splits.x_test, splits.y_test, verify_samples, seed + 1
            )

    auto = None
    try:
        if precision == "auto":
            from rmtkd_tf.precision_search import export_smallest_accurate

            auto = export_smallest_accurate(
                model, output_path, validation_x, validation_y, representative_data=representative,
                max_drop=max_drop, confidence=confidence, verify_inputs=verify_x, verify_labels=verify_y,
                max_representative_samples=representative_samples, exporter=exporter,
            )
            report = auto.report
        else:
            from rmtkd_tf.export import export_tflite

            report = export_tflite(
                model,
                output_path,
                precision=precision,
                representative_data=representative,
                verify_inputs=verify_x,
                verify_labels=verify_y,
                max_representative_samples=representative_samples,
                exporter=exporter,
            )
    except (ValueError, OSError) as error:  # FlexOpsError and ExportError are ValueErrors too.
        raise click.ClickException(_first_line(error, limit=1000)) from error
    except RMTKDError as error:
        raise click.ClickException(_first_line(error, limit=1000)) from None

    if auto is not None:
        click.echo(auto.format_table())
        if not auto.accepted:
            click.echo(f"warning: no precision was confirmed within --max-drop {max_drop:g}; wrote fp32", err=True)

    top_ops = sorted(report.op_histogram.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{name} x{count}" for name, count in top_ops[:6])
    if len(top_ops) > 6:
        hidden = len(top_ops) - 6
        shown += f", {hidden} more op type{'s' if hidden > 1 else ''} ({sum(c for _, c in top_ops[6:])} ops)"
    click.echo(
        f"wrote {report.path} ({_format_size(report.size_bytes)}, {report.precision}, via {report.exporter}, "
        f"{report.n_ops} ops: {shown}) in {report.wall_time_s:.1f} s"
    )
    if report.verification is not None:
        v = report.verification
        line = (
            f"verified on {v['n']} test samples: top-1 agreement {100 * v['top1_agreement']:.1f}%, "
            f"max |err| {v['max_abs_err']:.2e}, mean |err| {v['mean_abs_err']:.2e}"
        )
        if v["keras_accuracy"] is not None:
            line += (
                f"; accuracy keras {100 * v['keras_accuracy']:.2f}% / "
                f"tflite {100 * v['tflite_accuracy']:.2f}%"
            )
        click.echo(line)
    if report_json is not None:
        from rmtkd_tf.io import write_json

        content = report.to_dict()
        if auto is not None:
            content["auto"] = auto.to_dict()
        write_json(report_json, content)


# Alias: `cli/main.py` may register either name; both are the same click command.
export_command = export
