"""`rmtkd-tf bench`: latency / size / CPU / energy of a `.tflite` model on the host, a phone or a board.

Examples:

    rmtkd-tf bench student.tflite --threads 4 -o bench.json
    rmtkd-tf bench student.tflite --vs teacher.tflite --runs 200 -o compare.json
    rmtkd-tf bench student.tflite --device adb --binary android_aarch64_benchmark_model --cpu-mask f0
    rmtkd-tf bench student.tflite --device ssh --ssh-host pi@raspberrypi.local --threads 4
    rmtkd-tf bench student.tflite --vs teacher.tflite --tool litert-benchmark
    rmtkd-tf bench student.tflite --vs teacher.tflite --tool benchmark_model --binary ./benchmark_model
    rmtkd-tf bench student.tflite --tool benchmark_model --binary ./benchmark_model_aarch64 --ssh pi@board

`--tool` picks what measures: `interpreter` (LiteRT's Python interpreter, in
process on the host or via a small script on an ssh board), `litert-benchmark`
(the ai-edge-litert wheel's benchmark command, host) or `benchmark_model`
(a TFLite 2.x or LiteRT 2.x C++ binary: host, ssh or adb).  All give the same
JSON schema and table.
With `--vs` on the host (interpreter) both models run alternately in one
process (ABBA blocks), so the printed a/b ratios are robust to
frequency/thermal drift.  With the external tools and on adb/ssh the two
models run one after the other.
The JSON report is written atomically (temp file in the same directory,
then rename), so a crash never leaves a half-written report.
"""

from __future__ import annotations

import os

import click
import numpy as np


def write_json_atomic(path: str, data) -> None:
    """Write JSON to `path` via a temp file in the same directory + os.replace (NaN written as null)."""
    from rmtkd_tf.io import write_json

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise click.ClickException(f"output directory does not exist: {directory}")
    write_json(path, data)


