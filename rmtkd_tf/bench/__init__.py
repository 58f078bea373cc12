"""Benchmarking of `.tflite` models: one result schema, a host runner, energy counters.

On-device transports (adb for Android, ssh for ARM Linux boards) live in the
top-level `android_bench` package and return the same `BenchmarkResult`.

>>> from rmtkd_tf.bench import BenchmarkResult, benchmark_tflite, compare_tflite
"""

from rmtkd_tf.bench.host import benchmark_tflite, compare_tflite
from rmtkd_tf.bench.schema import (
    SCHEMA_VERSION,
    BenchmarkResult,
    ComparisonResult,
    DeviceInfo,
    EnergyInfo,
    LatencyStats,
    MemoryInfo,
)

__all__ = [
    "SCHEMA_VERSION",
    "BenchmarkResult",
    "ComparisonResult",
    "DeviceInfo",
    "EnergyInfo",
    "LatencyStats",
    "MemoryInfo",
    "benchmark_tflite",
    "compare_tflite",
]
