"""Benchmark a `.tflite` model on an ARM Linux board (Raspberry Pi, Jetson, ...) over ssh.

The board needs Python 3 with numpy and `ai-edge-litert` (or the legacy
`tflite-runtime`).  Sequence, one command each through an injectable runner:

1. `ssh HOST mkdir -p /tmp/rmtkd_<id>`
2. `scp MODEL HOST:/tmp/rmtkd_<id>/model.tflite`
3. `ssh HOST [taskset MASK] python3 - /tmp/rmtkd_<id>/model.tflite THREADS WARMUP RUNS SEED XNNPACK`
   with `remote_litert_bench.py` on stdin (nothing is installed on the board);
4. `ssh HOST rm -rf /tmp/rmtkd_<id>` in a `finally`.

ssh/scp run with `-o BatchMode=yes` so a missing key fails at once instead
of waiting for a password prompt.  Energy is not measured on boards (no
portable counter); `cpu_seconds_per_inference` is the proxy.

Example:

>>> board = SshBoard("pi@raspberrypi.local")                     # doctest: +SKIP
>>> result = board.benchmark("student.tflite", threads=4, runs=100)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import uuid
from typing import Sequence

from android_bench.errors import BenchmarkFailedError, DeviceCommandError, ToolNotFoundError
from android_bench.runner import CommandResult, CommandRunner, SubprocessRunner, last_line
from rmtkd_tf.bench.schema import (
    BenchmarkResult,
    DeviceInfo,
    EnergyInfo,
    LatencyStats,
    MemoryInfo,
    file_size_and_sha256,
    throughput_from_latency,
)

REMOTE_SCRIPT_PATH = os.path.join(os.path.dirname(__file__), "remote_litert_bench.py")


def remote_script_source() -> str:
    with open(REMOTE_SCRIPT_PATH) as handle:
        return handle.read()


class SshBoard:
    """An ARM Linux board reached with ssh/scp.

    Args:
      host: ssh destination, e.g. "pi@raspberrypi.local" or an ~/.ssh/config alias.
      port: ssh port (None: ssh's default / config).
      python: Python interpreter on the board.
      remote_tmp: parent directory for the per-run directory.
      ssh_options: extra ssh/scp `-o` style arguments, e.g. ["-i", "key"].
      runner: command runner (tests inject a ReplayRunner).
    """

    def __init__(self, host: str, port: int | None = None, python: str = "python3", remote_tmp: str = "/tmp",
                 ssh_options: Sequence[str] = (), runner: CommandRunner | None = None):
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise ValueError(f"invalid ssh host {host!r}")
        if runner is None:
            for tool in ("ssh", "scp"):
                if shutil.which(tool) is None:
                    raise ToolNotFoundError(f"{tool} not found on PATH: install an OpenSSH client")
            runner = SubprocessRunner()
        self.host = host
        self.port = port
        self.python = python
        self.remote_tmp = remote_tmp.rstrip("/") or "/"
        self.ssh_options = list(ssh_options)
        self.runner = runner

    def _ssh_argv(self, command: str) -> list[str]:
        argv = ["ssh", "-o", "BatchMode=yes"] + self.ssh_options
        if self.port is not None:
            argv += ["-p", str(self.port)]
        return argv + [self.host, command]

    def _scp_argv(self, local: str, remote: str) -> list[str]:
        argv = ["scp", "-q", "-o", "BatchMode=yes"] + self.ssh_options
        if self.port is not None:
            argv += ["-P", str(self.port)]
        return argv + [local, f"{self.host}:{remote}"]

    def _check(self, result: CommandResult, what: str) -> CommandResult:
        if result.returncode == 127 and "not found" in result.stderr and result.argv[:1] in (("ssh",), ("scp",)):
            raise ToolNotFoundError(f"{result.argv[0]} not found on PATH: install an OpenSSH client")
        if result.returncode == 255:
            raise DeviceCommandError(f"ssh connection to {self.host} failed: {last_line(result.stderr)}")
        if result.returncode != 0:
            raise DeviceCommandError(f"{what} on {self.host} failed (exit {result.returncode}): "
                                     f"{last_line(result.stderr, result.stdout)}")
        return result

    def ssh(self, command: str, input: str | None = None, timeout: float | None = None, check: bool = True) -> CommandResult:
        result = self.runner(self._ssh_argv(command), input=input, timeout=timeout)
        return self._check(result, command.split()[0]) if check else result

    def benchmark(self, model_path: str | os.PathLike, threads: int = 1, warmup: int = 10, runs: int = 100,
                  seed: int = 0, use_xnnpack: bool = True, cpu_mask: str | None = None, run_id: str | None = None,
                  timeout_s: float = 1800.0) -> BenchmarkResult:
        """Copy the model, run the LiteRT micro-benchmark on the board, clean up."""
        if threads < 1 or warmup < 0 or runs < 1:
            raise ValueError(f"need threads >= 1, warmup >= 0, runs >= 1; got {threads}, {warmup}, {runs}")
        model_path = os.fspath(model_path)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"model file not found: {model_path}")
        mask = None
        if cpu_mask is not None:
            mask = str(cpu_mask).lower().removeprefix("0x")
            if not mask or any(c not in "0123456789abcdef" for c in mask) or int(mask, 16) == 0:
                raise ValueError(f"CPU mask must be a non-zero hexadecimal mask like f0; got {cpu_mask!r}")
        size, sha256 = file_size_and_sha256(model_path)
        run_id = run_id or uuid.uuid4().hex[:8]
        remote_dir = f"{self.remote_tmp}/rmtkd_{run_id}"
        remote_model = f"{remote_dir}/model.tflite"
        words = [self.python, "-", remote_model, str(threads), str(warmup), str(runs), str(seed),
                 "1" if use_xnnpack else "0"]
        command = " ".join(shlex.quote(w) for w in words)
        if mask:
            command = f"taskset {mask} {command}"
        try:
            self.ssh(f"mkdir -p {shlex.quote(remote_dir)}")
            self._check(self.runner(self._scp_argv(model_path, remote_model)), "scp")
            run = self.ssh(command, input=remote_script_source(), timeout=timeout_s, check=False)
        finally:
            self.ssh(f"rm -rf {shlex.quote(remote_dir)}", check=False)
        if run.returncode == 255:
            self._check(run, "python")
        payload = None
        for line in run.stdout.splitlines():
            if line.startswith("RMTKD_RESULT "):
                payload = json.loads(line[len("RMTKD_RESULT "):])
            elif line.startswith("RMTKD_ERROR "):
                raise BenchmarkFailedError(f"benchmark on {self.host} failed: {line[len('RMTKD_ERROR '):].strip()}")
        if payload is None:
            raise BenchmarkFailedError(
                f"benchmark on {self.host} failed (exit {run.returncode}): {last_line(run.stderr, run.stdout)}"
            )
        latency = LatencyStats.from_samples_ms(payload["latencies_ms"])
        peak_mb = payload["peak_rss_kb"] / 1024.0
        batch = payload.get("batch_size")
        return BenchmarkResult(
            model_path=model_path,
            model_size_bytes=size,
            model_sha256=sha256,
            runner="litert-python",
            transport="ssh",
            device=DeviceInfo(machine=payload.get("machine"), cpu_model=payload.get("cpu_model"),
                              serial=self.host, os=payload.get("os")),
            threads=threads,
            delegate="xnnpack" if use_xnnpack else "none",
            batch_size=batch,
            warmup_runs=warmup,
            runs=len(payload["latencies_ms"]),
            latency_ms=latency,
            throughput_per_s=throughput_from_latency(latency.mean, batch),
            init_ms=payload.get("init_ms"),
            peak_rss_mb=peak_mb,
            memory=MemoryInfo(peak_rss_mb=peak_mb, note="getrusage ru_maxrss of the board's Python process"),
            cpu_seconds_per_inference=payload["cpu_seconds"] / len(payload["latencies_ms"]),
            energy=EnergyInfo.unavailable(
                "no energy counter is read on ssh boards; cpu_seconds_per_inference is the proxy"
            ),
            extra={
                "run_id": run_id,
                "remote_dir": remote_dir,
                "cpu_mask": mask,
                "first_inference_ms": payload.get("first_inference_ms"),
                "runtime": payload.get("runtime"),
                "python": payload.get("python"),
                "remote_command": command,
            },
        )

    def benchmark_binary(self, model_path: str | os.PathLike, **options) -> BenchmarkResult:
        """Run a `benchmark_model` binary on the board (see `benchmark_binary_over_ssh`)."""
        return benchmark_binary_over_ssh(self, model_path, **options)


def _scp_from_argv(board: "SshBoard", remote: str, local: str) -> list[str]:
    argv = ["scp", "-q", "-o", "BatchMode=yes"] + board.ssh_options
    if board.port is not None:
        argv += ["-P", str(board.port)]
    return argv + [f"{board.host}:{remote}", local]


def benchmark_binary_over_ssh(board: SshBoard, model_path: str | os.PathLike, binary: str | os.PathLike | None = None,
                              binary_on_board: str | None = None, threads: int = 1, warmup: int = 10,
                              runs: int = 100, use_xnnpack: bool = True, cpu_mask: str | None = None,
                              run_id: str | None = None, timeout_s: float = 1800.0) -> BenchmarkResult:
    """Run a `benchmark_model` binary (TFLite 2.x or LiteRT 2.x) on the board.

    Sequence (one runner command each): `uname -m` (the local binary's ELF
    machine must match), `mkdir -p /tmp/rmtkd_<id>`, scp the model (and the
    binary, then `chmod 755`), `[taskset MASK] BINARY --graph=... --result_file_path=.../result.pb`,
    scp the result proto back (absent for TFLite builds: ignored), and
    `rm -rf` the directory in a `finally`.  The text (stdout + stderr) and the
    proto go through `android_bench.tool_results`.
    """
    import tempfile

    from android_bench.elf import ABI_TO_UNAME, elf_abi
    from android_bench.errors import MissingBinaryError, WrongAbiError
    from android_bench.local import _check_counts, benchmark_model_argv, failure_reason, hex_mask
    from android_bench.tool_results import result_from_tool_output
    from android_bench.adb import _model_batch_size

    _check_counts(threads, warmup, runs)
    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"model file not found: {model_path}")
    if (binary is None) == (binary_on_board is None):
        raise MissingBinaryError("benchmark_model binary needed: pass --binary PATH (copied to the board) "
                                 "or --binary-on-device PATH (already there)")
    if binary is not None and not os.path.isfile(binary):
        raise MissingBinaryError(f"benchmark_model binary not found: {binary}")
    mask = hex_mask(cpu_mask)
    machine = board.ssh("uname -m").stdout.strip()
    abi = None
    if binary is not None:
        try:
            abi = elf_abi(binary)
        except ValueError as error:
            raise WrongAbiError(str(error)) from None
        if machine and ABI_TO_UNAME.get(abi) != machine:
            raise WrongAbiError(f"{binary} is built for {abi} but {board.host} is {machine}")
    run_id = run_id or uuid.uuid4().hex[:8]
    remote_dir = f"{board.remote_tmp}/rmtkd_{run_id}"
    remote_model = f"{remote_dir}/model.tflite"
    remote_binary = binary_on_board or f"{remote_dir}/benchmark_model"
    remote_proto = f"{remote_dir}/result.pb"
    argv = benchmark_model_argv(remote_binary, remote_model, threads, warmup, runs, use_xnnpack, remote_proto)
    command = " ".join(shlex.quote(word) for word in argv)
    if mask:
        command = f"taskset {mask} {command}"
    proto = None
    with tempfile.TemporaryDirectory(prefix="rmtkd_ssh_") as tmp:
        local_proto = os.path.join(tmp, "result.pb")
        try:
            board.ssh(f"mkdir -p {shlex.quote(remote_dir)}")
            board._check(board.runner(board._scp_argv(model_path, remote_model)), "scp")
            if binary is not None:
                board._check(board.runner(board._scp_argv(os.fspath(binary), remote_binary)), "scp")
                board.ssh(f"chmod 755 {shlex.quote(remote_binary)}")
            run = board.ssh(command, timeout=timeout_s, check=False)
            if run.returncode == 0:
                fetched = board.runner(_scp_from_argv(board, remote_proto, local_proto))
                if fetched.returncode == 0 and os.path.isfile(local_proto):
                    with open(local_proto, "rb") as handle:
                        proto = handle.read() or None
        finally:
            board.ssh(f"rm -rf {shlex.quote(remote_dir)}", check=False)
    if run.returncode == 255:
        board._check(run, "benchmark_model")
    if run.returncode != 0:
        raise BenchmarkFailedError(f"benchmark_model failed on {board.host} (exit {run.returncode}): {failure_reason(run)}")
    try:
        return result_from_tool_output(
            model_path, runner="benchmark_model", transport="ssh", threads=threads,
            delegate="xnnpack" if use_xnnpack else "none", warmup=warmup, text=run.stdout + "\n" + run.stderr,
            proto=proto, device=DeviceInfo(machine=machine or None, serial=board.host),
            batch_size=_model_batch_size(model_path),
            extra={"run_id": run_id, "remote_dir": remote_dir, "cpu_mask": mask, "binary_abi": abi,
                   "binary_on_device": binary_on_board, "remote_command": command})
    except ValueError as error:
        raise BenchmarkFailedError(f"benchmark_model output from {board.host} not understood: {error}") from None
