"""`compress --strategy`: the same ranks, covariances and (within tolerance) student on one device, on two logical
CPU devices (MirroredStrategy) and on two local workers (MultiWorkerMirroredStrategy over loopback).

The distributed runs need processes of their own (tests/distribute_helpers.py); they use a tiny CNN, 1 epoch.
The kill-and-resume test takes longer and runs only with RMTKD_TF_SLOW_DISTRIBUTE=1.
"""

import json
import os
import signal
import time

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cli.main import cli
from rmtkd_tf.collection import CovarianceAccumulator, collect_activations, merge_states
from rmtkd_tf.distribute import is_chief, replicas, resolve_strategy
from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.io import load_model

from distribute_helpers import (
    COLLECTED, load_stats, make_tiny_task, run_compress, start_workers, student_weights,
)

CLI_ARGS = ["--target-params", "0.6", "--distillation-epochs", "1", "--no-export", "-q"]


def test_strategy_names():
    assert resolve_strategy("one-device") is tf.distribute.get_strategy()
    assert resolve_strategy(None) is tf.distribute.get_strategy()
    assert is_chief(resolve_strategy("auto")) and replicas(resolve_strategy("auto")) == 1  # no GPU here
    with pytest.raises(RMTKDError, match="strategy must be one of"):
        resolve_strategy("tpu")


def test_multi_worker_needs_tf_config(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(RMTKDError, match="TF_CONFIG"):
        resolve_strategy("multi-worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    result = CliRunner().invoke(cli, ["compress", "m.keras", "--data", "d.npz", "-o", str(tmp_path / "o"),
                                      "--strategy", "multi-worker"])
    assert result.exit_code == 1 and "TF_CONFIG is not valid JSON" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_merged_replica_states_equal_one_accumulator():
    """Per-replica statistics (each with its own shift, one of them empty) merge into exactly the statistics of
    one accumulator that saw every sample: count, mean, covariance and the effective sample size."""
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 1.0, size=(40, 6, 3)) + 3 * rng.normal(size=(40, 1, 3))  # 40 examples of 6 correlated positions
    w = (rng.random((40, 6)) > 0.2).astype("float64")  # some padding
    whole = CovarianceAccumulator(3)
    whole.update(tf.constant(x), tf.constant(w))
    parts = []
    for rows in (slice(0, 15), slice(15, 15), slice(15, 40)):
        acc = CovarianceAccumulator(3)
        acc.update(tf.constant(x[rows]), tf.constant(w[rows]))
        parts.append(acc.state())
    merged = merge_states(parts)
    n, mean, covariance, _ = whole.numpy()
    n2, mean2, covariance2, _ = whole.numpy(merged)
    assert n == n2 and np.allclose(mean, mean2, atol=1e-12) and np.allclose(covariance, covariance2, atol=1e-12)
    one, split = whole.effective_sample_size(), whole.effective_sample_size(merged)
    assert (one.n_examples, one.n_samples) == (split.n_examples, split.n_samples) == (40, int(w.sum()))
    assert one.design_effect == pytest.approx(split.design_effect, rel=1e-9)
    assert one.design_effect > 2.0  # the positions of an example are correlated
    # Adding the moment products of replicas with different shifts as they are would be wrong, and is seen:
    naive = dict(merged, moment_products=sum(p["moment_products"] for p in parts))
    assert whole.effective_sample_size(naive).design_effect != pytest.approx(one.design_effect, rel=1e-3)


def test_python_api_takes_a_strategy_object(monkeypatch):
    """`rmtkd_tf.compress(..., strategy=...)`: the run is made in the strategy's scope (here one replica), the
    ranks are those of a run without it, and the student comes back outside the strategy."""
    import keras

    import rmtkd_tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype("float32")
    y = x[:, :3].argmax(axis=1)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(3)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, verbose=0)
    settings = dict(target_params=0.6, distillation_epochs=1, verbose=0)
    _, plain = rmtkd_tf.compress(model, x, y, **settings)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    import rmtkd_tf.distribute as distribute

    adopted = []
    adopt = distribute.adopt
    monkeypatch.setattr(distribute, "adopt", lambda m, s: adopted.append(adopt(m, s)) or adopted[-1])
    student, report = rmtkd_tf.compress(model, x, y, strategy=strategy, **settings)
    assert [m._distribute_strategy for m in adopted] == [strategy]  # the run's teacher lives in the scope
    assert report["layers"] == plain["layers"] and report["layers"]
    assert getattr(student, "_distribute_strategy", None) is None
    assert getattr(model, "_distribute_strategy", None) is None  # the caller's model is copied, not moved


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("distribute")
    model_path, data_path = make_tiny_task(root)
    one = root / "one-device"
    run_compress([model_path, "--data", data_path, "-o", one, *CLI_ARGS])
    model = load_model(model_path)
    stats = collect_activations(model, np.load(data_path)["x_train"][:COLLECTED], batch_size=16)
    return model_path, data_path, one, stats


