"""Energy counters: Intel/AMD RAPL on Linux hosts, battery fuel gauge on Android.

Two sources, two very different levels of trust:

* **RAPL** (`/sys/class/powercap/intel-rapl:N/energy_uj`) is a hardware energy
  counter of the whole CPU package.  It is cumulative, in microjoules, and
  wraps around at `max_energy_range_uj`.  On most modern kernels it is
  readable by root only, and on VMs/containers it usually does not exist.
  Only top-level package domains (`intel-rapl:N`, not the `intel-rapl:N:M`
  sub-domains) are summed, so core/uncore/dram are not counted twice.
* **Android battery** (`/sys/class/power_supply/battery/{current_now,voltage_now}`)
  is a sampled instantaneous reading.  Energy is the time integral of
  `V * I`.  Units and sign differ between devices (see
  `normalize_battery_samples`), and when the phone is charging the battery
  current says nothing about the SoC's consumption, so energy is then reported
  as unavailable with the reason.

Example (synthetic samples: 1 s at 4.0 V and 0.5 A discharge = 2 J):

>>> samples = [BatterySample(0.0, -500_000, 4_000_000), BatterySample(1.0, -500_000, 4_000_000)]
>>> round(integrate_battery_energy(samples).joules, 6)
2.0
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

RAPL_GLOB = "/sys/class/powercap/intel-rapl:*"
# Package domains only: "intel-rapl:0" but not "intel-rapl:0:1" (sub-domain).
_RAPL_PACKAGE_RE = re.compile(r"intel-rapl:\d+$")

# Statuses in /sys/class/power_supply/battery/status that mean external power
# feeds the battery (and possibly the SoC): battery current is then no proxy
# for consumption.
CHARGING_STATUSES = ("Charging", "Full")


# --------------------------------------------------------------------------- RAPL


@dataclass(frozen=True)
class RaplDomain:
    path: str  # the domain directory, e.g. /sys/class/powercap/intel-rapl:0
    name: str  # content of the "name" file, e.g. "package-0"
    max_energy_range_uj: int


class RaplUnavailable(RuntimeError):
    """Raised when no readable RAPL package counter exists (message says why)."""


class RaplMeter:
    """Reads the summed package energy of all readable RAPL domains.

    `root_glob` is injectable so tests can point it at a fake sysfs tree.

    >>> meter = RaplMeter.probe("/nonexistent/intel-rapl:*")
    >>> meter is None
    True
    """

    def __init__(self, domains: Sequence[RaplDomain]):
        if not domains:
            raise RaplUnavailable("no RAPL package domains")
        self.domains = tuple(domains)

    @classmethod
    def discover(cls, root_glob: str = RAPL_GLOB) -> "RaplMeter":
        """A meter over all readable package domains, or `RaplUnavailable`."""
        candidates = sorted(p for p in glob.glob(root_glob) if _RAPL_PACKAGE_RE.search(os.path.basename(p)))
        if not candidates:
            raise RaplUnavailable(f"no RAPL domains at {root_glob} (not an Intel/AMD Linux host, or a VM/container)")
        domains, problems = [], []
        for path in candidates:
            try:
                max_range = int(_read_text(os.path.join(path, "max_energy_range_uj")))
                _read_text(os.path.join(path, "energy_uj"))  # readable at all?
                name = _read_text(os.path.join(path, "name")) if os.path.exists(os.path.join(path, "name")) else os.path.basename(path)
            except (OSError, ValueError) as err:
                problems.append(f"{path}: {err.__class__.__name__}: {err}")
                continue
            domains.append(RaplDomain(path=path, name=name, max_energy_range_uj=max_range))
        if not domains:
            raise RaplUnavailable(
                "RAPL energy_uj is not readable (" + "; ".join(problems) + "); usually root-only since Linux 5.10"
            )
        return cls(domains)

    @classmethod
    def probe(cls, root_glob: str = RAPL_GLOB) -> "RaplMeter | None":
        """Like `discover` but returns None instead of raising."""
        try:
            return cls.discover(root_glob)
        except RaplUnavailable:
            return None

    def read(self) -> tuple[int, ...]:
        """Raw cumulative counters (µJ), one per domain."""
        return tuple(int(_read_text(os.path.join(d.path, "energy_uj"))) for d in self.domains)

    def joules_between(self, before: Sequence[int], after: Sequence[int]) -> float:
        """Energy between two `read()` snapshots, handling counter wrap-around.

        Assumes at most one wrap between the snapshots; at package powers of
        ~100 W a 2^32 µJ range lasts ~43 s and the usual 2^38 range hours, so
        callers should read at least once per benchmark block.
        """
        total_uj = 0
        for domain, b, a in zip(self.domains, before, after):
            total_uj += rapl_delta_uj(b, a, domain.max_energy_range_uj)
        return total_uj / 1e6


def rapl_delta_uj(before_uj: int, after_uj: int, max_energy_range_uj: int) -> int:
    """Counter difference with one wrap-around at `max_energy_range_uj`.

    >>> rapl_delta_uj(100, 250, 1000)
    150
    >>> rapl_delta_uj(900, 50, 1000)   # wrapped: 900 -> 1000 -> 0 -> 50
    150
    """
    if max_energy_range_uj <= 0:
        raise ValueError(f"max_energy_range_uj must be > 0; got {max_energy_range_uj}")
    if not (0 <= before_uj <= max_energy_range_uj and 0 <= after_uj <= max_energy_range_uj):
        raise ValueError(
            f"RAPL readings out of range: before={before_uj} after={after_uj} max={max_energy_range_uj}"
        )
    if after_uj >= before_uj:
        return after_uj - before_uj
    return max_energy_range_uj - before_uj + after_uj


def _read_text(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


# ------------------------------------------------------------------ Android battery


@dataclass(frozen=True)
class BatterySample:
    """One raw reading of the fuel gauge, as the device reports it.

    `t_s` is a monotonic timestamp in seconds (e.g. /proc/uptime);
    `current_raw` / `voltage_raw` are the integers from `current_now` /
    `voltage_now` in the device's own unit and sign convention.
    """

    t_s: float
    current_raw: float
    voltage_raw: float
    status: str | None = None
    usb_online: bool | None = None


@dataclass(frozen=True)
class BatteryEnergy:
    joules: float
    seconds: float
    mean_power_w: float
    current_unit: str  # "uA" or "mA"
    voltage_unit: str  # "uV", "mV" or "V"
    discharge_sign: int  # +1: discharge reported positive, -1: negative
    num_samples: int  # real samples inside the window (edges are interpolated)


def detect_current_unit(raw_values: Sequence[float]) -> str:
    """"uA" or "mA", judged on the median magnitude of the whole series.

    Phones draw roughly 50 mA - 5 A.  In µA that is 5e4 - 5e6; in mA 50 - 5000.
    A median magnitude >= 10 000 therefore means µA (10 A in mA is impossible
    for a phone), below it mA.  The decision is per series, never per sample,
    because a device never mixes units within one run.
    """
    magnitudes = np.abs(np.asarray(raw_values, dtype=np.float64))
    if magnitudes.size == 0:
        raise ValueError("no current samples")
    return "uA" if float(np.median(magnitudes)) >= 10_000 else "mA"


def detect_voltage_unit(raw_values: Sequence[float]) -> str:
    """"uV", "mV" or "V" from magnitude (Li-ion cells sit at 3.0 - 4.5 V)."""
    magnitudes = np.abs(np.asarray(raw_values, dtype=np.float64))
    if magnitudes.size == 0:
        raise ValueError("no voltage samples")
    median = float(np.median(magnitudes))
    if median >= 100_000:
        return "uV"
    if median >= 100:
        return "mV"
    if median >= 1:
        return "V"
    raise ValueError(f"battery voltage {median} is not plausible in uV, mV or V")


_UNIT_SCALE = {"uA": 1e-6, "mA": 1e-3, "uV": 1e-6, "mV": 1e-3, "V": 1.0}


def battery_conventions(samples: Sequence[BatterySample]) -> dict:
    """Units and discharge sign of a series of samples from one device.

    Sign convention: the kernel's power_supply ABI says negative current is
    discharge, but many vendors (Samsung, older Qualcomm kernels) report
    discharge as positive.  While not charging the battery can only
    discharge, so the sign of the *median* current is taken as the device's
    discharge sign.  Isolated samples of the opposite sign then count as
    (small) charge flowing back, which is what they physically are, instead
    of being folded into consumption by abs().
    """
    if not samples:
        raise ValueError("no battery samples")
    current_raw = np.asarray([s.current_raw for s in samples], dtype=np.float64)
    voltage_raw = np.asarray([s.voltage_raw for s in samples], dtype=np.float64)
    if not (np.all(np.isfinite(current_raw)) and np.all(np.isfinite(voltage_raw))):
        raise ValueError("battery samples contain non-numeric values")
    median_current = float(np.median(current_raw))
    if median_current == 0.0:
        raise ValueError("median battery current is 0: the fuel gauge reports no discharge")
    return {
        "current_unit": detect_current_unit(current_raw),
        "voltage_unit": detect_voltage_unit(voltage_raw),
        "discharge_sign": 1 if median_current > 0 else -1,
    }


def normalize_battery_samples(samples: Sequence[BatterySample], conventions: dict | None = None
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Times (s), discharge current (A, positive = draining) and voltage (V).

    `conventions` (from `battery_conventions`) fixes units and sign, e.g. to
    treat an idle window and a run window of one device identically; by
    default they are detected from `samples` themselves.
    """
    if len(samples) < 2:
        raise ValueError(f"need at least 2 battery samples to integrate; got {len(samples)}")
    conventions = conventions or battery_conventions(samples)
    times = np.asarray([s.t_s for s in samples], dtype=np.float64)
    current_raw = np.asarray([s.current_raw for s in samples], dtype=np.float64)
    voltage_raw = np.asarray([s.voltage_raw for s in samples], dtype=np.float64)
    if not (np.all(np.isfinite(times)) and np.all(np.isfinite(current_raw)) and np.all(np.isfinite(voltage_raw))):
        raise ValueError("battery samples contain non-numeric values")
    if np.any(np.diff(times) < 0):
        raise ValueError("battery sample timestamps go backwards")
    amps = current_raw * _UNIT_SCALE[conventions["current_unit"]] * conventions["discharge_sign"]
    volts = np.abs(voltage_raw) * _UNIT_SCALE[conventions["voltage_unit"]]
    return times, amps, volts, dict(conventions)


