"""`rmtkd_tf.tensorboard`: a run's events, read back from the event files."""

from types import SimpleNamespace

import numpy as np

from rmtkd_tf.progress import RunLog
from rmtkd_tf.tensorboard import TensorBoardLog, read_histograms, read_scalars


def _decision(path, eigenvalues, rule_rank, lambda_plus):
    return SimpleNamespace(path=path, eigenvalues=np.asarray(eigenvalues), rule_rank=rule_rank,
                           noise={"lambda_plus": lambda_plus})


def test_events_become_scalars_and_histograms(tmp_path):
    log = RunLog(quiet=True)
    board = log.add_listener(TensorBoardLog(tmp_path / "tb"))
    log.event("analysis", step=0, decisions=[_decision("fc1", [100.0, 10.0, 1.0, 0.1, 0.0], 2, 1.0),
                                             SimpleNamespace(path="skipped", eigenvalues=None, rule_rank=None, noise=None)])
    log.event("search", evaluation=1, params=500, flops=900, val_accuracy=88.0, drop=2.0)
    log.event("epoch", stage="attempt 1", epoch=1, logs={"loss": 0.9})
    log.event("epoch", stage="attempt 1", epoch=2, logs={"loss": 0.7})
    log.event("attempt", step=1, ranks={"fc1": 2}, params=500, flops=900, val_accuracy_after_surgery=80.0,
              val_accuracy=89.0, drop=1.0, accepted=True, losses={"loss": 0.7})
    board.close()

    scalars = read_scalars(tmp_path / "tb")
    assert scalars["signal_rank/fc1"] == [(0, 2.0)]
    assert scalars["mp_edge_log10/fc1"] == [(0, 0.0)]
    assert scalars["search/val_accuracy_before_training"] == [(1, 88.0)]
    assert scalars["distillation/loss"] == [(1, 0.8999999761581421), (2, 0.699999988079071)]
    assert scalars["rank/fc1"] == [(1, 2.0)]
    assert scalars["validation/accuracy"] == [(1, 89.0)] and scalars["validation/accepted"] == [(1, 1.0)]
    assert scalars["model/params"] == [(1, 500.0)]
    histograms = read_histograms(tmp_path / "tb")
    (step, buckets), = histograms["spectrum/fc1"]
    assert step == 0 and sum(row[2] for row in buckets) == 4  # the 4 positive eigenvalues, in log10
    assert buckets[0][0] == -1.0 and buckets[-1][1] == 2.0
    assert "spectrum/skipped" not in histograms


def test_iterative_steps_carry_the_ranks_of_accepted_steps_only(tmp_path):
    board = TensorBoardLog(tmp_path)
    step = dict(flops=10, val_accuracy_after_surgery=None, val_accuracy=90.0, drop=0.0, losses={})
    board.on_event("step", dict(step=1, ranks={"a": 4}, params=100, accepted=True, **step))
    board.on_event("step", dict(step=2, ranks={"b": 3}, params=90, accepted=False, **step))
    board.close()
    scalars = read_scalars(tmp_path)
    assert scalars["rank/a"] == [(1, 4.0), (2, 4.0)]
    assert "rank/b" not in scalars
