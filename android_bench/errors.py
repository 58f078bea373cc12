"""Errors of the device transports, each with a one-line, actionable message.

All derive from `DeviceBenchError`, so callers (the `rmtkd-tf bench` CLI) can
catch one type and print `str(err)`.
"""

from __future__ import annotations


class DeviceBenchError(RuntimeError):
    """Base class: something about the device, the transport or the tool failed."""

    def __init__(self, message: str):
        # Keep messages to one line: CLIs print them verbatim.
        super().__init__(" ".join(str(message).split()))


class ToolNotFoundError(DeviceBenchError):
    """`adb` / `ssh` / `scp` is not on PATH."""


class NoDeviceError(DeviceBenchError):
    """No device attached (or the requested serial is not attached)."""


class UnauthorizedDeviceError(DeviceBenchError):
    """The device has not accepted this computer's adb key."""


class SeveralDevicesError(DeviceBenchError):
    """More than one device attached and no serial given."""


class MissingBinaryError(DeviceBenchError):
    """The benchmark_model binary does not exist (locally or on the device)."""


class WrongAbiError(DeviceBenchError):
    """The benchmark_model binary was built for another CPU architecture."""


class DeviceCommandError(DeviceBenchError):
    """A command on the host or device exited non-zero."""


class BenchmarkFailedError(DeviceBenchError):
    """The benchmark itself failed on the device/board."""
