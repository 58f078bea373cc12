"""Train a user-style text classifier built from keras-hub layers (not a BertBackbone) for the text benchmarks.

    python -m benchmarks train keras-hub-encoder --task agnews     # AG News, 2 encoder blocks, hidden 128

The model is what a user writes by hand from keras-hub's building blocks, in their own functional model:

    token_ids, padding_mask (int32, `--seq-len` tokens)
      -> keras_hub.layers.TokenAndPositionEmbedding (MiniLM's uncased WordPiece vocabulary, 30,522 tokens)
      -> `--layers` x keras_hub.layers.TransformerEncoder(padding_mask=padding_mask)
      -> keras.layers.GlobalAveragePooling1D(mask=padding_mask) -> Dropout -> Dense(classes)

Its inputs carry the names a BERT's do (`token_ids`, `padding_mask`), so `rmtkd-tf compress` and
`python -m benchmarks compress` encode texts for it with the vocabulary saved beside it, as for a BERT.
Data, splits (AG News: a stratified 10% of the training file held out for validation, as
`benchmarks.teacher_split` writes it for compression), encoding, training loop and outputs are
`benchmarks.train_bert`'s: `<out>/<name>.keras`, `.vocab.txt` and `.train.json`.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from benchmarks.train_bert import (  # noqa: E402
    TASKS,
    add_training_arguments,
    check_positive,
    command_line,
    fit_and_save,
    load_and_encode,
)
from rmtkd_tf.transformers import pretrained_minilm_folder  # noqa: E402


def keras_hub_encoder_classifier(vocabulary_size, num_classes, sequence_length, *, hidden_dim=128, num_layers=2,
                                 num_heads=4, intermediate_dim=512, dropout=0.1, name="keras_hub_encoder"):
    """A functional `{token_ids, padding_mask} -> logits` model from keras-hub's embedding and encoder layers.

    >>> model = keras_hub_encoder_classifier(50, 3, 12, hidden_dim=8, num_heads=2, intermediate_dim=16)
    >>> sorted(t.name for t in model.inputs), model.output.shape
    (['padding_mask', 'token_ids'], (None, 3))
    """
    import keras_hub

    token_ids = keras.Input((sequence_length,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((sequence_length,), dtype="int32", name="padding_mask")
    x = keras_hub.layers.TokenAndPositionEmbedding(vocabulary_size, sequence_length, hidden_dim,
                                                   name="embedding")(token_ids)
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    for index in range(num_layers):
        x = keras_hub.layers.TransformerEncoder(intermediate_dim, num_heads, dropout=dropout,
                                                name=f"encoder_{index}")(x, padding_mask=padding_mask)
    x = keras.layers.GlobalAveragePooling1D(name="pooling")(x, mask=padding_mask)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model({"token_ids": token_ids, "padding_mask": padding_mask}, logits, name=name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_arguments(parser)
    parser.add_argument("--hidden-dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate-dim", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="peak AdamW LR (default 1e-3)")
    args = parser.parse_args(argv)
    check_positive(parser, args)
    for option in ("hidden_dim", "layers", "heads", "intermediate_dim"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")

    keras.utils.set_random_seed(args.seed)
    seq_len = args.seq_len or TASKS[args.task]["seq_len"]
    name = args.name or f"{args.task}_keras_hub_encoder"
    folder = pretrained_minilm_folder()  # only its vocabulary

    t0 = time.perf_counter()
    data, splits, tokenizer, encoded, truncated = load_and_encode(args, folder, seq_len, t0)
    shape = {"hidden_dim": args.hidden_dim, "num_layers": args.layers, "num_heads": args.heads,
             "intermediate_dim": args.intermediate_dim}
    model = keras_hub_encoder_classifier(tokenizer.vocabulary_size(), data.num_classes, seq_len, **shape, name=name)
    return fit_and_save(model, splits, encoded, tokenizer, args, name=name, learning_rate=args.learning_rate, t0=t0,
                        record={"command": command_line("keras-hub-encoder", argv),
                                "architecture": "keras_hub_encoder_classifier", "shape": shape, "seq_len": seq_len,
                                "vocabulary": str(folder / "vocab.txt"), "train_truncated_fraction": truncated})


if __name__ == "__main__":
    main()