def _assert_same_as_one_device(tiny, out, stats_files):
    _, _, one, reference = tiny
    expected = json.loads((one / "report.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert report["layers"] == expected["layers"]  # the same ranks
    assert report["student"]["params"] == expected["student"]["params"]
    decisions = {d["path"]: d for d in json.loads((out / "state.json").read_text())["decisions"]}
    for d in json.loads((one / "state.json").read_text())["decisions"]:
        assert decisions[d["path"]]["rule_rank"] == d["rule_rank"]
        assert decisions[d["path"]]["n_effective"] == d["n_effective"]
    for path in stats_files:
        stats, count = load_stats(path)
        assert count == 2
        for layer, expected_stats in reference.items():
            got = stats[layer]
            assert int(got["n_samples"]) == expected_stats.n_samples
            assert int(got["n_effective"]) == expected_stats.n_effective
            # Each replica's float32 forward pass runs on part of the batch; on some CPUs its kernels round
            # differently from the whole batch's (AMD EPYC: 2.5e-8 of the covariance's scale; an Intel build
            # machine agreed bit for bit), so the float64 sums agree to float32 rounding. A lost or doubled batch,
            # or a wrong weighting, would be off by 1e-2 of the scale or more.
            scale = np.abs(expected_stats.covariance).max()
            np.testing.assert_allclose(got["covariance"], expected_stats.covariance, rtol=0, atol=1e-6 * scale)
            mean_scale = max(1.0, np.abs(expected_stats.mean).max())
            np.testing.assert_allclose(got["mean"], expected_stats.mean, rtol=0, atol=1e-6 * mean_scale)
    # The student: distilled on the same global batches (SelfDistiller divides each replica's loss by the replica
    # count); tf.data shuffles in another order once the data set is distributed, so the weights differ by a few
    # learning-rate steps (measured: at most 4e-3 after 4 steps at 1e-3), not by rounding.
    for got, want in zip(student_weights(out), student_weights(one)):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-2)
    assert abs(report["student"]["test_accuracy"] - expected["student"]["test_accuracy"]) <= 2.0


def test_mirrored_over_two_logical_cpus(tiny, tmp_path):
    model_path, data_path, _, _ = tiny
    out, stats = tmp_path / "mirrored", tmp_path / "stats.npz"
    run_compress([model_path, "--data", data_path, "-o", out, *CLI_ARGS], "mirrored", logical_cpus=2,
                 stats_path=stats)
    _assert_same_as_one_device(tiny, out, [stats])


def _wait(processes, timeout):
    deadline = time.time() + timeout
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=max(deadline - time.time(), 1)))
        except Exception:
            for p in processes:
                p.kill()
            raise
    return codes


def test_two_local_workers(tiny, tmp_path):
    model_path, data_path, _, _ = tiny
    out = tmp_path / "multi-worker"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    workers = start_workers([model_path, "--data", data_path, "-o", out, *CLI_ARGS], log_dir=tmp_path,
                            stats_path=tmp_path / "stats{index}.npz", TMPDIR=str(scratch))
    codes = _wait(workers, 600)
    assert codes == [0, 0], (tmp_path / "worker0.log").read_text()[-2000:] + (tmp_path / "worker1.log").read_text()[-2000:]
    _assert_same_as_one_device(tiny, out, [tmp_path / "stats0.npz", tmp_path / "stats1.npz"])
    # Only the chief wrote the run folder (no second lock, no stray file); the other worker's temporary folder
    # is gone.
    assert sorted(os.listdir(out)) == ["checkpoints", "fingerprint.json", "history.json", "report", "report.json",
                                       "report.md", "state.json", "student.keras"]
    assert os.listdir(scratch) == []
    assert "WARNING:tensorflow" not in (tmp_path / "worker0.log").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RMTKD_TF_SLOW_DISTRIBUTE"), reason="set RMTKD_TF_SLOW_DISTRIBUTE=1 (~2 min)")
def test_resume_after_a_worker_is_killed(tmp_path):
    """Kill worker 1 mid-distillation, stop the chief, restart both with --resume: the run continues from the
    chief's last epoch checkpoint and finishes with the ranks of an uninterrupted run."""
    model_path, data_path = make_tiny_task(tmp_path, n=3000)
    out = tmp_path / "run"
    args = [model_path, "--data", data_path, "-o", out, "--target-params", "0.6", "--distillation-epochs", "6",
            "--batch-size", "32", "--no-export"]
    workers = start_workers(args, log_dir=tmp_path)
    deadline = time.time() + 300
    done = 0
    while time.time() < deadline and done < 2:
        time.sleep(0.5)
        try:
            attempts = json.loads((out / "state.json").read_text()).get("attempts", [])
            done = attempts[-1].get("epochs_done", 0) if attempts else 0
        except (OSError, ValueError):
            pass
        assert workers[0].poll() is None, (tmp_path / "worker0.log").read_text()[-2000:]
    assert done >= 2, "the chief never checkpointed an epoch"
    workers[1].send_signal(signal.SIGKILL)
    try:
        workers[0].wait(timeout=30)  # stuck in (or failing) its next collective operation
    except Exception:
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait()
    state = json.loads((out / "state.json").read_text())
    assert state["stopped"] is None and state["attempts"][-1]["epochs_done"] < 6
    resumed = start_workers(args + ["--resume"], log_dir=tmp_path)
    codes = _wait(resumed, 600)
    log = (tmp_path / "worker0.log").read_text()
    assert codes == [0, 0], log[-2000:] + (tmp_path / "worker1.log").read_text()[-2000:]
    assert f"epochs {state['attempts'][-1]['epochs_done'] + 1}-6" in log
    final = json.loads((out / "state.json").read_text())
    assert final["attempts"][-1]["epochs_done"] == 6 and final["stopped"].startswith("target reached")
    report = json.loads((out / "report.json").read_text())
    assert report["layers"] and report["student"]["params"] < report["teacher"]["params"]
