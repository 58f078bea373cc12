"""Benchmark `.tflite` models on this machine with the LiteRT Python interpreter.

`benchmark_tflite` measures one model; `compare_tflite` measures two models
*alternately in one process* (interleaved blocks in ABBA order, same thread
count) so that CPU frequency scaling, thermal throttling and noisy
neighbours hit both models equally and the a/b ratios stay meaningful even
when absolute numbers drift.

What is measured, and how:

* latency: wall time of each `interpreter.invoke()` with `perf_counter_ns`
  (inputs are set once before timing, like TFLite's `benchmark_model`);
* init: interpreter construction + `allocate_tensors` (includes delegate
  preparation, i.e. XNNPACK weight packing);
* CPU seconds per inference: `time.process_time()` (user+system, all threads
  of this process) over the timed runs / runs;
* peak RSS: `getrusage(RUSAGE_SELF).ru_maxrss`, the peak of the whole Python
  process so far (includes NumPy/TensorFlow if they were imported);
* energy: RAPL package counters where readable, else
  `energy.available=False` with a note (CPU seconds are then the proxy).

Example:

>>> from rmtkd_tf.bench.host import benchmark_tflite     # doctest: +SKIP
>>> result = benchmark_tflite("model.tflite", threads=1, warmup=5, runs=50)  # doctest: +SKIP
>>> result.latency_ms.median                              # doctest: +SKIP
0.0123
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np

from rmtkd_tf.arguments import check_integer
from rmtkd_tf.bench.energy import RAPL_GLOB, RaplMeter
from rmtkd_tf.bench.inputs import in_range_input, integer_input_limits
from rmtkd_tf.bench.schema import (
    BenchmarkResult,
    ComparisonResult,
    DeviceInfo,
    EnergyInfo,
    LatencyStats,
    MemoryInfo,
    file_size_and_sha256,
    throughput_from_latency,
)

def _check_counts(threads: int, warmup: int, runs: int) -> None:
    check_integer(threads, "threads")
    check_integer(warmup, "warmup", minimum=0)
    check_integer(runs, "runs")


def random_input_for(detail: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    """A random array with the tensor's exact dtype and shape.

    Floats are standard normal; int8/uint8/int16 cover their full range
    (quantized activations); int32/int64 are small non-negative values in
    [0, 8) (a fallback: `LoadedTfliteModel` gives integer inputs in-range
    values with `rmtkd_tf.bench.inputs` first); bools are fair coin flips.
    """
    shape = tuple(int(d) for d in detail["shape"])
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.uint16)):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
    if dtype in (np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.uint32), np.dtype(np.uint64)):
        return rng.integers(0, 8, size=shape).astype(dtype)
    if dtype == np.dtype(np.bool_):
        return rng.random(shape) < 0.5
    raise ValueError(f"cannot make random input for tensor {detail['name']!r} of dtype {dtype}; pass inputs=")


def _normalize_inputs(details: Sequence[Mapping[str, Any]], inputs: Any) -> list[np.ndarray | None]:
    """Map user inputs onto the interpreter's input order (None = generate)."""
    if inputs is None:
        return [None] * len(details)
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    if isinstance(inputs, Mapping):
        names = [d["name"] for d in details]
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise ValueError(f"unknown input name(s) {unknown}; model inputs are {names}")
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ValueError(f"missing input(s) {missing}; model inputs are {names}")
        return [np.asarray(inputs[n]) for n in names]
    inputs = list(inputs)
    if len(inputs) != len(details):
        raise ValueError(f"model has {len(details)} input(s) but {len(inputs)} array(s) were given")
    return [np.asarray(x) for x in inputs]


