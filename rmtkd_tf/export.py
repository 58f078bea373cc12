"""Export a Keras 3 model to a `.tflite` flatbuffer that stock LiteRT runtimes can run.

`export_tflite` converts with Keras' own LiteRT exporter (`model.export(path, format="litert")`,
Keras >= 3.12) where the installed Keras has it, and otherwise, or when Keras cannot trace the
model, through a SavedModel (`model.export(..., format="tf_saved_model")` then
`tf.lite.TFLiteConverter.from_saved_model`). `ExportReport.exporter` says which path ran. Either way
only TFLite builtin ops are allowed (a model that would need the Flex / select-TF delegate is refused
with `FlexOpsError`, because stock runtimes on phones and boards do not ship it), the file is written
atomically and, given real inputs, the `.tflite` is checked against `model.predict`.

Precisions (`PRECISIONS`), smallest and most integer first as `rmtkd_tf.precision_search` tries them:

- `"int8"`: full integer quantization. Activation ranges are calibrated on
  `representative_data`; every op runs in int8 and the float input and output
  tensors become int8 too. To feed such a model by hand, quantize each float
  input with its tensor's `(scale, zero_point)` (from the interpreter's input
  details): `q = clip(round(x / scale) + zero_point, -128, 127).astype(int8)`,
  and read outputs back as `(q.astype(float32) - zero_point) * scale`.
  `tflite_predict` does both for you. Integer inputs (e.g. token ids) are left
  as they are. Traced under `quantization_friendly` like int16x8 (embeddings as a plain gather,
  whose table the converter quantizes), so a keras-hub BERT's masked softmax is calibrated on its
  real attention scores and no float op is left inside (Keras' layer norm leaves a float NEG).
- `"int16x8"`: int8 weights, int16 activations
  (`EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`), calibrated like int8, float
  input and output tensors. The few ops with no 16x8 kernel (in a BERT: the CAST of the padding mask,
  the SELECT_V2 of masked softmax, the DIV of mean pooling) stay float32 between QUANTIZE /
  DEQUANTIZE ops; the file is invoked once after conversion so one the runtime cannot run is
  refused. The model is traced under `rmtkd_tf.quantization_rewrites.quantization_friendly`, which
  rewrites Keras' LayerNormalization, Embedding and masked Softmax into ops the 16x8 quantizer handles
  (the same function in float, except that embedding tables are stored int8 with a scale per row, like
  every other weight), so keras-hub BERTs convert.
- `"int8-mixed"`: int8 like `"int8"` except the numerically fragile ops (`FRAGILE_OPS`: softmax,
  GELU and the mean / variance / rsqrt of layer norms), which stay float32; float input and output
  tensors. Built with TFLite's selective quantization (`tf.lite.experimental.QuantizationDebugger`,
  `denylisted_ops`), which needs the converter object, so it always takes the SavedModel path.
  Traced under `quantization_friendly` for the masked softmax and embeddings (int8 tables with a
  scale per row); Keras' own layer norm is kept, its SQUARED_DIFFERENCE among the float ops.
- `"int8-dynamic"`: dynamic-range quantization: int8 weights, float activations.
- `"fp16"`: weights stored as float16 (about half the size), computed in float32.
- `"fp32"`: plain float conversion.

Example:

>>> import os, tempfile, numpy as np, keras
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
>>> path = os.path.join(tempfile.mkdtemp(), "tiny.tflite")
>>> report = export_tflite(model, path, verify_inputs=x)
>>> report.op_histogram, report.verification["top1_agreement"], report.exporter
({'FULLY_CONNECTED': 1}, 1.0, 'keras-litert')
>>> tflite_predict(path, x).shape
(32, 3)
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import re
import tempfile
import time
import warnings

import numpy as np

from rmtkd_tf.arguments import check_integer
# PRECISIONS, CALIBRATED_PRECISIONS (calibrated on representative data) and EXPORTERS (conversion paths) live
# in rmtkd_tf.constants, where the CLI reads them without TensorFlow.
from rmtkd_tf.constants import CALIBRATED_PRECISIONS, EXPORTERS, PRECISIONS  # noqa: F401
from rmtkd_tf.errors import RMTKDError

# TFLite ops kept in float32 by "int8-mixed": softmax, GELU, and a layer norm's mean / variance / rsqrt.
FRAGILE_OPS = ("SOFTMAX", "GELU", "MEAN", "SQUARED_DIFFERENCE", "RSQRT")

# Keras writes this signature (an alias of its "serve" endpoint); the converter keeps the name.
SIGNATURE_KEY = "serving_default"

# Suffixes of Keras model files: the destination must never be one, so a typo in `-o`
# cannot replace the model being exported.
_KERAS_MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")

# `ConverterErrorData.ErrorCode` values (tensorflow/compiler/mlir/lite/metrics/
# converter_error_data.proto), stable across TF 2.x.
_ERROR_NEEDS_FLEX_OPS = 1
_ERROR_NEEDS_CUSTOM_OPS = 2


class ExportError(RMTKDError):
    """The model could not be converted to a `.tflite` file."""


class FlexOpsError(ExportError):
    """The model needs ops that are not TFLite builtins (Flex / select-TF or custom ops).

    Attributes:
        flex_ops: TF op names that would need the Flex delegate, e.g. `["MatrixDeterminant"]`.
        custom_ops: TF op names that have no TFLite kernel at all, not even in Flex.
    """

    def __init__(self, flex_ops, custom_ops=()):
        self.flex_ops = sorted(set(flex_ops))
        self.custom_ops = sorted(set(custom_ops))
        parts = []
        if self.flex_ops:
            parts.append(
                "needs Flex (select-TF) ops, which stock TFLite runtimes lack: "
                + ", ".join(self.flex_ops)
            )
        if self.custom_ops:
            parts.append("needs ops with no TFLite kernel: " + ", ".join(self.custom_ops))
        super().__init__(
            "model is not convertible to TFLite builtins only: " + "; ".join(parts)
        )


@dataclasses.dataclass
class ExportReport:
    """What `export_tflite` wrote and how well the `.tflite` matches the Keras model.

    Attributes:
        path: the written `.tflite` file.
        precision: one of `PRECISIONS`.
        size_bytes: file size.
        n_ops: number of operators in the graph (all subgraphs).
        op_histogram: builtin op name (e.g. `"CONV_2D"`) -> count.
        flex_ops: Flex ops found in the graph; always empty in a returned report,
            since such graphs raise `FlexOpsError`, and kept so reports are uniform.
        verification: `None` without `verify_inputs`, else a dict with `n`,
            `max_abs_err`, `mean_abs_err` (float outputs, dequantized for int8),
            `top1_agreement` and, given labels, `keras_accuracy` / `tflite_accuracy`.
        wall_time_s: seconds spent in `export_tflite` (conversion and verification).
        exporter: the conversion path that produced the file: `"keras-litert"`
            (`model.export(format="litert")`) or `"saved-model"` (SavedModel + `from_saved_model`).
        exporter_note: why the SavedModel path ran instead of Keras' exporter (`None` when it did not).
    """

    path: str
    precision: str
    size_bytes: int
    n_ops: int
    op_histogram: dict
    flex_ops: list
    verification: dict | None
    wall_time_s: float
    exporter: str = "saved-model"
    exporter_note: str | None = None

    def to_dict(self):
        """A JSON-serializable dict of all fields."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Conversion:
    """An in-memory `.tflite` (`convert_tflite`), not yet verified or written.

    Attributes:
        flatbuffer: the `.tflite` bytes.
        precision, exporter, exporter_note: as in `ExportReport`.
        op_histogram: builtin op name -> count.
    """

    flatbuffer: bytes
    precision: str
    exporter: str
    exporter_note: str | None
    op_histogram: dict
    mapper: object = dataclasses.field(repr=False, default=None)


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def export_tflite(
    model,
    path,
    precision="fp32",
    representative_data=None,
    verify_inputs=None,
    verify_labels=None,
    max_representative_samples=200,
    exporter="auto",
):
    """Convert `model` to a `.tflite` file at `path` using TFLite builtin ops only.

    Args:
        model: a built `keras.Model` (functional, sequential, or a called subclass).
        path: destination `.tflite` path. It is written atomically (temp file in the same
            directory, then `os.replace`), so a failure never leaves a partial file, and it
            may not end in `.keras`/`.h5`.
        precision: one of `PRECISIONS` (see the module doc).
        representative_data: calibration inputs, required by the calibrated precisions
            (`CALIBRATED_PRECISIONS`) and ignored by the others (so one call site can serve all
            of them): a NumPy array for a single-input model, a dict `{input_name: array}` (or a
            list in `model.inputs` order) for several inputs, or a `tf.data.Dataset` yielding such
            inputs, batched or not (`(x, y)` pairs are accepted; `x` is used).
        verify_inputs: real inputs, in the same forms as above (not a dataset). When given,
            the `.tflite` runs on them and is compared with `model.predict`.
        verify_labels: optional integer class labels (or one-hot) for `verify_inputs`,
            to report the accuracy of both models.
        max_representative_samples: at most this many calibration samples are used.
        exporter: `"auto"` (Keras' LiteRT exporter where the installed Keras has it and can trace
            the model, else the SavedModel path), `"keras-litert"` or `"saved-model"` (`EXPORTERS`).

    Returns:
        An `ExportReport`.

    Raises:
        FlexOpsError: the graph needs Flex (select-TF) or custom ops.
        ExportError: conversion failed for another reason.
        ValueError: bad arguments (unknown precision, missing calibration data, ...).
    """
    start = time.perf_counter()
    if verify_labels is not None and verify_inputs is None:
        raise ValueError("verify_labels were given without verify_inputs")
    _check_model(model)
    _check_destination(path)
    conversion = convert_tflite(
        model, precision, representative_data, max_representative_samples, exporter
    )
    return write_tflite(model, conversion, path, verify_inputs, verify_labels, start=start)


