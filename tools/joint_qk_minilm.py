"""Joint vs separate query/key factorization on the pretrained MiniLM-L6, at equal parameter counts, no training.

For every encoder layer of all-MiniLM-L6-v2 (12 heads of 32, hidden 384) and
every per-head rank `r`, the query and key projections of that layer alone are
replaced by

- `joint_within`: `rmtkd_tf.joint_qk` factors (per-head key dimension `r`), key
  metric = covariance of the keys within each sentence (the default);
- `joint_global`: the same with the keys' covariance over all tokens;
- `joint_uncentred`: the same with the augmented uncentred second moment on
  both sides (the raw scores, key bias included);
- `separate`: query and key each factorized on its own at rank `k`, the largest
  with no more parameters than the joint pair (`separate_rank_at_equal_params`),
  as RMT-KD's per-part surgery does (PCA of the projection's outputs,
  `rmtkd_tf.factorization.project_kernel`).

Statistics come from `--calibration` SST-2 train sentences, errors are
measured on `--evaluation` SST-2 dev sentences (`/work/shared/data/sst2`):

- `attention_kl`: KL(teacher ‖ student) of the attention probabilities, mean
  over heads and real (unpadded) query tokens, in nats;
- `output_relative_mse`: `Σ‖ŷ − y‖² / Σ‖y − ȳ‖²` of the layer's output over real
  tokens (the layer fed the teacher's input);
- `chained_*`: all six layers cut at once at that rank: relative MSE of the last
  hidden state and mean cosine similarity of the mean-pooled sentence embeddings.

Run: `nice -n 10 python -m tools.joint_qk_minilm` (about 15 minutes on the shared 2-core build machine).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import platform
import shlex
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "joint_qk_minilm.json"
DATA = Path("/work/shared/data/sst2")
METHODS = ("joint_within", "joint_global", "joint_uncentred", "separate")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--calibration", type=int, default=512, help="SST-2 train sentences for the statistics")
    parser.add_argument("--evaluation", type=int, default=256, help="SST-2 dev sentences for the errors")
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--ranks", default="2,4,8,16", help="per-head ranks of the joint factors (of 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--table", type=Path, default=None, metavar="RESULT",
                        help="print the BENCHMARKS.md tables of a result JSON and exit (no computation)")
    return parser.parse_args(argv)


def markdown_tables(result):
    """The BENCHMARKS.md tables of a result: means over the six layers per rank and method, then per layer."""
    rows = [r for r in result["rows"] if r.get("output_relative_mse") is not None]
    chained = {(c["method"], c["rank"]): c for c in result["chained"]}
    ranks = result["settings"]["ranks"]
    lines = ["| r (joint, per head) | k (separate) | Q+K params joint / separate | method | attention KL (nats), "
             "mean of 6 layers | layer output rel. MSE, mean | all 6 layers cut: last hidden rel. MSE | "
             "sentence-embedding cosine | score MSE on calibration (the joint objective), mean |",
             "|---|---|---|---|---|---|---|---|---|"]
    for rank in ranks:
        for method in METHODS:
            sel = [r for r in rows if r["rank"] == rank and r["method"] == method]
            k = next(r["separate_rank"] for r in rows if r["rank"] == rank and r["method"] == "separate")
            params = (next(r["qk_params"] for r in rows if r["rank"] == rank and r["method"] == "joint_within"),
                      next(r["qk_params"] for r in rows if r["rank"] == rank and r["method"] == "separate"))
            c = chained[(method, rank)]
            lines.append(f"| {rank} | {k} | {params[0]:,} / {params[1]:,} | {method} | "
                         f"{np.mean([r['attention_kl'] for r in sel]):.4f} | "
                         f"{np.mean([r['output_relative_mse'] for r in sel]):.4f} | "
                         f"{c['chained_relative_mse']:.4f} | {c['chained_embedding_cosine']:.4f} | "
                         f"{np.mean([r['calibration_score_mse'] for r in sel]):.4f} |")
    lines += ["", "Attention KL per layer (nats), joint_within / separate:", "",
              "| r | " + " | ".join(f"layer {i}" for i in range(6)) + " |", "|---" * 7 + "|"]
    for rank in ranks:
        cells = []
        for layer in range(6):
            get = lambda m: next(r["attention_kl"] for r in rows  # noqa: E731
                                 if r["rank"] == rank and r["method"] == m and r["layer"] == layer)
            cells.append(f"{get('joint_within'):.3f} / {get('separate'):.3f}")
        lines.append(f"| {rank} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_sentences(path):
    with open(path, newline="") as handle:
        return [row["sentence"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]


def layer_activations(backbone, inputs, batch_size=32):
    """`[input of layer 0, output of layer 0, ..., output of layer 5]`, each `(n, length, 384)` float32."""
    import keras

    names = ["embeddings_dropout"] + [f"transformer_layer_{i}" for i in range(6)]
    probe = keras.Model(backbone.inputs, [backbone.get_layer(name).output for name in names])
    n = len(inputs["token_ids"])
    chunks = [probe({k: v[s:s + batch_size] for k, v in inputs.items()}, training=False)
              for s in range(0, n, batch_size)]
    return [np.concatenate([keras.ops.convert_to_numpy(c[i]) for c in chunks]) for i in range(len(names))]


def attention_probabilities(x, mask, query_kernel, query_bias, key_kernel, key_bias, scale):
    """`(batch, heads, queries, keys)` softmax attention of one head layout (NumPy, float64)."""
    def project(kernel, bias):  # (batch, length, D) @ (D, heads, d) as one matmul -> (batch, heads, length, d)
        out = (x.reshape(-1, x.shape[-1]) @ kernel.reshape(kernel.shape[0], -1)).reshape(x.shape[:2] + kernel.shape[1:])
        return np.transpose(out + bias, (0, 2, 1, 3))

    q, k = project(query_kernel, query_bias), project(key_kernel, key_bias)
    scores = scale * q @ np.swapaxes(k, -1, -2)
    scores = np.where(mask[:, None, None, :] > 0, scores, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    return p / p.sum(axis=-1, keepdims=True)


def attention_kl(x, mask, teacher, student, scale, batch=32):
    """Mean KL(teacher ‖ student) over heads and real query tokens."""
    total, count = 0.0, 0.0
    for s in range(0, len(x), batch):
        xb, mb = x[s:s + batch].astype(np.float64), mask[s:s + batch]
        p = attention_probabilities(xb, mb, *teacher, scale)
        p_hat = attention_probabilities(xb, mb, *student, scale)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * (np.log(p) - np.log(np.maximum(p_hat, 1e-300))), 0.0)
        kl = terms.sum(axis=-1)  # (batch, heads, queries)
        total += float((kl * mb[:, None, :]).sum())
        count += float(mb.sum()) * kl.shape[1]
    return total / count


def relative_mse(y_hat, y, mask):
    real = mask.astype(bool)
    diff, target = y_hat[real] - y[real], y[real]
    return float((diff ** 2).sum() / ((target - target.mean(axis=0)) ** 2).sum())


def mean_pooled_cosine(y_hat, y, mask):
    m = mask[..., None].astype(np.float64)
    a, b = (y_hat * m).sum(1) / m.sum(1), (y * m).sum(1) / m.sum(1)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def method_weights(method, encoder, moments, rank, separate_rank):
    """`(query_kernel, query_bias, key_kernel, key_bias)` NumPy arrays of `method` for one encoder."""
    from rmtkd_tf.joint_qk import joint_qk_factors, separate_truncation
    from rmtkd_tf.transformers.joint_qk_surgery import as_float64

    attention = encoder._self_attention_layer
    wq, bq = as_float64(attention._query_dense.kernel), as_float64(attention._query_dense.bias)
    wk, bk = as_float64(attention._key_dense.kernel), as_float64(attention._key_dense.bias)
    if method == "separate":
        q, qb = separate_truncation(wq, bq, separate_rank, moments["within"].query_moment)
        k, kb = separate_truncation(wk, bk, separate_rank, moments["within"].query_moment)
        return q, qb, k, kb
    if method == "joint_uncentred":
        f = joint_qk_factors(wq, bq, wk, rank, moments["within"].query_moment, moments["within"].query_moment,
                             key_bias=bk, key_metric="uncentred")
    else:
        f = joint_qk_factors(wq, bq, wk, rank, moments[method.split("_")[1]].query_moment,
                             moments[method.split("_")[1]].key_moment)
    return f.query_kernel, f.query_bias, f.key_kernel, f.key_bias


def calibration_score_mse(teacher, weights, moments, head_dim):
    """Mean over heads of the joint factors' objective, `tr(Eᵀ S E C) / head_dim`: the mean squared error of the
    scaled scores, centred over the keys of each sentence, on the calibration moments (any method's weights)."""
    from rmtkd_tf.joint_qk import bilinear_forms, weighted_bilinear_error

    forms = bilinear_forms(teacher[0], teacher[1], teacher[2])
    approximation = bilinear_forms(weights[0], weights[1], weights[2])
    return float(weighted_bilinear_error(forms, approximation, moments.query_moment, moments.key_moment).mean()
                 / head_dim)


def padded(weights, width):
    """Query/key weights zero-padded to per-head width `width`: the extra dimensions add 0 to every score."""
    out = []
    for array in weights:
        pad = [(0, 0)] * (array.ndim - 1) + [(0, width - array.shape[-1])]
        out.append(np.pad(array, pad))
    return out


def weight_holder(encoder, input_shape):
    """A built copy of `encoder` whose query/key are dense `EinsumDense` of the full per-head width, and a
    compiled call: every method's weights (zero-padded to that width) are assigned to it in turn."""
    import tensorflow as tf

    from rmtkd_tf.transformers.low_rank_encoder import low_rank_encoder_like

    attention = encoder._self_attention_layer
    copy = low_rank_encoder_like(encoder, {}, joint_qk_rank=int(attention._key_dim))
    copy.build(input_shape)
    for old, new in zip(encoder._flatten_layers(include_self=False, recursive=True),
                        copy._flatten_layers(include_self=False, recursive=True)):
        if not list(old._flatten_layers(include_self=False)) and new.weights:
            new.set_weights(old.get_weights())
    call = tf.function(lambda x, mask: copy(x, padding_mask=mask, training=False), reduce_retracing=True)
    return copy, call


def assign_qk(holder, weights):
    attention = holder._self_attention_layer
    width = int(attention._query_dense.kernel.shape[-1])
    q, qb, k, kb = padded(weights, width)
    for dense, kernel, bias in ((attention._query_dense, q, qb), (attention._key_dense, k, kb)):
        dense.kernel.assign(kernel.astype("float32"))
        dense.bias.assign(bias.astype("float32"))


def run_encoder(call, x, mask, batch=64):
    return np.concatenate([call(x[s:s + batch], mask[s:s + batch]).numpy() for s in range(0, len(x), batch)])


def main(argv=None) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    args = parse_args(argv)
    if args.table is not None:
        import json

        print(markdown_tables(json.loads(args.table.read_text())))
        return 0
    started = time.time()
    import rmtkd_tf  # noqa: F401  (registers the layers)
    from rmtkd_tf.io import write_json
    from rmtkd_tf.joint_qk import (
        joint_qk_parameter_count,
        separate_qk_parameter_count,
        separate_rank_at_equal_params,
    )
    from rmtkd_tf.transformers import encode_texts, load_bert_backbone, load_bert_tokenizer, pretrained_minilm_folder
    from rmtkd_tf.transformers.joint_qk_surgery import as_float64, moments_from_inputs

    folder = pretrained_minilm_folder()
    backbone, tokenizer = load_bert_backbone(folder), load_bert_tokenizer(folder)
    rng = np.random.default_rng(args.seed)
    train = read_sentences(args.data / "train.tsv")
    dev = read_sentences(args.data / "dev.tsv")
    calibration_texts = [train[i] for i in rng.choice(len(train), args.calibration, replace=False)]
    evaluation_texts = [dev[i] for i in rng.choice(len(dev), min(args.evaluation, len(dev)), replace=False)]
    calibration = encode_texts(calibration_texts, tokenizer, args.sequence_length)
    evaluation = encode_texts(evaluation_texts, tokenizer, args.sequence_length)
    cal_acts, ev_acts = layer_activations(backbone, calibration), layer_activations(backbone, evaluation)
    cal_mask, ev_mask = calibration["padding_mask"], evaluation["padding_mask"]
    ranks = [int(r) for r in args.ranks.split(",")]
    hidden, heads, head_dim = 384, 12, 32
    scale = 1.0 / np.sqrt(head_dim)
    encoders = [backbone.get_layer(f"transformer_layer_{i}") for i in range(6)]
    input_shape = (None, args.sequence_length, hidden)

    holders = [weight_holder(encoder, input_shape) for encoder in encoders]
    teachers, weights, rows, score_mse = [], {}, [], {}
    for layer, encoder in enumerate(encoders):
        moments = {key: moments_from_inputs(cal_acts[layer], cal_mask, key) for key in ("within", "global")}
        attention = encoder._self_attention_layer
        teacher = tuple(as_float64(v) for v in (attention._query_dense.kernel, attention._query_dense.bias,
                                            attention._key_dense.kernel, attention._key_dense.bias))
        teachers.append(teacher)
        assign_qk(holders[layer][0], teacher)
        check = relative_mse(run_encoder(holders[layer][1], ev_acts[layer], ev_mask), ev_acts[layer + 1], ev_mask)
        full = method_weights("joint_within", encoder, moments, head_dim, None)
        rows.append({"layer": layer, "rank": head_dim, "method": "joint_within", "separate_rank": None,
                     "qk_params": joint_qk_parameter_count(hidden, heads, head_dim),
                     "attention_kl": attention_kl(ev_acts[layer], ev_mask, teacher, full, scale),
                     "output_relative_mse": None, "teacher_copy_output_relative_mse": check,
                     "note": "full rank: exactness check (and the copied teacher's own output error)"})
        print(f"layer {layer}: full-rank joint KL={rows[-1]['attention_kl']:.2e}, teacher copy {check:.2e}", flush=True)
        for rank in ranks:
            k = separate_rank_at_equal_params(hidden, heads, head_dim, rank)
            for method in METHODS:
                weights[(layer, method, rank)] = method_weights(method, encoder, moments, rank, k)
                score_mse[(layer, method, rank)] = calibration_score_mse(teacher, weights[(layer, method, rank)],
                                                                         moments["within"], head_dim)

    chained = []
    for rank in ranks:
        k = separate_rank_at_equal_params(hidden, heads, head_dim, rank)
        for method in METHODS:
            for layer in range(6):
                assign_qk(holders[layer][0], weights[(layer, method, rank)])
            y = ev_acts[0]
            for layer in range(6):
                y_layer = run_encoder(holders[layer][1], ev_acts[layer], ev_mask)
                rows.append({
                    "layer": layer, "rank": rank, "method": method,
                    "separate_rank": k if method == "separate" else None,
                    "qk_params": (separate_qk_parameter_count(hidden, heads, head_dim, k) if method == "separate"
                                  else joint_qk_parameter_count(hidden, heads, rank)),
                    "attention_kl": attention_kl(ev_acts[layer], ev_mask, teachers[layer],
                                                 weights[(layer, method, rank)], scale),
                    "output_relative_mse": relative_mse(y_layer, ev_acts[layer + 1], ev_mask),
                    "calibration_score_mse": score_mse[(layer, method, rank)],
                })
                y = run_encoder(holders[layer][1], y, ev_mask)
                print(f"layer {layer} r={rank:2d} {method:16s} KL={rows[-1]['attention_kl']:.5f} "
                      f"out={rows[-1]['output_relative_mse']:.6f}", flush=True)
            chained.append({"method": method, "rank": rank,
                            "chained_relative_mse": relative_mse(y, ev_acts[-1], ev_mask),
                            "chained_embedding_cosine": mean_pooled_cosine(y, ev_acts[-1], ev_mask)})
            print(f"chained {method:16s} r={rank:2d} mse={chained[-1]['chained_relative_mse']:.5f} "
                  f"cos={chained[-1]['chained_embedding_cosine']:.5f}", flush=True)

    truncated = float(np.mean(evaluation["padding_mask"][:, -1] > 0))
    result = {
        "schema_version": 2,
        "kind": "attention_error",
        "name": "joint_qk_minilm",
        "command": "python -m tools.joint_qk_minilm",
        "command_as_run": "python -m tools.joint_qk_minilm " + " ".join(shlex.quote(a) for a in argv),
        "what": "per-layer attention KL and output error of query/key factorizations of pretrained MiniLM-L6, "
                "joint (rmtkd_tf.joint_qk) vs separate at equal parameter counts; no training",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs)",
        "settings": {"calibration_sentences": args.calibration, "evaluation_sentences": len(evaluation_texts),
                     "calibration_tokens": int(cal_mask.sum()), "evaluation_tokens": int(ev_mask.sum()),
                     "sequence_length": args.sequence_length, "evaluation_truncated_fraction": truncated,
                     "ranks": ranks, "seed": args.seed, "data": "SST-2 train.tsv (calibration), dev.tsv (evaluation)",
                     "dense_qk_params": 2 * (hidden * heads * head_dim + heads * head_dim)},
        "wall_s": round(time.time() - started, 1),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rows": rows,
        "chained": chained,
    }
    write_json(args.output, result)
    print(f"wrote {args.output} in {result['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