class LoadedTfliteModel:
    """A LiteRT interpreter with inputs set, ready to be invoked repeatedly.

    Separate from the measuring loops so `compare_tflite` can hold two
    models at once.  `init_ms` covers construction + allocate_tensors.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 1, inputs: Any = None, seed: int = 0,
                 use_xnnpack: bool = True):
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType
        except ImportError as err:  # pragma: no cover - the package is a hard dependency
            raise RuntimeError("ai_edge_litert is not installed: pip install ai-edge-litert") from err
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file not found: {path}")
        self.path = path
        self.model_size_bytes, self.model_sha256 = file_size_and_sha256(path)
        self.threads = int(threads)
        self.use_xnnpack = bool(use_xnnpack)
        # AUTO applies TFLite's default delegate (XNNPACK on CPU);
        # BUILTIN_WITHOUT_DEFAULT_DELEGATES runs the plain builtin kernels.
        resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        start = time.perf_counter_ns()
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=self.threads,
                                           experimental_op_resolver_type=resolver)
        except ValueError as err:
            raise ValueError(f"LiteRT cannot load {path}: {str(err).splitlines()[0]}") from None
        details = self.interpreter.get_input_details()
        arrays = _normalize_inputs(details, inputs)
        for detail, array in zip(details, arrays):
            if array is None:
                continue
            if array.dtype != np.dtype(detail["dtype"]):
                raise ValueError(
                    f"input {detail['name']!r} has dtype {array.dtype}, model expects {np.dtype(detail['dtype'])}"
                )
            if tuple(array.shape) != tuple(detail["shape"]):
                signature = tuple(int(d) for d in detail.get("shape_signature", detail["shape"]))
                compatible = len(signature) == array.ndim and all(
                    s in (-1, n) for s, n in zip(signature, array.shape)
                )
                if not compatible:
                    raise ValueError(
                        f"input {detail['name']!r} has shape {tuple(array.shape)}, model expects {signature} (-1 = any)"
                    )
                self.interpreter.resize_tensor_input(detail["index"], list(array.shape))
        self.interpreter.allocate_tensors()
        self.init_ms = (time.perf_counter_ns() - start) / 1e6
        rng = np.random.default_rng(seed)
        details = self.interpreter.get_input_details()  # shapes after resizing
        # Integer inputs are ids into embedding tables (or masks): keep them in range.
        limits = integer_input_limits(self.interpreter) if any(a is None for a in arrays) else {}
        self.input_arrays = []
        for detail, array in zip(details, arrays):
            if array is None and detail["index"] in limits:
                array = in_range_input(detail, rng, limits[detail["index"]])
            elif array is None:
                array = random_input_for(detail, rng)
            self.interpreter.set_tensor(detail["index"], array)
            self.input_arrays.append(array)
        first_shape = tuple(details[0]["shape"]) if details else ()
        self.batch_size = int(first_shape[0]) if len(first_shape) >= 1 and first_shape[0] >= 1 else 1
        self._invoke = self.interpreter.invoke

    def run(self, n: int) -> list[int]:
        """Invoke `n` times; wall nanoseconds per invoke."""
        invoke, clock = self._invoke, time.perf_counter_ns
        out = []
        for _ in range(n):
            start = clock()
            invoke()
            out.append(clock() - start)
        return out


class _Accumulator:
    """Per-model totals collected across (possibly interleaved) timed blocks."""

    def __init__(self):
        self.samples_ns: list[int] = []
        self.cpu_seconds = 0.0
        self.joules = 0.0
        self.energy_seconds = 0.0
        self.first_warmup_ns: int | None = None
        self.rss_before_load_mb: float | None = None
        self.rss_after_load_mb: float | None = None
        self.rss_after_runs_mb: float | None = None

    def timed_block(self, model: LoadedTfliteModel, n: int, meter: RaplMeter | None) -> None:
        energy_before = meter.read() if meter else None
        cpu_before = time.process_time()
        wall_before = time.perf_counter()
        self.samples_ns.extend(model.run(n))
        wall_after = time.perf_counter()
        cpu_after = time.process_time()
        if meter:
            self.joules += meter.joules_between(energy_before, meter.read())
            self.energy_seconds += wall_after - wall_before
        self.cpu_seconds += cpu_after - cpu_before

    def warm(self, model: LoadedTfliteModel, n: int) -> None:
        if n > 0:
            times = model.run(n)
            if self.first_warmup_ns is None:
                self.first_warmup_ns = times[0]


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _current_rss_mb() -> float | None:
    """Resident set size now (Linux /proc/self/statm), None elsewhere."""
    try:
        with open("/proc/self/statm") as handle:
            resident_pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)


def _cpu_model_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Model"):
                    return value.strip() or None
    except OSError:
        pass
    return platform.processor() or None


def host_device_info() -> DeviceInfo:
    return DeviceInfo(machine=platform.machine() or None, cpu_model=_cpu_model_name(), os=platform.platform())


def _litert_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("ai-edge-litert")
    except Exception:  # metadata missing in odd installs: not worth failing a benchmark
        return None


def parse_cpu_mask(mask: str | int | None) -> set[int] | None:
    """CPU ids from a hex affinity mask ("0xf0", "f0" or an int), like taskset.

    >>> sorted(parse_cpu_mask("0x30"))
    [4, 5]
    """
    if mask is None:
        return None
    if isinstance(mask, str):
        text = mask.strip().lower()
        text = text[2:] if text.startswith("0x") else text
        try:
            value = int(text, 16)
        except ValueError:
            raise ValueError(f"CPU mask must be hexadecimal like 0xf0; got {mask!r}") from None
    else:
        value = int(mask)
    if value <= 0:
        raise ValueError(f"CPU mask must select at least one CPU; got {mask!r}")
    return {bit for bit in range(value.bit_length()) if value >> bit & 1}


@contextlib.contextmanager
def _cpu_affinity(cpus: set[int] | None):
    """Pin this process (and threads it creates) to `cpus`, then restore."""
    if cpus is None:
        yield None
        return
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError("CPU masks need os.sched_setaffinity (Linux only)")
    previous = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as err:
        raise ValueError(f"cannot pin to CPUs {sorted(cpus)}: {err.strerror} (available: {sorted(previous)})") from None
    try:
        yield sorted(cpus)
    finally:
        os.sched_setaffinity(0, previous)


def _energy_info(acc: _Accumulator, meter: RaplMeter | None, unavailable_note: str, runs: int) -> EnergyInfo:
    if meter is None:
        return EnergyInfo.unavailable(unavailable_note)
    seconds = acc.energy_seconds
    return EnergyInfo(
        available=True,
        joules_per_inference=acc.joules / runs,
        source="rapl",
        note=(
            "RAPL package energy over the timed runs (domains: "
            + ", ".join(d.name for d in meter.domains)
            + "); includes everything else running on the package, not subtracted"
        ),
        mean_power_w=acc.joules / seconds if seconds > 0 else None,
        measured_seconds=seconds,
    )


def _result(model: LoadedTfliteModel, acc: _Accumulator, warmup: int, runs: int, energy: EnergyInfo,
            extra: dict[str, Any]) -> BenchmarkResult:
    latency = LatencyStats.from_samples_ms([ns / 1e6 for ns in acc.samples_ns])
    peak = _peak_rss_mb()
    init_delta = overall_delta = None
    if acc.rss_before_load_mb is not None and acc.rss_after_load_mb is not None:
        init_delta = acc.rss_after_load_mb - acc.rss_before_load_mb
    if acc.rss_before_load_mb is not None and acc.rss_after_runs_mb is not None:
        overall_delta = acc.rss_after_runs_mb - acc.rss_before_load_mb
    return BenchmarkResult(
        model_path=model.path,
        model_size_bytes=model.model_size_bytes,
        model_sha256=model.model_sha256,
        runner="litert-python",
        transport="host",
        device=host_device_info(),
        threads=model.threads,
        delegate="xnnpack" if model.use_xnnpack else "none",
        batch_size=model.batch_size,
        warmup_runs=warmup,
        runs=runs,
        latency_ms=latency,
        throughput_per_s=throughput_from_latency(latency.mean, model.batch_size),
        init_ms=model.init_ms,
        peak_rss_mb=peak,
        memory=MemoryInfo(
            peak_rss_mb=peak,
            init_mb=init_delta,
            overall_mb=overall_delta,
            kind="rss_delta",
            end_rss_mb=acc.rss_after_runs_mb,
            note=(
                "peak_rss_mb is getrusage ru_maxrss of the whole Python process so far (includes TensorFlow if "
                "imported); init_mb/overall_mb are VmRSS growth from before loading the model to after loading / "
                "after the timed runs"
            ),
        ),
        cpu_seconds_per_inference=acc.cpu_seconds / runs,
        energy=energy,
        extra={
            "first_inference_ms": acc.first_warmup_ns / 1e6 if acc.first_warmup_ns is not None else None,
            "litert_version": _litert_version(),
            "op_resolver": "AUTO" if model.use_xnnpack else "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
            "python": platform.python_version(),
            **extra,
        },
    )


def _rapl_meter_and_note(rapl_glob: str) -> tuple[RaplMeter | None, str]:
    from rmtkd_tf.bench.energy import RaplUnavailable

    try:
        return RaplMeter.discover(rapl_glob), ""
    except RaplUnavailable as why:
        return None, f"RAPL unavailable: {why}; cpu_seconds_per_inference is the only (proxy) energy figure"


def benchmark_tflite(path: str | os.PathLike, threads: int = 1, warmup: int = 10, runs: int = 100,
                     inputs: Any = None, seed: int = 0, use_xnnpack: bool = True,
                     cpu_mask: str | int | None = None, rapl_glob: str = RAPL_GLOB) -> BenchmarkResult:
    """Benchmark one `.tflite` model with the LiteRT interpreter on this host.

    Args:
      path: the `.tflite` file.
      threads: interpreter threads (>= 1).
      warmup: untimed invocations before measuring.
      runs: timed invocations.
      inputs: None for random inputs of each tensor's dtype/shape (int8 models
        get int8 inputs), one array, a list in input order, or a name->array
        dict.  Arrays must have the exact dtype; a different shape is allowed
        only where the model's shape signature has -1.
      seed: seed of the random inputs.
      use_xnnpack: False disables TFLite's default XNNPACK delegate.
      cpu_mask: hex CPU affinity mask (e.g. "0x3") applied while loading and
        running, restored afterwards.
      rapl_glob: where RAPL domains live (tests point it elsewhere).
    """
    _check_counts(threads, warmup, runs)
    cpus = parse_cpu_mask(cpu_mask)
    meter, note = _rapl_meter_and_note(rapl_glob)
    with _cpu_affinity(cpus) as pinned:
        acc = _Accumulator()
        acc.rss_before_load_mb = _current_rss_mb()
        model = LoadedTfliteModel(path, threads=threads, inputs=inputs, seed=seed, use_xnnpack=use_xnnpack)
        acc.rss_after_load_mb = _current_rss_mb()
        acc.warm(model, warmup)
        acc.timed_block(model, runs, meter)
        acc.rss_after_runs_mb = _current_rss_mb()
    return _result(model, acc, warmup, runs, _energy_info(acc, meter, note, runs), {"cpu_affinity": pinned})


def compare_tflite(a: str | os.PathLike, b: str | os.PathLike, threads: int = 1, warmup: int = 10,
                   runs: int = 100, block_runs: int = 10, inputs_a: Any = None, inputs_b: Any = None,
                   seed: int = 0, use_xnnpack: bool = True, cpu_mask: str | int | None = None,
                   rapl_glob: str = RAPL_GLOB) -> ComparisonResult:
    """Benchmark models `a` and `b` alternately in this process; ratios are a/b.

    Both interpreters are loaded up front with the same settings.  Warm-up
    alternates a, b; the timed runs are split into blocks of `block_runs` and
    scheduled A B B A A B ... so any linear drift over time (frequency,
    temperature) adds the same amount to both models.  CPU time and RAPL
    energy are attributed per block.  Peak RSS is the shared process's and is
    the same number for both.
    """
    _check_counts(threads, warmup, runs)
    check_integer(block_runs, "block_runs")
    cpus = parse_cpu_mask(cpu_mask)
    meter, note = _rapl_meter_and_note(rapl_glob)
    with _cpu_affinity(cpus) as pinned:
        acc_a, acc_b = _Accumulator(), _Accumulator()
        # Each model's RSS growth is measured around its own load; after the
        # interleaved runs only the combined end RSS exists (overall_mb stays None).
        acc_a.rss_before_load_mb = _current_rss_mb()
        model_a = LoadedTfliteModel(a, threads=threads, inputs=inputs_a, seed=seed, use_xnnpack=use_xnnpack)
        acc_a.rss_after_load_mb = acc_b.rss_before_load_mb = _current_rss_mb()
        model_b = LoadedTfliteModel(b, threads=threads, inputs=inputs_b, seed=seed, use_xnnpack=use_xnnpack)
        acc_b.rss_after_load_mb = _current_rss_mb()
        acc_a.warm(model_a, warmup)
        acc_b.warm(model_b, warmup)
        pairs = [(model_a, acc_a), (model_b, acc_b)]
        blocks = math.ceil(runs / block_runs)
        done = 0
        for block in range(blocks):
            n = min(block_runs, runs - done)
            order = pairs if block % 2 == 0 else pairs[::-1]
            for model, acc in order:
                acc.timed_block(model, n, meter)
            done += n
    method = {"schedule": "interleaved ABBA blocks in one process", "block_runs": int(block_runs),
              "blocks": blocks, "cpu_affinity": pinned}
    result_a = _result(model_a, acc_a, warmup, runs, _energy_info(acc_a, meter, note, runs),
                       {"cpu_affinity": pinned, "interleaved_with": model_b.path})
    result_b = _result(model_b, acc_b, warmup, runs, _energy_info(acc_b, meter, note, runs),
                       {"cpu_affinity": pinned, "interleaved_with": model_a.path})
    return ComparisonResult.from_pair(result_a, result_b, method)