def write_tflite(model, conversion, path, verify_inputs=None, verify_labels=None, start=None):
    """Verify a `Conversion` of `model` (given inputs), then write it atomically to `path`.

    Returns the `ExportReport`; arguments as in `export_tflite`, `start` a `time.perf_counter()`
    value the report's wall time counts from (default: now).
    """
    start = time.perf_counter() if start is None else start
    if verify_labels is not None and verify_inputs is None:
        raise ValueError("verify_labels were given without verify_inputs")
    destination = _check_destination(path)
    # Verify before writing: the call either succeeds completely or leaves nothing behind.
    verification = None
    if verify_inputs is not None:
        verification = _verify(
            model, conversion.flatbuffer, conversion.mapper, verify_inputs, verify_labels
        )
    _write_atomically(destination, conversion.flatbuffer)
    return ExportReport(
        path=destination,
        precision=conversion.precision,
        size_bytes=os.path.getsize(destination),
        n_ops=int(sum(conversion.op_histogram.values())),
        op_histogram=conversion.op_histogram,
        flex_ops=[],
        verification=verification,
        wall_time_s=time.perf_counter() - start,
        exporter=conversion.exporter,
        exporter_note=conversion.exporter_note,
    )


def keras_predictions(model, conversion, inputs, batch_size=64):
    """`model.predict` on `inputs` (any form `export_tflite` takes), as float32, the `.tflite`'s layout."""
    named = conversion.mapper.to_named(inputs, "inputs")
    outputs = model.predict(conversion.mapper.to_keras(named), batch_size=batch_size, verbose=0)
    if isinstance(outputs, (list, tuple, dict)):
        raise ValueError("only single-output models can be compared")
    return np.asarray(outputs, dtype=np.float32)


