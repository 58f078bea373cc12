"""`python -m benchmarks floor`: how much of a BERT's latency no rank choice can remove.

    python -m benchmarks floor --task configs/latency_floor_sst2_minilm_scratch

RMT-KD shrinks the encoders' matrix products; softmax, layer norms, GELU on the full FFN width, the attention
score/value products, the embedding lookups and the classifier head stay. This puts every encoder part at rank 1
(the least any factorization can leave; weights are irrelevant for timing) and times that "floor" model against
the teacher with `benchmarks.timing`. With t_fixed ≈ t_floor and t_matmul(teacher) = t_teacher − t_fixed, a
student whose factorizable FLOPs are a fraction `f` of the teacher's can at best run in
t_fixed + f · t_matmul(teacher): its "Amdahl bound". Each `--students` model (a compressed `.keras` of this
teacher) is exported and timed the same way and printed beside its FLOP ratio and bound. Writes
`benchmarks/results/latency_floor_<name>.json`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks import timing
from benchmarks.driver import HERE
from benchmarks.schema import SCHEMA_VERSION


def floor_model(teacher):
    """The teacher with every transformer-encoder part factorized at rank 1, and the number of parts."""
    import numpy as np

    from rmtkd_tf.model_walk import composite_parts, dense_matrix_shape, iter_graph_layers
    from rmtkd_tf.surgery import LayerFactors, factorize_model

    factors = {}
    for path, layer in iter_graph_layers(teacher):
        for part, sublayer in (composite_parts(layer) or {}).items():  # the parts of each encoder block
            units = dense_matrix_shape(sublayer)[1]
            factors[f"{path}/{part}"] = LayerFactors(np.eye(units)[:, :1], np.zeros(units))
    if not factors:
        raise SystemExit("error: the teacher has no transformer encoder parts to factorize")
    return factorize_model(teacher, factors), len(factors)


def amdahl(flops, fixed_share):
    """Per student: its scalable-FLOP fraction, FLOP ratio and Amdahl bound, from `flops` (teacher, floor, ...).

    >>> round(amdahl({"teacher": 100, "floor": 20, "s": 60}, 0.2)["s"]["amdahl_bound_speedup"], 3)
    1.667
    """
    scalable = flops["teacher"] - flops["floor"]
    out = {}
    for who, count in flops.items():
        if who in ("teacher", "floor"):
            continue
        fraction = (count - flops["floor"]) / scalable
        out[who] = {"scalable_flop_fraction": fraction, "flop_ratio": flops["teacher"] / count,
                    "amdahl_bound_speedup": 1.0 / (fixed_share + fraction * (1.0 - fixed_share))}
    return out


def run(args):
    import keras

    from rmtkd_tf.export import export_tflite
    from rmtkd_tf.flops import model_flops
    from rmtkd_tf.io import write_json
    from rmtkd_tf.pipeline import load_task

    task = load_task(args.teacher, args.data, limit=200, calibration_fraction=0.1)
    teacher = task.model
    floor, n_parts = floor_model(teacher)
    models = {"teacher": teacher, "floor": floor}
    for path in args.students:
        models[str(path)] = keras.saving.load_model(path, compile=False)
    flops = {who: int(model_flops(model)) for who, model in models.items()}
    comparisons = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for i, (who, model) in enumerate(models.items()):
            paths[who] = Path(tmp) / f"model{i}_fp32.tflite"
            export_tflite(model, paths[who], precision="fp32")
        for who in list(models)[1:]:
            print(f"timing teacher vs {who}", flush=True)
            comparisons[who] = timing.time_pair(paths["teacher"], paths[who], task.data.x_test, runs=args.runs).to_dict()
    speedup = {who: c["ratios"]["median_latency_a_over_b"] for who, c in comparisons.items()}
    fixed_share = 1.0 / speedup["floor"]
    students = []
    for who, bound in amdahl(flops, fixed_share).items():
        students.append({"student": who, "flops": flops[who], **bound, "measured_fp32_speedup": speedup[who],
                         "speedup_over_flop_ratio": speedup[who] / bound["flop_ratio"],
                         "speedup_over_amdahl_bound": speedup[who] / bound["amdahl_bound_speedup"]})
    name = args.name or Path(args.teacher).stem
    result = {
        "schema_version": SCHEMA_VERSION, "kind": "floor", "name": name, "command": args.command_line,
        "date": time.strftime("%Y-%m-%d"), "teacher": args.teacher, "floor": f"every encoder part ({n_parts}) at rank 1",
        "timing_protocol": timing.PROTOCOL, "flops": flops, "fixed_share_of_teacher_latency": fixed_share,
        "max_speedup_any_rank": speedup["floor"], "students": students, "comparisons": comparisons,
    }
    write_json(Path(args.out) if args.out else HERE / "results" / f"latency_floor_{name}.json", result)
    print(f"floor (all {n_parts} parts at rank 1): {100 * fixed_share:.0f}% of the teacher's latency is fixed; "
          f"no rank choice beats {speedup['floor']:.2f}x")
    for s in students:
        print(f"  {s['student']}: FLOP ratio {s['flop_ratio']:.2f}x, Amdahl bound {s['amdahl_bound_speedup']:.2f}x, "
              f"measured {s['measured_fp32_speedup']:.2f}x ({s['speedup_over_amdahl_bound']:.2f} of the bound)")
    return result
