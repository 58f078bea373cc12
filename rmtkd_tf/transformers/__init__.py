"""Transformer support: RMT-KD inside keras-hub `TransformerEncoder` blocks (BERT and the like).

Importing `rmtkd_tf` imports this package, which registers `LowRankTransformerEncoder`,
`LowRankAttentionProjection`, `LowRankAttentionOutput` and `MaskedMeanPooling`, so `.keras` teachers and students reload with
`keras.models.load_model`.

- `low_rank_encoder`: the factorized encoder and the names of its parts
  (`attention_query`, `attention_key`, `attention_value`, `attention_output`,
  `ffn_intermediate`, `ffn_output`).
- `padding`: padding tokens excluded from the parts' covariances.
- `bert`: pretrained keras-hub BERT backbones, a classifier head, the vocabulary-beside-the-model convention.
- `text`: `encode_texts`, raw strings to `token_ids` / `padding_mask` / `segment_ids`.
- `flops`: `encoder_flops`, the dense FLOPs inside an encoder (per sequence).
"""

from rmtkd_tf.transformers.bert import (
    MaskedMeanPooling,
    bert_classifier,
    load_bert_backbone,
    load_bert_tokenizer,
    pretrained_minilm_folder,
    save_vocabulary,
    tokenizer_for_model,
    vocabulary_path,
    with_sequence_length,
)
from rmtkd_tf.transformers.flops import encoder_flops
from rmtkd_tf.transformers.low_rank_encoder import (
    ENCODER_PARTS,
    LowRankAttentionOutput,
    LowRankAttentionProjection,
    LowRankTransformerEncoder,
    encoder_parts,
    encoder_ranks,
)
from rmtkd_tf.transformers.text import encode_texts

__all__ = [
    "ENCODER_PARTS",
    "LowRankAttentionOutput",
    "LowRankAttentionProjection",
    "LowRankTransformerEncoder",
    "MaskedMeanPooling",
    "bert_classifier",
    "encode_texts",
    "encoder_flops",
    "encoder_parts",
    "encoder_ranks",
    "load_bert_backbone",
    "load_bert_tokenizer",
    "pretrained_minilm_folder",
    "save_vocabulary",
    "tokenizer_for_model",
    "vocabulary_path",
    "with_sequence_length",
]