def per_example_correct(conversion, inputs, labels, keras_outputs, batch_size=64):
    """(Keras correct, `.tflite` correct): one boolean per example, for a paired accuracy comparison.

    `keras_outputs` come from `keras_predictions` (computed once, reused for every conversion).
    """
    named = conversion.mapper.to_named(inputs, "inputs")
    tflite_outputs = _run_batched(_signature_runner(conversion.flatbuffer), named, batch_size)
    if tflite_outputs.shape != keras_outputs.shape:
        raise ExportError(
            f"the .tflite output shape {tflite_outputs.shape} differs from Keras {keras_outputs.shape}"
        )
    threshold = _binary_threshold(keras_outputs)
    keras_classes = _predicted_classes(keras_outputs, threshold)
    classes = _class_labels(labels, keras_classes.shape)
    return keras_classes == classes, _predicted_classes(tflite_outputs, threshold) == classes


def convert_tflite(
    model, precision="fp32", representative_data=None, max_representative_samples=200, exporter="auto"
):
    """Convert `model` to `.tflite` bytes (builtin ops only) without writing or verifying them.

    Arguments as in `export_tflite`. Returns a `Conversion`; raises like `export_tflite`.

    >>> import numpy as np, keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> conversion = convert_tflite(model, "fp16", exporter="saved-model")
    >>> conversion.exporter, conversion.flatbuffer[4:8]
    ('saved-model', b'TFL3')
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    _check_model(model)
    if precision in CALIBRATED_PRECISIONS and representative_data is None:
        raise ValueError(
            f"precision={precision!r} needs representative_data (a few hundred real inputs) "
            "to calibrate activation ranges"
        )
    max_representative_samples = check_integer(max_representative_samples, "max_representative_samples")
    if exporter == "keras-litert" and not keras_has_litert_export():
        raise ValueError("exporter='keras-litert' needs Keras >= 3.12 (model.export(format='litert'))")
    if exporter == "keras-litert" and precision == "int8-mixed":
        raise ValueError("precision 'int8-mixed' needs the converter object: use exporter='saved-model'")

    with _rewritten_for(model, precision):
        flatbuffer, mapper, used, note = _convert_either_way(
            model, precision, representative_data, int(max_representative_samples), exporter
        )

    op_histogram, custom_ops = _scan_operators(flatbuffer)
    if custom_ops:
        flex_ops = [name for name in custom_ops if name.startswith("Flex")]
        raise FlexOpsError(
            [name[len("Flex"):] for name in flex_ops],
            [name for name in custom_ops if not name.startswith("Flex")],
        )
    if precision == "int16x8":
        _check_runs(flatbuffer, precision)
    return Conversion(flatbuffer, precision, used, note, op_histogram, mapper)


# Precisions converted from the model traced under `quantization_friendly` (see the module doc): every
# calibrated one, since a masked softmax's -1e9 fill sets the range of its quantized input whatever the
# activation width (int8: a step of ~4e6, every real attention score rounds to one value).
REWRITTEN_PRECISIONS = ("int16x8", "int8", "int8-mixed")
# Precisions whose embedding tables are stored int8 with a scale per row by the rewrite. Full int8 keeps
# the plain gather, whose table the converter quantizes itself, so the graph stays integer (the per-row
# rows would be cast to float and re-quantized).
ROW_SCALED_EMBEDDINGS = ("int16x8", "int8-mixed")


def _rewritten_for(model, precision):
    if precision not in REWRITTEN_PRECISIONS:
        return contextlib.nullcontext()
    from rmtkd_tf.quantization_rewrites import quantization_friendly

    # int8-mixed keeps Keras' layer norm: its SQUARED_DIFFERENCE is one of the FRAGILE_OPS kept float,
    # where the rewrite's variance would square in int8 (its NEG runs in float there anyway).
    return quantization_friendly(model, int8_embeddings=precision in ROW_SCALED_EMBEDDINGS,
                                 layer_norm=precision != "int8-mixed")


def _convert_either_way(model, precision, representative_data, max_representative_samples, exporter):
    """(flatbuffer, mapper, exporter used, note) through Keras' LiteRT exporter or the SavedModel path."""
    flatbuffer, used, note, mapper = None, None, None, None
    if exporter != "saved-model" and precision != "int8-mixed" and keras_has_litert_export():
        try:
            flatbuffer, mapper = _convert_with_keras(
                model, precision, representative_data, int(max_representative_samples)
            )
            used = "keras-litert"
        except _KerasTraceError as error:
            if exporter == "keras-litert":
                raise ExportError(f"model.export(format='litert') failed: {error}") from None
            note = f"Keras' LiteRT exporter could not trace the model ({error})"
    elif exporter == "auto":
        note = ("int8-mixed needs the converter object (selective quantization)"
                if precision == "int8-mixed" else "this Keras has no format='litert'")
    if flatbuffer is None:
        flatbuffer, mapper = _convert_with_saved_model(
            model, precision, representative_data, int(max_representative_samples)
        )
        used = "saved-model"
    return flatbuffer, mapper, used, note


