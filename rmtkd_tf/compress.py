"""The RMT-KD loop: collect → select ranks → factorize → self-distil → repeat.

`compress(model, data, config, output_dir)` reduces the model layer by layer
(shallow → deep, or all eligible layers at once), self-distilling the student
from the model *before* each step, until one of the stopping rules fires:

- the parameter count reaches `target_params × original` (`target_params`),
- no layer can be reduced further: every rank rule keeps all its directions,
  or would go under `min_rank_ratio · d` (`min_rank_ratio`),
- `max_steps` steps ran.

A step whose validation accuracy falls more than `max_drop` points below the
original model's is rolled back, and its layer is not touched again. A rolled-back
step of several layers (`order="block-by-block"` or `"all-at-once"`) is, with
`split_on_rollback` (the default), retried as its shallower half, then its deeper
half, each split again if it fails, so one layer that cannot be cut does not
keep all the others dense; a single layer that fails is frozen.

Calibration and validation samples are drawn from the *training* split only;
the test split is used once, at the end, for the report. Every step is
checkpointed in `output_dir` (`state.json`, `history.json`,
`checkpoints/step_NNN.keras`); `resume=True` continues an interrupted run where
it stopped. Each step reseeds from `(seed, step)`, so a resumed run makes the
same decisions as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rmtkd_tf.collection import candidate_layers, collect_activations
from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.finite_guard import ensure_finite_training
from rmtkd_tf.flops import model_flops
from rmtkd_tf.io import save_model, write_json
from rmtkd_tf.model_walk import iter_graph_layers
from rmtkd_tf.selection import decide_ranks
from rmtkd_tf.surgery import factorize_model

STATE_VERSION = 1
# How the loop groups layers per step: one layer; the parts of one composite layer (a transformer
# encoder block: its 6 projections) together, other layers alone; every open layer at once.
ORDERS = ("shallow-to-deep", "block-by-block", "all-at-once")


@dataclasses.dataclass
class CompressionConfig:
    """Parameters of an RMT-KD run (all explicit, all recorded in the history)."""

    rank_rule: str = "mp"
    rule_params: dict = dataclasses.field(default_factory=lambda: {"tau": 0.5})
    target_params: float | None = None  # stop once params <= target_params * original
    min_rank_ratio: float = 0.02  # never below ceil(min_rank_ratio * d)
    max_drop: float = 1.0  # accuracy points (validation) allowed below the original
    order: str = "shallow-to-deep"  # or "block-by-block" (an encoder's parts together), "all-at-once"
    split_on_rollback: bool = True  # retry a rolled-back group of layers in halves (shallow half first)
    layers: list | None = None  # restrict to these layer paths
    include_output_layers: bool = False  # factorize the classifier head too
    max_steps: int = 50
    epochs_per_step: int = 1
    final_epochs: int = 0  # distillation from the original teacher after the loop
    batch_size: int = 64
    learning_rate: float = 1e-4  # fine-tuning a converged teacher: small steps
    alpha: float = 0.7
    temperature: float = 4.0
    calibration_samples: int = 2048
    seed: int = 0

    def __post_init__(self):
        if self.order not in ORDERS:
            raise RMTKDError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.target_params is not None and not 0 < self.target_params <= 1:
            raise RMTKDError(f"target_params is a fraction of the original parameters in (0, 1], got {self.target_params}")
        if not 0 <= self.min_rank_ratio <= 1:
            raise RMTKDError(f"min_rank_ratio must be in [0, 1], got {self.min_rank_ratio}")
        if self.max_drop < 0:
            raise RMTKDError(f"max_drop must be >= 0 accuracy points, got {self.max_drop}")


@dataclasses.dataclass
class CompressionData:
    """Arrays of one task. `x_*` are model inputs (array or dict of arrays), `y_*` int labels."""

    x_train: object
    y_train: np.ndarray
    x_calibration: object
    x_validation: object
    y_validation: np.ndarray
    x_test: object = None
    y_test: np.ndarray = None


def _take(x, idx):
    if isinstance(x, dict):
        return {k: np.asarray(v)[idx] for k, v in x.items()}
    return np.asarray(x)[idx]


def _length(x):
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    return len(x)


def accuracy(model, x, y, batch_size=256):
    """Top-1 accuracy (percent) of `model` on `(x, y)`."""
    if y is None or _length(x) == 0:
        return None
    probs = model.predict(x, batch_size=batch_size, verbose=0)
    return float(100.0 * np.mean(np.argmax(probs, axis=-1) == np.asarray(y).reshape(-1)))


def next_open_layer(eligible, open_paths, cursor):
    """Round-robin shallow -> deep: the first open layer at or after `cursor`, and the next cursor.

    >>> next_open_layer(["a", "b", "c"], ["a", "c"], 1)
    ('c', 3)
    """
    start = cursor % len(eligible)
    path = next(p for p in eligible[start:] + eligible[:start] if p in open_paths)
    return path, eligible.index(path) + 1


def _block_of(path, graph_paths):
    """The composite layer (encoder block) owning the part at `path`, or None for a plain graph layer.

    >>> _block_of("bert/transformer_layer_0/ffn_output", {"bert/transformer_layer_0"}), _block_of("dense", {"dense"})
    ('bert/transformer_layer_0', None)
    """
    if path in graph_paths:
        return None
    return path.rpartition("/")[0]


def _seed_step(seed, step):
    keras.utils.set_random_seed(int(seed) * 1000 + int(step))


def distil(student, teacher, data, config, epochs, seed):
    """Self-distil `student` from frozen `teacher` on the training split; returns last epoch's logs."""
    from rmtkd_tf.distill import SelfDistiller

    if epochs <= 0:
        return {}
    # SelfDistiller freezes the teacher (trainable=False on every sublayer). The teacher is the model
    # before the step, which the next surgery clones (flags included) and which may be the caller's own
    # model: restore every layer's flag afterwards so neither comes back frozen.
    trainable_flags = [(layer, layer.trainable) for layer in teacher._flatten_layers(include_self=True)]
    try:
        logs = _distil(student, teacher, data, config, epochs, seed)
        ensure_finite_training(student, logs, "distillation")  # never accept a NaN student
        return logs
    finally:
        for layer, flag in trainable_flags:
            layer.trainable = flag


