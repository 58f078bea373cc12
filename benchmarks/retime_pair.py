"""Re-time two `.tflite` files of a text model against each other on a real test example.

    python benchmarks/retime_pair.py --a benchmarks/runs/compare_sst2_minilm_scratch/teacher/model_fp32.tflite \
        --b benchmarks/runs/compare_sst2_minilm_scratch/magnitude-pruning/model_fp32.tflite \
        --model benchmarks/models/sst2_minilm_scratch.keras --data ../shared/data/sst2 \
        --out benchmarks/results/retime_sst2_minilm_scratch_pruning.json

For a pair whose timing in a long run was disturbed (another job on the shared cores), so the committed
result can show both figures. Same method as the runs: LiteRT, XNNPACK, 1 thread, batch 1, interleaved
ABBA blocks in one process; the input is the first real test text encoded with `--model`'s vocabulary
(`rmtkd-tf bench` feeds random inputs, which are out of range for a token-id input).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, type=Path, help="reference .tflite (the teacher)")
    parser.add_argument("--b", required=True, type=Path, help=".tflite timed against it")
    parser.add_argument("--model", required=True, help="the .keras whose vocabulary and length encode the texts")
    parser.add_argument("--data", required=True)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))

    from rmtkd_tf.bench.host import compare_tflite
    from rmtkd_tf.io import write_json
    from rmtkd_tf.pipeline import load_task
    from compare_methods import one_real_example

    for path in (args.a, args.b):
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist")
    x_test = load_task(args.model, args.data, limit=100).data.x_test
    cmp = compare_tflite(args.a, args.b, threads=1, warmup=20, runs=args.runs,
                         inputs_a=one_real_example(args.a, x_test), inputs_b=one_real_example(args.b, x_test)).to_dict()
    ratios = cmp["ratios"]
    write_json(args.out, {
        "command": "python benchmarks/retime_pair.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d"),
        "median_ms": {"a": cmp["a"]["latency_ms"]["median"], "b": cmp["b"]["latency_ms"]["median"]},
        "speedup_a_over_b": ratios["median_latency_a_over_b"],
        "comparison": cmp,
    })
    print(f"a {cmp['a']['latency_ms']['median']:.3f} ms, b {cmp['b']['latency_ms']['median']:.3f} ms: "
          f"a/b {ratios['median_latency_a_over_b']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
