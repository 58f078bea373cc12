"""What a run tells the person following it: timestamped lines, progress bars with ETA, and events.

`RunLog` is the `log` the CLI passes through `compress` / `analyze`: calling it writes one
timestamped line on stderr; `log.progress(label, total, unit)` gives a `Progress` for a stage
(collection batches, search evaluations, distillation batches); `log.event(name, **values)`
tells its listeners (`rmtkd_tf.tensorboard.TensorBoardLog`, the report's `SpectrumRecorder`)
what happened, so the schedules stay free of any display or file format.

How a stage shows:

- on a terminal (stdout and stderr both TTYs): a `keras.utils.Progbar` with ETA;
- otherwise (a log file, CI): a plain line at most every `interval` seconds (done, elapsed, ETA)
  and one line when the stage ends, with its elapsed time;
- `quiet=True`: nothing (errors still reach stderr).

Library code receives any callable as `log` (often `print`); `progress_of(log, ...)` and
`emit(log, ...)` do nothing special for a callable that is not a `RunLog`.

>>> lines = []
>>> log = RunLog(sink=lines.append, interactive=False, interval=0.0)
>>> with log.progress("collecting", total=4, unit="batch") as bar:
...     for _ in range(4):
...         bar.update()
>>> lines[-1].startswith("collecting: 4 batches in ")
True
"""

from __future__ import annotations

import math
import sys
import time

import keras


class Progress:
    """Progress of one stage of `total` units; use as a context manager, `update()` once per unit done.

    Args:
        label: what the stage does ("collecting activations").
        total: number of units expected (None: unknown, no ETA).
        unit: the unit's name, singular ("batch").
        mode: "bar" (a Keras Progbar), "lines" (plain lines through `write`) or "off".
        write: where "lines" mode writes (a callable taking one string).
        interval: seconds between two plain lines in "lines" mode.
        clock: the time source (for tests).
    """

    def __init__(self, label, total, unit="step", mode="lines", write=print, interval=10.0, clock=time.monotonic):
        self.label, self.total, self.unit, self.mode = label, total, unit, mode
        self.write, self.interval, self.clock = write, float(interval), clock
        self.done = 0
        self.start = clock()
        self.last_line = self.start
        self.bar = None
        self.closed = False
        if mode == "bar":
            self.write(f"{label}: {total if total is not None else '?'} {_plural(unit, total)}")
            # Values (a running mean loss from fit) are shown as given, not averaged again.
            self.bar = keras.utils.Progbar(total, unit_name=unit, stateless_metrics=())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(failed=exc[0] is not None)
        return False

    def update(self, done=None, **values):
        """Set the units done (default: one more); `values` (e.g. loss) are shown beside the bar."""
        self.done = self.done + 1 if done is None else int(done)
        if self.mode == "bar":
            self.bar.update(self.done, values=list(values.items()) or None)
        elif self.mode == "lines":
            now = self.clock()
            finished = self.total is not None and self.done >= self.total
            if now - self.last_line >= self.interval and not finished:
                self.last_line = now
                self.write(self._line(now, values))

    def eta(self, now=None):
        """Seconds left at the mean pace so far, or None (unknown total, nothing done yet)."""
        now = self.clock() if now is None else now
        if self.total is None or self.done <= 0:
            return None
        return max(self.total - self.done, 0) * (now - self.start) / self.done

    def _line(self, now, values):
        of = "" if self.total is None else f"/{self.total}"
        eta = self.eta(now)
        shown = "".join(f", {name} {_short(value)}" for name, value in values.items())
        return (f"{self.label}: {self.done}{of} {_plural(self.unit, self.total)}, {_seconds(now - self.start)} elapsed"
                + ("" if eta is None else f", ETA {_seconds(eta)}") + shown)

    def close(self, failed=False):
        """End the stage: the bar's last update, or one plain line with the elapsed time."""
        if self.closed:
            return
        self.closed = True
        if failed:
            return
        if self.mode == "bar":
            if self.total is None or self.done < self.total:
                self.bar.update(self.done, finalize=True)
        elif self.mode == "lines":
            self.write(f"{self.label}: {self.done} {_plural(self.unit, self.done)} in {_seconds(self.clock() - self.start)}")


