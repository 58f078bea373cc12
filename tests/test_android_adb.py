"""AdbDevice against recorded transcripts: exact command sequence, clean-up on failure, energy, errors."""

import json
import struct
from pathlib import Path

import pytest

from android_bench.adb import AdbDevice, build_run_script, parse_adb_devices, parse_run_output, select_device
from android_bench.elf import elf_abi
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
from android_bench.runner import ReplayRunner, TranscriptMismatch

TRANSCRIPTS = Path(__file__).parent / "data" / "adb"
SERIAL = "2B081FDH2001QZ"
REMOTE = "/data/local/tmp/rmtkd_5f3a9c01"
RUN_POWER_W = 1.45 * 3.87  # run phase of the transcripts
IDLE_POWER_W = 0.381 * 3.87


def fake_elf(path, machine, little_endian=True):
    """A minimal ELF header (64-bit) with the given e_machine."""
    order = "<" if little_endian else ">"
    ident = b"\x7fELF" + bytes([2, 1 if little_endian else 2, 1, 0]) + bytes(8)
    path.write_bytes(ident + struct.pack(order + "HH", 2, machine) + bytes(44))
    return path


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "student.tflite"
    path.write_bytes(b"TFL3" + bytes(2064))  # content is irrelevant on this side; size/sha are recorded
    return path


@pytest.fixture
def arm64_binary(tmp_path):
    return fake_elf(tmp_path / "benchmark_model", 183)


def replay(name):
    return ReplayRunner.from_file(TRANSCRIPTS / name)


def expected_argvs(name):
    return [c["argv"] for c in json.loads((TRANSCRIPTS / name).read_text())["commands"]]


def run_ok(name, model, binary, **kwargs):
    runner = replay(name)
    device = AdbDevice(runner=runner)
    result = device.benchmark(model, binary=binary, threads=4, warmup=100, runs=200, run_id="5f3a9c01", **kwargs)
    runner.assert_done()
    return result, runner


# ----------------------------------------------------------------------------- success path


def test_benchmark_exact_command_sequence_and_result(model, arm64_binary):
    result, runner = run_ok("benchmark_ok.json", model, arm64_binary)
    calls = runner.calls
    assert calls[0] == ["adb", "devices", "-l"]
    assert calls[1:6] == [["adb", "-s", SERIAL, "shell", f"getprop {p}"] for p in (
        "ro.product.cpu.abi", "ro.product.cpu.abilist", "ro.build.version.release", "ro.product.model", "ro.soc.model")]
    assert calls[6:] == [
        ["adb", "-s", SERIAL, "shell", f"mkdir -p {REMOTE}"],
        ["adb", "-s", SERIAL, "push", str(model), f"{REMOTE}/model.tflite"],
        ["adb", "-s", SERIAL, "push", str(arm64_binary), f"{REMOTE}/benchmark_model"],
        ["adb", "-s", SERIAL, "shell", f"chmod 755 {REMOTE}/benchmark_model"],
        ["adb", "-s", SERIAL, "push", calls[10][4], f"{REMOTE}/run_bench.sh"],
        ["adb", "-s", SERIAL, "shell", f"sh {REMOTE}/run_bench.sh"],
        ["adb", "-s", SERIAL, "shell", f"rm -rf {REMOTE}"],
    ]
    assert calls[10][4].endswith(".sh") and not Path(calls[10][4]).exists()  # local temp script removed

    assert result.runner == "benchmark_model" and result.transport == "adb"
    assert result.delegate == "xnnpack" and result.threads == 4
    assert (result.warmup_runs, result.runs) == (100, 200)
    assert result.device.abi == "arm64-v8a" and result.device.machine == "aarch64"
    assert result.device.android_version == "14" and result.device.model == "Pixel 6"
    assert result.device.cpu_model == "GS101" and result.device.serial == SERIAL
    assert result.latency_ms.min == pytest.approx(4.931)
    assert result.latency_ms.median == pytest.approx(5.086)
    assert result.latency_ms.mean == pytest.approx(5.12188)
    assert result.latency_ms.max == pytest.approx(6.374)
    assert result.latency_ms.std == pytest.approx(0.171)
    assert result.latency_ms.p90 is None and result.latency_ms.p99 is None
    assert result.init_ms == pytest.approx(22.816)
    assert result.memory.kind == "footprint_delta" and result.memory.overall_mb == pytest.approx(11.7617)
    assert result.model_size_bytes == 2068
    assert result.batch_size is None  # the fake model cannot be loaded on the host
    assert result.cpu_seconds_per_inference is None
    assert result.extra["process_cpu_seconds"] == pytest.approx(2.48)
    assert result.extra["benchmark_command"] == (
        f"{REMOTE}/benchmark_model --graph={REMOTE}/model.tflite --num_threads=4 --use_xnnpack=true "
        "--use_gpu=false --warmup_runs=100 --warmup_min_secs=0 --num_runs=200 --min_secs=0")


