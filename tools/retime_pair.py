"""One-off: re-timed a pair of `.tflite` files whose timing in a long run was disturbed (results/retime_*.json).

    python -m tools.retime_pair --a benchmarks/runs/compare_sst2_minilm_scratch/teacher/model_fp32.tflite \
        --b benchmarks/runs/compare_sst2_minilm_scratch/magnitude-pruning/model_fp32.tflite \
        --model benchmarks/models/sst2_minilm_scratch.keras --data ../shared/data/sst2 \
        --out benchmarks/results/retime_sst2_minilm_scratch_pruning.json

Same protocol as every benchmark (`benchmarks.timing`); the input is the first real test text encoded with
`--model`'s vocabulary.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tools.one_off import require_existing, tool_command

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, type=Path, help="reference .tflite (the teacher)")
    parser.add_argument("--b", required=True, type=Path, help=".tflite timed against it")
    parser.add_argument("--model", required=True, help="the .keras whose vocabulary and length encode the texts")
    parser.add_argument("--data", required=True)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)

    from benchmarks.schema import SCHEMA_VERSION
    from benchmarks.timing import PROTOCOL, time_pair
    from rmtkd_tf.io import write_json
    from rmtkd_tf.pipeline import load_task

    require_existing(args.a, args.b)
    x_test = load_task(args.model, args.data, limit=100).data.x_test
    cmp = time_pair(args.a, args.b, x_test, runs=args.runs).to_dict()
    ratios = cmp["ratios"]
    write_json(args.out, {
        "schema_version": SCHEMA_VERSION, "kind": "retime", "name": args.out.stem,
        "command": tool_command("tools.retime_pair", argv),
        "date": time.strftime("%Y-%m-%d"),
        "timing_protocol": PROTOCOL,
        "median_ms": {"a": cmp["a"]["latency_ms"]["median"], "b": cmp["b"]["latency_ms"]["median"]},
        "speedup_a_over_b": ratios["median_latency_a_over_b"],
        "comparison": cmp,
    })
    print(f"a {cmp['a']['latency_ms']['median']:.3f} ms, b {cmp['b']['latency_ms']['median']:.3f} ms: "
          f"a/b {ratios['median_latency_a_over_b']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
