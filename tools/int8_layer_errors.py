"""Where full int8 loses accuracy: the quantization error of every tensor of a classifier's int8 `.tflite`.

    python -m tools.int8_layer_errors --model STUDENT.keras --data ../shared/data/cifar10 --limit 25000 \
        --out benchmarks/results/int8_layer_errors_NAME.json

Converts with the converter settings of `rmtkd-tf export --precision int8` (`rmtkd_tf.export`'s own:
`TFLITE_BUILTINS_INT8`, calibrated on `--representative-samples` images of the calibration split that `compress`
carves with the same seed, limit and fraction) but with float input and output tensors, because the debugger
feeds and compares float values; the shipped file's int8 input and output add one rounding at each end. It then runs TFLite's `QuantizationDebugger` on `--debug-samples` further calibration
images: the output of each quantized op is compared with the same op computed in float on the same (dequantized)
inputs, so each figure is the error that op adds, not what has accumulated before it. The figure per tensor is
RMSE / scale, the error in units of its own quantization step. Uniform rounding alone gives 1/sqrt(12) = 0.29;
a tensor far above that (a clipped range, an outlier channel) is a candidate to keep in float
(`--precision int8-mixed`), while a network whose tensors all sit near 0.29 loses its accuracy to the
accumulation of rounding over its depth, which no single float op repairs.

That figure cannot see the other way int8 fails: a range stretched by outliers. Each activation tensor gets one
scale, from the minimum and maximum seen in calibration, so a few huge values (one channel, on a few inputs)
leave the typical values only a few of the 256 levels, and every op then rounds correctly to a step that is too
coarse. `activation_ranges` measures that on the Keras model: for each layer's output on the debug images, the
99.9th percentile of its magnitudes in steps of the range that min/max calibration would give it
(`steps_below_p999`; 255 x p99.9 / range). Few steps there (under about 10) mean an outlier-stretched range.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tools.one_off import refuse_existing_out, require_existing, tool_command  # noqa: E402

ROUNDING_FLOOR = 1 / np.sqrt(12)  # RMSE of uniform rounding, in quantization steps


def tensor_errors(model, calibration, debug) -> list[dict]:
    """One row per quantized tensor: op, tensor name, RMSE / scale (sorted worst first)."""
    import tensorflow as tf

    from rmtkd_tf.export import SIGNATURE_KEY, _apply_settings, _converter_settings

    def batches(x):
        return lambda: ([x[i : i + 1].astype("float32")] for i in range(len(x)))

    # export's own int8 settings (one rule for what "int8" means), less its int8 input/output types
    settings = _converter_settings("int8", batches(calibration))
    del settings["inference_input_type"], settings["inference_output_type"]
    with tempfile.TemporaryDirectory(prefix="rmtkd_int8_errors_") as directory:
        model.export(directory, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory, signature_keys=[SIGNATURE_KEY])
        _apply_settings(converter, settings)
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=batches(debug))
        debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    buffer.seek(0)
    rows = []
    for row in csv.DictReader(buffer):
        scale = float(row["scale"])
        rmse = float(row["mean_squared_error"]) ** 0.5
        rows.append({"op": row["op_name"], "tensor": row["tensor_name"], "scale": scale,
                     "rmse": rmse, "rmse_over_scale": rmse / scale if scale > 0 else None})
    return sorted(rows, key=lambda r: -(r["rmse_over_scale"] or 0.0))


def activation_ranges(model, x, batch_size: int = 10, sample_per_layer: int = 100_000, seed: int = 0) -> list[dict]:
    """One row per layer output of `model` on `x` (sorted fewest `steps_below_p999` first): its minimum, maximum,
    99.9th percentile of magnitudes, and that percentile in steps of the min/max range split into 255.

    Layers whose output cannot be read alone (shared layers, several outputs) are skipped. The percentile is
    taken on a random sample of at most `sample_per_layer` values per layer, so memory stays small on deep models.

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    >>> [row["layer"] for row in activation_ranges(model, np.ones((5, 4), "float32"))]
    ['d']
    """
    import keras

    layers, outputs = _single_outputs(model)
    probe = keras.Model(model.inputs, outputs)
    rng = np.random.default_rng(seed)
    low = np.full(len(layers), np.inf)
    high = np.full(len(layers), -np.inf)
    samples = [[] for _ in layers]
    per_batch = max(1, sample_per_layer * batch_size // max(1, len(x)))
    for start in range(0, len(x), batch_size):
        values = probe([x[start : start + batch_size]], training=False)  # a list: the structure of model.inputs
        for i, value in enumerate(values if len(layers) > 1 else [values]):
            value = np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64).ravel()
            low[i], high[i] = min(low[i], value.min()), max(high[i], value.max())
            samples[i].append(rng.choice(np.abs(value), size=min(per_batch, value.size), replace=False))
    rows = []
    for name, lo, hi, sample in zip(layers, low, high, samples):
        p999 = float(np.quantile(np.concatenate(sample), 0.999))
        span = max(hi, 0.0) - min(lo, 0.0)  # TFLite's asymmetric int8 range always holds 0
        rows.append({"layer": name, "min": float(lo), "max": float(hi), "p999_abs": p999,
                     "steps_below_p999": 255 * p999 / span if span > 0 else None})
    return sorted(rows, key=lambda r: np.inf if r["steps_below_p999"] is None else r["steps_below_p999"])


def _single_outputs(model) -> tuple[list[str], list]:
    """The names and symbolic outputs of `model`'s layers that have exactly one output tensor (no input layers)."""
    import keras

    names, outputs = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            output = layer.output
        except (AttributeError, ValueError):  # a shared layer has one output per call
            continue
        if not isinstance(output, (list, tuple, dict)):
            names.append(layer.name)
            outputs.append(output)
    return names, outputs