class RunLog:
    """The CLI's `log`: `log(message)`, `log.progress(label, total, unit)`, `log.event(name, **values)`.

    Args:
        quiet: no lines and no bars (events still reach the listeners).
        interactive: show progress bars (True) or plain lines (False); None: bars when stdout and
            stderr are both terminals.
        sink: where lines go (a callable taking one string); default: stderr with the seconds since
            the log was made in front.
        interval: seconds between two plain progress lines of one stage.
        listeners: objects with `on_event(name, values)`.
    """

    def __init__(self, quiet=False, interactive=None, sink=None, interval=10.0, listeners=()):
        self.t0 = time.time()
        self.quiet = quiet
        self.interactive = _both_terminals() if interactive is None else bool(interactive)
        self.sink = sink
        self.interval = interval
        self.listeners = list(listeners)

    def __call__(self, message):
        if self.quiet:
            return
        if self.sink is not None:
            self.sink(message)
        else:
            sys.stderr.write(f"[{time.time() - self.t0:7.1f}s] {message}\n")
            sys.stderr.flush()

    def progress(self, label, total, unit="step"):
        """A `Progress` for one stage, shown as this log shows progress."""
        mode = "off" if self.quiet else ("bar" if self.interactive else "lines")
        return Progress(label, total, unit, mode=mode, write=self, interval=self.interval)

    def event(self, name, **values):
        """Tell every listener: `listener.on_event(name, values)`."""
        for listener in self.listeners:
            listener.on_event(name, values)

    def add_listener(self, listener):
        self.listeners.append(listener)
        return listener


def progress_of(log, label, total, unit="step"):
    """`log.progress(...)` when `log` offers progress, else a silent `Progress`."""
    make = getattr(log, "progress", None)
    return make(label, total, unit) if callable(make) else Progress(label, total, unit, mode="off")


def emit(log, name, **values):
    """`log.event(name, **values)` when `log` takes events (a `RunLog`), else nothing."""
    handler = getattr(log, "event", None)
    if callable(handler):
        handler(name, **values)


class FitProgress(keras.callbacks.Callback):
    """A `model.fit` callback: one `Progress` per epoch (batches, ETA, loss), and an `"epoch"` event.

    Args:
        log: the run's log (see `progress_of`, `emit`).
        label: what is trained ("distilling 202,986 params").
        epochs: the last epoch of this fit (for "epoch 2/4").
        steps: batches per epoch.
        stage: recorded in the event (e.g. "attempt 1", "step 3").
    """

    def __init__(self, log, label, epochs, steps, stage=None):
        super().__init__()
        self.log, self.label, self.epochs, self.steps, self.stage = log, label, epochs, steps, stage
        self.current = None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = progress_of(self.log, f"{self.label}: epoch {epoch + 1}/{self.epochs}", self.steps, "batch")

    def on_train_batch_end(self, batch, logs=None):
        if self.current is not None:
            loss = (logs or {}).get("loss")
            self.current.update(batch + 1, **({} if loss is None else {"loss": float(loss)}))

    def on_epoch_end(self, epoch, logs=None):
        if self.current is not None:
            self.current.close()
            self.current = None
        emit(self.log, "epoch", stage=self.stage, epoch=epoch + 1, logs={k: float(v) for k, v in (logs or {}).items()})

    def on_train_end(self, logs=None):
        if self.current is not None:  # interrupted mid-epoch
            self.current.close(failed=True)
            self.current = None


def _both_terminals():
    return all(getattr(stream, "isatty", lambda: False)() for stream in (sys.stdout, sys.stderr))


def _plural(unit, count):
    if count == 1:
        return unit
    return unit + ("es" if unit.endswith(("ch", "sh", "s", "x")) else "s")


def _seconds(value):
    """`12.3 s`, `4 min 05 s`.

    >>> _seconds(12.34), _seconds(245)
    ('12.3 s', '4 min 05 s')
    """
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(round(value)), 60)
    return f"{minutes} min {seconds:02d} s"


def _short(value):
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return str(value)
