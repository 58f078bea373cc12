"""Benchmark a `.tflite` model on an Android device with TFLite's `benchmark_model` over adb.

Sequence (every step is one `adb` command through an injectable runner, so a
recorded transcript replays it exactly; see tests/data/adb/):

1. `adb devices -l` -> pick the device (clear errors for none / unauthorized /
   offline / several without `serial`);
2. `getprop ro.product.cpu.abi`, `ro.product.cpu.abilist`,
   `ro.build.version.release`, `ro.product.model`, `ro.soc.model` -> device info;
3. the local binary's ELF header must match one of the device ABIs (or, with
   `binary_on_device`, the on-device binary must exist and be executable);
4. `mkdir -p /data/local/tmp/rmtkd_<id>`, push model + binary, `chmod 755`,
   push a small run script (`run_bench.sh`);
5. `sh run_bench.sh`: samples the battery fuel gauge while idle, starts a
   background sampler, runs `[taskset MASK] ./benchmark_model --graph=...
   --num_threads=N --use_xnnpack=.. --use_gpu=.. --warmup_runs=.. --num_runs=..`,
   stops the sampler and prints everything between `@@RMTKD` markers to stdout;
6. `rm -rf /data/local/tmp/rmtkd_<id>` -- in a `finally`, so it also runs when
   a push or the benchmark fails.

Energy (battery fuel gauge, `source="android-battery"`): `current_now` and
`voltage_now` are sampled every `sample_interval_s` with shell builtins (no
fork per sample except `sleep`, to keep the sampler's own load tiny).  Units
(µA/µV vs mA/mV) are detected by magnitude and the discharge sign from the
median current (see `rmtkd_tf.bench.energy`).  The integral of V*I runs from
the end of model initialisation (start + benchmark_model's `Init` time) to
the end of the process and is divided by all inferences in that window
(warm-up + timed runs, from the `count=` lines); the idle power measured
before the run is reported separately as `idle_power_w` and NOT subtracted.
If the battery reports Charging/Full or USB power is online, energy is
`available=False` with that reason: over a USB cable this is the normal case,
so measure over `adb tcpip`/wireless debugging with the cable unplugged.
(`dumpsys battery unplug` only changes what the framework reports; the
sysfs status read here stays truthful.)  Many fuel gauges update only every
0.25-1 s, so short runs give coarse energy figures.

Example (needs a phone and a benchmark_model build for its ABI):

>>> device = AdbDevice()                                  # doctest: +SKIP
>>> result = device.benchmark("student.tflite", binary="android_aarch64_benchmark_model",
...                           threads=4, runs=100)        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import tempfile
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

from android_bench.benchmark_output import benchmark_model_errors
from android_bench.elf import ABI_TO_UNAME, elf_abi
from android_bench.errors import (
    BenchmarkFailedError,
    DeviceCommandError,
    MissingBinaryError,
    NoDeviceError,
    SeveralDevicesError,
    ToolNotFoundError,
    UnauthorizedDeviceError,
    WrongAbiError,
)
from android_bench.runner import CommandResult, CommandRunner, SubprocessRunner, last_line
from android_bench.tool_results import result_from_tool_output
from rmtkd_tf.bench.energy import (
    BatterySample,
    battery_conventions,
    charging_reason,
    integrate_battery_energy,
)
from rmtkd_tf.bench.schema import (
    BenchmarkResult,
    DeviceInfo,
    EnergyInfo,
    file_size_and_sha256,
)

DEVICE_TMP = "/data/local/tmp"
POWER_SUPPLY = "/sys/class/power_supply"
MARKER = "@@RMTKD"
# Names of TFLite's prebuilt nightly binaries per ABI, for error hints.
NIGHTLY_BINARY_FOR_ABI = {
    "arm64-v8a": "android_aarch64_benchmark_model",
    "armeabi-v7a": "android_arm_benchmark_model",
    "x86_64": "android_x86_64_benchmark_model",
    "x86": "android_x86_benchmark_model",
}


@dataclass(frozen=True)
class AttachedDevice:
    """One line of `adb devices -l`."""

    serial: str
    state: str  # "device", "unauthorized", "offline", "no permissions", ...
    properties: dict[str, str] = field(default_factory=dict)  # usb:, product:, model:, transport_id:


def parse_adb_devices(text: str) -> list[AttachedDevice]:
    """Devices from `adb devices -l` output (header and daemon chatter skipped).

    >>> parse_adb_devices("List of devices attached\\nR5CT20 device usb:1-1 model:SM_G991B\\n")[0].properties["model"]
    'SM_G991B'
    """
    devices = []
    for line in text.replace("\r", "").splitlines():
        line = line.strip()
        if not line or line.startswith("List of devices") or line.startswith("*") or line.startswith("adb "):
            continue
        parts = line.split(None, 1)
        if len(parts) < 2:
            continue
        serial, rest = parts
        if rest.startswith("no permissions"):
            state, tail = "no permissions", rest
        else:
            state, _, tail = rest.partition(" ")
        properties = dict(token.split(":", 1) for token in tail.split() if re.match(r"^[a-z_]+:\S+$", token))
        devices.append(AttachedDevice(serial=serial, state=state, properties=properties))
    return devices


def _state_error(device: AttachedDevice) -> Exception | None:
    if device.state == "device":
        return None
    if device.state == "unauthorized":
        return UnauthorizedDeviceError(
            f"device {device.serial} is unauthorized: unlock it and accept the 'Allow USB debugging' prompt, then retry"
        )
    if device.state == "no permissions":
        return NoDeviceError(f"device {device.serial}: no permissions to open the USB device (check udev rules)")
    if device.state == "offline":
        return NoDeviceError(f"device {device.serial} is offline: reconnect it or run 'adb kill-server'")
    return NoDeviceError(f"device {device.serial} is in state '{device.state}', not ready for adb shell")


def select_device(devices: Sequence[AttachedDevice], serial: str | None = None) -> AttachedDevice:
    """The device to use, or a one-line error explaining why there is none."""
    if serial is not None:
        for device in devices:
            if device.serial == serial:
                error = _state_error(device)
                if error:
                    raise error
                return device
        attached = ", ".join(d.serial for d in devices) or "none"
        raise NoDeviceError(f"device {serial} is not attached (attached: {attached})")
    ready = [d for d in devices if d.state == "device"]
    if len(ready) == 1:
        return ready[0]
    if len(ready) > 1:
        raise SeveralDevicesError(
            f"several devices attached ({', '.join(d.serial for d in ready)}): pass --serial to pick one"
        )
    for device in devices:  # none ready: explain the first problem
        raise _state_error(device)
    raise NoDeviceError("no Android device attached (adb devices -l lists none): connect one with USB debugging on")


@dataclass(frozen=True)
class RunOutput:
    """The sections of `run_bench.sh`'s stdout."""

    benchmark_text: str
    exit_code: int | None
    start_uptime_s: float | None
    stop_uptime_s: float | None
    idle_samples: list[BatterySample]
    run_samples: list[BatterySample]
    child_cpu_seconds: float | None
    missing_battery_files: bool


