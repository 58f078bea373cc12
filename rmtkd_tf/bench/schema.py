"""One JSON result schema for every benchmark runner and transport.

A `BenchmarkResult` is what the host runner (`rmtkd_tf.bench.host`), the
Android runner (`android_bench.adb`) and the SSH-board runner
(`android_bench.ssh`) all return, and what `rmtkd-tf bench -o report.json`
writes.  Every field that a runner cannot measure is `None` (JSON `null`)
rather than a made-up number; energy carries an explicit `available` flag and a
note that says why it is missing.

Example:

>>> latency = LatencyStats.from_samples_ms([2.0, 1.0, 3.0])
>>> latency.median, latency.max
(2.0, 3.0)
>>> result = BenchmarkResult(
...     model_path="m.tflite", model_size_bytes=1024, model_sha256="0" * 64,
...     runner="litert-python", transport="host", device=DeviceInfo(machine="x86_64"),
...     threads=1, delegate="xnnpack", batch_size=1, warmup_runs=1, runs=3,
...     latency_ms=latency)
>>> BenchmarkResult.from_dict(result.to_dict()) == result
True
>>> result.energy.available
False
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

# Bump when a field is renamed/removed or its meaning changes; `from_dict`
# refuses documents from a newer schema instead of silently misreading them.
SCHEMA_VERSION = 1

RUNNERS = ("litert-python", "benchmark_model", "litert-benchmark")
TRANSPORTS = ("host", "adb", "ssh")
DELEGATES = ("xnnpack", "gpu", "none")
ENERGY_SOURCES = ("rapl", "android-battery", "nvml")


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _finite_or_none(value: Any, name: str) -> float | None:
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return None
    if math.isinf(value):
        raise ValueError(f"{name} must be finite; got {value}")
    return value


def _take(cls, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Keyword arguments for dataclass `cls` from `data`, rejecting unknown keys."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a JSON object; got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {', '.join(unknown)}")
    return dict(data)


@dataclass(frozen=True)
class LatencyStats:
    """Per-inference wall latency in milliseconds.

    `p90`/`p99` (and `median` for old `benchmark_model` builds) are `None`
    when the runner does not report them; they are never interpolated from
    min/mean/max.
    """

    min: float
    median: float | None
    mean: float
    p90: float | None
    p99: float | None
    max: float
    std: float

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _finite_or_none(getattr(self, f.name), f"latency_ms.{f.name}"))
        for required in ("min", "mean", "max", "std"):
            if getattr(self, required) is None:
                raise ValueError(f"latency_ms.{required} is required")
        if self.min > self.max:
            raise ValueError(f"latency_ms.min ({self.min}) > latency_ms.max ({self.max})")

    @classmethod
    def from_samples_ms(cls, samples_ms: Sequence[float]) -> "LatencyStats":
        """Exact statistics of measured per-run latencies (population std)."""
        values = np.asarray(samples_ms, dtype=np.float64)
        if values.ndim != 1 or values.size == 0:
            raise ValueError("latency samples must be a non-empty 1-D sequence")
        if not np.all(np.isfinite(values)):
            raise ValueError("latency samples must be finite")
        return cls(
            min=float(values.min()),
            median=float(np.percentile(values, 50)),
            mean=float(values.mean()),
            p90=float(np.percentile(values, 90)),
            p99=float(np.percentile(values, 99)),
            max=float(values.max()),
            std=float(values.std()),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LatencyStats":
        return cls(**_take(cls, data, "latency_ms"))


@dataclass(frozen=True)
class DeviceInfo:
    """Where the model ran.  Unknown fields stay `None`."""

    machine: str | None = None  # e.g. "x86_64", "aarch64"
    cpu_model: str | None = None  # e.g. "AMD EPYC", "Qualcomm SM8550"
    abi: str | None = None  # Android ABI, e.g. "arm64-v8a"
    android_version: str | None = None  # e.g. "14"
    model: str | None = None  # product model, e.g. "Pixel 8"
    serial: str | None = None  # adb serial or ssh host
    os: str | None = None  # e.g. platform.platform()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DeviceInfo":
        return cls(**_take(cls, data, "device"))


@dataclass(frozen=True)
class MemoryInfo:
    """Memory figures, each `None` unless the runner reported it.

    * `peak_rss_mb`: peak resident set size of the benchmarking process
      (getrusage on the host; `benchmark_model`'s periodic monitor on devices).
    * `init_mb` / `overall_mb`: memory growth after loading the model / after
      the runs.  `kind` says which flavour: "rss_delta" (host runner: VmRSS
      growth), or `benchmark_model`'s lines: "footprint_delta" (newer builds),
      "peak_footprint" (TF 2.2-2.x), "max_rss" (TF 1.14-2.1).
    * `end_rss_mb`: VmRSS at the end of the run.
    """

    peak_rss_mb: float | None = None
    init_mb: float | None = None
    overall_mb: float | None = None
    kind: str | None = None
    end_rss_mb: float | None = None
    note: str | None = None

    def __post_init__(self):
        for name in ("peak_rss_mb", "init_mb", "overall_mb", "end_rss_mb"):
            object.__setattr__(self, name, _finite_or_none(getattr(self, name), f"memory.{name}"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MemoryInfo":
        return cls(**_take(cls, data, "memory"))


@dataclass(frozen=True)
class EnergyInfo:
    """Measured energy, or an explicit statement that there is none.

    `available=False` always comes with a `note` saying why (no counter, device
    charging, ...).  `idle_power_w` is a separately measured baseline (device
    idle before the run); it is *not* subtracted from `joules_per_inference`.
    """

    available: bool = False
    joules_per_inference: float | None = None
    source: str | None = None
    note: str = "no energy counter was read"
    mean_power_w: float | None = None
    idle_power_w: float | None = None
    measured_seconds: float | None = None
    num_samples: int | None = None

    def __post_init__(self):
        if not isinstance(self.available, bool):
            raise ValueError(f"energy.available must be a bool; got {self.available!r}")
        for name in ("joules_per_inference", "mean_power_w", "idle_power_w", "measured_seconds"):
            object.__setattr__(self, name, _finite_or_none(getattr(self, name), f"energy.{name}"))
        if self.source is not None:
            _check_choice("energy.source", self.source, ENERGY_SOURCES)
        if self.available:
            if self.joules_per_inference is None or self.source is None:
                raise ValueError("energy.available=True needs joules_per_inference and source")
        else:
            if self.joules_per_inference is not None:
                raise ValueError("energy.available=False must not carry joules_per_inference")
            if not self.note:
                raise ValueError("energy.available=False needs a note saying why")

    @classmethod
    def unavailable(cls, note: str, **measured: Any) -> "EnergyInfo":
        return cls(available=False, note=note, **measured)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EnergyInfo":
        return cls(**_take(cls, data, "energy"))


def _utc_now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class BenchmarkResult:
    """One benchmark of one `.tflite` model on one device.

    `throughput_per_s` is inferences (samples) per second of sequential
    single-stream execution: `batch_size * 1000 / latency_ms.mean`.
    `cpu_seconds_per_inference` is user+system CPU time of the benchmarking
    process divided by timed runs (can exceed wall time with several threads).
    `extra` holds runner-specific raw numbers (e.g. the parsed
    `benchmark_model` output) that do not fit the common fields.
    """

    model_path: str
    model_size_bytes: int
    model_sha256: str
    runner: str
    transport: str
    device: DeviceInfo
    threads: int
    delegate: str
    batch_size: int | None
    warmup_runs: int
    runs: int
    latency_ms: LatencyStats
    throughput_per_s: float | None = None
    init_ms: float | None = None
    peak_rss_mb: float | None = None
    memory: MemoryInfo = field(default_factory=MemoryInfo)
    cpu_seconds_per_inference: float | None = None
    energy: EnergyInfo = field(default_factory=EnergyInfo)
    created_at: str = field(default_factory=_utc_now_iso)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        _check_choice("runner", self.runner, RUNNERS)
        _check_choice("transport", self.transport, TRANSPORTS)
        _check_choice("delegate", self.delegate, DELEGATES)
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported (this code writes {SCHEMA_VERSION})"
            )
        if int(self.model_size_bytes) < 0:
            raise ValueError(f"model_size_bytes must be >= 0; got {self.model_size_bytes}")
        if len(self.model_sha256) != 64:
            raise ValueError(f"model_sha256 must be 64 hex characters; got {self.model_sha256!r}")
        if int(self.threads) < 1 and self.threads != -1:
            raise ValueError(f"threads must be >= 1 (or -1 for the runtime default); got {self.threads}")
        if int(self.runs) < 1:
            raise ValueError(f"runs must be >= 1; got {self.runs}")
        if int(self.warmup_runs) < 0:
            raise ValueError(f"warmup_runs must be >= 0; got {self.warmup_runs}")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}")
        for name in ("throughput_per_s", "init_ms", "peak_rss_mb", "cpu_seconds_per_inference"):
            object.__setattr__(self, name, _finite_or_none(getattr(self, name), name))
        for name, cls in (("device", DeviceInfo), ("latency_ms", LatencyStats), ("memory", MemoryInfo), ("energy", EnergyInfo)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name} must be a {cls.__name__}; got {type(getattr(self, name)).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (nested dataclasses become dicts)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if hasattr(value, "to_dict") else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BenchmarkResult":
        """Inverse of `to_dict`; rejects unknown keys and other schema versions."""
        kwargs = _take(cls, data, "benchmark result")
        version = kwargs.get("schema_version", None)
        if version != SCHEMA_VERSION:
            raise ValueError(f"unsupported benchmark result schema_version {version!r} (expected {SCHEMA_VERSION})")
        try:
            kwargs["device"] = DeviceInfo.from_dict(kwargs["device"])
            kwargs["latency_ms"] = LatencyStats.from_dict(kwargs["latency_ms"])
        except KeyError as missing:
            raise ValueError(f"benchmark result is missing {missing}") from None
        if "memory" in kwargs:
            kwargs["memory"] = MemoryInfo.from_dict(kwargs["memory"])
        if "energy" in kwargs:
            kwargs["energy"] = EnergyInfo.from_dict(kwargs["energy"])
        try:
            return cls(**kwargs)
        except TypeError as err:  # a required top-level key is missing
            raise ValueError(f"benchmark result is incomplete: {err}") from None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return float(numerator) / float(denominator)


@dataclass(frozen=True)
class ComparisonResult:
    """Two models benchmarked against each other, plus a/b ratios.

    `ratios` keys: `median_latency_a_over_b`, `mean_latency_a_over_b`,
    `size_a_over_b`, `cpu_seconds_a_over_b`, `energy_a_over_b` (None when a
    figure is missing for either side).  `method` records how the two runs
    were scheduled (e.g. interleaved blocks in one process).
    """

    a: BenchmarkResult
    b: BenchmarkResult
    ratios: dict[str, float | None]
    method: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_pair(cls, a: BenchmarkResult, b: BenchmarkResult, method: Mapping[str, Any] | None = None) -> "ComparisonResult":
        energy_a = a.energy.joules_per_inference if a.energy.available else None
        energy_b = b.energy.joules_per_inference if b.energy.available else None
        ratios = {
            "median_latency_a_over_b": _ratio(a.latency_ms.median, b.latency_ms.median),
            "mean_latency_a_over_b": _ratio(a.latency_ms.mean, b.latency_ms.mean),
            "size_a_over_b": _ratio(a.model_size_bytes, b.model_size_bytes),
            "cpu_seconds_a_over_b": _ratio(a.cpu_seconds_per_inference, b.cpu_seconds_per_inference),
            "energy_a_over_b": _ratio(energy_a, energy_b),
        }
        return cls(a=a, b=b, ratios=ratios, method=dict(method or {}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "ratios": dict(self.ratios),
            "method": dict(self.method),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ComparisonResult":
        kwargs = _take(cls, data, "comparison result")
        if kwargs.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"unsupported comparison schema_version {kwargs.get('schema_version')!r} (expected {SCHEMA_VERSION})"
            )
        try:
            kwargs["a"] = BenchmarkResult.from_dict(kwargs["a"])
            kwargs["b"] = BenchmarkResult.from_dict(kwargs["b"])
            kwargs["ratios"] = dict(kwargs["ratios"])
        except KeyError as missing:
            raise ValueError(f"comparison result is missing {missing}") from None
        return cls(**kwargs)


def file_size_and_sha256(path: str | os.PathLike) -> tuple[int, str]:
    """Size in bytes and SHA-256 hex digest of a file (streamed, any size)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def throughput_from_latency(mean_latency_ms: float, batch_size: int | None) -> float | None:
    """Samples per second of back-to-back single-stream inference."""
    if mean_latency_ms is None or mean_latency_ms <= 0:
        return None
    return (batch_size or 1) * 1000.0 / mean_latency_ms
