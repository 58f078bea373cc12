"""Cross-check the teacher/student latency ratio between the in-process interpreter and an external tool.

    python -m tools.tool_crosscheck --models DIR [--binary ./benchmark_model [--binary-xnnpack]] [--runs 300]
                                    [--rounds 3]

DIR holds `teacher_{fp32,fp16,int8}.tflite` and `student_{fp32,fp16,int8}.tflite` (made as in
tests/data/litert_benchmark/README.md). For each precision the student/teacher median-latency ratio is
measured (1 thread, XNNPACK, batch 1, random inputs) by

* `interpreter`: `rmtkd_tf.bench.compare_tflite`, both models in one process, interleaved ABBA blocks;
* `litert-benchmark` (always) and `benchmark_model` (with `--binary`): one tool process per model,
  student then teacher, repeated `--rounds` times; the ratio of the medians of each round is taken and
  the median over rounds reported.

A `benchmark_model` built without XNNPACK (`android_bench/build_benchmark_model.sh`'s default) runs TFLite's
builtin kernels, so it is compared with `interpreter_builtin`: the same in-process ABBA measurement with the
default delegates off (`use_xnnpack=False`). With `--binary-xnnpack` (a binary built with `--xnnpack on`) it
runs with `--use_xnnpack=true` and is compared with `interpreter`.

Writes `benchmarks/results/tool_crosscheck.json` (kind `crosscheck` of `benchmarks.schema`; every round's
medians kept) and prints one line per precision. Run from the repository root.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="folder with teacher_/student_{fp32,fp16,int8}.tflite")
    parser.add_argument("--binary", default=None, help="a benchmark_model binary for this machine (optional)")
    parser.add_argument("--binary-xnnpack", action="store_true",
                        help="the binary has XNNPACK (built with --xnnpack on): run it with --use_xnnpack=true")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-o", "--output", default="benchmarks/results/tool_crosscheck.json")
    args = parser.parse_args(argv)

    from android_bench.local import LocalTools
    from benchmarks.schema import SCHEMA_VERSION
    from rmtkd_tf.bench import compare_tflite
    from rmtkd_tf.io import write_json

    tools = LocalTools()
    rows = []
    for precision in ("fp32", "fp16", "int8"):
        student = os.path.join(args.models, f"student_{precision}.tflite")
        teacher = os.path.join(args.models, f"teacher_{precision}.tflite")
        row = {"precision": precision}
        inproc = compare_tflite(student, teacher, warmup=args.warmup, runs=args.runs)
        row["interpreter"] = {"student_median_ms": inproc.a.latency_ms.median,
                              "teacher_median_ms": inproc.b.latency_ms.median,
                              "ratio": inproc.ratios["median_latency_a_over_b"]}
        if args.binary and not args.binary_xnnpack:
            builtin = compare_tflite(student, teacher, warmup=args.warmup, runs=args.runs, use_xnnpack=False)
            row["interpreter_builtin"] = {"student_median_ms": builtin.a.latency_ms.median,
                                          "teacher_median_ms": builtin.b.latency_ms.median,
                                          "ratio": builtin.ratios["median_latency_a_over_b"]}
        external = [("litert-benchmark", lambda p: tools.litert_benchmark(p, warmup=args.warmup, runs=args.runs))]
        if args.binary:
            external.append(("benchmark_model", lambda p: tools.benchmark_model(
                p, args.binary, warmup=args.warmup, runs=args.runs, use_xnnpack=args.binary_xnnpack)))
        for name, run in external:
            rounds = []
            for _ in range(args.rounds):
                s, t = run(student).latency_ms.median, run(teacher).latency_ms.median
                rounds.append({"student_median_ms": s, "teacher_median_ms": t, "ratio": s / t if t else None})
            row[name] = {"rounds": rounds,
                         "ratio": statistics.median(r["ratio"] for r in rounds if r["ratio"] is not None)}
        rows.append(row)
        print(f"{precision}: " + ", ".join(f"{k} {v['ratio']:.3f}" for k, v in row.items() if isinstance(v, dict)),
              flush=True)
    write_json(args.output, {
        "schema_version": SCHEMA_VERSION,
        "kind": "crosscheck",
        "name": "tool_crosscheck",
        "command": "python -m tools.tool_crosscheck --models DIR" + (" --binary BINARY" if args.binary else "")
                   + (" --binary-xnnpack" if args.binary_xnnpack else ""),
        "command_as_run": "python -m tools.tool_crosscheck " + " ".join(shlex.quote(a) for a in argv),
        "what": "student/teacher median-latency ratio: in-process interpreter vs external benchmark tools",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs)",
        "settings": {"threads": 1, "runs": args.runs, "warmup": args.warmup, "rounds": args.rounds,
                     "benchmark_model_xnnpack": bool(args.binary and args.binary_xnnpack)},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    })
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