def summarise(rows: list[dict]) -> dict:
    """The distribution of RMSE / scale, and how many tensors sit well above the rounding floor."""
    ratios = np.array([r["rmse_over_scale"] for r in rows if r["rmse_over_scale"] is not None])
    return {"tensors": int(len(ratios)), "rounding_floor": float(ROUNDING_FLOOR),
            "median": float(np.median(ratios)), "p90": float(np.quantile(ratios, 0.9)), "max": float(ratios.max()),
            "above_twice_the_floor": int((ratios > 2 * ROUNDING_FLOOR).sum())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help=".keras classifier with one image input")
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, default=None, help="the --limit the compress run used")
    parser.add_argument("--calibration-fraction", type=float, default=0.1)
    parser.add_argument("--representative-samples", type=int, default=200)
    parser.add_argument("--debug-samples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    require_existing(args.model)
    refuse_existing_out(args.out)
    from benchmarks.schema import SCHEMA_VERSION
    from rmtkd_tf.io import write_json
    from rmtkd_tf.pipeline import load_task

    task = load_task(args.model, args.data, limit=args.limit, seed=args.seed,
                     calibration_fraction=args.calibration_fraction, log=print)
    x = task.data.x_calibration
    if isinstance(x, dict):
        raise SystemExit("error: this tool handles single-input (image) classifiers")
    need = args.representative_samples + args.debug_samples
    if len(x) < need:
        raise SystemExit(f"error: {len(x)} calibration examples, fewer than the {need} asked for")
    debug = x[args.representative_samples : need]
    rows = tensor_errors(task.model, x[: args.representative_samples], debug)
    summary = summarise(rows)
    print(summary)
    for row in rows[:10]:
        ratio = "n/a" if row["rmse_over_scale"] is None else f'{row["rmse_over_scale"]:.2f}'  # scale 0
        print(f'{row["op"]:18s} {ratio:>6s}  {row["tensor"][:100]}')
    ranges = activation_ranges(task.model, debug)
    print("fewest int8 steps below the 99.9th percentile of a layer's output (min/max calibration):")
    for row in ranges[:10]:
        steps = "n/a" if row["steps_below_p999"] is None else f'{row["steps_below_p999"]:.1f}'  # an all-zero output
        print(f'{row["layer"]:32s} {steps:>7s} steps  (p99.9 {row["p999_abs"]:.3g}, '
              f'range {row["min"]:.3g} .. {row["max"]:.3g})')
    write_json(args.out, {"schema_version": SCHEMA_VERSION, "kind": "int8_layer_errors", "name": args.out.stem,
                          "command": tool_command("tools.int8_layer_errors", sys.argv[1:] if argv is None else argv),
                          "model": str(args.model), "data": args.data, "summary": summary, "tensors": rows,
                          "activation_ranges": ranges})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