def test_energy_from_battery_samples_in_uA_uV(model, arm64_binary):
    result, _ = run_ok("benchmark_ok.json", model, arm64_binary)
    energy = result.energy
    assert energy.available is True and energy.source == "android-battery"
    window_s = 5126.00 - (5124.41 + 0.022816)  # stop - (start + Init)
    assert energy.measured_seconds == pytest.approx(window_s)
    assert energy.mean_power_w == pytest.approx(RUN_POWER_W)
    assert energy.joules_per_inference == pytest.approx(RUN_POWER_W * window_s / 300)  # 100 warm-up + 200 timed
    assert energy.idle_power_w == pytest.approx(IDLE_POWER_W)
    assert "uA/uV" in energy.note and "discharge sign -1" in energy.note


def test_energy_identical_for_mA_mV_positive_discharge_device(model, arm64_binary):
    result, _ = run_ok("benchmark_ok_mA_positive.json", model, arm64_binary)
    reference, _ = run_ok("benchmark_ok.json", model, arm64_binary)
    assert result.energy.available
    assert result.energy.joules_per_inference == pytest.approx(reference.energy.joules_per_inference)
    assert result.energy.idle_power_w == pytest.approx(IDLE_POWER_W)
    assert "mA/mV" in result.energy.note and "discharge sign +1" in result.energy.note


def test_energy_unavailable_while_charging(model, arm64_binary):
    result, _ = run_ok("benchmark_charging.json", model, arm64_binary)
    assert result.energy.available is False
    assert result.energy.joules_per_inference is None
    assert "Charging" in result.energy.note
    assert result.latency_ms.median == pytest.approx(5.086)  # the benchmark itself still counts


def test_binary_on_device_without_energy(model):
    runner = replay("binary_on_device_no_energy.json")
    result = AdbDevice(runner=runner).benchmark(
        model, binary_on_device="/data/local/tmp/benchmark_model", threads=4, warmup=100, runs=200,
        measure_energy=False, run_id="5f3a9c01")
    runner.assert_done()
    assert runner.calls[6] == ["adb", "-s", SERIAL, "shell",
                               "test -x /data/local/tmp/benchmark_model && echo ok || echo missing"]
    assert [call[5] for call in runner.calls if len(call) > 5 and call[3] == "push"] == [f"{REMOTE}/model.tflite", f"{REMOTE}/run_bench.sh"]
    assert not any("chmod" in call[-1] for call in runner.calls)
    assert result.energy.available is False and "switched off" in result.energy.note
    assert result.extra["benchmark_command"].startswith("/data/local/tmp/benchmark_model --graph=")
    assert result.runs == 200


# ----------------------------------------------------------------------------- failures + clean-up


