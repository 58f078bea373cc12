"""`rmtkd-tf compress --resume` after a SIGKILL mid-run ends where an uninterrupted run ends.

Formerly `benchmarks/resume_check.py` (its committed record: benchmarks/results/resume_check.json). Three
CLI runs of the iterative schedule on the packaged CIFAR-10 model and sample: uninterrupted, killed as
soon as step 2 is checkpointed (while step 3 runs), then resumed. Same layers and ranks, same predictions.
Slow (three real compressions; 234 s wall, 97 s CPU on the shared 2-core build machine): it runs with the suite,
`-m "not slow"` leaves it out.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["compress", "--schedule", "iterative", "--max-steps", "4", "--seed", "0", "--no-export", "-q"]

pytestmark = pytest.mark.slow


def _cli(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, **kw)


def _kill_after_step(proc, state, step, timeout_s=600):
    """SIGKILL `proc`'s process group once `state` says `step` steps are checkpointed; the step it was killed before."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        if state.exists():
            try:
                if json.loads(state.read_text())["next_step"] >= step:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
            except (json.JSONDecodeError, KeyError):
                pass
        time.sleep(0.2)
    proc.wait()
    return json.loads(state.read_text())["next_step"]


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    import keras

    import rmtkd_tf  # noqa: F401  (registers the factorized layers)

    full, killed = tmp_path / "full", tmp_path / "killed"
    assert _cli([*ARGS, "-o", str(full)]).wait() == 0
    proc = _cli([*ARGS, "-o", str(killed)], start_new_session=True)
    killed_before = _kill_after_step(proc, killed / "state.json", 3)
    assert proc.returncode == -signal.SIGKILL and killed_before >= 3  # killed mid-run, not after the end
    assert _cli([*ARGS, "-o", str(killed), "--resume"]).wait() == 0

    reports = [json.loads((folder / "report.json").read_text()) for folder in (full, killed)]
    assert reports[0]["layers"] == reports[1]["layers"]
    assert reports[0]["student"]["test_accuracy"] == reports[1]["student"]["test_accuracy"]
    x = np.load(ROOT / "rmtkd_tf" / "assets" / "cifar10_sample.npz")["x_test"]
    a, b = (keras.models.load_model(folder / "student.keras").predict(x, verbose=0) for folder in (full, killed))
    assert float(np.max(np.abs(a - b))) < 1e-4