def tflite_inputs(path: str) -> list[tuple[tuple[int, ...], str]]:
    """`(shape signature, dtype)` of each input of a `.tflite`; a file LiteRT cannot read gives one line."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        details = Interpreter(model_path=path).get_input_details()
    except Exception as error:  # LiteRT raises ValueError (and RuntimeError) for a malformed flatbuffer
        raise click.ClickException(f"LiteRT cannot load {path}: {_first_line(error)}") from None
    return [(tuple(int(d) for d in detail.get("shape_signature", detail["shape"])), str(np.dtype(detail["dtype"])))
            for detail in details]


def check_comparable(model: str, other: str) -> None:
    """Refuse `--vs` between models whose input shapes differ: their latency ratio would compare different work.

    The element types may differ (a full-int8 student takes int8 where its float teacher takes float32:
    the same inputs, quantized), so only the number of inputs and their shapes are compared.
    """
    a, b = tflite_inputs(model), tflite_inputs(other)
    if [list(shape) for shape, _ in a] != [list(shape) for shape, _ in b]:
        def show(inputs):
            return ", ".join(f"{list(shape)} {dtype}" for shape, dtype in inputs)

        raise click.ClickException(
            f"cannot compare: {os.path.basename(model)} takes {show(a)} but {os.path.basename(other)} takes "
            f"{show(b)}; the ratios would compare different work (compare a student with its own teacher)"
        )


def _first_line(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _fmt(value, scale=1.0) -> str:
    return "-" if value is None else f"{value * scale:.4g}"


def format_table(results) -> str:
    """A short fixed-width table of BenchmarkResults (one row each)."""
    header = ("model", "size KiB", "median ms", "mean ms", "p90 ms", "per s", "cpu ms/inf", "mJ/inf")
    rows = [header]
    for r in results:
        energy = r.energy.joules_per_inference if r.energy.available else None
        rows.append((
            os.path.basename(r.model_path),
            f"{r.model_size_bytes / 1024:.1f}",
            _fmt(r.latency_ms.median),
            _fmt(r.latency_ms.mean),
            _fmt(r.latency_ms.p90),
            _fmt(r.throughput_per_s),
            _fmt(r.cpu_seconds_per_inference, 1e3),
            _fmt(energy, 1e3),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in rows)


TOOLS = ("interpreter", "litert-benchmark", "benchmark_model")


def resolve_target(device, tool, ssh_dest, adb_serial, serial, ssh_host):
    """Fold the --ssh/--adb shorthands into (device, tool, serial, ssh_host); pick the default tool."""
    if ssh_dest is not None and adb_serial is not None:
        raise click.ClickException("--ssh and --adb are two different targets: give one")
    if ssh_dest is not None:
        if device not in ("host", "ssh") or (ssh_host and ssh_host != ssh_dest):
            raise click.ClickException("--ssh USER@HOST conflicts with --device/--ssh-host: give one of them")
        device, ssh_host = "ssh", ssh_dest
    if adb_serial is not None:
        if device not in ("host", "adb") or (serial and adb_serial and serial != adb_serial):
            raise click.ClickException("--adb [SERIAL] conflicts with --device/--serial: give one of them")
        device, serial = "adb", serial or adb_serial or None
    if tool is None:
        tool = "benchmark_model" if device == "adb" else "interpreter"
    return device, tool, serial, ssh_host


def check_tool_options(device, tool, serial, binary, binary_on_device, use_xnnpack) -> None:
    """One-line errors for tool/target combinations that cannot run."""
    if device == "adb" and tool != "benchmark_model":
        raise click.ClickException(f"--tool {tool} does not run over adb: Android runs benchmark_model (--binary)")
    if tool == "litert-benchmark":
        if device != "host":
            raise click.ClickException("--tool litert-benchmark runs on the host only; on a board use "
                                       "--tool interpreter or --tool benchmark_model")
        if not use_xnnpack:
            raise click.ClickException("--tool litert-benchmark always uses LiteRT's CPU accelerator (XNNPACK): "
                                       "drop --no-xnnpack or use --tool interpreter")
    if tool == "benchmark_model" and device != "adb":
        if serial:
            raise click.ClickException("--serial only applies to --device adb")
        if device == "host" and not binary:
            raise click.ClickException("--tool benchmark_model needs --binary PATH (build it with "
                                       "android_bench/build_benchmark_model.sh)")
        if device == "host" and binary_on_device:
            raise click.ClickException("--binary-on-device needs --ssh or --adb; on the host give --binary PATH")
        if binary and not os.path.isfile(binary):
            raise click.ClickException(f"no such benchmark_model binary: {binary}")
        if device == "ssh" and bool(binary) == bool(binary_on_device):
            raise click.ClickException("--tool benchmark_model over ssh needs one of --binary PATH (copied to the "
                                       "board) or --binary-on-device PATH")


def tool_runner(device, tool, *, binary, binary_on_device, ssh_host, ssh_port, ssh_options=(), threads, warmup, runs, use_xnnpack,
                cpu_mask):
    """A `path -> BenchmarkResult` function for an external tool on the host or over ssh."""
    if device == "host":
        from android_bench.local import LocalTools

        tools = LocalTools()
        if tool == "litert-benchmark":
            return lambda path: tools.litert_benchmark(path, threads=threads, warmup=warmup, runs=runs,
                                                       cpu_mask=cpu_mask)
        return lambda path: tools.benchmark_model(path, binary, threads=threads, warmup=warmup, runs=runs,
                                                  use_xnnpack=use_xnnpack, cpu_mask=cpu_mask)
    from android_bench.ssh import SshBoard

    board = SshBoard(ssh_host, port=ssh_port, ssh_options=ssh_options)
    return lambda path: board.benchmark_binary(path, binary=binary, binary_on_board=binary_on_device, threads=threads,
                                               warmup=warmup, runs=runs, use_xnnpack=use_xnnpack, cpu_mask=cpu_mask)


def _fail(error: BaseException) -> click.ClickException:
    text = str(error).strip()
    return click.ClickException(text.splitlines()[0] if text else type(error).__name__)


@click.command("bench")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--vs", "other", type=click.Path(dir_okay=False), default=None, help="A second .tflite to compare against (ratios are MODEL/OTHER).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Interpreter threads.")
@click.option("--runs", type=click.IntRange(min=1), default=100, show_default=True, help="Timed runs.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed warm-up runs.")
@click.option("--device", type=click.Choice(["host", "adb", "ssh"]), default="host", show_default=True, help="Where to run.")
@click.option("--tool", type=click.Choice(TOOLS), default=None,
              help="What measures: interpreter (default on host/ssh), litert-benchmark (host), "
                   "benchmark_model (default and only choice on adb; needs --binary on the host).")
@click.option("--ssh", "ssh_dest", default=None, metavar="USER@HOST", help="Shorthand for --device ssh --ssh-host USER@HOST.")
@click.option("--adb", "adb_serial", is_flag=False, flag_value="", default=None, metavar="[SERIAL]",
              help="Shorthand for --device adb [--serial SERIAL].")
@click.option("--serial", default=None, help="adb serial (when several devices are attached).")
@click.option("--binary", type=click.Path(dir_okay=False), default=None, help="Local benchmark_model binary (run here, or copied to the adb/ssh device).")
@click.option("--binary-on-device", default=None, help="benchmark_model already on the device (adb/ssh).")
@click.option("--ssh-host", default=None, help="ssh destination, e.g. pi@raspberrypi.local (ssh).")
@click.option("--ssh-port", type=int, default=None, help="ssh port (ssh).")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE",
              help="Extra ssh/scp -o option, repeatable, e.g. IdentityFile=~/.ssh/board (ssh).")
@click.option("--use-xnnpack/--no-xnnpack", default=True, show_default=True, help="Use the XNNPACK CPU delegate.")
@click.option("--use-gpu", is_flag=True, default=False, help="Use the GPU delegate (adb only).")
@click.option("--cpu-mask", default=None, help="Hex CPU affinity mask, e.g. f0 for the big cores.")
@click.option("--block-runs", type=click.IntRange(min=1), default=10, show_default=True, help="Runs per interleaved block with --vs on the host.")
@click.option("--energy/--no-energy", default=True, show_default=True, help="Sample the battery during adb runs.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write the JSON report here.")
@click.option("--overwrite", is_flag=True, help="Let -o replace an existing file that is not a JSON report.")
def bench(model, other, threads, runs, warmup, device, tool, ssh_dest, adb_serial, serial, binary, binary_on_device,
          ssh_host, ssh_port, ssh_options, use_xnnpack, use_gpu, cpu_mask, block_runs, energy, output, overwrite):
    """Benchmark MODEL.tflite (latency, size, CPU time, memory, energy where measurable)."""
    from rmtkd_tf.errors import RMTKDError
    from rmtkd_tf.run_folder import check_output_file, looks_like_json

    for path in (model, other):
        if path is not None and not os.path.isfile(path):
            raise click.ClickException(f"no such model file: {path}")
    if output:
        try:
            check_output_file(output, {"model": model, "--vs model": other, "binary": binary}, overwrite=overwrite, replaceable=looks_like_json,
                              kind="JSON report")
        except RMTKDError as error:
            raise click.ClickException(str(error)) from None
    if other is not None:
        check_comparable(model, other)
    device, tool, serial, ssh_host = resolve_target(device, tool, ssh_dest, adb_serial, serial, ssh_host)
    if use_gpu and device != "adb":
        raise click.ClickException("--use-gpu needs --device adb (the host and ssh runners are CPU-only)")
    if device != "adb" and tool != "benchmark_model" and (serial or binary or binary_on_device):
        raise click.ClickException("--serial/--binary/--binary-on-device only apply to --device adb or --tool benchmark_model")
    if device == "ssh" and not ssh_host:
        raise click.ClickException("--device ssh needs --ssh-host HOST")
    if device != "ssh" and (ssh_host or ssh_port or ssh_options):
        raise click.ClickException("--ssh-host/--ssh-port/--ssh-option only apply to --device ssh")
    ssh_argv = [word for option in ssh_options for word in ("-o", option)]
    check_tool_options(device, tool, serial, binary, binary_on_device, use_xnnpack)

    from android_bench.errors import DeviceBenchError
    from rmtkd_tf.bench.schema import ComparisonResult

    try:
        if tool != "interpreter" and device != "adb":
            run_one = tool_runner(device, tool, binary=binary, binary_on_device=binary_on_device, ssh_host=ssh_host,
                                  ssh_port=ssh_port, ssh_options=ssh_argv, threads=threads, warmup=warmup, runs=runs,
                                  use_xnnpack=use_xnnpack, cpu_mask=cpu_mask)
            first = run_one(model)
            report = first if other is None else ComparisonResult.from_pair(
                first, run_one(other), {"schedule": f"sequential {tool} runs on {device}: MODEL then OTHER"})
        elif device == "host":
            from rmtkd_tf.bench.host import benchmark_tflite, compare_tflite

            if other is None:
                report = benchmark_tflite(model, threads=threads, warmup=warmup, runs=runs,
                                          use_xnnpack=use_xnnpack, cpu_mask=cpu_mask)
            else:
                report = compare_tflite(model, other, threads=threads, warmup=warmup, runs=runs,
                                        block_runs=block_runs, use_xnnpack=use_xnnpack, cpu_mask=cpu_mask)
        else:
            if device == "adb":
                from android_bench.adb import AdbDevice

                target = AdbDevice(serial=serial)

                def run_one(path):
                    return target.benchmark(path, binary=binary, binary_on_device=binary_on_device,
                                            threads=threads, warmup=warmup, runs=runs, use_xnnpack=use_xnnpack,
                                            use_gpu=use_gpu, cpu_mask=cpu_mask, measure_energy=energy)
            else:
                from android_bench.ssh import SshBoard

                target = SshBoard(ssh_host, port=ssh_port, ssh_options=ssh_argv)

                def run_one(path):
                    return target.benchmark(path, threads=threads, warmup=warmup, runs=runs,
                                            use_xnnpack=use_xnnpack, cpu_mask=cpu_mask)

            first = run_one(model)
            report = first if other is None else ComparisonResult.from_pair(
                first, run_one(other), {"schedule": f"sequential {device} runs: MODEL then OTHER"})
    except (DeviceBenchError, ValueError, OSError, RuntimeError) as error:
        raise _fail(error) from None

    results = [report.a, report.b] if isinstance(report, ComparisonResult) else [report]
    click.echo(format_table(results))
    if isinstance(report, ComparisonResult):
        ratios = report.ratios
        click.echo(
            "a/b: median latency {} x, size {} x, cpu {} x, energy {} x".format(
                *(_fmt(ratios[k]) for k in ("median_latency_a_over_b", "size_a_over_b",
                                            "cpu_seconds_a_over_b", "energy_a_over_b"))
            )
        )
    if not results[0].energy.available:
        click.echo(f"energy: unavailable ({results[0].energy.note})")
    if output:
        write_json_atomic(output, report.to_dict())
        click.echo(f"wrote {output}")