def keras_has_litert_export():
    """Whether the installed Keras exports LiteRT itself (`model.export(path, format="litert")`)."""
    try:
        from keras.src.export import litert  # noqa: F401  (Keras >= 3.12)
    except ImportError:
        return False
    return True


def tflite_predict(path, inputs, batch_size=64):
    """Run a `.tflite` model on `inputs` and return its (float) output.

    Args:
        path: a `.tflite` file (or its bytes).
        inputs: a NumPy array for a single-input model, or a dict keyed by the
            signature's input names (`model.inputs[i].name` of the exported Keras model).
            Float inputs are quantized for int8 input tensors; int8 outputs are dequantized.
        batch_size: rows per interpreter call; the input tensors are resized to it.

    Returns:
        A float32 array with one row per input row (the single output of the model).

    Example:

    >>> probs = tflite_predict("model.tflite", x_test)  # doctest: +SKIP
    >>> accuracy = (probs.argmax(-1) == y_test).mean()  # doctest: +SKIP
    """
    batch_size = check_integer(batch_size, "batch_size")
    runner = _signature_runner(path)
    named_inputs = _named_inputs_for_runner(runner, inputs)
    return _run_batched(runner, named_inputs, int(batch_size))


# ----------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------


class _KerasTraceError(Exception):
    """Keras' LiteRT exporter failed before the TFLite converter ran (tracing, signature)."""


def _check_model(model):
    import keras

    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model, got {type(model).__name__}")


