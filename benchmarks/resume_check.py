"""Kill `rmtkd-tf compress` mid-run (SIGKILL), `--resume` it, and compare with an uninterrupted run.

    python benchmarks/resume_check.py          # uses the embedded default model and data

Writes benchmarks/results/resume_check.json: the per-layer ranks and test accuracy of both runs and
the max difference between the two students' predictions on the packaged test images.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARGS = ["compress", "--schedule", "iterative", "--max-steps", "4", "--seed", "0", "--no-export", "-q"]


def cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=HERE.parent, **kw)


def main():
    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="rmtkd-resume-"))
    full, killed = tmp / "full", tmp / "killed"
    assert cli([*ARGS, "-o", str(full)]).wait() == 0

    proc = cli([*ARGS, "-o", str(killed)], start_new_session=True)
    state = killed / "state.json"
    # Kill as soon as step 2 has been checkpointed, while step 3 is running.
    while proc.poll() is None:
        if state.exists():
            try:
                if json.loads(state.read_text())["next_step"] >= 3:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
            except (json.JSONDecodeError, KeyError):
                pass
        time.sleep(0.2)
    proc.wait()
    killed_at = json.loads(state.read_text())["next_step"]
    assert cli([*ARGS, "-o", str(killed), "--resume"]).wait() == 0

    import keras

    import rmtkd_tf  # noqa: F401

    data = np.load(HERE.parent / "rmtkd_tf" / "assets" / "cifar10_sample.npz")
    a = keras.models.load_model(full / "student.keras").predict(data["x_test"], verbose=0)
    b = keras.models.load_model(killed / "student.keras").predict(data["x_test"], verbose=0)
    ra, rb = (json.loads((d / "report.json").read_text()) for d in (full, killed))
    result = {
        "command": "python benchmarks/resume_check.py",
        "date": time.strftime("%Y-%m-%d"),
        "cli_args": ARGS,
        "killed_with": "SIGKILL",
        "killed_before_step": killed_at,
        "same_layers_and_ranks": ra["layers"] == rb["layers"],
        "layers": ra["layers"],
        "test_accuracy": {"uninterrupted": ra["student"]["test_accuracy"], "resumed": rb["student"]["test_accuracy"]},
        "max_abs_prediction_difference": float(np.max(np.abs(a - b))),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "resume_check.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = result["same_layers_and_ranks"] and result["max_abs_prediction_difference"] < 1e-4
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
