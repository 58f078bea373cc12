"""`rmtkd_tf.progress`: progress bars with ETA on a terminal, plain timed lines elsewhere, nothing under -q."""

import numpy as np
import pytest

import keras

from rmtkd_tf.progress import FitProgress, Progress, RunLog, emit, progress_of


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_lines_at_most_every_interval_with_eta_and_one_line_at_the_end():
    clock, lines = Clock(), []
    with Progress("collecting", total=10, unit="batch", mode="lines", write=lines.append, interval=10.0,
                  clock=clock) as bar:
        for step in range(10):
            clock.now += 3.0
            bar.update(loss=0.5)
    # 3 s per batch: lines at 12 s (4 done) and 24 s (8 done), none at the end of the loop, then the summary.
    assert lines[0] == "collecting: 4/10 batches, 12.0 s elapsed, ETA 18.0 s, loss 0.5"
    assert lines[1].startswith("collecting: 8/10 batches, 24.0 s elapsed, ETA 6.0 s")
    assert lines[2] == "collecting: 10 batches in 30.0 s"
    assert len(lines) == 3


def test_eta_is_unknown_before_the_first_unit_and_without_a_total():
    clock = Clock()
    bar = Progress("x", total=None, mode="off", clock=clock)
    clock.now = 5.0
    assert bar.eta() is None
    bar.update()
    assert bar.eta() is None
    sized = Progress("y", total=4, mode="off", clock=clock)
    assert sized.eta() is None
    clock.now += 2.0
    sized.update()
    assert sized.eta() == pytest.approx(6.0)


def test_quiet_log_prints_nothing_and_still_passes_events(capsys):
    seen = []

    class Listener:
        def on_event(self, name, values):
            seen.append((name, values))

    log = RunLog(quiet=True, listeners=[Listener()])
    log("hello")
    with log.progress("stage", 3, "batch") as bar:
        for _ in range(3):
            bar.update()
    emit(log, "search", evaluation=1)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert seen == [("search", {"evaluation": 1})]


def test_terminal_mode_draws_a_keras_progbar_on_stdout(capsys):
    log = RunLog(interactive=True)
    with log.progress("distilling", 5, "batch") as bar:
        for _ in range(5):
            bar.update(loss=1.0)
    captured = capsys.readouterr()
    assert "distilling: 5 batches" in captured.err
    assert "5/5" in captured.out and "batch" in captured.out


def test_not_a_terminal_means_plain_lines(capsys):
    log = RunLog()  # pytest captures stdout and stderr: neither is a TTY
    assert not log.interactive
    with log.progress("search", 2, "evaluation") as bar:
        bar.update()
        bar.update()
    assert "search: 2 evaluations in" in capsys.readouterr().err


def test_progress_of_a_plain_callable_is_silent():
    lines = []
    with progress_of(lines.append, "x", 2) as bar:
        bar.update()
    emit(lines.append, "search", evaluation=1)  # no event handler: nothing happens
    assert lines == []


def test_fit_progress_shows_batches_and_emits_one_event_per_epoch():
    lines, events = [], []

    class Listener:
        def on_event(self, name, values):
            events.append((name, values))

    log = RunLog(sink=lines.append, interactive=False, interval=0.0, listeners=[Listener()])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    x, y = np.zeros((8, 3), "float32"), np.zeros((8, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[FitProgress(log, "fitting", 2, 2, stage="test")])
    assert [name for name, _ in events] == ["epoch", "epoch"]
    assert events[1][1]["epoch"] == 2 and events[1][1]["stage"] == "test" and "loss" in events[1][1]["logs"]
    assert any(line.startswith("fitting: epoch 2/2: 2 batches in") for line in lines)