def _converter_settings(precision, representative_dataset):
    """{converter attribute: value} for `precision`; `target_spec` is a dict of its attributes."""
    import tensorflow as tf

    settings = {
        "allow_custom_ops": False,
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]},
    }
    if precision != "fp32":
        settings["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        settings["target_spec"]["supported_types"] = [tf.float16]
    elif precision in CALIBRATED_PRECISIONS:
        settings["representative_dataset"] = representative_dataset
    if precision == "int8":
        # INT8 only: a float fallback would silently give a mixed model; better to fail loudly.
        settings["target_spec"]["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        settings["inference_input_type"] = tf.int8
        settings["inference_output_type"] = tf.int8
    elif precision == "int16x8":
        # Float fallback for the few ops with no 16x8 kernel (mask casts and selects, a division):
        # without it no BERT converts, and the weights and matmuls stay 16x8 either way.
        settings["target_spec"]["supported_ops"] = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
    return settings


def _apply_settings(converter, settings):
    for name, value in settings.items():
        if name == "target_spec":
            for spec_name, spec_value in value.items():
                setattr(converter.target_spec, spec_name, spec_value)
        else:
            setattr(converter, name, value)


def _keras_input_specs(model):
    """{input name: (numpy dtype, shape)} of the signature Keras' LiteRT exporter writes."""
    specs = {}
    for tensor in model.inputs:
        shape = [-1 if dim is None else int(dim) for dim in tensor.shape]
        specs[tensor.name] = (np.dtype(tensor.dtype), shape)
    return specs


def _convert_with_keras(model, precision, representative_data, max_samples):
    """(flatbuffer, mapper) from `model.export(format="litert")`; raises `_KerasTraceError` early."""
    try:
        mapper = _InputMapper(model, _keras_input_specs(model))
    except (AttributeError, ValueError, ExportError) as error:
        raise _KerasTraceError(_first_line(error)) from None
    representative_dataset = None
    if precision in CALIBRATED_PRECISIONS:
        representative_dataset = _representative_dataset(representative_data, mapper, max_samples)
    settings = _converter_settings(precision, representative_dataset)
    with tempfile.TemporaryDirectory(prefix="rmtkd_export_") as directory:
        path = os.path.join(directory, "model.tflite")
        try:
            with _quiet_converter():
                model.export(path, format="litert", verbose=False, **settings)
        except Exception as error:  # ConverterError, or Keras' tracing errors (several types)
            _raise_converter_error(error, precision, trace_error=_KerasTraceError)
        with open(path, "rb") as file:
            flatbuffer = file.read()
    if sorted(_tflite_input_names(flatbuffer)) != sorted(mapper.input_specs):
        raise _KerasTraceError(
            f"its signature inputs {sorted(_tflite_input_names(flatbuffer))} are not the model's "
            f"inputs {sorted(mapper.input_specs)}"
        )
    return flatbuffer, mapper


def _convert_with_saved_model(model, precision, representative_data, max_samples):
    """(flatbuffer, mapper) through a SavedModel and `TFLiteConverter.from_saved_model`."""
    with tempfile.TemporaryDirectory(prefix="rmtkd_export_") as saved_model_dir:
        try:
            model.export(saved_model_dir, format="tf_saved_model", verbose=False)
        except Exception as error:  # Keras raises several types here; all mean "cannot trace".
            raise ExportError(
                f"model.export(format='tf_saved_model') failed: {_first_line(error)}"
            ) from error
        mapper = _InputMapper(model, _signature_input_specs(saved_model_dir))
        representative_dataset = None
        if precision in CALIBRATED_PRECISIONS:
            representative_dataset = _representative_dataset(representative_data, mapper, max_samples)
        return _convert(saved_model_dir, precision, representative_dataset), mapper


def _convert(saved_model_dir, precision, representative_dataset):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[SIGNATURE_KEY]
    )
    _apply_settings(converter, _converter_settings(precision, representative_dataset))
    try:
        with _quiet_converter():
            if precision == "int8-mixed":
                return _selectively_quantize(converter, representative_dataset)
            return converter.convert()
    except Exception as error:
        _raise_converter_error(error, precision)


def _selectively_quantize(converter, representative_dataset):
    """int8 with `FRAGILE_OPS` left in float32 (TFLite's documented selective quantization)."""
    import tensorflow as tf

    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FRAGILE_OPS))
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=representative_dataset, debug_options=options
    )
    return debugger.get_nondebug_quantized_model()


@contextlib.contextmanager
def _quiet_converter():
    """Calibration runs TF's own deprecated tf.lite.Interpreter; its warning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        yield


def _raise_converter_error(error, precision, trace_error=None):
    """Re-raise a conversion failure as `FlexOpsError` / `ExportError` (or `trace_error`)."""
    flex_ops, custom_ops = _ops_from_converter_error(error)
    if flex_ops or custom_ops:
        raise FlexOpsError(flex_ops, custom_ops) from None
    if trace_error is not None and not _is_converter_error(error):
        raise trace_error(_first_line(error)) from None
    summary = _converter_error_summary(error)
    match = re.search(r"Failed for tensor (\S+)", summary)
    if precision == "int16x8" and "Max and min for dynamic tensors" in summary and match:
        summary = (f"the 16x8 quantizer cannot handle the integer input {match.group(1)} (an embedding "
                   f"lookup's ids have no activation range); use int8-mixed or int8-dynamic")
    raise ExportError(f"TFLite conversion ({precision}) failed: {summary}") from error


def _is_converter_error(error):
    """True when `error` came out of the TFLite converter (which both paths share), not Keras' tracing."""
    traceback = error.__traceback__
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename.replace(os.sep, "/")
        if "/tensorflow/lite/" in filename:
            return True
        traceback = traceback.tb_next
    return False


def _tflite_input_names(flatbuffer):
    return list(_signature_runner(flatbuffer).get_input_details())


def _check_runs(flatbuffer, precision):
    """Invoke the model once on zeros: int16x8 graphs can convert with ops the runtime cannot run."""
    runner = _signature_runner(flatbuffer)
    zeros = {}
    for name, detail in runner.get_input_details().items():
        shape = [1 if dim < 1 else int(dim) for dim in detail["shape_signature"]]
        shape[0] = 1
        zeros[name] = np.zeros(shape, dtype=detail["dtype"])
    try:
        runner(**zeros)
    except (RuntimeError, ValueError) as error:
        raise ExportError(
            f"the {precision} .tflite does not run on LiteRT: {_first_line(error)}"
        ) from None


