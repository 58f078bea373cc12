"""`compress --tensorboard DIR`: a run's events as TensorBoard summaries.

`TensorBoardLog` listens to a `rmtkd_tf.progress.RunLog` (`log.add_listener(...)`) and writes,
with `tf.summary`, into `DIR`:

- `spectrum/<layer>`: a histogram of log10 of the layer's covariance eigenvalues at each analysis
  (step 0 for the budgeted schedule's one analysis, the step number for the iterative loop), and the
  scalars `signal_rank/<layer>` (the rank rule's rank) and `mp_edge_log10/<layer>` (log10 of λ+);
- `search/val_accuracy_before_training`, `search/params`: one point per evaluation of the budgeted search;
- `distillation/<loss>`: the distillation losses of every epoch (epochs counted across the run);
- `rank/<layer>`, `model/params`, `model/flops`, `validation/accuracy`, `validation/accuracy_after_surgery`,
  `validation/drop`, `validation/accepted`: per attempt (budgeted) or step (iterative); an iterative
  run's ranks are the model's after that step (a rolled-back step leaves them as they were); a query/key
  pair factorized jointly (`--joint-qk`) shows its joint rank (heads x per-head rank), as the report does.

`tensorboard --logdir DIR` shows them; `read_scalars(DIR)` reads the scalars back. The summaries are
written with `tf.summary.write` and the scalar / histogram plugins' metadata, which is what
`tf.summary.scalar` / `tf.summary.histogram` write when the `tensorboard` package is installed: TensorFlow
2.21 no longer installs it, and a log folder needs no TensorBoard to be written.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

HISTOGRAM_BUCKETS = 30  # what tf.summary.histogram uses by default


def _metadata(plugin, description=None):
    # The plugins' data protos (version 0) serialize to empty bytes.
    return summary_pb2.SummaryMetadata(summary_description=description or "",
                                       plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=b""))


def write_scalar(tag, value, step):
    """A scalar TensorBoard's Scalars tab shows (the default writer of `tf.summary` must be set)."""
    return tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=_metadata("scalars"))


def write_histogram(tag, values, step, description=None, buckets=HISTOGRAM_BUCKETS):
    """A histogram TensorBoard's Histograms / Distributions tabs show: `[left, right, count]` rows."""
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        rows = np.array([[low - 0.5, high + 0.5, float(values.size)]])
    else:
        counts, edges = np.histogram(values, bins=buckets, range=(low, high))
        rows = np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)
    return tf.summary.write(tag, tf.constant(rows, tf.float64), step=step, metadata=_metadata("histograms", description))


class TensorBoardLog:
    """A `RunLog` listener writing the run's events to a TensorBoard log folder.

    Args:
        logdir: the folder (created); its event files are TensorBoard's own.

    >>> import tempfile
    >>> from rmtkd_tf.progress import RunLog
    >>> folder = tempfile.mkdtemp()
    >>> log = RunLog(quiet=True)
    >>> board = log.add_listener(TensorBoardLog(folder))
    >>> log.event("search", evaluation=1, params=1000, flops=2000, val_accuracy=91.5, drop=0.5)
    >>> board.close()
    >>> read_scalars(folder)["search/val_accuracy_before_training"]
    [(1, 91.5)]
    """

    def __init__(self, logdir):
        self.logdir = os.fspath(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        self.writer = tf.summary.create_file_writer(self.logdir)
        self.epoch = 0
        self.ranks = {}  # the model's current rank per factorized layer (iterative: after accepted steps)

    def on_event(self, name, values):
        handler = getattr(self, f"_on_{name}", None)
        if handler is not None:
            with self.writer.as_default():
                handler(**values)
            self.writer.flush()

    def _on_analysis(self, step, decisions):
        for decision in decisions:
            eigenvalues = getattr(decision, "eigenvalues", None)
            if eigenvalues is None:
                continue
            positive = np.asarray(eigenvalues, dtype=np.float64)
            positive = positive[positive > 0]
            if positive.size:
                write_histogram(f"spectrum/{decision.path}", np.log10(positive), step=step,
                                description="log10 of the covariance eigenvalues")
            if decision.rule_rank is not None:
                write_scalar(f"signal_rank/{decision.path}", decision.rule_rank, step=step)
            if decision.noise and decision.noise.get("lambda_plus", 0) > 0:
                write_scalar(f"mp_edge_log10/{decision.path}", np.log10(decision.noise["lambda_plus"]), step=step)

    def _on_search(self, evaluation, params, flops, val_accuracy, drop):
        if val_accuracy is not None:
            write_scalar("search/val_accuracy_before_training", val_accuracy, step=evaluation)
        write_scalar("search/params", params, step=evaluation)

    def _on_epoch(self, stage, epoch, logs):
        self.epoch += 1
        for name, value in logs.items():
            write_scalar(f"distillation/{name}", value, step=self.epoch)

    def _on_attempt(self, step, ranks, params, flops, val_accuracy_after_surgery, val_accuracy, drop, accepted, losses):
        self._step_scalars(step, ranks, params, flops, val_accuracy_after_surgery, val_accuracy, drop, accepted)

    def _on_step(self, step, ranks, params, flops, val_accuracy_after_surgery, val_accuracy, drop, accepted, losses):
        if accepted:
            self.ranks.update(ranks)
        self._step_scalars(step, self.ranks, params, flops, val_accuracy_after_surgery, val_accuracy, drop, accepted)

    def _step_scalars(self, step, ranks, params, flops, acc_surgery, acc, drop, accepted):
        for path, rank in ranks.items():
            write_scalar(f"rank/{path}", rank, step=step)
        write_scalar("model/params", params, step=step)
        if flops is not None:
            write_scalar("model/flops", flops, step=step)
        for name, value in (("accuracy", acc), ("accuracy_after_surgery", acc_surgery), ("drop", drop)):
            if value is not None:
                write_scalar(f"validation/{name}", value, step=step)
        write_scalar("validation/accepted", float(bool(accepted)), step=step)

    def close(self):
        self.writer.close()


def read_histograms(logdir):
    """`tag -> [(step, [[left, right, count], ...]), ...]` of every histogram in the event files of `logdir`."""
    return _read(logdir, "histograms", lambda array: array.tolist())


def read_scalars(logdir):
    """`tag -> [(step, value), ...]` of every scalar in the event files of `logdir` (and its subfolders)."""
    return _read(logdir, "scalars", float)


def _read(logdir, plugin, convert):
    found = {}
    for root, _, files in os.walk(os.fspath(logdir)):
        for name in sorted(files):
            if "tfevents" not in name:
                continue
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                for value in event.summary.value:
                    if value.HasField("tensor") and value.metadata.plugin_data.plugin_name == plugin:
                        found.setdefault(value.tag, []).append((int(event.step), convert(tf.make_ndarray(value.tensor))))
    return found
