"""Accuracy of every `.tflite` precision of a classifier (and of its RMT-KD student) on real test data.

    python -m tools.quantize_precisions --model TEACHER.keras --model STUDENT.keras --data ../shared/data/sst2 \
        --tokenizer TEACHER.vocab.txt --limit 1500 --calibration-fraction 0.25 --out results.json

Data are loaded (and texts encoded) the way `rmtkd-tf compress` encodes them (`rmtkd_tf.pipeline.load_task`: the
`vocab.txt` beside the model, the model's sequence length, the same seed, limit and calibration split, so a
student's calibration texts are those its compression used). For each model and precision the script
converts with `rmtkd_tf.export.export_tflite` (calibrating int8 / int16x8 / int8-mixed on
`--representative-samples` calibration texts), scores the `.tflite` and the Keras model on the whole
test split, and gives the paired drop (`rmtkd_tf.acceptance`). It then runs `--precision auto`
(`rmtkd_tf.precision_search`) on the validation split with `--max-drop`, as `compress` would.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from rmtkd_tf.acceptance import paired_accuracy_drop  # noqa: E402
from rmtkd_tf.export import PRECISIONS, ExportError, convert_tflite, keras_predictions, per_example_correct  # noqa: E402
from rmtkd_tf.io import write_json  # noqa: E402
from rmtkd_tf.pipeline import load_task  # noqa: E402
from rmtkd_tf.precision_search import export_smallest_accurate  # noqa: E402
from tools.one_off import tool_command  # noqa: E402

ORDER = ("fp32", "fp16", "int8-dynamic", "int8-mixed", "int16x8", "int8")


def _limit_test(data, test_limit, seed):
    """`data` with a class-balanced draw of `test_limit` test examples (in file order), or unchanged."""
    if test_limit is None or test_limit >= len(data.y_test):
        return data
    import dataclasses

    from rmtkd_tf.data import split_train

    index = np.sort(split_train(np.zeros(len(data.y_test)), data.y_test, (int(test_limit), 0), seed=seed).calibration)
    x_test = {k: v[index] for k, v in data.x_test.items()} if isinstance(data.x_test, dict) else data.x_test[index]
    return dataclasses.replace(data, x_test=x_test, y_test=data.y_test[index])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help=".keras classifier (repeatable)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--tokenizer", default=None, help="vocab.txt (default: the one beside each model)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--test-limit", type=int, default=None,
                        help="score on a class-balanced draw of this many test examples (int16x8 runs on TFLite's "
                             "reference kernels: slow on long texts)")
    parser.add_argument("--calibration-fraction", type=float, default=0.1)
    parser.add_argument("--representative-samples", type=int, default=200)
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--precisions", default=",".join(ORDER))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-auto", action="store_true", help="skip the --precision auto run on validation")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    precisions = [p for p in args.precisions.split(",") if p]
    for precision in precisions:
        if precision not in PRECISIONS:
            parser.error(f"unknown precision {precision!r}")
    from benchmarks.schema import SCHEMA_VERSION

    command = tool_command("tools.quantize_precisions", sys.argv[1:] if argv is None else argv)
    record = {"schema_version": SCHEMA_VERSION, "kind": "quantize", "name": args.out.stem, "command": command,
              "command_as_run": command, "data": args.data, "settings": {k: str(v) for k, v in vars(args).items()},
              "models": {}}
    for model_path in args.model:
        task = load_task(Path(model_path), args.data, limit=args.limit, seed=args.seed,
                         calibration_fraction=args.calibration_fraction, tokenizer=args.tokenizer, log=print)
        data, model = _limit_test(task.data, args.test_limit, args.seed), task.model
        rows = {}
        keras_outputs = None
        for precision in precisions:
            t0 = time.perf_counter()
            try:
                conversion = convert_tflite(model, precision, data.x_calibration, args.representative_samples)
            except ExportError as error:
                rows[precision] = {"error": str(error)}
                print(f"{Path(model_path).name} {precision}: {error}", flush=True)
                continue
            if keras_outputs is None:
                keras_outputs = keras_predictions(model, conversion, data.x_test)
            keras_correct, tflite_correct = per_example_correct(conversion, data.x_test, data.y_test, keras_outputs)
            drop = paired_accuracy_drop(keras_correct, tflite_correct)
            rows[precision] = {
                "exporter": conversion.exporter, "size_bytes": len(conversion.flatbuffer),
                "keras_test_accuracy": 100 * float(keras_correct.mean()),
                "tflite_test_accuracy": 100 * float(tflite_correct.mean()),
                "drop": drop.drop, "drop_interval": [drop.lower, drop.upper],
                "n_test": int(len(keras_correct)), "seconds": round(time.perf_counter() - t0, 1),
            }
            print(f"{Path(model_path).name} {precision}: {rows[precision]}", flush=True)
        record["models"][str(model_path)] = {"description": task.description, "precisions": rows}
        if not args.no_auto:
            with tempfile.TemporaryDirectory() as directory:
                auto = export_smallest_accurate(
                    model, Path(directory) / "auto.tflite", data.x_validation, data.y_validation,
                    representative_data=data.x_calibration, max_drop=args.max_drop,
                    max_representative_samples=args.representative_samples, log=print,
                )
            print(auto.format_table(), flush=True)
            record["models"][str(model_path)]["auto_on_validation"] = auto.to_dict()
        write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
