"""Standalone LiteRT micro-benchmark, executed on a board by `android_bench.ssh`.

The SSH transport pipes this file's source into `python3 - MODEL THREADS
WARMUP RUNS SEED USE_XNNPACK` on the board, so it must not import anything
from rmtkd-tf and must run on an old Python 3 (no 3.10+ syntax).  It prints
exactly one line `RMTKD_RESULT <json>` (raw per-run latencies; the host
computes statistics with the same code as for host runs) or
`RMTKD_ERROR <one-line reason>` with a non-zero exit code.

It works with `ai_edge_litert` (preferred) or the legacy `tflite_runtime`.
Run it by hand to check a board:  `python3 remote_litert_bench.py m.tflite 4 5 50 0 1`.
"""

import json
import os
import platform
import resource
import sys
import time


def _load_interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        try:
            from importlib.metadata import version

            runtime = "ai_edge_litert " + version("ai-edge-litert")
        except Exception:
            runtime = "ai_edge_litert"
        return Interpreter, OpResolverType, runtime
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, None, "tflite_runtime"
    except ImportError:
        return None, None, None


def _random_input(np, detail, rng):
    shape = tuple(int(d) for d in detail["shape"])
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.uint16)):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
    if dtype in (np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.uint32), np.dtype(np.uint64)):
        return rng.integers(0, 8, size=shape).astype(dtype)  # index-like inputs stay small
    if dtype == np.dtype(np.bool_):
        return rng.random(shape) < 0.5
    raise ValueError("no random input for dtype %s of %s" % (dtype, detail["name"]))


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Model"):
                    return value.strip() or None
    except OSError:
        pass
    return platform.processor() or None


def main(argv):
    if len(argv) != 6:
        print("RMTKD_ERROR usage: MODEL THREADS WARMUP RUNS SEED USE_XNNPACK(0|1)")
        return 2
    model, threads, warmup, runs, seed, use_xnnpack = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4]), argv[5] == "1"
    try:
        import numpy as np
    except ImportError:
        print("RMTKD_ERROR numpy is not installed on the board")
        return 3
    Interpreter, OpResolverType, runtime = _load_interpreter_class()
    if Interpreter is None:
        print("RMTKD_ERROR no LiteRT runtime on the board: pip install ai-edge-litert")
        return 3
    if not os.path.isfile(model):
        print("RMTKD_ERROR model not found on the board: %s" % model)
        return 4
    kwargs = {"model_path": model, "num_threads": threads}
    if OpResolverType is not None and not use_xnnpack:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    start = time.perf_counter()
    try:
        interpreter = Interpreter(**kwargs)
        interpreter.allocate_tensors()
    except Exception as err:
        print("RMTKD_ERROR cannot load model: %s" % str(err).splitlines()[0])
        return 5
    init_ms = (time.perf_counter() - start) * 1e3
    rng = np.random.default_rng(seed)
    details = interpreter.get_input_details()
    for detail in details:
        interpreter.set_tensor(detail["index"], _random_input(np, detail, rng))
    invoke, clock = interpreter.invoke, time.perf_counter_ns
    first_ms = None
    for i in range(warmup):
        t0 = clock()
        invoke()
        if i == 0:
            first_ms = (clock() - t0) / 1e6
    samples = []
    cpu0 = time.process_time()
    for _ in range(runs):
        t0 = clock()
        invoke()
        samples.append((clock() - t0) / 1e6)
    cpu_seconds = time.process_time() - cpu0
    shape = list(details[0]["shape"]) if details else []
    result = {
        "latencies_ms": samples,
        "init_ms": init_ms,
        "first_inference_ms": first_ms,
        "cpu_seconds": cpu_seconds,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "batch_size": int(shape[0]) if shape and shape[0] >= 1 else 1,
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtime": runtime,
    }
    print("RMTKD_RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
