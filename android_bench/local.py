"""Run the external benchmark tools on this machine: `litert-benchmark` and a `benchmark_model` binary.

Both go through an injectable command runner (`android_bench.runner`), so a
recorded transcript replays them in tests; both return the common
`BenchmarkResult` (via `android_bench.tool_results`).

* `litert-benchmark` (console script of the `ai-edge-litert` wheel; found next
  to this Python, then on PATH, else run as `python -m
  ai_edge_litert.tools.benchmark_litert_model`):
  `--model M --num_threads N --warmup_runs W --num_runs R --result_json F`.
  Its JSON is read when the file exists, otherwise its stdout block.
* `benchmark_model` (TFLite 2.x or LiteRT 2.x build):
  `--graph=M --num_threads=N --warmup_runs=W --warmup_min_secs=0 --num_runs=R
  --min_secs=0 --use_xnnpack=B --result_file_path=F`.  Flags a build does not
  know only draw an `Unconsumed cmdline flags` warning from it (TFLite's
  `BenchmarkModel::ParseFlags`), so one command line serves both; the LiteRT
  build writes the `BenchmarkResult` proto to F.

With `cpu_mask` the command runs under `taskset MASK`.

Example:

>>> tools = LocalTools()                                          # doctest: +SKIP
>>> tools.litert_benchmark("student.tflite", threads=1, runs=100)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Sequence

from android_bench.adb import _model_batch_size as _batch
from android_bench.benchmark_output import benchmark_model_errors
from android_bench.elf import ABI_TO_UNAME, elf_abi
from android_bench.errors import BenchmarkFailedError, MissingBinaryError, ToolNotFoundError, WrongAbiError
from android_bench.runner import CommandResult, CommandRunner, SubprocessRunner
from android_bench.tool_results import result_from_tool_output


def _check_counts(threads: int, warmup: int, runs: int) -> None:
    if threads < 1 or warmup < 0 or runs < 1:
        raise ValueError(f"need threads >= 1, warmup >= 0, runs >= 1; got {threads}, {warmup}, {runs}")


def hex_mask(cpu_mask: str | None) -> str | None:
    """Normalised hex CPU mask for `taskset` (None passes through)."""
    if cpu_mask is None:
        return None
    mask = str(cpu_mask).lower().removeprefix("0x")
    if not mask or any(c not in "0123456789abcdef" for c in mask) or int(mask, 16) == 0:
        raise ValueError(f"CPU mask must be a non-zero hexadecimal mask like f0; got {cpu_mask!r}")
    return mask


def litert_benchmark_command() -> list[str]:
    """How to start `litert-benchmark` from this Python environment."""
    beside = os.path.join(os.path.dirname(sys.executable), "litert-benchmark")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("litert-benchmark")
    if found:
        return [found]
    return [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model"]


def benchmark_model_argv(binary: str, model: str, threads: int, warmup: int, runs: int, use_xnnpack: bool,
                         result_file: str | None) -> list[str]:
    """The `benchmark_model` command line shared by the host and ssh runners."""
    argv = [binary, f"--graph={model}", f"--num_threads={threads}", f"--warmup_runs={warmup}",
            "--warmup_min_secs=0", f"--num_runs={runs}", "--min_secs=0",
            f"--use_xnnpack={'true' if use_xnnpack else 'false'}"]
    if result_file:
        argv.append(f"--result_file_path={result_file}")
    return argv


def failure_reason(result: CommandResult) -> str:
    """The first ERROR line of a failed tool run, else its last output line."""
    text = (result.stdout or "") + "\n" + (result.stderr or "")
    errors = benchmark_model_errors(text)
    if errors:
        return errors[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return data or None


class LocalTools:
    """Runs the benchmark tools on this machine through `runner`."""

    def __init__(self, runner: CommandRunner | None = None):
        self.runner = runner or SubprocessRunner()

    def _taskset(self, argv: list[str], mask: str | None) -> list[str]:
        if mask is None:
            return argv
        if isinstance(self.runner, SubprocessRunner) and shutil.which("taskset") is None:
            raise ToolNotFoundError("taskset not found on PATH (util-linux): cannot apply --cpu-mask")
        return ["taskset", mask] + argv

    def litert_benchmark(self, model_path: str | os.PathLike, threads: int = 1, warmup: int = 10, runs: int = 100,
                         cpu_mask: str | None = None, command: Sequence[str] | None = None,
                         timeout_s: float = 1800.0) -> "BenchmarkResult":  # noqa: F821
        """Run `litert-benchmark` (CPU accelerator) on `model_path`."""
        from rmtkd_tf.bench.host import host_device_info

        _check_counts(threads, warmup, runs)
        model_path = os.fspath(model_path)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"model file not found: {model_path}")
        mask = hex_mask(cpu_mask)
        with tempfile.TemporaryDirectory(prefix="rmtkd_litert_bench_") as tmp:
            json_path = os.path.join(tmp, "result.json")
            argv = list(command or litert_benchmark_command()) + [
                f"--model={model_path}", f"--num_threads={threads}", f"--warmup_runs={warmup}",
                f"--num_runs={runs}", f"--result_json={json_path}"]
            argv = self._taskset(argv, mask)
            done = self.runner(argv, timeout=timeout_s)
            if done.returncode == 127 and "not found" in done.stderr:
                raise ToolNotFoundError(f"{argv[0]} not found: install ai-edge-litert (it ships litert-benchmark)")
            if done.returncode != 0:
                raise BenchmarkFailedError(f"litert-benchmark failed (exit {done.returncode}): {failure_reason(done)}")
            data = _read_bytes(json_path)
        try:
            return result_from_tool_output(
                model_path, runner="litert-benchmark", transport="host", threads=threads, delegate="xnnpack",
                warmup=warmup, text=done.stdout, litert_json=data, device=host_device_info(), batch_size=_batch(model_path),
                memory_note="litert-benchmark reports no memory figures",
                extra={"command": " ".join(argv), "cpu_mask": mask})
        except ValueError as error:
            raise BenchmarkFailedError(f"litert-benchmark output not understood: {error}") from None

    def benchmark_model(self, model_path: str | os.PathLike, binary: str | os.PathLike, threads: int = 1,
                        warmup: int = 10, runs: int = 100, use_xnnpack: bool = True, cpu_mask: str | None = None,
                        timeout_s: float = 1800.0) -> "BenchmarkResult":  # noqa: F821
        """Run a `benchmark_model` binary (TFLite 2.x or LiteRT 2.x) on `model_path` here."""
        import platform

        from rmtkd_tf.bench.host import host_device_info

        _check_counts(threads, warmup, runs)
        model_path, binary = os.fspath(model_path), os.fspath(binary)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"model file not found: {model_path}")
        if not os.path.isfile(binary):
            raise MissingBinaryError(f"benchmark_model binary not found: {binary}")
        try:
            abi = elf_abi(binary)
        except ValueError as error:
            raise WrongAbiError(str(error)) from None
        machine = platform.machine()
        if ABI_TO_UNAME.get(abi) != machine and isinstance(self.runner, SubprocessRunner):
            raise WrongAbiError(f"{binary} is built for {abi} but this machine is {machine}: "
                                "run it on its device with --ssh/--adb")
        if not os.access(binary, os.X_OK):
            raise MissingBinaryError(f"benchmark_model binary is not executable: {binary} (chmod +x it)")
        mask = hex_mask(cpu_mask)
        with tempfile.TemporaryDirectory(prefix="rmtkd_benchmark_model_") as tmp:
            proto_path = os.path.join(tmp, "result.pb")
            argv = self._taskset(benchmark_model_argv(os.path.abspath(binary), model_path, threads, warmup, runs,
                                                      use_xnnpack, proto_path), mask)
            done = self.runner(argv, timeout=timeout_s)
            if done.returncode != 0:
                raise BenchmarkFailedError(f"benchmark_model failed (exit {done.returncode}): {failure_reason(done)}")
            proto = _read_bytes(proto_path)
        try:
            return result_from_tool_output(
                model_path, runner="benchmark_model", transport="host", threads=threads,
                delegate="xnnpack" if use_xnnpack else "none", warmup=warmup,
                text=done.stdout + "\n" + done.stderr, proto=proto, device=host_device_info(),
                batch_size=_batch(model_path), extra={"command": " ".join(argv), "cpu_mask": mask, "binary_abi": abi})
        except ValueError as error:
            raise BenchmarkFailedError(f"benchmark_model output not understood: {error}") from None