def distil_keep_better(student, teacher, data, config, epochs, seed):
    """Distil, then keep whichever of the weights before/after scores better on validation.

    Distillation can make a student worse (e.g. a learning rate too high for a converged teacher);
    the weights before it are then the better student by the same measure, so they are restored.
    Returns `(logs, val_accuracy_before, val_accuracy_after_distillation, kept_distillation)`.
    """
    weights_before = student.get_weights()
    acc_before = accuracy(student, data.x_validation, data.y_validation)
    logs = distil(student, teacher, data, config, epochs, seed=seed)
    acc_after = accuracy(student, data.x_validation, data.y_validation)
    kept = not (acc_before is not None and acc_after is not None and acc_after < acc_before)
    if not kept:
        student.set_weights(weights_before)
    return logs, acc_before, acc_after, kept


def _distil(student, teacher, data, config, epochs, seed):
    from rmtkd_tf.distill import SelfDistiller

    distiller = SelfDistiller(student, teacher, alpha=config.alpha, temperature=config.temperature)
    distiller.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    dataset = (
        tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
        .shuffle(min(_length(data.x_train), 20000), seed=seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
    )
    history = distiller.fit(dataset, epochs=epochs, verbose=0, shuffle=False)  # the dataset shuffles
    return {k: float(v[-1]) for k, v in history.history.items()}


class _Run:
    def __init__(self, output_dir):
        self.dir = Path(output_dir)
        self.state_path = self.dir / "state.json"
        self.history_path = self.dir / "history.json"
        self.checkpoints = self.dir / "checkpoints"

    def checkpoint_path(self, step):
        return self.checkpoints / f"step_{step:03d}.keras"

    def save_state(self, state):
        write_json(self.state_path, state)
        write_json(self.history_path, {"config": state["config"], "steps": state["steps"]})

    def load_state(self):
        if not self.state_path.exists():
            raise RMTKDError(f"nothing to resume in {self.dir}: no state.json")
        with open(self.state_path) as fh:
            return json.load(fh)


def compress(model, data, config, output_dir, resume=False, log=print):
    """Run RMT-KD on `model`; returns `(student, report)` and leaves checkpoints in `output_dir`."""
    from rmtkd_tf.io import load_model
    from rmtkd_tf.spectral import get_rank_rule

    run = _Run(output_dir)
    rule = get_rank_rule(config.rank_rule, **(config.rule_params or {}))
    original_params = int(model.count_params())
    eligible = [p for p, _ in candidate_layers(model, config.layers, include_outputs=config.include_output_layers)]
    graph_paths = {p for p, _ in iter_graph_layers(model)}
    if not eligible:
        raise RMTKDError("the model has no Dense or Conv2D layer to factorize")

    if resume:
        state = run.load_state()
        if state.get("config") != _config_dict(config):
            raise RMTKDError(
                f"cannot resume {run.dir}: it was started with different settings; use a new output folder"
            )
        current = load_model(run.checkpoint_path(state["accepted_step"]))
        log(f"resuming at step {state['next_step']} from {run.checkpoint_path(state['accepted_step']).name}")
    else:
        if run.state_path.exists():
            raise RMTKDError(f"{run.dir} already holds a run; pass --resume to continue it or choose another folder")
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        current = model
        save_model(current, run.checkpoint_path(0))
        state = {
            "version": STATE_VERSION,
            "config": _config_dict(config),
            "original_params": original_params,
            "original_flops": model_flops(model),
            "original_val_accuracy": accuracy(model, data.x_validation, data.y_validation),
            "accepted_step": 0,
            "next_step": 1,
            "frozen": {},  # path -> reason it is not reduced further
            "cursor": 0,  # index into the eligible layers of the next one to try
            "steps": [],
            "stopped": None,
        }
        run.save_state(state)

    base_acc = state["original_val_accuracy"]
    while state["stopped"] is None:
        step = state["next_step"]
        params_now = int(current.count_params())
        if config.target_params is not None and params_now <= config.target_params * original_params:
            state["stopped"] = f"parameter target reached ({params_now} <= {config.target_params:g} x {original_params})"
            break
        if step > config.max_steps:
            state["stopped"] = f"max_steps={config.max_steps} reached"
            break
        open_paths = [p for p in eligible if p not in state["frozen"]]
        if not open_paths:
            state["stopped"] = "no layer can be reduced further"
            break
        # Halves of a rolled-back group come first (see split_on_rollback); layers frozen since drop out.
        pending = [[p for p in g if p in open_paths] for g in state.get("pending", [])]
        pending = [g for g in pending if g]
        if pending:
            group = pending.pop(0)
        elif config.order == "all-at-once":
            group = open_paths
        else:
            path, state["cursor"] = next_open_layer(eligible, open_paths, state.get("cursor", 0))
            group = [path]
            block = _block_of(path, graph_paths) if config.order == "block-by-block" else None
            if block is not None:
                group = [p for p in open_paths if _block_of(p, graph_paths) == block]
                state["cursor"] = max(eligible.index(p) for p in group) + 1
        state["pending"] = pending

        t0 = time.time()
        _seed_step(config.seed, step)
        layers_now = dict(candidate_layers(current, group))
        calib = _take(data.x_calibration, np.arange(min(_length(data.x_calibration), config.calibration_samples)))
        statistics = collect_activations(current, calib, layers=group, batch_size=config.batch_size)
        decisions, factors = decide_ranks(layers_now, statistics, rule, min_rank_ratio=config.min_rank_ratio)
        record = {
            "step": step,
            "layers": group,
            "decisions": [d.to_dict() for d in decisions],
            "params_before": params_now,
        }
        for decision in decisions:
            if decision.rank is None:
                state["frozen"][decision.path] = decision.skipped
        if not factors:
            record.update(accepted=False, reason="no layer in this step can be reduced", wall_s=time.time() - t0)
            if config.order == "all-at-once":
                state["frozen"].update({p: "no reduction possible" for p in group})
            log(f"step {step}: {', '.join(group)}: nothing to reduce ({decisions[0].skipped})")
            state["steps"].append(record)
            state["next_step"] = step + 1
            run.save_state(state)
            continue

        student = factorize_model(current, factors)
        logs, acc_before_tuning, acc_tuned, kept_fine_tuning = distil_keep_better(
            student, current, data, config, config.epochs_per_step, seed=config.seed * 1000 + step
        )
        val_acc = acc_tuned if kept_fine_tuning else acc_before_tuning
        drop = None if base_acc is None or val_acc is None else base_acc - val_acc
        record.update(
            params_after=int(student.count_params()),
            flops_after=model_flops(student),
            val_accuracy_after_surgery=acc_before_tuning,
            val_accuracy=val_acc,
            kept_fine_tuning=kept_fine_tuning,
            val_drop=drop,
            losses=logs,
        )
        ranks = ", ".join(f"{d.path}: {d.dim}->{d.rank}" for d in decisions if d.rank is not None)
        if drop is not None and drop > config.max_drop:
            record.update(accepted=False, reason=f"validation accuracy drop {drop:.2f} > max_drop {config.max_drop}")
            cut = [p for p in group if p in factors]  # shallow to deep, as the group is
            if config.split_on_rollback and len(cut) > 1:
                half = (len(cut) + 1) // 2
                state["pending"] = [cut[:half], cut[half:]] + state.get("pending", [])
                retry = f"; retrying its {half} shallower, then {len(cut) - half} deeper layers"
            else:
                for path in factors:
                    state["frozen"][path] = f"rolled back at step {step}: drop {drop:.2f} points"
                retry = ""
            log(f"step {step}: {ranks}: val acc {val_acc:.2f} (drop {drop:.2f}) -> rolled back{retry}")
        else:
            record.update(accepted=True)
            save_model(student, run.checkpoint_path(step))
            current = student
            state["accepted_step"] = step
            for path in factors:
                # A layer whose rank hit the floor cannot go lower.
                layer = dict(candidate_layers(current, [path]))[path]
                floor = max(1, math.ceil(config.min_rank_ratio * (getattr(layer, "units", None) or layer.filters)))
                if layer.rank <= floor:
                    state["frozen"][path] = f"rank {layer.rank} at the minimum k/d"
            log(
                f"step {step}: {ranks}: params {params_now} -> {record['params_after']}, "
                f"val acc {val_acc if val_acc is None else round(val_acc, 2)}"
            )
        record["wall_s"] = round(time.time() - t0, 2)
        state["steps"].append(record)
        state["next_step"] = step + 1
        run.save_state(state)

    run.save_state(state)
    log(f"stopped: {state['stopped']}")
    if config.final_epochs > 0 and state["accepted_step"] > 0 and not state.get("final_done"):
        _seed_step(config.seed, 10_000)
        _, acc_before, acc_after, kept = distil_keep_better(current, model, data, config, config.final_epochs, seed=config.seed)
        log(f"final distillation from the original teacher: val acc {acc_before} -> {acc_after}")
        save_model(current, run.checkpoint_path(state["accepted_step"]))
        state["final_done"] = True
        state["final_distillation"] = {"val_accuracy_before": acc_before, "val_accuracy_after": acc_after, "kept": kept}
        run.save_state(state)

    report = build_report(model, current, data, state)
    return current, report


def _config_dict(config):
    return json.loads(json.dumps(dataclasses.asdict(config)))


def build_report(teacher, student, data, state):
    """Summary of a run: params, FLOPs, accuracies (validation and, if given, test) of teacher vs student."""
    report = {
        "teacher": {
            "params": int(teacher.count_params()),
            "flops": model_flops(teacher),
            "val_accuracy": state.get("original_val_accuracy"),
            "test_accuracy": accuracy(teacher, data.x_test, data.y_test),
        },
        "student": {
            "params": int(student.count_params()),
            "flops": model_flops(student),
            "val_accuracy": accuracy(student, data.x_validation, data.y_validation),
            "test_accuracy": accuracy(student, data.x_test, data.y_test),
        },
        "stopped": state.get("stopped"),
        "steps": len(state.get("steps", [])),
        "accepted_steps": sum(1 for s in state.get("steps", []) if s.get("accepted")),
        "frozen_layers": state.get("frozen", {}),
        "layers": _final_layer_table(state),
    }
    t, s = report["teacher"], report["student"]
    report["param_reduction"] = 1.0 - s["params"] / t["params"]
    report["flop_reduction"] = 1.0 - s["flops"] / t["flops"] if t["flops"] else None
    if t["test_accuracy"] is not None:
        report["test_accuracy_change"] = s["test_accuracy"] - t["test_accuracy"]
    return report


def _final_layer_table(state):
    table = {}
    for record in state.get("steps", []):
        if not record.get("accepted"):
            continue
        for decision in record["decisions"]:
            if decision["rank"] is not None:
                entry = table.setdefault(decision["path"], {"type": decision["layer_type"], "units": decision["units"]})
                entry.setdefault("params_before", decision["params_before"])
                entry.update(rank=decision["rank"], params_after=decision["params_after"], n_samples=decision["n_samples"])
    return table
