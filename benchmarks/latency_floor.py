"""How much of a BERT classifier's latency no rank choice can remove: the fixed cost behind speed-up ÷ FLOP ratio.

    python benchmarks/latency_floor.py --teacher benchmarks/models/agnews_minilm_scratch.keras \
        --data benchmarks/runs/agnews_teacher_split \
        --students benchmarks/runs/agnews_minilm_scratch_deep/student.keras benchmarks/runs/agnews_minilm_scratch/student.keras

RMT-KD shrinks the encoders' matrix products; softmax, layer norms, GELU on the full FFN width, the
attention score/value products, the embedding lookups and the classifier head stay. This script puts every
one of the 6 x 6 encoder parts at rank 1 (the least any factorization can leave; weights are irrelevant
for timing) and times that "floor" model against the teacher in one process (LiteRT, XNNPACK, 1 thread,
batch 1, interleaved blocks, a real test example as input, at the model's own length). With

    t_fixed ≈ t_floor  and  t_matmul(teacher) = t_teacher − t_fixed,

a student whose factorizable FLOPs are a fraction `f` of the teacher's can at best run in
`t_fixed + f · t_matmul(teacher)`: that is the "Amdahl bound" on its speed-up. Each `--students` model
(a compressed `.keras` of this teacher, e.g. `benchmarks/runs/<name>/student.keras`) is exported with the
current code and timed against the teacher the same way, and its measured speed-up is printed beside its
FLOP ratio and its Amdahl bound. Writes `benchmarks/results/latency_floor_<name>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def floor_model(teacher):
    """The teacher with every transformer-encoder part factorized at rank 1."""
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="a BERT classifier (.keras)")
    parser.add_argument("--data", required=True, help="data spec (a real test example is the timed input)")
    parser.add_argument("--students", nargs="*", type=Path, default=[],
                        help="compressed .keras students of this teacher")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))

    from rmtkd_tf.bench.host import compare_tflite
    from rmtkd_tf.export import export_tflite
    from rmtkd_tf.flops import model_flops
    from rmtkd_tf.io import write_json
    from rmtkd_tf.pipeline import load_task
    from compare_methods import one_real_example

    task = load_task(args.teacher, args.data, limit=200, calibration_fraction=0.1)
    teacher = task.model
    floor, n_parts = floor_model(teacher)
    x_test = task.data.x_test
    import keras

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
            comparisons[who] = compare_tflite(
                paths["teacher"], paths[who], threads=1, warmup=20, runs=args.runs,
                inputs_a=one_real_example(paths["teacher"], x_test),
                inputs_b=one_real_example(paths[who], x_test)).to_dict()
    # Speed-ups as teacher/other medians from each interleaved pair (the teacher is re-timed in each).
    speedup = {who: c["ratios"]["median_latency_a_over_b"] for who, c in comparisons.items()}
    floor_speedup = speedup["floor"]
    # Work that factorization scales: the teacher's FLOPs above the floor's (rank-1 parts ~ 0), and the
    # matching share of the teacher's time, 1 - 1/floor_speedup.
    scalable_teacher = flops["teacher"] - flops["floor"]
    fixed_share = 1.0 / floor_speedup
    students = []
    for path in args.students:
        who = str(path)
        fraction = (flops[who] - flops["floor"]) / scalable_teacher
        flop_ratio = flops["teacher"] / flops[who]
        amdahl = 1.0 / (fixed_share + fraction * (1.0 - fixed_share))
        students.append({
            "student": who,
            "flops": flops[who],
            "scalable_flop_fraction": fraction,
            "flop_ratio": flop_ratio,
            "amdahl_bound_speedup": amdahl,
            "measured_fp32_speedup": speedup[who],
            "speedup_over_flop_ratio": speedup[who] / flop_ratio,
            "speedup_over_amdahl_bound": speedup[who] / amdahl,
        })
    name = args.name or Path(args.teacher).stem
    result = {
        "name": name,
        "command": "python benchmarks/latency_floor.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d"),
        "teacher": args.teacher,
        "floor": f"every encoder part ({n_parts}) at rank 1",
        "flops": flops,
        "fixed_share_of_teacher_latency": fixed_share,
        "max_speedup_any_rank": floor_speedup,
        "students": students,
        "comparisons": comparisons,
    }
    write_json(HERE / "results" / f"latency_floor_{name}.json", result)
    print(f"floor (all {n_parts} parts at rank 1): {100 * fixed_share:.0f}% of the teacher's latency is fixed; "
          f"no rank choice beats {floor_speedup:.2f}x")
    for s in students:
        print(f"  {s['student']}: FLOP ratio {s['flop_ratio']:.2f}x, Amdahl bound {s['amdahl_bound_speedup']:.2f}x, "
              f"measured {s['measured_fp32_speedup']:.2f}x ({s['speedup_over_amdahl_bound']:.2f} of the bound)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