def _ops_from_converter_error(error):
    """(flex_ops, custom_ops) named by a `ConverterError`, from its structured data and text."""
    flex_ops, custom_ops = set(), set()
    for data in getattr(error, "errors", None) or ():
        name = data.operator.name
        if name.startswith("tf."):
            name = name[len("tf."):]
        if data.error_code == _ERROR_NEEDS_FLEX_OPS and name:
            flex_ops.add(name)
        elif data.error_code == _ERROR_NEEDS_CUSTOM_OPS and name:
            custom_ops.add(name)
    # The text lists them too ("TF Select ops: A, B" / "Custom ops: C"); older converters
    # gave no structured data, so read both.
    text = str(error)
    for pattern, found in ((r"TF Select ops: (.+)", flex_ops), (r"Custom ops: (.+)", custom_ops)):
        for match in re.finditer(pattern, text):
            found.update(op.strip() for op in match.group(1).split(",") if op.strip())
    return sorted(flex_ops), sorted(custom_ops)


def _converter_error_summary(error):
    for data in getattr(error, "errors", None) or ():
        if data.error_message:
            return _first_line(data.error_message)
    return _first_line(error)


def _first_line(error, limit=300):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = lines[0] if lines else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _scan_operators(flatbuffer):
    """(histogram of op names over all subgraphs, sorted custom op codes) of a `.tflite`."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python import schema_util

    builtin_names = {
        code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")
    }
    tflite_model = schema.Model.GetRootAsModel(flatbuffer, 0)
    op_names = []
    custom_ops = set()
    for i in range(tflite_model.OperatorCodesLength()):
        operator_code = tflite_model.OperatorCodes(i)
        code = schema_util.get_builtin_code_from_operator_code(operator_code)
        if code == schema.BuiltinOperator.CUSTOM:
            name = (operator_code.CustomCode() or b"").decode("utf-8", "replace")
            custom_ops.add(name)
        else:
            name = builtin_names.get(code, f"BUILTIN_{code}")
        op_names.append(name)
    histogram = collections.Counter()
    for s in range(tflite_model.SubgraphsLength()):
        subgraph = tflite_model.Subgraphs(s)
        for j in range(subgraph.OperatorsLength()):
            histogram[op_names[subgraph.Operators(j).OpcodeIndex()]] += 1
    return dict(histogram), sorted(custom_ops)


def _signature_input_specs(saved_model_dir):
    """{input name: (numpy dtype, shape with -1 for unknown)} of the SavedModel's serving signature."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as file:
        saved_model.ParseFromString(file.read())
    signatures = saved_model.meta_graphs[0].signature_def
    if SIGNATURE_KEY not in signatures:
        raise ExportError(
            f"exported SavedModel has no {SIGNATURE_KEY!r} signature (has {sorted(signatures)})"
        )
    specs = {}
    for name, tensor_info in signatures[SIGNATURE_KEY].inputs.items():
        dtype = tf.dtypes.as_dtype(tensor_info.dtype).as_numpy_dtype
        shape = [dim.size for dim in tensor_info.tensor_shape.dim]
        specs[name] = (np.dtype(dtype), shape)
    return specs


