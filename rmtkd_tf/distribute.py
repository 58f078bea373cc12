"""Running a compression on `tf.distribute`: several devices of one host, or several hosts.

`resolve_strategy` turns the CLI's `--strategy` names (or a `tf.distribute.Strategy`) into a
strategy; `strategy_scope` enters it; `adopt` rebuilds a model created elsewhere inside it (Keras
needs a model's variables to be created in the scope of the strategy that trains it). Inside the
scope, `SelfDistiller` divides each replica's loss by the replica count (the optimizer sums the
replicas' gradients), `rmtkd_tf.collection` keeps per-replica float64 statistics and merges them
exactly, and Keras shards the fine-tuning data across workers (`tf.data` auto-sharding by data).

Multi-worker (`MultiWorkerMirroredStrategy`, one process per host, `TF_CONFIG` set for each):
every worker runs the same command; the chief (task `chief`, else `worker` 0) owns the run folder
(lock, fingerprint, state, checkpoints, outputs); the other workers write into a temporary folder
of their own (`worker_run_folder`, as Keras recommends), seeded on `--resume` with a copy of the
chief's state and checkpoints, so the run folder must be readable by every worker (one host, or a
shared file system). Every worker scores validation examples on its own copy of the (synchronised)
weights, so all of them take the same decisions.

>>> resolve_strategy("one-device") is tf.distribute.get_strategy()
True
>>> is_chief(resolve_strategy(None)), replicas(None)
(True, 1)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from rmtkd_tf.errors import RMTKDError

STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker")


def resolve_strategy(strategy=None):
    """A `tf.distribute.Strategy` for `strategy`: an instance (returned as is), None (the current one), or a name.

    Names: `"one-device"` (TensorFlow's default strategy: one device, what runs without a strategy),
    `"mirrored"` (`MirroredStrategy` over every GPU, else over every logical CPU device), `"multi-worker"`
    (`MultiWorkerMirroredStrategy`, configured by the `TF_CONFIG` environment variable; create it before
    anything else in the program runs TensorFlow), `"auto"` (mirrored when more than one GPU is visible,
    else one-device).
    """
    if strategy is None:
        return tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy not in STRATEGIES:
        raise RMTKDError(f"strategy must be one of {', '.join(STRATEGIES)} or a tf.distribute.Strategy, got {strategy!r}")
    if strategy == "auto":
        strategy = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "one-device"
    if strategy == "one-device":
        return tf.distribute.get_strategy()
    if strategy == "mirrored":
        if "mirrored" not in _CREATED:  # one per process: two would share TensorFlow's collective keys
            devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
                d.name for d in tf.config.list_logical_devices("CPU")]
            _CREATED["mirrored"] = tf.distribute.MirroredStrategy(devices)
        return _CREATED["mirrored"]
    config = os.environ.get("TF_CONFIG")
    if not config:
        raise RMTKDError("--strategy multi-worker needs TF_CONFIG (the cluster and this worker's task) in the environment")
    try:
        task = json.loads(config)["task"]
        task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError):
        raise RMTKDError("TF_CONFIG is not valid JSON with a cluster and a task {\"type\": ..., \"index\": ...}") from None
    if "multi-worker" not in _CREATED:  # one per process: it configures TensorFlow's collective ops at start-up
        try:
            _CREATED["multi-worker"] = tf.distribute.MultiWorkerMirroredStrategy()
        except (RuntimeError, ValueError) as error:
            raise RMTKDError(f"cannot start the multi-worker strategy: {str(error).splitlines()[0]}") from None
    return _CREATED["multi-worker"]


_CREATED = {}  # strategies made from a name, by name


def is_default(strategy):
    """True for TensorFlow's default (no-op) strategy, or None."""
    return strategy is None or type(strategy).__name__ == "_DefaultDistributionStrategy"


def replicas(strategy):
    """Number of replicas kept in sync (1 for the default strategy)."""
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def spans_workers(strategy):
    """True when `strategy` has replicas in other processes (multi-worker)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return replicas(strategy) > len(strategy.extended.worker_devices)


def worker_task(strategy):
    """`(task_type, task_id)` of this process in a multi-worker cluster, else `(None, None)`."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not spans_workers(strategy):
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy):
    """Whether this process writes the run folder: always outside multi-worker; there the `chief` task,
    or `worker` 0 when the cluster has no chief."""
    task_type, task_id = worker_task(strategy)
    if task_type is None or task_type == "chief":
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and int(task_id) == 0 and "chief" not in cluster