def test_cleanup_runs_when_benchmark_model_fails(model, arm64_binary):
    runner = replay("benchmark_model_fails.json")
    with pytest.raises(BenchmarkFailedError, match=r"failed on 2B081FDH2001QZ \(exit 1\): Could not open"):
        AdbDevice(runner=runner).benchmark(model, binary=arm64_binary, threads=4, warmup=100, runs=200,
                                           run_id="5f3a9c01")
    runner.assert_done()
    assert runner.calls[-1] == ["adb", "-s", SERIAL, "shell", f"rm -rf {REMOTE}"]


def test_cleanup_runs_when_push_fails(model, arm64_binary):
    runner = replay("push_binary_fails.json")
    with pytest.raises(DeviceCommandError, match="adb push benchmark_model failed .*No space left on device"):
        AdbDevice(runner=runner).benchmark(model, binary=arm64_binary, run_id="5f3a9c01")
    runner.assert_done()
    assert runner.calls[-1] == ["adb", "-s", SERIAL, "shell", f"rm -rf {REMOTE}"]
    assert expected_argvs("push_binary_fails.json")[-1] == runner.calls[-1]


def test_missing_binary_on_device_fails_before_creating_anything(model):
    runner = replay("binary_on_device_missing.json")
    with pytest.raises(MissingBinaryError, match="not found or not executable on device 2B081FDH2001QZ"):
        AdbDevice(runner=runner).benchmark(model, binary_on_device="/data/local/tmp/benchmark_model")
    runner.assert_done()


def test_wrong_abi_binary_is_refused_before_push(model, tmp_path):
    x86_binary = fake_elf(tmp_path / "x86_benchmark_model", 62)
    commands = json.loads((TRANSCRIPTS / "benchmark_ok.json").read_text())["commands"][:6]
    runner = ReplayRunner(commands)
    with pytest.raises(WrongAbiError, match=r"wrong ABI: .* is built for x86_64 but device 2B081FDH2001QZ runs "
                                            r"arm64-v8a, armeabi-v7a, armeabi \(use an android_aarch64_benchmark_model build\)"):
        AdbDevice(runner=runner).benchmark(model, binary=x86_binary)
    runner.assert_done()  # nothing was pushed


def test_not_an_elf_file_is_a_wrong_abi_error(model, tmp_path):
    script = tmp_path / "benchmark_model"
    script.write_text("#!/bin/sh\necho hi\n")
    runner = ReplayRunner(json.loads((TRANSCRIPTS / "benchmark_ok.json").read_text())["commands"][:6])
    with pytest.raises(WrongAbiError, match="not an ELF executable"):
        AdbDevice(runner=runner).benchmark(model, binary=script)


def test_missing_local_binary_and_model(model, tmp_path):
    device = AdbDevice(runner=ReplayRunner([]))
    with pytest.raises(MissingBinaryError, match="benchmark_model binary not found: .*nope"):
        device.benchmark(model, binary=tmp_path / "nope")
    with pytest.raises(MissingBinaryError, match="pass --binary PATH"):
        device.benchmark(model)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        device.benchmark(tmp_path / "missing.tflite", binary=tmp_path / "nope")


def test_adb_not_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolNotFoundError, match="^adb not found on PATH: install Android SDK platform-tools"):
        AdbDevice()


def test_replay_runner_rejects_unexpected_commands():
    runner = ReplayRunner([{"argv": ["adb", "devices", "-l"], "stdout": ""}])
    with pytest.raises(TranscriptMismatch, match="differs"):
        runner(["adb", "devices"])


# ----------------------------------------------------------------------------- device selection


DEVICES_HEADER = "List of devices attached\n"


