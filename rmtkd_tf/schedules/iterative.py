"""The paper's schedule: reduce layer by layer, distilling each step from the model before it.

Layers are grouped per step by `config.order` (one layer shallow → deep, one transformer
block's parts, or every open layer at once). Each step collects the group's covariances on
the current model, factorizes it at the rank rule's ranks, self-distils the student from the
model before the step for `epochs_per_step` epochs and checks it on validation: a step whose
drop below the original model exceeds `max_drop` is rolled back (with `split_on_rollback`, a
rolled-back group of several layers is retried as its shallower, then its deeper half) and
its layers are not touched again. The loop stops at `target_params` / `target_flops`, when no
layer can be reduced further, or after `max_steps` steps; `final_epochs` then distils the
result from the original teacher.

A factorized layer is analysed again through its bottleneck; the rank rule then reuses the
noise level it fitted the first time (`noise_priors`), so a layer whose kept directions are all
signal keeps its rank instead of being cut again on every pass.
"""

from __future__ import annotations

import math

from rmtkd_tf.collection import candidate_layers
from rmtkd_tf.flops import model_flops
from rmtkd_tf.io import save_model
from rmtkd_tf.model_walk import iter_graph_layers
from rmtkd_tf.progress import FitProgress, emit
from rmtkd_tf.steps import distil_keep_better, reduction_step, seed_step


def next_open_layer(eligible, open_paths, cursor):
    """Round-robin shallow -> deep: the first open layer at or after `cursor`, and the next cursor.

    >>> next_open_layer(["a", "b", "c"], ["a", "c"], 1)
    ('c', 3)
    """
    start = cursor % len(eligible)
    path = next(p for p in eligible[start:] + eligible[:start] if p in open_paths)
    return path, eligible.index(path) + 1


def block_of(path, graph_paths):
    """The composite layer (encoder block) owning the part at `path`, or None for a plain graph layer.

    >>> block_of("bert/transformer_layer_0/ffn_output", {"bert/transformer_layer_0"}), block_of("dense", {"dense"})
    ('bert/transformer_layer_0', None)
    """
    if path in graph_paths:
        return None
    return path.rpartition("/")[0]


def initial_state():
    """The iterative schedule's own part of `state.json`."""
    return {"accepted_step": 0, "next_step": 1, "frozen": {}, "cursor": 0, "steps": [], "pending": []}


def _stop_reason(current, state, config, open_paths):
    params_now = int(current.count_params())
    original = state["original_params"]
    if config.target_params is not None and params_now <= config.target_params * original:
        return f"parameter target reached ({params_now} <= {config.target_params:g} x {original})"
    if config.target_flops is not None and model_flops(current) <= config.target_flops * state["original_flops"]:
        return f"FLOP target reached (<= {config.target_flops:g} x {state['original_flops']})"
    # Steps that found nothing to reduce cost no training and do not count.
    if sum(1 for record in state["steps"] if "losses" in record) >= config.max_steps:
        return f"max_steps={config.max_steps} reached"
    if not open_paths:
        return "no layer can be reduced further"
    return None


def _next_group(state, config, eligible, open_paths, graph_paths):
    """The layers of the next step: a pending half of a rolled-back group first, else by `config.order`."""
    pending = [[p for p in group if p in open_paths] for group in state.get("pending", [])]
    pending = [group for group in pending if group]
    if pending:
        group = pending.pop(0)
    elif config.order == "all-at-once":
        group = open_paths
    else:
        path, state["cursor"] = next_open_layer(eligible, open_paths, state.get("cursor", 0))
        group = [path]
        block = block_of(path, graph_paths) if config.order == "block-by-block" else None
        if block is not None:
            group = [p for p in open_paths if block_of(p, graph_paths) == block]
            state["cursor"] = max(eligible.index(p) for p in group) + 1
    state["pending"] = pending
    return group


def _roll_back(state, config, step, group, factors, reason):
    """Queue the halves of a rolled-back group (split_on_rollback) or freeze its layers; returns a log suffix."""
    cut = [p for p in group if p in factors]  # shallow to deep, as the group is
    if config.split_on_rollback and len(cut) > 1:
        half = (len(cut) + 1) // 2
        state["pending"] = [cut[:half], cut[half:]] + state.get("pending", [])
        return f"; retrying its {half} shallower, then {len(cut) - half} deeper layers"
    for path in factors:
        state["frozen"][path] = f"rolled back at step {step}: {reason}"
    return ""


def _why_nothing(decisions):
    """Why a step reduced nothing: the first layer's reason, and how many other layers had one.

    >>> _why_nothing([{"skipped": "rank 382 of 384 would not save parameters"}, {"skipped": "x"}])
    'rank 382 of 384 would not save parameters; 1 other layer likewise skipped'
    >>> _why_nothing([])
    'no statistics collected'
    """
    if not decisions:
        return "no statistics collected"
    others = len(decisions) - 1
    more = f"; {others} other layer{'s' if others > 1 else ''} likewise skipped" if others else ""
    return f"{decisions[0]['skipped']}{more}"


