"""Run `.tflite` models on one input batch and save their outputs (the aarch64 side of run.py).

This file is copied into the arm64 chroot and run there by the aarch64 CPython under
qemu-user. It may import only NumPy and `ai_edge_litert` (the chroot has no TensorFlow,
Keras or rmtkd_tf), so it repeats the few lines of `rmtkd_tf.export.tflite_predict`
that matter: the `serving_default` signature runner, float inputs quantized for int8
input tensors, int8 outputs dequantized, the batch fed in slices of `batch_size`.
run.py also runs this very file with the host Python and checks that its outputs equal
`tflite_predict`'s bit for bit, so the two code paths cannot drift apart unnoticed.

    python3 arm64_predict.py --inputs batch.npy --out outputs.npz a.tflite b.tflite

writes `outputs.npz` (one float32 array per model, keyed `model_0`, `model_1`, ...) and
prints one JSON line: machine, Python, NumPy and LiteRT versions, per-model wall time.
"""

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import time

import numpy as np

SIGNATURE_KEY = "serving_default"


def signature_runner(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise ValueError(f"{path}: the .tflite model has no signature to run")
    key = SIGNATURE_KEY if SIGNATURE_KEY in signatures else next(iter(signatures))
    return interpreter.get_signature_runner(key)


def quantize_input(array, detail):
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype in (np.int8, np.uint8) and scale and np.issubdtype(array.dtype, np.floating):
        info = np.iinfo(dtype)
        quantized = np.round(array / scale) + zero_point
        return np.clip(quantized, info.min, info.max).astype(dtype)
    return array.astype(dtype, copy=False)


def dequantize_output(array, detail):
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]) in (np.int8, np.uint8, np.int16) and scale:
        return (array.astype(np.float32) - zero_point) * np.float32(scale)
    return array.astype(np.float32, copy=False)


def predict(path, inputs, batch_size):
    runner = signature_runner(path)
    input_details = runner.get_input_details()
    output_details = runner.get_output_details()
    if len(input_details) != 1 or len(output_details) != 1:
        raise ValueError(
            f"{path}: only single-input single-output models are supported, got inputs "
            f"{sorted(input_details)} and outputs {sorted(output_details)}"
        )
    (input_name, input_detail), = input_details.items()
    (output_name, output_detail), = output_details.items()
    quantized = quantize_input(inputs, input_detail)
    chunks = []
    for begin in range(0, len(quantized), batch_size):
        result = runner(**{input_name: quantized[begin : begin + batch_size]})[output_name]
        chunks.append(dequantize_output(np.array(result), output_detail))
    return np.concatenate(chunks, axis=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", required=True, help=".npy file with the input batch")
    parser.add_argument("--out", required=True, help=".npz file to write the outputs to")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("models", nargs="+", help=".tflite files")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")

    inputs = np.load(args.inputs)
    outputs, wall_s = {}, []
    for index, path in enumerate(args.models):
        start = time.perf_counter()
        outputs[f"model_{index}"] = predict(path, inputs, args.batch_size)
        wall_s.append(time.perf_counter() - start)
    np.savez(args.out, **outputs)
    print(json.dumps({
        "machine": platform.machine(),
        "uname": list(os.uname()),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "ai_edge_litert": importlib.metadata.version("ai-edge-litert"),
        "wall_s": wall_s,
    }))


if __name__ == "__main__":
    main()
