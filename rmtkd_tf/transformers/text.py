"""Encoding raw texts into the three int32 arrays a BERT classifier takes.

`encode_texts` runs the WordPiece tokenizer and keras-hub's `MultiSegmentPacker`
(`[CLS] tokens [SEP]`, truncated to `sequence_length`, right-padded with
`[PAD]`) over NumPy batches, and returns `token_ids`, `padding_mask` and
`segment_ids` (all zeros: one segment) as `(n, sequence_length)` int32 arrays.

Example:

>>> import keras_hub
>>> vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "good", "film"]
>>> tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
>>> x = encode_texts(["A good film", "bad"], tokenizer, sequence_length=6)
>>> x["token_ids"].tolist()
[[2, 5, 6, 7, 3, 0], [2, 1, 3, 0, 0, 0]]
>>> x["padding_mask"].tolist()
[[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]
"""

from __future__ import annotations

import numpy as np

from rmtkd_tf.arguments import check_integer
from rmtkd_tf.transformers.bert import DEFAULT_SEQUENCE_LENGTH


def encode_texts(texts, tokenizer, sequence_length=DEFAULT_SEQUENCE_LENGTH, batch_size=1024):
    """`{"token_ids", "padding_mask", "segment_ids"}` int32 arrays of shape `(len(texts), sequence_length)`.

    Args:
        texts: a sequence (list, NumPy array) of Python strings.
        tokenizer: a keras-hub `BertTokenizer` (anything with `cls_token_id`,
            `sep_token_id`, `pad_token_id` and a call on a list of strings).
        sequence_length: output length, `[CLS]` and `[SEP]` included; longer
            texts are truncated.
        batch_size: texts tokenized per call.
    """
    import keras_hub

    sequence_length = check_integer(sequence_length, "sequence_length ([CLS], a token, [SEP])", minimum=3)
    batch_size = check_integer(batch_size, "batch_size")
    texts = list(texts)
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise ValueError(f"texts must be Python strings, got a {type(bad).__name__}: {bad!r}")
    packer = keras_hub.layers.MultiSegmentPacker(
        sequence_length=int(sequence_length),
        start_value=tokenizer.cls_token_id,
        end_value=tokenizer.sep_token_id,
        pad_value=tokenizer.pad_token_id,
    )
    token_ids = np.full((len(texts), int(sequence_length)), tokenizer.pad_token_id, np.int32)
    padding_mask = np.zeros_like(token_ids)
    for start in range(0, len(texts), int(batch_size)):
        chunk = texts[start : start + int(batch_size)]
        pieces = tokenizer(chunk)
        if hasattr(pieces, "to_list"):  # a tf.RaggedTensor (keras-hub returns lists on some backends)
            pieces = pieces.to_list()
        packed, _ = packer(pieces)
        packed = np.asarray(packed, np.int32)
        # Real tokens: [CLS], the (truncated) pieces, [SEP].
        lengths = np.minimum(np.array([len(ids) for ids in pieces]) + 2, int(sequence_length))
        token_ids[start : start + len(chunk)] = packed
        padding_mask[start : start + len(chunk)] = np.arange(int(sequence_length))[None, :] < lengths[:, None]
    return {
        "token_ids": token_ids,
        "padding_mask": padding_mask,
        "segment_ids": np.zeros_like(token_ids),
    }
