"""The one timing protocol of every benchmark that times a `.tflite`: two files, interleaved, in one process.

LiteRT interpreter with XNNPACK, 1 thread, batch 1, `WARMUP` warm-up invocations each, then `runs` timed
invocations per model in blocks of `BLOCK_RUNS` scheduled A B B A A B ... (`rmtkd_tf.bench.host.compare_tflite`),
so drift on a shared machine adds the same to both and the ratio holds. A multi-input (BERT) model is fed one
real example (random token ids would fall outside its vocabulary); a single-input model gets random inputs.

>>> PROTOCOL["threads"], PROTOCOL["batch"], PROTOCOL["warmup"], PROTOCOL["block_runs"]
(1, 1, 20, 10)
>>> real_example("unused.tflite", [[1.0, 2.0]]) is None  # one array input: timed on random inputs
True
"""

from __future__ import annotations

WARMUP = 20
BLOCK_RUNS = 10
PROTOCOL = {
    "runtime": "LiteRT interpreter, XNNPACK",
    "threads": 1,
    "batch": 1,
    "warmup": WARMUP,
    "block_runs": BLOCK_RUNS,
    "order": "interleaved ABBA blocks, both models in one process",
    "inputs": "one real test example for multi-input (text) models, random inputs otherwise",
}
DESCRIPTION = "LiteRT interpreter, XNNPACK, 1 thread, batch 1, interleaved ABBA blocks with the teacher"


def real_example(path, x):
    """Batch-1 real input for a multi-input (BERT) `.tflite`, keyed by its interpreter's input tensor names.

    `x` is the test inputs: a dict of arrays (token_ids / padding_mask / segment_ids) or one array. A
    single-input model returns None (timed on random inputs).
    """
    if not isinstance(x, dict):
        return None
    from ai_edge_litert.interpreter import Interpreter

    inputs = {}
    for detail in Interpreter(model_path=str(path)).get_input_details():
        matches = [k for k in x if k in detail["name"]]
        if len(matches) != 1:
            raise ValueError(f"{path}: cannot match input tensor {detail['name']!r} to one of {sorted(x)}")
        inputs[detail["name"]] = x[matches[0]][:1].astype(detail["dtype"])
    return inputs


def time_pair(reference, candidate, x=None, runs=200):
    """Time `candidate` against `reference` (two `.tflite` paths) with the protocol; a `ComparisonResult`.

    Its `ratios["median_latency_a_over_b"]` is the candidate's speed-up over the reference.
    """
    from rmtkd_tf.bench.host import compare_tflite

    return compare_tflite(reference, candidate, threads=PROTOCOL["threads"], warmup=WARMUP, runs=runs,
                          block_runs=BLOCK_RUNS, inputs_a=real_example(reference, x),
                          inputs_b=real_example(candidate, x))


def latency_entry(comparison, flops=None, teacher_flops=None):
    """The `latency[precision]` record of a result entry from a `time_pair` comparison (b = the timed model).

    With both FLOP counts, adds `flop_ratio` (teacher / model: the speed-up a dense model could reach) and
    `speedup_over_flop_ratio` (how much of it is realised).

    >>> from types import SimpleNamespace as S
    >>> side = lambda ms: S(latency_ms=S(median=ms, p90=ms), cpu_seconds_per_inference=ms / 1e3,
    ...                     energy=S(to_dict=lambda: {"available": False}))
    >>> cmp = S(a=side(4.0), b=side(2.0), ratios={"median_latency_a_over_b": 2.0})
    >>> entry = latency_entry(cmp, flops=100, teacher_flops=400)
    >>> entry["speedup_vs_teacher"], entry["flop_ratio"], entry["speedup_over_flop_ratio"]
    (2.0, 4.0, 0.5)
    """
    speedup = comparison.ratios["median_latency_a_over_b"]
    entry = {
        "teacher_median_ms": comparison.a.latency_ms.median,
        "median_ms": comparison.b.latency_ms.median,
        "p90_ms": comparison.b.latency_ms.p90,
        "speedup_vs_teacher": speedup,
        "teacher_cpu_seconds_per_inference": comparison.a.cpu_seconds_per_inference,
        "cpu_seconds_per_inference": comparison.b.cpu_seconds_per_inference,
        "energy": comparison.b.energy.to_dict(),
    }
    if flops and teacher_flops:
        entry["flop_ratio"] = teacher_flops / flops
        if speedup:
            entry["speedup_over_flop_ratio"] = speedup / entry["flop_ratio"]
    return entry
