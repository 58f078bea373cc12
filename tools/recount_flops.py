"""One-off: recounted the FLOPs of the committed results-table rows when the FLOP definition gained attention products.

FLOPs are derived from the saved models, not measured, so when their definition changes the committed
results can be brought up to date without re-running compression (hours on 2 cores):

    python -m tools.recount_flops benchmarks/results/agnews_minilm_scratch_deep.json ...

For each result it loads the teacher (`compression.model`) and the student (`benchmarks/runs/<name>/student.keras`),
rebuilt at the timed sequence length when the result has one, recounts `model_flops`, and rewrites the FLOP
fields (report FLOPs and reduction, `flops_timed`, each precision's `flop_ratio` and
`speedup_over_flop_ratio`) atomically. Latencies, accuracies and parameters are left as measured. The
result gets a `flops_recounted` entry saying when and why. A result whose run folder has no student is
skipped with a message (the run folders are not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"

DEFINITION = (
    "model_flops: Dense/Conv2D multiply-adds x2, transformer encoders' dense parts at every token plus the "
    "attention score and value products (L^2 x heads x (key_dim + value_dim) multiply-adds)"
)


def recount(result_path: Path) -> bool:
    import keras

    import rmtkd_tf  # noqa: F401  (registers the factorized layers for loading)
    from rmtkd_tf.flops import model_flops
    from rmtkd_tf.io import write_json

    result = json.loads(result_path.read_text())
    student_path = HERE / "runs" / result["name"] / "student.keras"
    teacher_path = ROOT / result["compression"]["model"]
    if not student_path.exists() or not teacher_path.exists():
        print(f"{result_path.name}: skipped (no {student_path if not student_path.exists() else teacher_path})")
        return False
    models = {"teacher": keras.saving.load_model(teacher_path, compile=False),
              "student": keras.saving.load_model(student_path, compile=False)}
    report = result["compression"]
    for who, model in models.items():
        report[who]["flops"] = int(model_flops(model))
    t, s = report["teacher"]["flops"], report["student"]["flops"]
    report["flop_reduction"] = 1.0 - s / t if t else None
    timed = models
    if result.get("latency_seq_len"):
        from rmtkd_tf.transformers import with_sequence_length

        timed = {who: with_sequence_length(model, result["latency_seq_len"]) for who, model in models.items()}
    flops = {who: int(model_flops(model)) for who, model in timed.items()}
    before = result.get("flops_timed")
    result["flops_timed"] = flops
    add_flop_ratios(result.get("host_latency", {}), flops)
    result["flops_recounted"] = {"date": time.strftime("%Y-%m-%d"), "definition": DEFINITION,
                                 "flops_timed_before": before}
    write_json(result_path, result)
    print(f"{result_path.name}: flops_timed {before} -> {flops}")
    return True


def add_flop_ratios(latency, flops):
    """Add `flop_ratio` and `speedup_over_flop_ratio` to each precision's teacher/student comparison (version 1)."""
    for entry in latency.values():
        entry["flop_ratio"] = flops["teacher"] / max(flops["student"], 1)
        speedup = entry.get("ratios", {}).get("median_latency_a_over_b")
        if speedup:
            entry["speedup_over_flop_ratio"] = speedup / entry["flop_ratio"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="benchmarks/results/<name>.json of a version-1 compress run")
    args = parser.parse_args(argv)
    for path in args.results:
        recount(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