@pytest.mark.parametrize("listing, serial, error, message", [
    ("", None, NoDeviceError, r"^no Android device attached"),
    ("R5CT20ABCDE            unauthorized usb:2-1 transport_id:3\n", None, UnauthorizedDeviceError,
     r"^device R5CT20ABCDE is unauthorized: unlock it and accept"),
    ("R5CT20ABCDE            offline transport_id:3\n", None, NoDeviceError, r"is offline"),
    ("0123456789ABCDEF       no permissions (user in plugdev group; are your udev rules wrong?); "
     "see [http://developer.android.com/tools/device.html] usb:1-1 transport_id:2\n", None, NoDeviceError,
     r"no permissions"),
    ("emulator-5554          device product:sdk_gphone64_arm64 model:sdk_gphone64_arm64 transport_id:1\n"
     "R5CT20ABCDE            device usb:2-1 model:SM_G991B transport_id:3\n", None, SeveralDevicesError,
     r"^several devices attached \(emulator-5554, R5CT20ABCDE\): pass --serial"),
    ("emulator-5554          device transport_id:1\n", "R5CT20ABCDE", NoDeviceError,
     r"device R5CT20ABCDE is not attached \(attached: emulator-5554\)"),
    ("R5CT20ABCDE            unauthorized usb:2-1 transport_id:3\nemulator-5554 device transport_id:1\n",
     "R5CT20ABCDE", UnauthorizedDeviceError, r"unauthorized"),
])
def test_device_selection_errors(listing, serial, error, message):
    runner = ReplayRunner([{"argv": ["adb", "devices", "-l"], "stdout": DEVICES_HEADER + listing}])
    with pytest.raises(error, match=message) as caught:
        AdbDevice(serial=serial, runner=runner).serial
    assert "\n" not in str(caught.value)


def test_device_selection_picks_ready_device_and_serial():
    devices = parse_adb_devices(
        "* daemon not running; starting now at tcp:5037\n* daemon started successfully\n" + DEVICES_HEADER
        + "emulator-5554          device product:sdk_gphone64_arm64 model:sdk_gphone64_arm64 transport_id:1\n"
        + "R5CT20ABCDE            unauthorized usb:2-1 transport_id:3\n\n")
    assert [(d.serial, d.state) for d in devices] == [("emulator-5554", "device"), ("R5CT20ABCDE", "unauthorized")]
    assert devices[0].properties["model"] == "sdk_gphone64_arm64"
    assert select_device(devices).serial == "emulator-5554"
    assert select_device(devices, "emulator-5554").serial == "emulator-5554"


# ----------------------------------------------------------------------------- script + output pieces


def test_run_script_contents():
    script = build_run_script(REMOTE, [f"{REMOTE}/benchmark_model", "--graph=x.tflite"], cpu_mask="f0",
                              measure_energy=True, idle_samples=5, sample_interval_s=0.2)
    assert f"cd {REMOTE} || exit 97" in script
    assert f"taskset f0 {REMOTE}/benchmark_model --graph=x.tflite 2>&1" in script
    assert "while [ $i -lt 5 ]; do sample; sleep 0.2;" in script
    assert "kill $SAMPLER" in script and "@@RMTKD exit=$RC" in script
    assert "C=NA; [ -r $PS/battery/current_now ] && read C < $PS/battery/current_now" in script
    assert 'echo "S $UP $C $V $U $B"' in script
    sample_body = script.split("sample() {")[1].split("\n}")[0]
    assert "$(" not in sample_body  # no command-substitution subshells in the sampling loop
    plain = build_run_script(REMOTE, ["./benchmark_model"], measure_energy=False)
    assert "SAMPLER" not in plain and "taskset" not in plain and "@@RMTKD idle" not in plain


def test_cpu_mask_validation(model, arm64_binary):
    with pytest.raises(ValueError, match="hexadecimal"):
        AdbDevice(runner=ReplayRunner([])).benchmark(model, binary=arm64_binary, cpu_mask="zz")


def test_missing_battery_files_make_energy_unavailable(model, arm64_binary):
    commands = json.loads((TRANSCRIPTS / "benchmark_ok.json").read_text())["commands"]
    run = commands[11]
    run["stdout"] = "\n".join(
        line.replace("-1450000 3870000", "NA NA").replace("-381000 3870000", "NA NA") for line in run["stdout"].split("\n"))
    runner = ReplayRunner(commands)
    result = AdbDevice(runner=runner).benchmark(model, binary=arm64_binary, threads=4, warmup=100, runs=200,
                                                run_id="5f3a9c01")
    assert result.energy.available is False and "not readable" in result.energy.note


