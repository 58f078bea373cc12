"""BenchmarkResult / ComparisonResult: JSON round trip and validation."""

import json

import numpy as np
import pytest

from rmtkd_tf.bench.schema import (
    SCHEMA_VERSION,
    BenchmarkResult,
    ComparisonResult,
    DeviceInfo,
    EnergyInfo,
    LatencyStats,
    MemoryInfo,
    file_size_and_sha256,
    throughput_from_latency,
)


def make_result(**overrides):
    fields = dict(
        model_path="student.tflite", model_size_bytes=4096, model_sha256="ab" * 32, runner="benchmark_model",
        transport="adb", device=DeviceInfo(machine="aarch64", abi="arm64-v8a", android_version="14", model="Pixel 6"),
        threads=4, delegate="xnnpack", batch_size=1, warmup_runs=10, runs=50,
        latency_ms=LatencyStats(min=1.0, median=None, mean=1.5, p90=None, p99=None, max=3.0, std=0.2),
        throughput_per_s=666.7, init_ms=20.0, peak_rss_mb=None,
        memory=MemoryInfo(init_mb=5.0, overall_mb=9.0, kind="footprint_delta"),
        energy=EnergyInfo(available=True, joules_per_inference=0.03, source="android-battery", note="ok",
                          idle_power_w=1.4),
        extra={"benchmark_model": {"format": "inference_timings"}},
    )
    fields.update(overrides)
    return BenchmarkResult(**fields)


def test_round_trip_through_json():
    result = make_result()
    data = json.loads(json.dumps(result.to_dict()))
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["latency_ms"] == {"min": 1.0, "median": None, "mean": 1.5, "p90": None, "p99": None, "max": 3.0, "std": 0.2}
    assert data["energy"]["available"] is True and data["energy"]["source"] == "android-battery"
    assert BenchmarkResult.from_dict(data) == result


def test_latency_from_samples_is_exact():
    stats = LatencyStats.from_samples_ms(np.arange(1, 101, dtype=float))
    assert (stats.min, stats.max, stats.mean) == (1.0, 100.0, 50.5)
    assert stats.median == 50.5
    assert stats.p90 == pytest.approx(90.1) and stats.p99 == pytest.approx(99.01)
    assert stats.std == pytest.approx(np.std(np.arange(1, 101)))
    with pytest.raises(ValueError, match="non-empty"):
        LatencyStats.from_samples_ms([])
    with pytest.raises(ValueError, match="finite"):
        LatencyStats.from_samples_ms([1.0, float("nan")])


@pytest.mark.parametrize("overrides, message", [
    ({"runner": "tflite"}, "runner must be one of litert-python, benchmark_model"),
    ({"transport": "usb"}, "transport must be one of host, adb, ssh"),
    ({"delegate": "nnapi"}, "delegate must be one of"),
    ({"model_sha256": "abc"}, "64 hex"),
    ({"runs": 0}, "runs must be >= 1"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"init_ms": float("inf")}, "init_ms must be finite"),
    ({"schema_version": 99}, "schema_version 99 is not supported"),
])
def test_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_result(**overrides)


def test_energy_invariants():
    unavailable = EnergyInfo.unavailable("no counter")
    assert unavailable.available is False and unavailable.joules_per_inference is None
    with pytest.raises(ValueError, match="needs a note"):
        EnergyInfo(available=False, note="")
    with pytest.raises(ValueError, match="must not carry joules"):
        EnergyInfo(available=False, joules_per_inference=1.0, note="proxy only")
    with pytest.raises(ValueError, match="needs joules_per_inference and source"):
        EnergyInfo(available=True, note="x")
    with pytest.raises(ValueError, match="energy.source must be one of rapl, android-battery, nvml"):
        EnergyInfo(available=True, joules_per_inference=1.0, source="multimeter")


def test_from_dict_rejects_bad_documents():
    data = make_result().to_dict()
    with pytest.raises(ValueError, match="unknown key"):
        BenchmarkResult.from_dict({**data, "latency": 1})
    with pytest.raises(ValueError, match="unsupported benchmark result schema_version 2"):
        BenchmarkResult.from_dict({**data, "schema_version": 2})
    missing = dict(data)
    del missing["latency_ms"]
    with pytest.raises(ValueError, match="missing 'latency_ms'"):
        BenchmarkResult.from_dict(missing)
    missing = dict(data)
    del missing["threads"]
    with pytest.raises(ValueError, match="incomplete"):
        BenchmarkResult.from_dict(missing)
    with pytest.raises(ValueError, match="unknown key.*in latency_ms"):
        BenchmarkResult.from_dict({**data, "latency_ms": {**data["latency_ms"], "p95": 2.0}})


def test_comparison_ratios_and_round_trip():
    a = make_result(model_size_bytes=1000, cpu_seconds_per_inference=0.002,
                    latency_ms=LatencyStats(min=1, median=2.0, mean=2.0, p90=None, p99=None, max=3, std=0.1))
    b = make_result(model_size_bytes=4000, cpu_seconds_per_inference=0.008, energy=EnergyInfo.unavailable("charging"),
                    latency_ms=LatencyStats(min=1, median=8.0, mean=10.0, p90=None, p99=None, max=30, std=1))
    comparison = ComparisonResult.from_pair(a, b, {"schedule": "test"})
    assert comparison.ratios == {
        "median_latency_a_over_b": 0.25, "mean_latency_a_over_b": 0.2, "size_a_over_b": 0.25,
        "cpu_seconds_a_over_b": 0.25, "energy_a_over_b": None}
    assert ComparisonResult.from_dict(json.loads(json.dumps(comparison.to_dict()))) == comparison


def test_file_facts_and_throughput(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"abc")
    assert file_size_and_sha256(path) == (3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert throughput_from_latency(2.0, 8) == 4000.0
    assert throughput_from_latency(2.0, None) == 500.0
    assert throughput_from_latency(0.0, 1) is None