def _parse_sample(line: str) -> tuple[BatterySample | None, bool]:
    """`S <uptime> <current> <voltage> <usb_online> <status...>` -> sample, missing-file flag."""
    parts = line.split(None, 5)
    if len(parts) < 5:
        return None, True
    _, uptime, current, voltage, usb = parts[:5]
    status = parts[5].strip() if len(parts) > 5 else None
    try:
        sample = BatterySample(
            t_s=float(uptime),
            current_raw=float(current),
            voltage_raw=float(voltage),
            status=None if status in (None, "NA") else status,
            usb_online=None if usb == "NA" else usb.strip() == "1",
        )
    except ValueError:  # "NA": the file does not exist / is unreadable
        return None, True
    return sample, False


_TIMES_RE = re.compile(r"(\d+)m([\d.]+)s")


def parse_run_output(text: str) -> RunOutput:
    """Split `run_bench.sh` output into benchmark text, samples and markers."""
    text = text.replace("\r\n", "\n")
    section = None
    bench_lines: list[str] = []
    idle, run = [], []
    exit_code = start = stop = child_cpu = None
    times_lines: list[str] = []
    missing = False
    for line in text.split("\n"):
        if line.startswith(MARKER):
            word = line[len(MARKER):].strip()
            if word.startswith("exit="):
                exit_code = int(word[len("exit="):])
            elif word.startswith("start "):
                start = float(word.split()[1])
                section = "bench"
            elif word.startswith("stop "):
                stop = float(word.split()[1])
                section = None
            else:
                section = word
            continue
        if section == "bench":
            bench_lines.append(line)
        elif section in ("idle", "power") and line.startswith("S "):
            sample, was_missing = _parse_sample(line)
            missing = missing or was_missing
            if sample is not None:
                (idle if section == "idle" else run).append(sample)
        elif section == "times" and line.strip():
            times_lines.append(line)
    if len(times_lines) >= 2:  # POSIX `times`: shell user/sys, then children user/sys
        values = [int(m) * 60 + float(s) for m, s in _TIMES_RE.findall(times_lines[1])]
        child_cpu = sum(values) if values else None
    return RunOutput("\n".join(bench_lines), exit_code, start, stop, idle, run, child_cpu, missing)