def _freeze_layers_at_floor(current, state, config, factors):
    for path in factors:
        layer = dict(candidate_layers(current, [path]))[path]
        floor = max(1, math.ceil(config.min_rank_ratio * (getattr(layer, "units", None) or layer.filters)))
        if layer.rank <= floor:
            state["frozen"][path] = f"rank {layer.rank} at the minimum k/d"


def stop_reason(current, state, config, eligible):
    """Why the loop is done (a target met, `max_steps`, no open layer), or None to go on."""
    return _stop_reason(current, state, config, [p for p in eligible if p not in state["frozen"]])


def advance(current, data, config, state, reference, rule, eligible, graph_paths, log):
    """One step of the schedule on `current`: choose its layers, run `rmtkd_tf.steps.reduction_step`, record it.

    Updates `state` (the step's record in `steps`, frozen layers, the halves to retry, `next_step`,
    `accepted_step`) but saves nothing. Returns `(model, record)`: the candidate when the step is
    accepted, else `current`. `RMTKDCallback` runs the same function at epoch ends.
    """
    step = state["next_step"]
    open_paths = [p for p in eligible if p not in state["frozen"]]
    group = _next_group(state, config, eligible, open_paths, graph_paths)
    params_now = int(current.count_params())
    candidate, record = reduction_step(current, data, config, rule, group, reference,
                                       seed=config.seed * 1000 + step, noise=state.setdefault("noise", {}),
                                       log=log, step=step)
    record = {"step": step, **record}
    if candidate is not None:
        emit(log, "step", step=step, ranks=record["ranks"], params=record["params_after"], flops=record["flops_after"],
             val_accuracy_after_surgery=record["val_accuracy_after_surgery"], val_accuracy=record["val_accuracy"],
             drop=record["val_drop"], accepted=record["accepted"], losses=record["losses"])
    for decision in record["decisions"]:
        if decision["rank"] is None:
            state["frozen"][decision["path"]] = decision["skipped"]
    state["steps"].append(record)
    state["next_step"] = step + 1
    if candidate is None:
        if config.order == "all-at-once":
            state["frozen"].update({p: "no reduction possible" for p in group})
        log(f"step {step}: {', '.join(group)}: nothing to reduce ({_why_nothing(record['decisions'])})")
        return current, record
    ranks = ranks_text_of(record)
    if not record["accepted"]:
        retry = _roll_back(state, config, step, group, record["ranks"], record["reason"])
        # The reason names the drop's upper bound: on a small validation set a step that raised accuracy can
        # still be rolled back, and the log has to say why.
        log(f"step {step}: {ranks}: val acc {record['val_accuracy']:.2f} -> rolled back: {record['reason']}{retry}")
        return current, record
    state["accepted_step"] = step
    _freeze_layers_at_floor(candidate, state, config, record["ranks"])
    val = record["val_accuracy"]
    log(f"step {step}: {ranks}: params {params_now} -> {record['params_after']}, "
        f"val acc {val if val is None else round(val, 2)}")
    return candidate, record


def ranks_text_of(record):
    """`"path: d->k, ..."` of a step's record (its factorized layers)."""
    return ", ".join(f"{d['path']}: {d['dim']}->{d['rank']}" for d in record["decisions"] if d["rank"] is not None)


def run(model, data, config, folder, state, log, current, reference, rule, eligible):
    """Run (or continue) the iterative loop; returns the final student. `state` is updated and saved."""
    graph_paths = {p for p, _ in iter_graph_layers(model)}
    while state["stopped"] is None:
        state["stopped"] = stop_reason(current, state, config, eligible)
        if state["stopped"] is not None:
            break
        seed_step(config.seed, state["next_step"])
        current, record = advance(current, data, config, state, reference, rule, eligible, graph_paths, log)
        if record["accepted"]:
            save_model(current, folder.checkpoint_path(record["step"]))
        folder.save_state(state)

    folder.save_state(state)
    log(f"stopped: {state['stopped']}")
    return _final_distillation(model, current, data, config, folder, state, log, reference)


def _final_distillation(model, current, data, config, folder, state, log, reference):
    """`final_epochs` of distillation from the original teacher (once, also across resumes)."""
    if config.final_epochs <= 0 or state["accepted_step"] == 0 or state.get("final_done"):
        return current
    seed_step(config.seed, 10_000)
    shown = FitProgress(log, "final distillation from the original teacher", config.final_epochs,
                        math.ceil(len(data.y_train) / config.batch_size), stage="final")
    _, acc_before, acc_after, kept = distil_keep_better(current, model, data, config, config.final_epochs,
                                                        seed=config.seed, callbacks=[shown])
    outcome = "kept" if kept else "discarded: the model before it scores higher on validation"
    log(f"final distillation from the original teacher: val acc {acc_before} -> {acc_after} ({outcome})")
    save_model(current, folder.checkpoint_path(state["accepted_step"]))
    state["final_done"] = True
    state["final_distillation"] = {"val_accuracy_before": acc_before, "val_accuracy_after": acc_after, "kept": kept,
                                   "validation_check": reference.check(current, data, config)}
    folder.save_state(state)
    return current