def test_parse_run_output_sections():
    out = parse_run_output(
        "@@RMTKD idle\r\nS 10.00 -500000 4000000 0 Not charging\r\nS 10.10 -500000 4000000 0 Not charging\r\n"
        "@@RMTKD start 10.20\r\nINFO: hello\r\n@@RMTKD stop 11.20\r\n@@RMTKD times\r\n0m0.00s 0m0.01s\r\n"
        "1m2.50s 0m0.50s\r\n@@RMTKD exit=0\r\n@@RMTKD power\r\nS 10.15 -1 4000000 NA Discharging\r\n@@RMTKD end\r\n")
    assert out.exit_code == 0 and out.start_uptime_s == 10.2 and out.stop_uptime_s == 11.2
    assert out.benchmark_text == "INFO: hello"
    assert out.child_cpu_seconds == pytest.approx(63.0)
    assert [s.status for s in out.idle_samples] == ["Not charging", "Not charging"]
    assert out.run_samples[0].usb_online is None


def test_elf_abi_reader(tmp_path):
    assert elf_abi(fake_elf(tmp_path / "a", 183)) == "arm64-v8a"
    assert elf_abi(fake_elf(tmp_path / "b", 40)) == "armeabi-v7a"
    assert elf_abi(fake_elf(tmp_path / "c", 62)) == "x86_64"
    assert elf_abi(fake_elf(tmp_path / "d", 183, little_endian=False)) == "arm64-v8a"
    with pytest.raises(ValueError, match="unsupported ELF machine type 8"):
        elf_abi(fake_elf(tmp_path / "e", 8))


# ----------------------------------------------------------------------------- a real benchmark_model output over adb


def test_a_real_aarch64_benchmark_model_output_reads_the_same_over_adb(model, arm64_binary):
    """The adb path on the verbatim output of the real aarch64 `benchmark_model` (tests/data/benchmark_model/aarch64).

    No phone is attached here, so the session around it (adb, getprop, the run script's markers and battery
    samples) is the hand-made transcript; the benchmark output inside the run step is swapped for a real run's,
    and the adb result must read exactly what the text parser reads from that file directly.
    """
    from android_bench.benchmark_output import parse_benchmark_model_output

    real = (Path(__file__).parent / "data" / "benchmark_model" / "aarch64" / "student_int8.txt").read_text()
    commands = json.loads((TRANSCRIPTS / "benchmark_ok.json").read_text())["commands"]
    run_step = next(c for c in commands if c["argv"][-1].startswith("sh ") and c["argv"][-1].endswith("run_bench.sh"))
    head, rest = run_step["stdout"].split("@@RMTKD start ", 1)
    start_line, rest = rest.split("\n", 1)
    _, tail = rest.split("@@RMTKD stop ", 1)
    run_step["stdout"] = f"{head}@@RMTKD start {start_line}\n{real.rstrip()}\n@@RMTKD stop {tail}"
    runner = ReplayRunner(commands)
    result = AdbDevice(runner=runner).benchmark(model, binary=arm64_binary, threads=4, warmup=100, runs=200,
                                                run_id="5f3a9c01")
    runner.assert_done()
    direct = parse_benchmark_model_output(real)
    stats = direct["inference_stats"]
    assert result.latency_ms.median == pytest.approx(stats["median"] / 1000)
    assert result.latency_ms.mean == pytest.approx(stats["avg"] / 1000)
    assert (result.latency_ms.min, result.latency_ms.max) == (pytest.approx(stats["min"] / 1000),
                                                              pytest.approx(stats["max"] / 1000))
    assert result.init_ms == pytest.approx(direct["init_us"] / 1000)
    assert result.memory.overall_mb == pytest.approx(direct["memory"]["overall_mb"])
    assert stats["median"] != 5086  # not the hand-made transcript's numbers