@contextlib.contextmanager
def strategy_scope(strategy):
    """`strategy.scope()`, or nothing for the default strategy / None."""
    if strategy is None or is_default(strategy):
        yield strategy
        return
    with strategy.scope():
        yield strategy


def adopt(model, strategy):
    """`model` itself if it belongs to `strategy` (or the strategy is the default), else a copy with the same
    weights whose variables are created in the strategy's scope."""
    if strategy is None or is_default(strategy) or getattr(model, "_distribute_strategy", None) is strategy:
        return model
    import keras

    with strategy.scope():
        copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
        copy.set_weights(model.get_weights())
    return copy


def local_copy(model):
    """A copy of `model` outside any strategy (for saving and TFLite export), or `model` if it has none."""
    if getattr(model, "_distribute_strategy", None) is None:
        return model
    import keras

    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    copy.set_weights(model.get_weights())
    return copy


def predict_locally(model):
    """Whether `model.predict` would shard its inputs across workers (so predictions must be made locally)."""
    return spans_workers(getattr(model, "_distribute_strategy", None))


def local_predict(model, x, batch_size):
    """`model(x)` batch by batch on this process only (no cross-worker traffic), as a NumPy array."""
    import numpy as np

    # Eager calls: a traced function per model and batch shape would retrace for every student.
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(batch_size)
    return np.concatenate([np.asarray(model(batch, training=False)) for batch in dataset], axis=0)


def sync_workers(strategy, failed=False):
    """A barrier: returns, once every worker has reached it, whether none of them came `failed`
    (always True outside multi-worker)."""
    if not spans_workers(strategy):
        return not failed
    flag = tf.constant(float(failed), tf.float32)

    @tf.function
    def total():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, flag))

    return float(strategy.experimental_local_results(total())[0]) == 0.0


@contextlib.contextmanager
def on_every_worker(strategy, context):
    """Enter `context` (e.g. the run folder) on every worker, then wait for all: if it failed on one worker,
    every worker stops (with that worker's error there, a one-line error elsewhere) instead of waiting
    for it in the first collective operation."""
    with contextlib.ExitStack() as stack:
        try:
            value = stack.enter_context(context)
        except BaseException:
            sync_workers(strategy, failed=True)
            raise
        if not sync_workers(strategy):
            raise RMTKDError("another worker could not start the run (see its message); nothing was done here")
        yield value


def distribute_dataset(strategy, dataset):
    """`dataset` split across `strategy`'s replicas; across workers, each worker reads its shard of the data."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def gather_replicas(strategy, tensors_fn):
    """Run `tensors_fn()` on every replica (it reads replica-local values) and stack each result over all
    replicas of all workers (a new first axis of length `replicas(strategy)`), as NumPy arrays."""

    @tf.function
    def gathered():
        values = strategy.run(lambda: [tf.expand_dims(t, 0) for t in tensors_fn()])
        return [strategy.gather(v, axis=0) for v in values]

    return [t.numpy() for t in gathered()]


_COPIED = ("state.json", "history.json", "checkpoints")


@contextlib.contextmanager
def worker_run_folder(output_dir, strategy, resume=False, log=print):
    """A non-chief worker's own run folder: a temporary folder (removed afterwards), seeded on `resume` with
    the chief's state and checkpoints read from `output_dir`. The chief's folder is never written."""
    source = Path(output_dir)
    task_type, task_id = worker_task(strategy)
    scratch = Path(tempfile.mkdtemp(prefix=f"rmtkd-{task_type}{task_id}-"))
    try:
        if resume:
            if not (source / "state.json").exists():
                raise RMTKDError(f"nothing to resume in {source}: no state.json (the chief's run folder must be "
                                 "readable by every worker)")
            for name in _COPIED:
                if (source / name).is_dir():
                    shutil.copytree(source / name, scratch / name)
                elif (source / name).exists():
                    shutil.copy2(source / name, scratch / name)
        log(f"{task_type} {task_id}: not the chief; writing to {scratch} (removed at the end)")
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