def build_run_script(remote_dir: str, benchmark_argv: Sequence[str], cpu_mask: str | None = None,
                     measure_energy: bool = True, idle_samples: int = 10, sample_interval_s: float = 0.1) -> str:
    """The POSIX sh script run on the device (mksh/toybox compatible)."""
    command = " ".join(shlex.quote(a) for a in benchmark_argv)
    if cpu_mask:
        command = f"taskset {cpu_mask} {command}"
    interval = f"{sample_interval_s:g}"
    lines = [
        "# generated by rmtkd-tf android_bench; safe to delete",
        f"cd {shlex.quote(remote_dir)} || exit 97",
        f"PS={POWER_SUPPLY}",
        # Builtins only (read, [, echo; no $(...) subshells), so sampling forks nothing but `sleep`.
        "sample() {",
        "  read UP REST < /proc/uptime",
        "  C=NA; [ -r $PS/battery/current_now ] && read C < $PS/battery/current_now",
        "  V=NA; [ -r $PS/battery/voltage_now ] && read V < $PS/battery/voltage_now",
        "  U=NA; [ -r $PS/usb/online ] && read U < $PS/usb/online",
        "  B=NA; [ -r $PS/battery/status ] && read B < $PS/battery/status",
        "  echo \"S $UP $C $V $U $B\"",
        "}",
    ]
    if measure_energy:
        lines += [
            f"echo '{MARKER} idle'",
            "i=0",
            f"while [ $i -lt {int(idle_samples)} ]; do sample; sleep {interval}; i=$((i+1)); done",
            "sample > power.txt",
            f"( while true; do sample; sleep {interval}; done ) >> power.txt &",
            "SAMPLER=$!",
        ]
    lines += [
        "read UP REST < /proc/uptime",
        f"echo \"{MARKER} start $UP\"",
        f"{command} 2>&1",
        "RC=$?",
        "read UP REST < /proc/uptime",
        f"echo \"{MARKER} stop $UP\"",
        f"echo '{MARKER} times'",
        "times",
    ]
    if measure_energy:
        lines += [
            "kill $SAMPLER 2>/dev/null",
            "wait $SAMPLER 2>/dev/null",
            "sample >> power.txt",
        ]
    lines += [f"echo \"{MARKER} exit=$RC\""]
    if measure_energy:
        lines += [f"echo '{MARKER} power'", "cat power.txt"]
    lines += [f"echo '{MARKER} end'", ""]
    return "\n".join(lines)


def _hex_mask(mask: str | int | None) -> str | None:
    if mask is None:
        return None
    text = mask if isinstance(mask, str) else format(int(mask), "x")
    text = text.strip().lower()
    text = text[2:] if text.startswith("0x") else text
    if not re.fullmatch(r"[0-9a-f]+", text) or int(text, 16) == 0:
        raise ValueError(f"CPU mask must be a non-zero hexadecimal mask like f0; got {mask!r}")
    return text


