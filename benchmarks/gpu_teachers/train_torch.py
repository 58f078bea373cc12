"""Train the four BERT teachers of the text benchmarks with PyTorch on a GPU machine (no TensorFlow there).

    python benchmarks/gpu_teachers/train_torch.py train --work /tmp/gt              # all four, in parallel
    python benchmarks/gpu_teachers/train_torch.py pack --work /tmp/gt --out $OUT NAME ...
    python benchmarks/gpu_teachers/train_torch.py train --work /tmp/gt --smoke      # tiny CPU dry run
    python benchmarks/gpu_teachers/train_torch.py train --work /tmp/gt sst2_minilm_scratch.reg   # a variant
    python benchmarks/gpu_teachers/train_torch.py pack --best --work /tmp/gt --out $OUT sst2_minilm_scratch

Reads what `prepare.py` wrote (`.gpu_teachers/data`, `.gpu_teachers/minilm`). Each model is the same
function as `rmtkd_tf.transformers.bert_classifier(backbone, n, seq_len, pooling="mean")` on a keras-hub
`BertBackbone`: Hugging Face `BertModel` (post-LN, LayerNorm epsilon 1e-12, tanh-approximated GELU as
keras-hub's BERT uses, segment ids 0), the mean of the real tokens' final states, dropout 0.1, a dense
layer to the logits. Padding is trimmed per batch (it changes nothing: padded keys are masked and padded
positions are not pooled).

- `<task>_minilm_pretrained`: MiniLM-L6-H384 fine-tuned, its word-embedding matrix frozen (so it need not
  travel back; the import takes it from the half-precision checkpoint this run started from).
- `<task>_minilm_scratch`: the same shape from random weights, on the task vocabulary.

AdamW (weight decay 0.01, not on biases and LayerNorms), linear warm-up over 10% of the steps then cosine
decay to 0, gradient norm clipped at 1, bf16 autocast; the epoch with the best validation accuracy is kept
(scratch models stop after `patience` epochs without a better one). The kept weights are rounded to fp16,
and the validation/test accuracies and the logits of the first 64 test rows are computed in fp32 from those
rounded weights, so the Keras import can be checked against them exactly.

`NAME.VARIANT` trains NAME with the overrides in `VARIANTS` (a small sweep); `pack --best` returns, of
NAME and its trained variants, the one with the best validation accuracy.

Each model's weights go to `--work/<name>[.<variant>]/<name>.pK.npz` (float16 tensors stored as low/high byte planes,
zlib-compressed, at most ~14 MiB raw each: the device tool returns 8 files of 16 MiB per call) and its
record (settings, history, accuracies, probe logits) to the first shard as `__meta__`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

if __package__:
    from .script_command import script_command
    from .shard_pack import pack_shards
else:  # run as a script on the GPU machine (no TensorFlow, no rmtkd_tf): import from this folder
    from script_command import script_command
    from shard_pack import pack_shards

ROOT = Path(__file__).resolve().parents[2]
MODELS = {
    "sst2_minilm_pretrained": dict(task="sst2", init="pretrained", epochs=3, batch_size=32, learning_rate=5e-5, patience=None),
    "agnews_minilm_pretrained": dict(task="agnews", init="pretrained", epochs=5, batch_size=32, learning_rate=5e-5, patience=None),
    "sst2_minilm_scratch": dict(task="sst2", init="scratch", epochs=10, batch_size=64, learning_rate=2e-4, patience=3),
    "agnews_minilm_scratch": dict(task="agnews", init="scratch", epochs=25, batch_size=32, learning_rate=2e-4, patience=6),
}
# Optional variants of a model, trained as `NAME.VARIANT` (a small sweep; `pack --best` keeps the best by validation).
VARIANTS = {
    "lr1e-4": dict(learning_rate=1e-4),
    "lr3e-4": dict(learning_rate=3e-4),
    "reg": dict(dropout=0.2, weight_decay=0.05),
}
SHAPE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
             max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
             pad_token_id=0)
WARMUP, WEIGHT_DECAY, CLIPNORM, DROPOUT, PROBE_ROWS = 0.1, 0.01, 1.0, 0.1, 64
SHARD_BYTES = 14 * 2**20


# ---------------------------------------------------------------- weights on the wire
def write_shards(tensors, meta, folder, name):
    """fp16 tensors -> `name.pK.npz` files of at most SHARD_BYTES raw bytes (byte planes, zlib)."""
    folder.mkdir(parents=True, exist_ok=True)
    shards, current, size = [], {}, 0
    for key, value in tensors.items():
        value = np.ascontiguousarray(value, np.float16)
        if current and size + value.nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        planes = value.reshape(-1).view(np.uint8).reshape(-1, 2)
        current[key + ".lo"], current[key + ".hi"] = planes[:, 0].copy(), planes[:, 1].copy()
        current[key + ".shape"] = np.array(value.shape, np.int64)
        size += value.nbytes
    shards.append(current)
    meta = dict(meta, shards=len(shards))
    shards[0]["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    paths = []
    for k, shard in enumerate(shards):
        path = folder / f"{name}.p{k}.npz"
        np.savez_compressed(path, **shard)
        paths.append(path)
    return paths


def read_shards(folder, name):
    """(tensors as float16 arrays, meta) from the `name.pK.npz` files in `folder` (inverse of write_shards)."""
    first = np.load(folder / f"{name}.p0.npz")
    meta = json.loads(first["__meta__"].tobytes().decode())
    tensors = {}
    for k in range(meta["shards"]):
        shard = first if k == 0 else np.load(folder / f"{name}.p{k}.npz")
        for key in shard.files:
            if key.endswith(".shape"):
                base = key[: -len(".shape")]
                planes = np.stack([shard[base + ".lo"], shard[base + ".hi"]], axis=1)
                tensors[base] = planes.reshape(-1).view(np.float16).reshape(tuple(shard[key]))
    return tensors, meta


# ---------------------------------------------------------------- model
def build(torch, num_classes, vocab_size, init, minilm_folder, dropout=DROPOUT):
    from transformers import BertConfig, BertModel
    from transformers.activations import ACT2FN

    act = "gelu_pytorch_tanh" if "gelu_pytorch_tanh" in ACT2FN else "gelu_new"  # keras-hub: gelu(approximate=True)
    config = BertConfig(vocab_size=vocab_size, hidden_act=act, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout, **SHAPE)
    nn = torch.nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = BertModel(config, add_pooling_layer=False)
            self.dropout = nn.Dropout(dropout)
            self.logits = nn.Linear(config.hidden_size, num_classes)
            nn.init.xavier_uniform_(self.logits.weight)  # keras Dense's glorot_uniform
            nn.init.zeros_(self.logits.bias)

        def forward(self, ids, mask):
            hidden = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
            weights = mask.unsqueeze(-1).float()
            pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp_min(1.0)
            return self.logits(self.dropout(pooled))

    model = Classifier()
    if init == "pretrained":
        from safetensors.torch import load_file

        state = {k: v.float() for k, v in load_file(str(minilm_folder / "model.fp16.safetensors")).items()}
        missing, unexpected = model.bert.load_state_dict(state, strict=False)
        if missing or any(not k.startswith("pooler.") for k in unexpected):
            raise RuntimeError(f"MiniLM checkpoint mismatch: missing {missing}, unexpected {unexpected}")
        model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    return model, act


# ---------------------------------------------------------------- one model
def split_name(full_name):
    """`NAME` or `NAME.VARIANT` -> (NAME, VARIANT or None); a one-line error for unknown ones."""
    name, _, variant = full_name.partition(".")
    if name not in MODELS or (variant and variant not in VARIANTS):
        raise SystemExit(f"unknown model {full_name!r}: NAME or NAME.VARIANT, NAME in {list(MODELS)}, "
                         f"VARIANT in {list(VARIANTS)}")
    return name, variant or None


def train_one(full_name, args):
    import torch

    name, variant = split_name(full_name)
    spec = dict(MODELS[name], dropout=DROPOUT, weight_decay=WEIGHT_DECAY)
    spec.update(VARIANTS.get(variant, {}))
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    t0 = time.perf_counter()
    deadline = t0 + args.max_seconds
    task, init = spec["task"], spec["init"]
    info = json.loads((args.data / f"{task}.json").read_text())
    arrays = np.load(args.data / f"{task}.npz")
    vocab = "pre" if init == "pretrained" else "task"
    seq_len = info["seq_len"]

    def split(s, limit=None):
        ids = arrays[f"{s}_ids_{vocab}"].astype(np.int64)
        lengths = arrays[f"{s}_len_{vocab}"].astype(np.int64)
        y = arrays[f"{s}_y"].astype(np.int64)
        if limit:
            ids, lengths, y = ids[:limit], lengths[:limit], y[:limit]
        ids_t = torch.from_numpy(ids).to(device)
        mask = (torch.arange(seq_len)[None, :] < torch.from_numpy(lengths)[:, None]).long().to(device)
        return ids_t, mask, torch.from_numpy(lengths).to(device), torch.from_numpy(y).to(device)

    small = 256 if args.smoke else None
    train, val, test = split("train", small), split("val", small and 64), split("test", small and 64)
    epochs = 2 if args.smoke else spec["epochs"]
    vocab_size = info[f"vocab_size_{vocab}"]
    model, act = build(torch, info["num_classes"], vocab_size, init, args.minilm, spec["dropout"])
    model.to(device)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "LayerNorm" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and not (p.ndim >= 2 and "LayerNorm" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec["learning_rate"], betas=(0.9, 0.999), eps=1e-8, fused=device.type == "cuda",
    )
    n_train = len(train[3])
    steps_per_epoch = math.ceil(n_train / spec["batch_size"])
    total_steps, warmup = epochs * steps_per_epoch, int(WARMUP * epochs * steps_per_epoch)

    def lr_factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def batches(data, batch_size, order=None):
        ids, mask, lengths, y = data
        n = len(y)
        order = torch.arange(n, device=device) if order is None else order
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            width = int(lengths[index].max())
            yield ids[index, :width], mask[index, :width], y[index]

    @torch.no_grad()
    def evaluate(data, use_autocast=True):
        model.eval()
        correct, loss, n = 0, 0.0, 0
        for ids, mask, y in batches(data, 512):
            if use_autocast:
                with autocast:
                    logits = model(ids, mask)
            else:
                logits = model(ids, mask)
            logits = logits.float()
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
            n += len(y)
        model.train()
        return correct / n, loss / n

    history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    epoch_seconds, best, best_epoch, best_state, stale = [], -1.0, None, None, 0
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    model.train()
    print(f"[{full_name}] {n_train} train, {len(val[3])} val, {len(test[3])} test, vocab {vocab_size}, "
          f"{epochs} epochs x {steps_per_epoch} steps, lr {spec['learning_rate']}, act {act}, {device}", flush=True)
    for epoch in range(epochs):
        t_epoch = time.perf_counter()
        order = torch.randperm(n_train, generator=generator).to(device)
        total_loss = torch.zeros((), device=device)
        total_correct = torch.zeros((), device=device, dtype=torch.long)
        for ids, mask, y in batches(train, spec["batch_size"], order):
            with autocast:
                logits = model(ids, mask)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIPNORM)
            optimizer.step()
            scheduler.step()
            total_loss += loss.detach() * len(y)
            total_correct += (logits.argmax(-1) == y).sum()
        val_accuracy, val_loss = evaluate(val)
        history["loss"].append(float(total_loss) / n_train)
        history["accuracy"].append(int(total_correct) / n_train)
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(val_accuracy)
        epoch_seconds.append(round(time.perf_counter() - t_epoch, 1))
        improved = val_accuracy > best
        if improved:
            best, best_epoch, stale = val_accuracy, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        print(f"[{full_name}] epoch {epoch + 1}: loss {history['loss'][-1]:.4f} acc {history['accuracy'][-1]:.4f} "
              f"val_loss {val_loss:.4f} val_acc {val_accuracy:.4f}{' *' if improved else ''} "
              f"({epoch_seconds[-1]}s)", flush=True)
        if spec["patience"] and stale >= spec["patience"]:
            print(f"[{full_name}] early stop after epoch {epoch + 1}", flush=True)
            break
        if epoch + 1 < epochs and time.perf_counter() + 1.2 * epoch_seconds[-1] > deadline:
            print(f"[{full_name}] stopping: the next epoch would pass the {args.max_seconds}s deadline", flush=True)
            break
    train_seconds = time.perf_counter() - t0

    # Round the kept weights to fp16 (what travels back) and measure everything on the rounded model, fp32.
    torch.backends.cuda.matmul.allow_tf32 = False  # true fp32 for the numbers the import is checked against
    torch.backends.cudnn.allow_tf32 = False
    rounded = {k: (v.half().float() if v.is_floating_point() else v) for k, v in best_state.items()}
    model.load_state_dict(rounded)
    val_accuracy, _ = evaluate(val, use_autocast=False)
    test_accuracy, test_loss = evaluate(test, use_autocast=False)
    with torch.no_grad():
        model.eval()
        probe = model(test[0][:PROBE_ROWS], test[1][:PROBE_ROWS]).float().cpu().numpy()
    tensors = {}
    for key, value in rounded.items():
        if not value.is_floating_point():
            continue
        if init == "pretrained" and key == "bert.embeddings.word_embeddings.weight":
            continue  # frozen: the import takes it from minilm/model.fp16.safetensors
        tensors[key] = value.cpu().numpy().astype(np.float16)
    meta = {
        "name": name, "variant": variant, "task": task, "init": init, "seq_len": seq_len, "vocab": vocab, "vocab_size": vocab_size,
        "num_classes": info["num_classes"], "hidden_act": act, "settings": dict(spec, epochs=epochs, seed=args.seed,
        warmup=WARMUP, clipnorm=CLIPNORM, precision="bf16 autocast", variant=variant,
        frozen_word_embeddings=init == "pretrained", smoke=bool(args.smoke)),
        "n_train": n_train, "n_val": len(val[3]), "n_test": len(test[3]),
        "history": history, "epoch_seconds": epoch_seconds, "best_epoch": best_epoch,
        "val_accuracy_bf16": 100.0 * best, "val_accuracy": 100.0 * val_accuracy,
        "test_accuracy": 100.0 * test_accuracy, "test_loss": test_loss,
        "train_seconds": round(train_seconds, 1), "wall_s": round(time.perf_counter() - t0, 1),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "probe_rows": PROBE_ROWS, "probe_logits": probe.tolist(),
        "command": script_command(__file__),  # the `one` command `train` ran
    }
    paths = write_shards(tensors, meta, args.work / full_name, name)
    (args.work / full_name / "DONE").write_text("ok\n")
    print(f"[{full_name}] best epoch {best_epoch}: val {100 * val_accuracy:.2f}% test {100 * test_accuracy:.2f}% "
          f"(fp16 weights, fp32 eval); {train_seconds:.0f}s; {sum(p.stat().st_size for p in paths) / 2**20:.1f} MiB "
          f"in {len(paths)} shards", flush=True)


# ---------------------------------------------------------------- commands
def cmd_train(args):
    names = args.models or list(MODELS)
    for full_name in names:
        split_name(full_name)
    todo = [n for n in names if not (args.work / n / "DONE").is_file()]
    print(f"to train: {todo} (done already: {sorted(set(names) - set(todo))})", flush=True)
    procs = {}
    for name in todo:
        shutil.rmtree(args.work / name, ignore_errors=True)
        command = [sys.executable, __file__, "one", name, "--work", str(args.work), "--data", str(args.data),
                   "--minilm", str(args.minilm), "--max-seconds", str(args.max_seconds), "--seed", str(args.seed)]
        if args.smoke:
            command.append("--smoke")
        procs[name] = subprocess.Popen(command, env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2"))
        if not args.parallel:
            procs[name].wait()
    failed = [n for n, p in procs.items() if p.wait() != 0]
    if failed:
        sys.exit(f"training failed for {failed}")


def best_variant(work, name):
    """The trained folder `work/NAME[.VARIANT]` with the best validation accuracy (prints them all)."""
    scores = {}
    for folder in [work / name, *sorted(work.glob(f"{name}.*"))]:
        if (folder / "DONE").is_file():
            with np.load(folder / f"{name}.p0.npz") as first:
                meta = json.loads(first["__meta__"].tobytes().decode())
            scores[folder.name] = (meta["val_accuracy"], meta["test_accuracy"])
    if not scores:
        sys.exit(f"{name} is not trained in {work}")
    for key, (val, test) in sorted(scores.items(), key=lambda kv: -kv[1][0]):
        print(f"  {key}: val {val:.2f}% (test {test:.2f}%)", flush=True)
    return max(scores, key=lambda key: scores[key][0])


def cmd_pack(args):
    folders = [args.work / (best_variant(args.work, name) if args.best else name) for name in args.names]
    pack_shards(folders, args.names, args.out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("train", "one"):
        p = sub.add_parser(command)
        if command == "train":
            p.add_argument("models", nargs="*", help=f"default: all of {list(MODELS)}")
            p.add_argument("--sequential", dest="parallel", action="store_false", help="one model at a time")
        else:
            p.add_argument("name", help="NAME or NAME.VARIANT")
        p.add_argument("--work", type=Path, required=True)
        p.add_argument("--data", type=Path, default=ROOT / ".gpu_teachers" / "data")
        p.add_argument("--minilm", type=Path, default=ROOT / ".gpu_teachers" / "minilm")
        p.add_argument("--max-seconds", type=float, default=300.0, help="start no epoch that would end past this")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--smoke", action="store_true", help="256 training rows, 64 val/test rows, 2 epochs")
    p = sub.add_parser("pack")
    p.add_argument("names", nargs="+", choices=list(MODELS))
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--best", action="store_true", help="of NAME and its trained variants, the best by validation")
    args = parser.parse_args(argv)
    if args.command == "train":
        cmd_train(args)
    elif args.command == "one":
        train_one(args.name, args)
    else:
        cmd_pack(args)


if __name__ == "__main__":
    main()
