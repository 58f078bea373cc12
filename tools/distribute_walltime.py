"""The same `rmtkd-tf compress` on one device, on two logical CPU devices (MirroredStrategy) and on two local
workers (MultiWorkerMirroredStrategy over loopback): wall time, ranks, accuracy, student difference.

    python -m tools.distribute_walltime [--epochs 1] [--out benchmarks/results/distribute_walltime.json]

(run from the repository root: it reuses the worker launcher of tests/distribute_helpers.py)

Runs the embedded default (the packaged CIFAR-10 CNN and its CIFAR-10 sample, with its demo settings) without
export. Every variant is a fresh process (times include starting Python and TensorFlow, about the same for all).
On one host with two cores the distributed runs cannot be faster: the point is that they choose the same ranks.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.distribute_helpers import compress_command, environment, start_workers, student_weights

REPO = Path(__file__).resolve().parents[1]


def _summary(out, wall):
    report = json.loads((out / "report.json").read_text())
    return {
        "wall_s": round(wall, 1),
        "compression_wall_s": report["compression_wall_s"],
        "ranks": {path: entry["rank"] for path, entry in report["layers"].items()},
        "student_params": report["student"]["params"],
        "student_val_accuracy": report["student"]["val_accuracy"],
        "student_test_accuracy": report["student"]["test_accuracy"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "distribute_walltime.json"))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rmtkd-distribute-bench-"))
    cli_args = ["--distillation-epochs", str(args.epochs), "--no-export", "-q"]
    results = {}
    try:
        for name, strategy, cpus in (("one-device", "one-device", 1), ("mirrored, 2 logical CPU devices", "mirrored", 2)):
            out = root / strategy
            t0 = time.time()
            subprocess.run(compress_command([*cli_args, "-o", out], strategy, cpus), cwd=REPO, env=environment(),
                           check=True, capture_output=True, text=True)
            results[name] = _summary(out, time.time() - t0)
            print(name, results[name], flush=True)
        out = root / "multi-worker"
        t0 = time.time()
        workers = start_workers([*cli_args, "-o", out], log_dir=root)
        codes = [w.wait() for w in workers]
        if codes != [0, 0]:
            raise SystemExit(f"workers exited with {codes}: see {root}/worker*.log")
        results["2 workers on loopback"] = _summary(out, time.time() - t0)
        print("2 workers", results["2 workers on loopback"], flush=True)
        reference = student_weights(root / "one-device")
        for name, folder in (("mirrored, 2 logical CPU devices", "mirrored"), ("2 workers on loopback", "multi-worker")):
            weights = student_weights(root / folder)
            results[name]["student_max_weight_difference_vs_one_device"] = float(
                max(np.abs(a - b).max() for a, b in zip(weights, reference)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    payload = {
        "command": f"rmtkd-tf compress {' '.join(cli_args)} --strategy one-device|mirrored|multi-worker "
                   "(embedded default: packaged CIFAR-10 CNN + sample, demo settings)",
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, no GPU",
        "results": results,
    }
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