def _model_batch_size(path: str) -> int | None:
    """Leading dimension of the model's first input, read with LiteRT (None if it cannot load here)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_path=path).get_input_details()
        shape = details[0]["shape"] if details else []
        return int(shape[0]) if len(shape) and shape[0] >= 1 else 1
    except Exception:  # custom ops etc.: the device may run what the host cannot load
        return None


class AdbDevice:
    """One Android device reached through `adb`.

    Args:
      serial: adb serial; None picks the only attached device.
      adb_path: the adb executable (default: `adb` from PATH).
      runner: command runner (default: real subprocesses); tests pass a
        `ReplayRunner`.
    """

    def __init__(self, serial: str | None = None, adb_path: str | None = None, runner: CommandRunner | None = None):
        if runner is None:
            resolved = shutil.which(adb_path or "adb")
            if resolved is None:
                where = f"at {adb_path}" if adb_path else "on PATH"
                raise ToolNotFoundError(
                    f"adb not found {where}: install Android SDK platform-tools and put adb on PATH"
                )
            runner = SubprocessRunner()
        self.adb = adb_path or "adb"
        self.runner = runner
        self.requested_serial = serial
        self._serial: str | None = None

    # ------------------------------------------------------------------ basics

    def _run(self, argv: Sequence[str], check: bool = True, timeout: float | None = None,
             what: str | None = None) -> CommandResult:
        result = self.runner(list(argv), timeout=timeout)
        if result.returncode == 127 and "not found" in result.stderr:
            raise ToolNotFoundError(f"adb not found on PATH: {result.stderr.strip()}")
        if check and result.returncode != 0:
            raise DeviceCommandError(
                f"{what or ' '.join(argv[:5])} failed (exit {result.returncode}): {last_line(result.stderr, result.stdout)}"
            )
        return result

    def list_devices(self) -> list[AttachedDevice]:
        return parse_adb_devices(self._run([self.adb, "devices", "-l"], what="adb devices -l").stdout)

    @property
    def serial(self) -> str:
        """The selected device's serial (runs `adb devices -l` once)."""
        if self._serial is None:
            self._serial = select_device(self.list_devices(), self.requested_serial).serial
        return self._serial

    def shell(self, command: str, check: bool = True, timeout: float | None = None) -> CommandResult:
        return self._run([self.adb, "-s", self.serial, "shell", command], check=check, timeout=timeout,
                         what=f"adb shell {command.split()[0] if command.split() else ''}")

    def push(self, local: str, remote: str, timeout: float | None = None) -> None:
        self._run([self.adb, "-s", self.serial, "push", local, remote], timeout=timeout,
                  what=f"adb push {os.path.basename(local)}")

    def getprop(self, name: str) -> str:
        return self.shell(f"getprop {name}").stdout.strip()

    def device_info(self) -> tuple[DeviceInfo, list[str]]:
        """DeviceInfo plus the list of ABIs the device can execute."""
        abi = self.getprop("ro.product.cpu.abi")
        if not abi:
            raise DeviceCommandError(f"device {self.serial} reports no ro.product.cpu.abi")
        abilist = [a for a in self.getprop("ro.product.cpu.abilist").split(",") if a] or [abi]
        release = self.getprop("ro.build.version.release") or None
        model = self.getprop("ro.product.model") or None
        # ro.soc.model exists since Android 12; older devices only name the board platform.
        soc = self.getprop("ro.soc.model") or self.getprop("ro.board.platform") or None
        info = DeviceInfo(machine=ABI_TO_UNAME.get(abi, abi), cpu_model=soc, abi=abi, android_version=release, model=model,
                          serial=self.serial, os=f"Android {release}" if release else "Android")
        return info, abilist

    # --------------------------------------------------------------- benchmark

    def _check_binary_abi(self, binary: str, info: DeviceInfo, abilist: list[str]) -> str:
        try:
            binary_abi = elf_abi(binary)
        except ValueError as err:
            raise WrongAbiError(f"wrong ABI: {err}") from None
        if binary_abi not in abilist:
            hint = NIGHTLY_BINARY_FOR_ABI.get(info.abi)
            raise WrongAbiError(
                f"wrong ABI: {binary} is built for {binary_abi} but device {info.serial} runs {', '.join(abilist)}"
                + (f" (use an {hint} build)" if hint else "")
            )
        return binary_abi

    def benchmark(self, model_path: str | os.PathLike, binary: str | os.PathLike | None = None,
                  binary_on_device: str | None = None, threads: int = 1, warmup: int = 10, runs: int = 100,
                  use_xnnpack: bool = True, use_gpu: bool = False, cpu_mask: str | int | None = None,
                  measure_energy: bool = True, idle_samples: int = 10, sample_interval_s: float = 0.1,
                  report_peak_memory: bool = False, extra_args: Sequence[str] = (), run_id: str | None = None,
                  timeout_s: float = 1800.0) -> BenchmarkResult:
        """Run `benchmark_model` on the device and return a `BenchmarkResult`.

        Exactly one of `binary` (a local file, pushed and ABI-checked) or
        `binary_on_device` (an executable path already on the device) is
        needed.  `warmup`/`runs` map to --warmup_runs/--num_runs with
        --warmup_min_secs=0 --min_secs=0, so the counts are what you ask for
        unless --max_secs (150 s) cuts the run short; the result carries the
        counts benchmark_model actually reports.
        """
        if threads < 1 or warmup < 0 or runs < 1:
            raise ValueError(f"need threads >= 1, warmup >= 0, runs >= 1; got {threads}, {warmup}, {runs}")
        model_path = os.fspath(model_path)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"model file not found: {model_path}")
        if (binary is None) == (binary_on_device is None):
            raise MissingBinaryError(
                "benchmark_model binary needed: pass --binary PATH (e.g. TFLite's prebuilt "
                "android_aarch64_benchmark_model) or --binary-on-device PATH"
            )
        if binary is not None and not os.path.isfile(binary):
            raise MissingBinaryError(f"benchmark_model binary not found: {binary}")
        mask = _hex_mask(cpu_mask)
        size, sha256 = file_size_and_sha256(model_path)

        info, abilist = self.device_info()
        binary_abi = None
        if binary is not None:
            binary_abi = self._check_binary_abi(os.fspath(binary), info, abilist)
        else:
            probe = self.shell(f"test -x {shlex.quote(binary_on_device)} && echo ok || echo missing").stdout.strip()
            if probe != "ok":
                raise MissingBinaryError(f"benchmark_model not found or not executable on device {self.serial}: {binary_on_device}")

        run_id = run_id or uuid.uuid4().hex[:8]
        remote_dir = f"{DEVICE_TMP}/rmtkd_{run_id}"
        remote_model = f"{remote_dir}/model.tflite"
        remote_binary = binary_on_device or f"{remote_dir}/benchmark_model"
        benchmark_argv = [
            remote_binary,
            f"--graph={remote_model}",
            f"--num_threads={threads}",
            f"--use_xnnpack={'true' if use_xnnpack else 'false'}",
            f"--use_gpu={'true' if use_gpu else 'false'}",
            f"--warmup_runs={warmup}",
            "--warmup_min_secs=0",
            f"--num_runs={runs}",
            "--min_secs=0",
        ]
        if report_peak_memory:
            benchmark_argv.append("--report_peak_memory_footprint=true")
        benchmark_argv += list(extra_args)
        script = build_run_script(remote_dir, benchmark_argv, mask, measure_energy, idle_samples, sample_interval_s)

        local_script = None
        try:
            self.shell(f"mkdir -p {remote_dir}")
            self.push(model_path, remote_model)
            if binary is not None:
                self.push(os.fspath(binary), remote_binary)
                self.shell(f"chmod 755 {remote_binary}")
            handle = tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="rmtkd_run_", delete=False)
            with handle:
                handle.write(script)
            local_script = handle.name
            self.push(local_script, f"{remote_dir}/run_bench.sh")
            output = self.shell(f"sh {remote_dir}/run_bench.sh", timeout=timeout_s)
        finally:
            try:
                cleanup = self.shell(f"rm -rf {remote_dir}", check=False)
                if cleanup.returncode != 0:
                    warnings.warn(f"could not remove {remote_dir} on {self.serial}: {last_line(cleanup.stderr, cleanup.stdout)}")
            finally:
                if local_script is not None:
                    os.unlink(local_script)

        return self._result_from_output(
            output.stdout, model_path=model_path, size=size, sha256=sha256, info=info, threads=threads,
            warmup=warmup, runs=runs, use_xnnpack=use_xnnpack, use_gpu=use_gpu, mask=mask,
            measure_energy=measure_energy, extra={
                "run_id": run_id, "remote_dir": remote_dir, "binary_abi": binary_abi,
                "binary_on_device": binary_on_device, "benchmark_command": " ".join(benchmark_argv),
            })

    def _result_from_output(self, stdout: str, *, model_path: str, size: int, sha256: str, info: DeviceInfo,
                            threads: int, warmup: int, runs: int, use_xnnpack: bool, use_gpu: bool,
                            mask: str | None, measure_energy: bool, extra: dict[str, Any]) -> BenchmarkResult:
        out = parse_run_output(stdout)
        if out.exit_code is None:
            raise BenchmarkFailedError(
                f"benchmark run on {info.serial} ended without an exit marker: {last_line(stdout)}"
            )
        if out.exit_code != 0:
            # The first ERROR line names the cause; the last is usually "Benchmarking failed."
            errors = benchmark_model_errors(out.benchmark_text)
            reason = errors[0] if errors else last_line(out.benchmark_text)
            raise BenchmarkFailedError(f"benchmark_model failed on {info.serial} (exit {out.exit_code}): {reason}")
        delegate = "gpu" if use_gpu else ("xnnpack" if use_xnnpack else "none")
        try:
            # TFLite 2.x text or LiteRT 2.x's BENCHMARK RESULTS block: one converter for both.
            base = result_from_tool_output(
                model_path, runner="benchmark_model", transport="adb", threads=threads, delegate=delegate,
                warmup=warmup, text=out.benchmark_text, device=info, batch_size=_model_batch_size(model_path),
                memory_note="benchmark_model's own memory lines (approximate, include the tool itself)")
        except ValueError as err:
            raise BenchmarkFailedError(f"benchmark_model output from {info.serial} not understood: {err}") from None
        parsed = base.extra["parsed"]
        energy = self._energy(out, base.init_ms, base.warmup_runs + base.runs) if measure_energy else (
            EnergyInfo.unavailable("energy measurement was switched off"))
        return dataclasses.replace(
            base,
            model_size_bytes=size,
            model_sha256=sha256,
            energy=energy,
            # The process CPU time below includes init and warm-up, so it is not
            # a per-inference figure; kept in `extra` instead of guessing.
            cpu_seconds_per_inference=None,
            extra={
                **extra,
                "cpu_mask": mask,
                "process_cpu_seconds": out.child_cpu_seconds,
                "requested_warmup_runs": warmup,
                "requested_runs": runs,
                "sources": base.extra["sources"],
                "percentiles_ms": base.extra["percentiles_ms"],
                "benchmark_model": parsed.get("tflite_text"),
                "litert_results": parsed.get("litert_text"),
            },
        )

    def _energy(self, out: RunOutput, init_ms: float | None, inferences: int) -> EnergyInfo:
        if out.missing_battery_files or len(out.run_samples) < 2:
            return EnergyInfo.unavailable(
                f"battery current_now/voltage_now not readable under {POWER_SUPPLY}/battery on this device"
            )
        all_samples = out.idle_samples + out.run_samples
        reason = charging_reason(all_samples)
        if reason:
            return EnergyInfo.unavailable(reason, num_samples=len(all_samples))
        if out.start_uptime_s is None or out.stop_uptime_s is None or init_ms is None:
            return EnergyInfo.unavailable("run start/stop or init time missing from the output: cannot place the window")
        try:
            conventions = battery_conventions(all_samples)
            start = out.start_uptime_s + init_ms * 1e-3
            window = integrate_battery_energy(out.run_samples, start, out.stop_uptime_s, conventions)
            idle = integrate_battery_energy(out.idle_samples, conventions=conventions) if len(out.idle_samples) >= 2 else None
        except ValueError as err:
            return EnergyInfo.unavailable(f"battery samples unusable: {err}")
        if window.num_samples < 3:
            return EnergyInfo.unavailable(
                f"inference window of {window.seconds:.2f} s holds only {window.num_samples} fuel-gauge samples: "
                "use more runs for an energy figure"
            )
        return EnergyInfo(
            available=True,
            joules_per_inference=window.joules / inferences,
            source="android-battery",
            note=(
                f"battery V*I integrated from end of init to process exit ({window.seconds:.2f} s, "
                f"{window.num_samples} samples, {conventions['current_unit']}/{conventions['voltage_unit']}, "
                f"discharge sign {conventions['discharge_sign']:+d}) / {inferences} inferences (warm-up + timed); "
                "whole-device power, idle baseline not subtracted"
            ),
            mean_power_w=window.mean_power_w,
            idle_power_w=idle.mean_power_w if idle else None,
            measured_seconds=window.seconds,
            num_samples=window.num_samples,
        )
