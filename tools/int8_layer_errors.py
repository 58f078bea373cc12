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
    rows = tensor_errors(task.model, x[: args.representative_samples], x[args.representative_samples : need])
    summary = summarise(rows)
    print(summary)
    for row in rows[:10]:
        ratio = "n/a" if row["rmse_over_scale"] is None else f'{row["rmse_over_scale"]:.2f}'  # scale 0
        print(f'{row["op"]:18s} {ratio:>6s}  {row["tensor"][:100]}')
    write_json(args.out, {"schema_version": SCHEMA_VERSION, "kind": "int8_layer_errors", "name": args.out.stem,
                          "command": tool_command("tools.int8_layer_errors", sys.argv[1:] if argv is None else argv),
                          "model": str(args.model), "data": args.data, "summary": summary, "tensors": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
