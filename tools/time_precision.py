"""One-off: a teacher and student timed at one `.tflite` precision (e.g. int16x8), a BERT at a token length.

    python -m tools.time_precision --teacher benchmarks/models/sst2_minilm_pretrained_cpu.keras \
        --student benchmarks/runs/sst2_minilm_pretrained_cpu/rmtkd-mp/model.keras \
        --data /work/shared/data/sst2 --limit 2500 --precision int16x8 --seq-len 128 --runs 100 \
        --out benchmarks/results/time_int16x8_sst2_minilm_pretrained_cpu.json

`python -m benchmarks compress` times fp32 and int8 only. This rebuilds both models at `--seq-len` tokens
(same weights, `rmtkd_tf.transformers.with_sequence_length`), exports them at `--precision` (calibrated on the
first `--calibration` calibration sentences of the same `load_task` split as `compress`), and times them with
the benchmarks' protocol (`benchmarks.timing.time_pair`: interleaved, batch 1, a real test sentence).
Accuracy is not measured here. A model whose inputs are not token ids (an image classifier) is timed as it is:
`--seq-len` does not apply to it and is recorded as null.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from tools.one_off import add_teacher_student_arguments, load_teacher_task, parse_teacher_student, tool_command

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_teacher_student_arguments(parser)
    parser.add_argument("--precision", default="int16x8")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--calibration", type=int, default=100, help="calibration sentences for the export")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--out", required=True, type=Path)
    args = parse_teacher_student(parser, argv)

    from benchmarks.compare import _pad_tokens, take_rows
    from benchmarks.schema import SCHEMA_VERSION
    from benchmarks.timing import PROTOCOL, latency_entry, time_pair
    from rmtkd_tf.export import export_tflite
    from rmtkd_tf.flops import model_flops
    from rmtkd_tf.io import load_model, write_json
    from rmtkd_tf.transformers import with_sequence_length

    task = load_teacher_task(args)
    if not isinstance(task.data.x_test, dict):  # not token ids: no length to set
        args.seq_len = None

    def at_length(x):
        return x if args.seq_len is None else _pad_tokens(x, args.seq_len)

    x = at_length(task.data.x_test)
    calibration = at_length(take_rows(task.data.x_calibration, args.calibration))
    timed, flops, seconds = {}, {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for role, model in (("teacher", task.model), ("student", load_model(args.student))):
            t0 = time.perf_counter()
            rebuilt = model if args.seq_len is None else with_sequence_length(model, args.seq_len)
            path = Path(folder) / f"{role}_{args.precision}_seq{args.seq_len}.tflite"
            export_tflite(rebuilt, path, precision=args.precision, representative_data=calibration,
                          verify_inputs=take_rows(x, 16))
            timed[role], flops[role] = path, model_flops(rebuilt)
            seconds[role] = round(time.perf_counter() - t0, 1)
        comparison = time_pair(timed["teacher"], timed["student"], x, runs=args.runs)
        entry = latency_entry(comparison, flops["student"], flops["teacher"])
    result = {
        "schema_version": SCHEMA_VERSION, "kind": "retime", "name": args.out.stem,
        "command": tool_command("tools.time_precision", argv),
        "date": time.strftime("%Y-%m-%d"), "timing_protocol": PROTOCOL,
        "precision": args.precision, "seq_len": args.seq_len, "calibration_sentences": args.calibration,
        "export_seconds": seconds,
        "median_ms": {"a": entry["teacher_median_ms"], "b": entry["median_ms"]},
        "speedup_a_over_b": entry["speedup_vs_teacher"],
        "latency": entry,
    }
    write_json(args.out, result)
    where = "" if args.seq_len is None else f" at {args.seq_len} tokens"
    print(f"{args.precision}{where}: teacher {entry['teacher_median_ms']:.3f} ms, student "
          f"{entry['median_ms']:.3f} ms: {entry['speedup_vs_teacher']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
