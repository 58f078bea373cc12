"""Pack the text benchmarks and MiniLM-L6 for training BERT teachers on a GPU machine without TensorFlow.

    python -m benchmarks train gpu-prepare          # writes .gpu_teachers/ (git-ignored via .git/info/exclude)

The data go through the project's own code path, exactly as `python -m benchmarks train bert` splits and
encodes them: `rmtkd_tf.data.load_data`, SST-2's `train.tsv` / `dev.tsv` (validation) / `test.tsv`,
AG News with a stratified 10% of its training file held out for validation (`split_train(..., (0.1, 0),
seed=0)`), `encode_texts` at 64 (SST-2) or 128 (AG News) tokens. Each task is encoded twice:

- with MiniLM's WordPiece vocabulary (for the fine-tuned teacher);
- with a task vocabulary, the BERT special tokens plus the MiniLM tokens that occur in the task's
  encoded training split, in MiniLM's order (for the teacher trained from scratch). It is written to
  `<task>.task_vocab.txt` and read back with `load_bert_tokenizer`, the way the pipeline reads
  `<model>.vocab.txt` later, so the ids shipped are the ids the saved teacher will be given.

Written (`--out`, default `.gpu_teachers` at the repository root):

- `data/<task>.npz`: per split `{split}_ids_{pre,task}` (uint16, `(n, seq_len)`), `{split}_len_{pre,task}`
  (real tokens, [CLS] and [SEP] included; the padding mask is `arange(seq_len) < len`), `{split}_y`;
- `data/<task>.json`: sizes, classes, vocabulary sizes;
- `data/<task>.task_vocab.txt`;
- `minilm/model.fp16.safetensors` + `minilm/config.json`: the checkpoint in half precision (45 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from rmtkd_tf.data import load_data, split_train  # noqa: E402
from rmtkd_tf.transformers import encode_texts, load_bert_tokenizer, pretrained_minilm_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_ROOT = ROOT.parent / "shared" / "data"
TASKS = {"sst2": 64, "agnews": 128}
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def task_splits(task, data_root, seed=0):
    """(x, y) for train / val / test, split as benchmarks.train_bert splits them (no limits)."""
    data = load_data(str(data_root / task), seed=seed)
    x_train, y_train = data.x_train, data.y_train
    if data.x_val is not None:
        x_val, y_val = data.x_val, data.y_val
    else:  # AG News: hold out a stratified 10% of the training file
        parts = split_train(x_train, y_train, (0.1, 0), seed=seed)
        x_val, y_val = x_train[parts.calibration], y_train[parts.calibration]
        x_train, y_train = x_train[parts.train], y_train[parts.train]
    return data, {"train": (x_train, y_train), "val": (x_val, y_val), "test": (data.x_test, data.y_test)}


def _pack(encoded):
    ids = encoded["token_ids"]
    if ids.max() >= 2**16:
        raise ValueError(f"token id {ids.max()} does not fit uint16")
    lengths = encoded["padding_mask"].sum(axis=1)
    if not np.array_equal(encoded["padding_mask"], np.arange(ids.shape[1])[None, :] < lengths[:, None]):
        raise ValueError("padding mask is not a prefix mask")
    return ids.astype(np.uint16), lengths.astype(np.uint8)


def task_vocabulary(minilm_vocabulary, train_ids):
    """Special tokens + the MiniLM tokens occurring in the encoded training split, in MiniLM id order."""
    special_ids = {minilm_vocabulary.index(t) for t in SPECIALS}
    used = sorted(set(np.unique(train_ids).tolist()) - special_ids)
    return list(SPECIALS) + [minilm_vocabulary[i] for i in used]


def prepare_task(task, data_root, out, minilm_tokenizer):
    t0 = time.perf_counter()
    seq_len = TASKS[task]
    data, splits = task_splits(task, data_root)
    arrays, info = {}, {"task": task, "seq_len": seq_len, "num_classes": int(data.num_classes),
                        "class_names": data.class_names, "source": data.describe()}
    for split, (x, y) in splits.items():
        arrays[f"{split}_ids_pre"], arrays[f"{split}_len_pre"] = _pack(encode_texts(x, minilm_tokenizer, seq_len))
        arrays[f"{split}_y"] = np.asarray(y, np.uint8)
        info[f"n_{split}"] = int(len(y))
    minilm_vocabulary = minilm_tokenizer.get_vocabulary()
    vocabulary = task_vocabulary(minilm_vocabulary, arrays["train_ids_pre"])
    vocab_path = out / f"{task}.task_vocab.txt"
    vocab_path.write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    tokenizer = load_bert_tokenizer(vocab_path)  # the way the pipeline reads <model>.vocab.txt
    if tokenizer.get_vocabulary() != vocabulary:
        raise RuntimeError("the task vocabulary does not read back unchanged")
    for split, (x, _) in splits.items():
        arrays[f"{split}_ids_task"], arrays[f"{split}_len_task"] = _pack(encode_texts(x, tokenizer, seq_len))
    # On the training split the reduced vocabulary must segment exactly as MiniLM's did.
    index = {token: i for i, token in enumerate(vocabulary)}
    mapping = np.zeros(len(minilm_vocabulary), np.int64)
    for i, token in enumerate(minilm_vocabulary):
        mapping[i] = index.get(token, 0)
    if not np.array_equal(mapping[arrays["train_ids_pre"]], arrays["train_ids_task"]):
        raise RuntimeError("the task vocabulary re-tokenizes the training split differently")
    info["vocab_size_pre"] = len(minilm_vocabulary)
    info["vocab_size_task"] = len(vocabulary)
    for split in splits:
        info[f"{split}_truncated_fraction"] = float(np.mean(arrays[f"{split}_len_pre"] == seq_len))
        info[f"{split}_unk_fraction_task"] = float(np.mean(arrays[f"{split}_ids_task"] == 1))
    np.savez_compressed(out / f"{task}.npz", **arrays)
    (out / f"{task}.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"{task}: {info['source']}; train/val/test {info['n_train']}/{info['n_val']}/{info['n_test']}; "
          f"task vocabulary {len(vocabulary)} tokens; {time.perf_counter() - t0:.1f}s", flush=True)
    return info


def write_minilm(folder, out):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    half = {k: v.astype(np.float16) for k, v in tensors.items() if v.dtype == np.float32}
    save_file(half, str(out / "model.fp16.safetensors"))
    (out / "config.json").write_text((folder / "config.json").read_text())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_ROOT, help="folder holding sst2/ and agnews/")
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu_teachers")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS))
    args = parser.parse_args(argv)
    (args.out / "data").mkdir(parents=True, exist_ok=True)
    (args.out / "minilm").mkdir(parents=True, exist_ok=True)
    folder = pretrained_minilm_folder()
    write_minilm(folder, args.out / "minilm")
    tokenizer = load_bert_tokenizer(folder)
    for task in args.tasks:
        prepare_task(task, args.data, args.out / "data", tokenizer)


if __name__ == "__main__":
    main()
