"""An RMT-KD run on prepared data: `CompressionConfig`, `CompressionData`, `run`, its report.

`run(model, data, config, output_dir)` is what `rmtkd_tf.compress` (`rmtkd_tf.api`, from arrays,
datasets or a data spec) and the CLI's `compress` (`rmtkd_tf.pipeline`) call once the data are split
into a `CompressionData`. It follows one of two schedules (`rmtkd_tf.schedules`, chosen by
`config.schedule`):

- `"budgeted"` (default): analyse every layer once, allocate ranks across all
  layers (never above a layer's Marchenko–Pastur signal rank) for a parameter /
  FLOP target or the deepest cut within `max_drop`, cut once, and spend the whole
  distillation budget (`distillation_epochs`) on that final student, from the
  original teacher;
- `"iterative"`: the paper's loop, layer by layer (or block by block, or all at
  once), each step distilled from the model before it and rolled back when its
  validation drop exceeds `max_drop` (`rmtkd_tf.steps.reduction_step`, the step
  `RMTKDCallback` runs too).

Calibration and validation samples never come from the test split, which is
used once, at the end, for the report. Drops are paired: the student and the
original model are compared on the same validation examples. Every run keeps
`state.json`, `history.json` and `checkpoints/` in `output_dir`;
`resume=True` continues an interrupted run where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers

import numpy as np

from rmtkd_tf.allocation import COST_METRICS
from rmtkd_tf.arguments import check_integer
from rmtkd_tf.collection import candidate_layers
from rmtkd_tf.distill import check_hyperparameters
from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.flops import model_flops
from rmtkd_tf.io import load_model, save_model
from rmtkd_tf.model_walk import check_rebuildable, skipped_summary
from rmtkd_tf.schedules import SCHEDULES, budgeted, iterative
from rmtkd_tf.spectral import rank_rules
from rmtkd_tf.steps import RunFolder, ValidationReference, accuracy

STATE_VERSION = 2
# How the iterative loop groups layers per step: one layer; the parts of one composite layer (a transformer
# encoder block: its 6 projections) together, other layers alone; every open layer at once.
ORDERS = ("shallow-to-deep", "block-by-block", "all-at-once")


@dataclasses.dataclass
class CompressionConfig:
    """Parameters of an RMT-KD run (all explicit, all recorded in the history)."""

    schedule: str = "budgeted"  # or "iterative" (the paper's layer-by-layer loop)
    # A name ("mp", "energy", ...), a dict or a RankRule, resolved by rmtkd_tf.spectral.rank_rules.get with
    # rule_params (for a name: that rule's parameters, None: its defaults) and stored as its serialised dict
    # {"class_name": ..., "config": {...}} with rule_params None, so that state.json records every parameter.
    rank_rule: str | dict | rank_rules.RankRule = "mp"
    rule_params: dict | None = None
    target_params: float | None = None  # params <= target_params * original
    target_flops: float | None = None  # FLOPs <= target_flops * original
    min_rank_ratio: float = 0.02  # never below ceil(min_rank_ratio * d)
    max_drop: float = 1.0  # accuracy points (validation) allowed below the original
    # budgeted schedule
    allocation_cost: str = "balanced"  # what a kept direction costs: "balanced" (params and FLOPs), "params", "flops"
    distillation_epochs: int = 3  # the whole budget, spent on the final student
    # Peak learning rate of that distillation, cosine-decayed to 0: a one-shot cut moves the student further
    # from the teacher than one iterative step (measured on the CIFAR-10 CNN at its MP cut, 2 epochs on 4,800
    # images: 70.1 / 71.8 / 72.4% validation at 1e-4 / 5e-4 / 2e-3).
    distillation_learning_rate: float = 1e-3
    search_tolerance: float = 5.0  # without a target: deepest cut within this many points before training
    # Re-estimate the cut student's BatchNorm statistics on training examples (rmtkd_tf.batch_norm): the search
    # scores cuts after it, distillation starts from it, and the re-estimated cut is kept when it scores better
    # on validation than the distilled student. On the packaged demo sample it added 0.7-1.5 test points to cuts
    # of 45-50% of the FLOPs (10,000 test images) and nothing to the default cut; on the CIFAR-10 CNN with 5,000
    # images and 6 epochs +0.20 +- 0.32 (3 seeds): BENCHMARKS.md, "BatchNorm statistics re-estimated". A model
    # without trainable BatchNorm is not touched. The iterative schedule ignores it.
    recalibrate_batch_norm: bool = True
    max_attempts: int = 2  # distillations in all, backing off when a student misses max_drop
    # iterative schedule
    order: str = "shallow-to-deep"  # or "block-by-block" (an encoder's parts together), "all-at-once"
    split_on_rollback: bool = True  # retry a rolled-back group of layers in halves (shallow half first)
    max_steps: int = 50
    epochs_per_step: int = 1
    final_epochs: int = 0  # distillation from the original teacher after the loop
    # both
    layers: list | None = None  # restrict to these layer paths
    include_output_layers: bool = False  # factorize the classifier head too
    batch_size: int = 64
    learning_rate: float = 1e-4  # iterative: fine-tuning a converged teacher in small steps
    alpha: float = 0.7
    temperature: float = 4.0
    feature_weight: float = 0.0  # > 0: also match the factorized layers' outputs to the teacher's (rmtkd_tf.features)
    # budgeted: an encoder whose query and key are both cut gets them factorized jointly (rmtkd_tf.joint_qk) at
    # no more parameters than the two separate cuts; off by default: worse than the separate cuts on pretrained
    # MiniLM-L6 at equal parameters (BENCHMARKS.md, "Joint query/key"), so not offered to the allocation either.
    joint_qk: bool = False
    calibration_samples: int = 2048
    seed: int = 0
    confidence: float = 0.95  # two-sided level of the validation drop's interval (rmtkd_tf.acceptance)

    def __post_init__(self):
        self.rank_rule = rank_rules.serialize(rank_rules.get(self.rank_rule, **(self.rule_params or {})))
        self.rule_params = None
        if self.schedule not in SCHEDULES:
            raise RMTKDError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.allocation_cost not in COST_METRICS:
            raise RMTKDError(f"allocation_cost must be one of {', '.join(COST_METRICS)}, got {self.allocation_cost!r}")
        if self.order not in ORDERS:
            raise RMTKDError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        for name in ("target_params", "target_flops"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise RMTKDError(f"{name} is a fraction of the original in (0, 1], got {value}")
        if not 0 <= self.min_rank_ratio <= 1:
            raise RMTKDError(f"min_rank_ratio must be in [0, 1], got {self.min_rank_ratio}")
        if self.max_drop < 0:
            raise RMTKDError(f"max_drop must be >= 0 accuracy points, got {self.max_drop}")
        if self.search_tolerance < 0:
            raise RMTKDError(f"search_tolerance must be >= 0 accuracy points, got {self.search_tolerance}")
        # Counts are integers, as in Keras' Dense(units=...): 2.5 epochs is refused, not truncated.
        for name in ("distillation_epochs", "epochs_per_step", "final_epochs"):
            setattr(self, name, check_integer(getattr(self, name), name, minimum=0, error=RMTKDError))
        for name in ("batch_size", "calibration_samples", "max_steps", "max_attempts"):
            setattr(self, name, check_integer(getattr(self, name), name, error=RMTKDError))
        self.seed = check_integer(self.seed, "seed", minimum=0, error=RMTKDError)
        if not self.distillation_learning_rate > 0:
            raise RMTKDError(f"distillation_learning_rate must be > 0, got {self.distillation_learning_rate}")
        if not isinstance(self.recalibrate_batch_norm, bool):
            raise RMTKDError(f"recalibrate_batch_norm must be true or false, got {self.recalibrate_batch_norm!r}")
        if not isinstance(self.joint_qk, bool):
            raise RMTKDError(f"joint_qk must be true or false, got {self.joint_qk!r}")
        if self.joint_qk and self.schedule != "budgeted":
            raise RMTKDError("joint_qk is an option of the budgeted schedule")
        if not self.feature_weight >= 0:
            raise RMTKDError(f"feature_weight must be >= 0, got {self.feature_weight}")
        if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, numbers.Real) or not (
            math.isfinite(self.learning_rate) and self.learning_rate > 0
        ):
            raise RMTKDError(f"learning_rate must be a finite number > 0, got {self.learning_rate!r}")
        try:
            check_hyperparameters(self.alpha, self.temperature)
        except ValueError as error:
            raise RMTKDError(str(error)) from None


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
    validation_origin: str | None = None  # "own split", "carved from train", "half of test", "file SPEC"


def _new_state(model, config, reference):
    state = {
        "version": STATE_VERSION,
        "schedule": config.schedule,
        "config": _config_dict(config),
        "original_params": int(model.count_params()),
        "original_flops": model_flops(model),
        "original_val_accuracy": reference.accuracy,
        "stopped": None,
    }
    state.update(budgeted.initial_state() if config.schedule == "budgeted" else iterative.initial_state())
    return state


def run(model, data, config, output_dir, resume=False, log=print, strategy=None):
    """Run RMT-KD on `model` with prepared `data` (a `CompressionData`); returns `(student, report)`.

    Leaves its state, history and checkpoints in `output_dir` (the CLI's `compress` adds the student,
    its `.tflite` and `report.json`, through `rmtkd_tf.pipeline.compress_task`).

    `strategy`: a `tf.distribute.Strategy`, or one of the names of `rmtkd_tf.distribute.resolve_strategy`
    (default: the current strategy). Models, teachers and optimizers are then created in its scope (`model`
    is copied into it), statistics are merged over replicas, and the student comes back outside it.
    """
    from rmtkd_tf.distribute import adopt, local_copy, resolve_strategy, strategy_scope

    strategy = resolve_strategy(strategy)
    with strategy_scope(strategy):
        student, report = _run(adopt(model, strategy), data, config, output_dir, resume, log)
    return local_copy(student), report


def _run(model, data, config, output_dir, resume, log):
    from rmtkd_tf.spectral import get_rank_rule

    folder = RunFolder(output_dir)
    rule = get_rank_rule(config.rank_rule, **(config.rule_params or {}))
    eligible = [p for p, _ in candidate_layers(model, config.layers, include_outputs=config.include_output_layers)]
    if not eligible:
        raise RMTKDError("the model has no Dense, Conv1D, Conv2D or SeparableConv2D layer to factorize")
    check_rebuildable(model)  # refuse before calibrating a model that surgery could not rebuild
    skipped = skipped_summary(model)  # DepthwiseConv2D, grouped convs, embeddings, ... (docs/layers.md)
    if skipped:
        log(skipped)
    reference = ValidationReference(model, data)

    if resume:
        state = folder.load_state()
        if state.get("config") != _config_dict(config):
            raise RMTKDError(
                f"cannot resume {folder.dir}: it was started with different settings; use a new output folder"
            )
    else:
        if folder.state_path.exists():
            raise RMTKDError(f"{folder.dir} already holds a run; pass --resume to continue it or choose another folder")
        folder.checkpoints.mkdir(parents=True, exist_ok=True)
        state = _new_state(model, config, reference)
        if config.schedule == "iterative":
            save_model(model, folder.checkpoint_path(0))
        folder.save_state(state)

    if config.schedule == "budgeted":
        student = budgeted.run(model, data, config, folder, state, log, reference, rule, eligible)
    else:
        current = model
        if resume:
            current = load_model(folder.checkpoint_path(state["accepted_step"]))
            log(f"resuming at step {state['next_step']} from {folder.checkpoint_path(state['accepted_step']).name}")
        student = iterative.run(model, data, config, folder, state, log, current, reference, rule, eligible)
    return student, build_report(model, student, data, state)


def resolve_config(config, overrides, own_settings=()):
    """`config` (None, a `CompressionConfig` or a dict of its fields) with `overrides` (its fields) applied.

    >>> resolve_config({"max_drop": 2.0}, {"seed": 1}).seed
    1
    >>> resolve_config(None, {"max_dorp": 2.0})
    Traceback (most recent call last):
    ...
    rmtkd_tf.errors.RMTKDError: unknown setting(s) max_dorp; ...
    """
    fields = [field.name for field in dataclasses.fields(CompressionConfig)]
    unknown = sorted((set(overrides) | set(config if isinstance(config, dict) else ())) - set(fields))
    if unknown:
        takes = f"{', '.join(own_settings)} and " if own_settings else ""
        raise RMTKDError(f"unknown setting(s) {', '.join(unknown)}; takes {takes}CompressionConfig's fields "
                         f"{', '.join(fields)}")
    if config is None:
        config = CompressionConfig()
    elif isinstance(config, dict):
        config = CompressionConfig(**config)
    elif not isinstance(config, CompressionConfig):
        raise RMTKDError(f"config must be a CompressionConfig or a dict of its fields, got {type(config).__name__}")
    return dataclasses.replace(config, **overrides) if overrides else config


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
        "schedule": state.get("schedule", "iterative"),
        "stopped": state.get("stopped"),
        "layers": _final_layer_table(state, student),
    }
    if report["schedule"] == "budgeted":
        report.update(
            cut_chosen_by=state.get("cut_chosen_by"),
            final_attempt=state.get("final_attempt"),
            mp_cut_params=state.get("ladder", {}).get("mp_cut", {}).get("params"),
            search=state.get("search", []),
            attempts=[{k: v for k, v in a.items() if k != "cut"} for a in state.get("attempts", [])],
        )
    else:
        report.update(
            steps=len(state.get("steps", [])),
            accepted_steps=sum(1 for s in state.get("steps", []) if s.get("accepted")),
            frozen_layers=state.get("frozen", {}),
        )
    t, s = report["teacher"], report["student"]
    report["param_reduction"] = 1.0 - s["params"] / t["params"]
    report["flop_reduction"] = 1.0 - s["flops"] / t["flops"] if t["flops"] else None
    if t["test_accuracy"] is not None:
        report["test_accuracy_change"] = s["test_accuracy"] - t["test_accuracy"]
    return report


def _final_layer_table(state, student):
    """`path -> {type, units, params_before, rank, params_after, ...}` of every layer the run factorized."""
    if state.get("schedule") == "budgeted":
        return _budgeted_layer_table(state, student)
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


def _budgeted_layer_table(state, student):
    """The final cut's ranks; a query/key pair `student` factorizes jointly (`--joint-qk`) shows its joint
    per-head rank (`joint_qk_rank`, `heads`, `rank` = their product, `params_after`), and the separate rank
    of the cut it replaced as `separate_rank`."""
    from rmtkd_tf.factorization import low_rank_parameter_count
    from rmtkd_tf.model_walk import iter_graph_layers
    from rmtkd_tf.transformers.low_rank_encoder import joint_qk_parts

    decisions = {d["path"]: d for d in state.get("decisions", [])}
    table = {}
    for path, rank in budgeted.final_ranks(state).items():
        decision = decisions[path]
        table[path] = {
            "type": decision["layer_type"], "units": decision["units"], "params_before": decision["params_before"],
            "signal_rank": decision["rule_rank"], "rank": rank,
            "params_after": low_rank_parameter_count(decision["fan_in"], decision["units"], rank),
            "n_samples": decision["n_samples"],
        }
    for path, joint in joint_qk_parts(iter_graph_layers(student)).items():
        if path in table:
            table[path].update(separate_rank=table[path]["rank"], **joint)
    return table