def integrate_battery_energy(samples: Sequence[BatterySample], t_start: float | None = None,
                             t_end: float | None = None, conventions: dict | None = None) -> BatteryEnergy:
    """Trapezoidal integral of V*I (joules) over [t_start, t_end].

    The window defaults to the span of the samples; power at the window
    edges is linearly interpolated between the neighbouring samples, so the
    window must lie within the sampled span.
    """
    times, amps, volts, info = normalize_battery_samples(samples, conventions)
    power = amps * volts
    lo = float(times[0]) if t_start is None else float(t_start)
    hi = float(times[-1]) if t_end is None else float(t_end)
    if lo < times[0] or hi > times[-1]:
        raise ValueError(
            f"energy window [{lo:.3f}, {hi:.3f}] s is outside the sampled span [{times[0]:.3f}, {times[-1]:.3f}] s"
        )
    if hi <= lo:
        raise ValueError(f"energy window [{lo:.3f}, {hi:.3f}] s is empty")
    inside = (times > lo) & (times < hi)
    t = np.concatenate([[lo], times[inside], [hi]])
    p = np.concatenate([[np.interp(lo, times, power)], power[inside], [np.interp(hi, times, power)]])
    joules = float(np.sum((p[1:] + p[:-1]) * np.diff(t)) / 2.0)
    seconds = hi - lo
    return BatteryEnergy(
        joules=joules,
        seconds=seconds,
        mean_power_w=joules / seconds,
        num_samples=int(np.sum((times >= lo) & (times <= hi))),
        **info,
    )


def charging_reason(samples: Sequence[BatterySample]) -> str | None:
    """Why battery energy cannot be trusted for these samples, or None.

    Any sample with status Charging/Full, or with USB power online, disqualifies
    the whole window: external power then supplies part of the load and the
    battery current under-reports consumption (or is a charge current).
    """
    statuses = sorted({s.status for s in samples if s.status in CHARGING_STATUSES})
    if statuses:
        return (
            f"device battery status was {'/'.join(statuses)} during the run: battery current does not measure "
            "consumption while external power is connected (use adb over Wi-Fi or a charge-blocking cable)"
        )
    if any(s.usb_online for s in samples):
        return (
            "USB power was online during the run: battery current under-reports consumption while USB supplies "
            "power (use adb over Wi-Fi or a charge-blocking cable)"
        )
    return None