def _write_atomically(destination, content):
    from rmtkd_tf.io import match_umask

    directory = os.path.dirname(destination)
    os.makedirs(directory, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(destination) + ".", suffix=".part"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        match_umask(temporary)  # mkstemp makes 0600; outputs get a normal file's mode
        os.replace(temporary, destination)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _check_destination(path):
    destination = os.path.abspath(os.fspath(path))
    if destination.lower().endswith(_KERAS_MODEL_SUFFIXES):
        raise ValueError(
            f"refusing to write a .tflite to {os.fspath(path)!r}: that is a Keras model path"
        )
    if os.path.isdir(destination):
        raise ValueError(f"destination {os.fspath(path)!r} is a directory, expected a file path")
    return destination


# ----------------------------------------------------------------------------------------------
# Inputs: Keras structure <-> TFLite signature names
# ----------------------------------------------------------------------------------------------


class _InputMapper:
    """Translates user inputs into the Keras structure (for `predict`) and into signature names.

    The serving signature names its inputs after the Keras input tensors
    (`keras.Input(name=...)`), not after the keys of a dict-input model, so both are accepted.
    """

    def __init__(self, model, input_specs):
        self.input_specs = input_specs
        self.signature_names = sorted(input_specs)
        structure = None
        try:
            structure = model.input
        except (AttributeError, ValueError):  # A subclassed model may not expose its inputs.
            structure = None
        self.kind = "single"
        self.keys = None  # dict keys (dict models) or None
        self.names = None  # signature name per Keras input, in Keras order
        if isinstance(structure, dict):
            self.kind = "dict"
            self.keys = list(structure)
            self.names = [self._signature_name(structure[key], key) for key in self.keys]
        elif isinstance(structure, (list, tuple)) and len(structure) > 1:
            self.kind = "list"
            self.names = [self._signature_name(tensor, None) for tensor in structure]
        elif len(self.signature_names) == 1:
            self.names = list(self.signature_names)
        else:
            raise ExportError(
                f"cannot match the model's inputs to the signature inputs {self.signature_names}"
            )

    def _signature_name(self, tensor, key):
        for candidate in (getattr(tensor, "name", None), key):
            if candidate in self.input_specs:
                return candidate
        raise ExportError(
            f"Keras input {getattr(tensor, 'name', key)!r} has no matching TFLite signature input "
            f"(signature inputs: {self.signature_names})"
        )

    def to_named(self, inputs, what="inputs"):
        """`inputs` (array / list / dict) -> {signature name: array cast to the signature dtype}."""
        if isinstance(inputs, dict):
            lookup = {}
            for i, name in enumerate(self.names):
                lookup[name] = name
                if self.keys is not None:
                    lookup[self.keys[i]] = name
            named = {}
            for key, value in inputs.items():
                if key not in lookup:
                    raise ValueError(
                        f"{what} has unknown input {key!r}; the model's inputs are {self.names}"
                    )
                named[lookup[key]] = value
            missing = [name for name in self.names if name not in named]
            if missing:
                raise ValueError(f"{what} is missing model inputs {missing}")
        elif isinstance(inputs, (list, tuple)):
            if len(inputs) != len(self.names):
                raise ValueError(
                    f"{what} has {len(inputs)} arrays but the model has {len(self.names)} inputs "
                    f"{self.names}"
                )
            named = dict(zip(self.names, inputs))
        else:
            if len(self.names) != 1:
                raise ValueError(
                    f"{what} is a single array but the model has inputs {self.names}; "
                    "pass a dict keyed by input name"
                )
            named = {self.names[0]: inputs}
        return {
            name: _as_array(value, self.input_specs[name][0], f"{what}[{name!r}]")
            for name, value in named.items()
        }

    def to_keras(self, named):
        """{signature name: array} -> the structure `model.predict` expects."""
        if self.kind == "dict":
            return {key: named[name] for key, name in zip(self.keys, self.names)}
        if self.kind == "list":
            return [named[name] for name in self.names]
        return named[self.names[0]]


def _as_array(value, dtype, what):
    array = np.asarray(value)
    if array.dtype == object:
        raise ValueError(f"{what} must be numeric, got an object array")
    if np.issubdtype(dtype, np.integer) and np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{what} feeds an integer input but holds non-integer values")
    return array.astype(dtype, copy=False)


def _n_rows(named, what):
    counts = {name: (array.shape[0] if array.ndim else None) for name, array in named.items()}
    if any(count is None for count in counts.values()):
        raise ValueError(f"{what} must have a leading batch dimension, got shapes "
                         f"{ {name: array.shape for name, array in named.items()} }")
    if len(set(counts.values())) != 1:
        raise ValueError(f"{what} arrays have different numbers of rows: {counts}")
    n = next(iter(counts.values()))
    if n == 0:
        raise ValueError(f"{what} is empty")
    return n


def _representative_dataset(data, mapper, max_samples):
    """A zero-argument generator factory yielding {signature name: one-sample batch}."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        samples = []
        for element in data:
            if isinstance(element, tuple) and len(element) in (2, 3) and (
                mapper.kind != "list" or isinstance(element[0], (list, tuple, dict))
            ):
                element = element[0]  # (x, y) or (x, y, sample_weight)
            element = tf.nest.map_structure(lambda t: np.asarray(t), element)
            named = mapper.to_named(element, "representative_data")
            ranks = {n: len(mapper.input_specs[n][1]) for n in named}
            batched = all(named[n].ndim == ranks[n] for n in named)
            if not batched:
                named = {n: a[None] for n, a in named.items()}
            rows = _n_rows(named, "representative_data")
            for i in range(rows):
                samples.append({n: a[i : i + 1] for n, a in named.items()})
                if len(samples) >= max_samples:
                    break
            if len(samples) >= max_samples:
                break
        if not samples:
            raise ValueError("representative_data dataset is empty")
    else:
        named = mapper.to_named(data, "representative_data")
        rows = min(_n_rows(named, "representative_data"), max_samples)
        samples = [{n: a[i : i + 1] for n, a in named.items()} for i in range(rows)]

    for sample in samples:
        for name, array in sample.items():
            if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
                raise ValueError(f"representative_data[{name!r}] contains NaN or Inf")

    def generate():
        yield from samples

    return generate


# ----------------------------------------------------------------------------------------------
# Running a .tflite
# ----------------------------------------------------------------------------------------------


def _signature_runner(model):
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(model))
    else:
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no .tflite file at {path!r}")
        interpreter = Interpreter(model_path=path)
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise ValueError("the .tflite model has no signature to run")
    key = SIGNATURE_KEY if SIGNATURE_KEY in signatures else next(iter(signatures))
    return interpreter.get_signature_runner(key)


def _named_inputs_for_runner(runner, inputs):
    details = runner.get_input_details()
    names = sorted(details)
    if isinstance(inputs, dict):
        unknown = sorted(set(inputs) - set(names))
        missing = sorted(set(names) - set(inputs))
        if unknown or missing:
            raise ValueError(
                f"inputs keys {sorted(inputs)} do not match the model's inputs {names}"
            )
        named = {name: np.asarray(inputs[name]) for name in names}
    elif len(names) == 1:
        named = {names[0]: np.asarray(inputs)}
    else:
        raise ValueError(f"the model has inputs {names}; pass a dict keyed by input name")
    return named


def _quantize_input(array, detail):
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    # Anything not already in the quantized dtype holds real values (float features, or uint8 pixels
    # for an int8 model): quantize it. Casting uint8 pixels straight to int8 would wrap values > 127.
    if dtype in (np.int8, np.uint8) and scale and array.dtype != dtype:
        info = np.iinfo(dtype)
        quantized = np.round(array.astype(np.float64) / scale) + zero_point
        return np.clip(quantized, info.min, info.max).astype(dtype)
    return array.astype(dtype, copy=False)


def _dequantize_output(array, detail):
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]) in (np.int8, np.uint8, np.int16) and scale:
        return (array.astype(np.float32) - zero_point) * np.float32(scale)
    return array.astype(np.float32, copy=False)


def _run_batched(runner, named, batch_size):
    input_details = runner.get_input_details()
    output_details = runner.get_output_details()
    if len(output_details) != 1:
        raise ValueError(
            f"the .tflite model has {len(output_details)} outputs {sorted(output_details)}; "
            "only single-output models can be run here"
        )
    (output_name, output_detail), = output_details.items()
    n = _n_rows(named, "inputs")
    quantized = {name: _quantize_input(array, input_details[name]) for name, array in named.items()}
    chunks = []
    for begin in range(0, n, batch_size):
        batch = {name: array[begin : begin + batch_size] for name, array in quantized.items()}
        # The runner resizes the input tensors to this batch (a no-op when unchanged).
        result = runner(**batch)[output_name]
        chunks.append(_dequantize_output(np.array(result), output_detail))
    return np.concatenate(chunks, axis=0)


# ----------------------------------------------------------------------------------------------
# Verification
# ----------------------------------------------------------------------------------------------


def _verify(model, flatbuffer, mapper, verify_inputs, verify_labels, batch_size=64):
    named = mapper.to_named(verify_inputs, "verify_inputs")
    n = _n_rows(named, "verify_inputs")
    keras_outputs = model.predict(mapper.to_keras(named), batch_size=batch_size, verbose=0)
    if isinstance(keras_outputs, (list, tuple, dict)):
        raise ValueError("verification supports single-output models only")
    keras_outputs = np.asarray(keras_outputs, dtype=np.float32)
    tflite_outputs = _run_batched(_signature_runner(flatbuffer), named, batch_size)
    if tflite_outputs.shape != keras_outputs.shape:
        raise ExportError(
            f"the .tflite output shape {tflite_outputs.shape} differs from Keras "
            f"{keras_outputs.shape}"
        )
    abs_err = np.abs(tflite_outputs - keras_outputs)
    threshold = _binary_threshold(keras_outputs)
    keras_classes = _predicted_classes(keras_outputs, threshold)
    tflite_classes = _predicted_classes(tflite_outputs, threshold)
    verification = {
        "n": int(n),
        "max_abs_err": float(abs_err.max()),
        "mean_abs_err": float(abs_err.mean()),
        "top1_agreement": float(np.mean(keras_classes == tflite_classes)),
        "keras_accuracy": None,
        "tflite_accuracy": None,
    }
    if verify_labels is not None:
        labels = _class_labels(verify_labels, keras_classes.shape)
        verification["keras_accuracy"] = float(np.mean(keras_classes == labels))
        verification["tflite_accuracy"] = float(np.mean(tflite_classes == labels))
    return verification


def _binary_threshold(keras_outputs):
    """Decision threshold for a one-unit output: 0.5 for probabilities, 0 for logits."""
    if keras_outputs.ndim >= 2 and keras_outputs.shape[-1] > 1:
        return None
    return 0.5 if keras_outputs.min() >= 0.0 and keras_outputs.max() <= 1.0 else 0.0


def _predicted_classes(outputs, threshold):
    """Top-1 class per row: argmax of the last axis, or a threshold for one-unit outputs."""
    if threshold is None:
        return np.argmax(outputs, axis=-1)
    if outputs.ndim >= 2:
        outputs = outputs[..., 0]
    return (outputs > threshold).astype(np.int64)


def _class_labels(labels, classes_shape):
    labels = np.asarray(labels)
    if labels.shape == classes_shape:
        return labels.astype(np.int64)
    if labels.ndim == len(classes_shape) + 1 and labels.shape[:-1] == classes_shape:
        return np.argmax(labels, axis=-1)  # one-hot
    if labels.shape == classes_shape + (1,):
        return labels[..., 0].astype(np.int64)
    raise ValueError(
        f"verify_labels shape {labels.shape} does not match the predictions {classes_shape}"
    )
