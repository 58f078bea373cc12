"""On-device benchmarking of `.tflite` models: Android over adb, ARM Linux boards over ssh.

Both transports return `rmtkd_tf.bench.BenchmarkResult`, the same schema as
the host runner.  Commands go through an injectable runner
(`android_bench.runner`), so every device session can be recorded and
replayed in tests.

>>> from android_bench import AdbDevice, SshBoard, parse_benchmark_model_output
"""

from android_bench.adb import AdbDevice, parse_adb_devices, select_device
from android_bench.benchmark_output import parse_benchmark_model_output
from android_bench.errors import (
    BenchmarkFailedError,
    DeviceBenchError,
    DeviceCommandError,
    MissingBinaryError,
    NoDeviceError,
    SeveralDevicesError,
    ToolNotFoundError,
    UnauthorizedDeviceError,
    WrongAbiError,
)
from android_bench.runner import CommandResult, RecordingRunner, ReplayRunner, SubprocessRunner
from android_bench.ssh import SshBoard

__all__ = [
    "AdbDevice",
    "BenchmarkFailedError",
    "CommandResult",
    "DeviceBenchError",
    "DeviceCommandError",
    "MissingBinaryError",
    "NoDeviceError",
    "RecordingRunner",
    "ReplayRunner",
    "SeveralDevicesError",
    "SshBoard",
    "SubprocessRunner",
    "ToolNotFoundError",
    "UnauthorizedDeviceError",
    "WrongAbiError",
    "parse_adb_devices",
    "parse_benchmark_model_output",
    "select_device",
]
