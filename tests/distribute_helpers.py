"""Helpers of tests/test_distribute.py: a tiny task on disk, and runs of `rmtkd-tf compress` in fresh processes.

tf.distribute needs processes of their own: logical CPU devices must be configured before TensorFlow
initialises its devices, and a multi-worker strategy before anything else runs TensorFlow.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# argv: LOGICAL_CPUS STRATEGY STATS_PATH CLI_ARGS...: splits the CPU into LOGICAL_CPUS devices (if > 1), creates
# the strategy, saves the covariances of the model's layers on the data's first COLLECTED training rows under it
# to STATS_PATH ({index} becomes the worker index), then runs `rmtkd-tf compress CLI_ARGS` in the same process.
DISTRIBUTED_RUN = """
import json, os, sys
import numpy as np
import tensorflow as tf
cpus, name, stats_path, args = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
if cpus > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpus)
from rmtkd_tf.distribute import resolve_strategy, strategy_scope
strategy = resolve_strategy(name)
if stats_path != "-":
    from rmtkd_tf.collection import collect_activations
    from rmtkd_tf.io import load_model
    with strategy_scope(strategy):
        model = load_model(args[0])
        stats = collect_activations(model, np.load(args[2])["x_train"][:%d], batch_size=16)
    index = json.loads(os.environ.get("TF_CONFIG", '{"task": {"index": 0}}'))["task"]["index"]
    np.savez(stats_path.format(index=index), replicas=strategy.num_replicas_in_sync,
             **{f"{p}|{k}": getattr(s, k) for p, s in stats.items() for k in ("covariance", "mean", "n_samples", "n_effective")})
from cli.main import main
main(["compress", *args])
"""
COLLECTED = 97  # 6 batches of 16 and one of 1: a replica gets an empty batch
DISTRIBUTED_RUN = DISTRIBUTED_RUN % COLLECTED


def make_tiny_task(root, n=300, seed=0):
    """A small trained CNN classifier (`model.keras`) and its data (`data.npz`) in `root`; returns both paths."""
    import keras

    root = Path(root)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, size=(n, 8, 8, 3)).astype("uint8")
    x[np.arange(n), :, :, y] += 150  # the class is the bright channel: learnable
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Rescaling(1 / 255.0)(inputs)
    h = keras.layers.Conv2D(16, 3, activation="relu", name="conv")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu", name="fc")(h)
    outputs = keras.layers.Dense(3, name="logits")(h)
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[: n - 50], y[: n - 50], epochs=5, verbose=0)
    model.save(root / "model.keras")
    np.savez(root / "data.npz", x_train=x[: n - 50], y_train=y[: n - 50], x_test=x[n - 50:], y_test=y[n - 50:])
    return root / "model.keras", root / "data.npz"


def environment(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="-1")
    env.update(extra)
    return env


def compress_command(cli_args, strategy="one-device", logical_cpus=1, stats_path=None):
    """argv of `rmtkd-tf compress CLI_ARGS --strategy STRATEGY` in a fresh Python (see `DISTRIBUTED_RUN`)."""
    stats_path = stats_path or "-"
    return [sys.executable, "-c", DISTRIBUTED_RUN, str(logical_cpus), strategy, str(stats_path),
            *map(str, cli_args), "--strategy", strategy]


def run_compress(cli_args, strategy="one-device", logical_cpus=1, stats_path=None, timeout=600):
    result = subprocess.run(compress_command(cli_args, strategy, logical_cpus, stats_path), cwd=REPO,
                            env=environment(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(cli_args, count=2, log_dir=None, stats_path=None, **env):
    """`count` processes running the same `compress ... --strategy multi-worker` as one loopback cluster."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(count)]}
    processes = []
    for index in range(count):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        log = open(Path(log_dir) / f"worker{index}.log", "w") if log_dir else subprocess.DEVNULL
        processes.append(subprocess.Popen(compress_command(cli_args, "multi-worker", 1, stats_path), cwd=REPO,
                                          env=environment(TF_CONFIG=config, **env), stdout=log, stderr=subprocess.STDOUT,
                                          text=True))
    return processes


def load_stats(path):
    """`{layer: {covariance, mean, n_samples, n_effective}}` saved by `DISTRIBUTED_RUN`, and its replica count."""
    saved = np.load(path)
    stats = {}
    for key in saved.files:
        if "|" in key:
            layer, name = key.split("|")
            stats.setdefault(layer, {})[name] = saved[key]
    return stats, int(saved["replicas"])


def student_weights(out):
    from rmtkd_tf.io import load_model

    return load_model(Path(out) / "student.keras").get_weights()
