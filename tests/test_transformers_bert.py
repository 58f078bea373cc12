"""BERT classifiers, text encoding, the vocabulary-beside-the-model convention, and RMT-KD on text data."""

import json

import numpy as np
import pytest

import keras
import keras_hub

from rmtkd_tf.compression import CompressionConfig
from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.io import load_model
from rmtkd_tf.pipeline import compress_task, load_task
from rmtkd_tf.transformers import (
    bert_classifier,
    encode_texts,
    load_bert_tokenizer,
    save_vocabulary,
    tokenizer_for_model,
    vocabulary_path,
)

SEQ_LEN = 12
WORDS = ["the", "film", "was", "good", "bad", "very", "plot", "acting", "not", "great", "awful", "fun"]
VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
VOCABULARY += [f"[unused{i}]" for i in range(64 - len(VOCABULARY))]


def tiny_tokenizer():
    return keras_hub.models.BertTokenizer(vocabulary=VOCABULARY, lowercase=True)


def tiny_model(seed=0, pooling="mean"):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCABULARY), num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=16, name="bert_backbone",
    )
    return bert_classifier(backbone, num_classes=2, sequence_length=SEQ_LEN, pooling=pooling, dropout=0.0)


def write_sentiment_tsv(folder, n_train=160, n_test=40, seed=0, n_dev=0):
    """A two-class toy sentiment set: the label says whether a positive word occurs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("test.tsv", n_test), ("dev.tsv", n_dev)):
        if n == 0:
            continue
        rows = ["sentence\tlabel"]
        for i in range(n):
            label = i % 2
            filler = list(rng.choice(["the", "film", "was", "very", "plot", "acting"], rng.integers(1, 12)))
            filler.insert(int(rng.integers(0, len(filler) + 1)), rng.choice(["good", "great", "fun"] if label else ["bad", "awful"]))
            rows.append(" ".join(filler).capitalize() + f"\t{label}")
        (folder / name).write_text("\n".join(rows) + "\n")
    return folder


def save_toy_bert(folder):
    """`folder/toy_bert.keras` (a tiny random BERT classifier) with its vocabulary beside it; returns the path."""
    model_path = folder / "toy_bert.keras"
    tiny_model().save(model_path)
    save_vocabulary(tiny_tokenizer(), model_path)
    return model_path


def test_encode_texts_packs_truncates_and_masks():
    tokenizer = tiny_tokenizer()
    x = encode_texts(["The film was GOOD", "", "the " * 20, "zebra"], tokenizer, sequence_length=6, batch_size=3)
    assert set(x) == {"token_ids", "padding_mask", "segment_ids"}
    assert all(a.dtype == np.int32 and a.shape == (4, 6) for a in x.values())
    assert x["token_ids"][0].tolist() == [2, 5, 6, 7, 8, 3]
    assert x["token_ids"][1].tolist() == [2, 3, 0, 0, 0, 0]
    assert x["token_ids"][2].tolist() == [2, 5, 5, 5, 5, 3]  # truncated, [SEP] kept
    assert x["token_ids"][3].tolist() == [2, 1, 3, 0, 0, 0]  # unknown word
    assert x["padding_mask"].sum(axis=1).tolist() == [6, 2, 6, 3]
    assert not x["segment_ids"].any()
    with pytest.raises(ValueError, match="strings"):
        encode_texts(["fine", 3], tokenizer)
    with pytest.raises(ValueError, match="sequence_length"):
        encode_texts(["fine"], tokenizer, sequence_length=2)


def test_vocabulary_beside_the_model(tmp_path):
    model_path = tmp_path / "sst2_bert.keras"
    assert vocabulary_path(model_path) == tmp_path / "sst2_bert.vocab.txt"
    with pytest.raises(RMTKDError, match="sst2_bert.vocab.txt"):
        tokenizer_for_model(model_path)
    save_vocabulary(tiny_tokenizer(), model_path)
    tokenizer = tokenizer_for_model(model_path)
    assert tokenizer.lowercase and tokenizer.get_vocabulary() == VOCABULARY
    texts = ["The plot was NOT great", "awful acting"]
    for key, array in encode_texts(texts, tokenizer, 8).items():
        np.testing.assert_array_equal(array, encode_texts(texts, tiny_tokenizer(), 8)[key])
    # A cased vocabulary reloads as cased; a file without BERT's special tokens is refused.
    cased = tmp_path / "cased.txt"
    cased.write_text("\n".join(VOCABULARY + ["Film"]) + "\n")
    assert not load_bert_tokenizer(cased).lowercase
    (tmp_path / "words.txt").write_text("the\nfilm\n")
    with pytest.raises(RMTKDError, match=r"\[PAD\]"):
        load_bert_tokenizer(tmp_path / "words.txt")


def test_bert_classifier_inputs_and_bad_arguments(tmp_path):
    model = tiny_model(pooling="cls")
    assert sorted(t.name for t in model.inputs) == ["padding_mask", "segment_ids", "token_ids"]
    assert all(t.shape == (None, SEQ_LEN) and t.dtype == "int32" for t in model.inputs)
    # The head uses the sequence output: the backbone's pooler is trimmed away.
    assert "pooled_dense" not in [l.name for l in model.get_layer("bert_backbone").layers]
    x = encode_texts(["good film", "bad film"], tiny_tokenizer(), SEQ_LEN)
    path = tmp_path / "model.keras"
    model.save(path)
    np.testing.assert_allclose(load_model(path).predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    backbone = model.get_layer("bert_backbone")
    with pytest.raises(ValueError, match="pooling"):
        bert_classifier(backbone, 2, SEQ_LEN, pooling="max")
    full_backbone = keras_hub.models.BertBackbone(
        vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16
    )
    with pytest.raises(ValueError, match="sequence_length"):
        bert_classifier(full_backbone, 2, sequence_length=32)


def test_load_task_encodes_text_with_the_saved_vocabulary(tmp_path):
    data = write_sentiment_tsv(tmp_path / "toy")
    model_path = tmp_path / "toy_bert.keras"
    tiny_model().save(model_path)
    with pytest.raises(RMTKDError, match="vocabulary"):
        load_task(model_path, data, log=lambda m: None)
    save_vocabulary(tiny_tokenizer(), model_path)
    task = load_task(model_path, data, log=lambda m: None)
    assert set(task.data.x_train) == {"token_ids", "padding_mask", "segment_ids"}
    assert task.data.x_calibration["token_ids"].shape == (16, SEQ_LEN)
    assert task.data.x_validation["token_ids"].shape == (16, SEQ_LEN)
    assert task.data.x_train["token_ids"].shape == (144, SEQ_LEN) and len(task.data.y_train) == 144
    assert task.data.x_test["token_ids"].shape == (40, SEQ_LEN)
    # Real tokens only, never a padding id inside the mask.
    assert (task.data.x_train["token_ids"][task.data.x_train["padding_mask"] == 1] != 0).all()
    with pytest.raises(RMTKDError, match="12 tokens"):
        load_task(model_path, data, sequence_length=64, log=lambda m: None)
    # An explicit tokenizer (a vocab.txt path) overrides the convention.
    other_vocab = tmp_path / "other.txt"
    other_vocab.write_text("\n".join(VOCABULARY) + "\n")
    assert load_task(model_path, data, tokenizer=other_vocab, log=lambda m: None).data.x_test["token_ids"].shape == (40, SEQ_LEN)
    # A model without token_ids cannot take text.
    image_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    image_model.save(tmp_path / "dense.keras")
    with pytest.raises(RMTKDError, match="token_ids"):
        load_task(tmp_path / "dense.keras", data, log=lambda m: None)


@pytest.mark.slow
def test_compress_runs_on_a_bert_classifier_and_resumes(tmp_path):
    data = write_sentiment_tsv(tmp_path / "toy", n_train=120, n_test=24)
    model_path = save_toy_bert(tmp_path)
    task = load_task(model_path, data, log=lambda m: None)
    # The FFN expansions (16 -> 32): in so small a model the 16x16 projections rarely have an MP rank that saves.
    ffn = [f"bert_backbone/transformer_layer_{i}/ffn_intermediate" for i in (0, 1)]
    config = CompressionConfig(schedule="iterative", max_steps=2, max_drop=100.0, batch_size=16, calibration_samples=64,
                               rule_params={"tau": 0.5}, min_rank_ratio=0.05, layers=ffn)
    report = compress_task(task, config, tmp_path / "full", export_precision="fp32", log=lambda m: None)
    first = ffn[0]
    history = json.loads((tmp_path / "full" / "history.json").read_text())
    assert history["steps"][0]["layers"] == [first]
    decision = history["steps"][0]["decisions"][0]
    assert decision["n_samples"] == int(task.data.x_calibration["padding_mask"].sum())
    assert report["steps"] == 2
    for path, entry in report["layers"].items():  # ranks per encoder part
        assert path.startswith("bert_backbone/transformer_layer_") and entry["rank"] < entry["units"]
    student = load_model(tmp_path / "full" / "student.keras")
    # The vocabulary compress encoded with lies beside the student (what `export --data TEXT` reads).
    assert tokenizer_for_model(tmp_path / "full" / "student.keras").get_vocabulary() == VOCABULARY
    assert student.count_params() == report["student"]["params"] < report["teacher"]["params"]
    assert report["export"]["student"]["flex_ops"] == []
    assert report["export"]["student"]["verification"]["top1_agreement"] == 1.0

    def crash_on_second_step(message):
        if message.startswith("step 2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compress_task(task, config, tmp_path / "resumed", export_precision=None, log=crash_on_second_step)
    resumed = compress_task(task, config, tmp_path / "resumed", resume=True, export_precision=None, log=lambda m: None)
    assert resumed["layers"] == report["layers"]
    np.testing.assert_allclose(
        load_model(tmp_path / "resumed" / "student.keras").predict(task.data.x_test, verbose=0),
        student.predict(task.data.x_test, verbose=0), atol=1e-5,
    )


@pytest.mark.slow
def test_budgeted_schedule_cuts_every_encoder_part_of_a_bert_classifier(tmp_path):
    data = write_sentiment_tsv(tmp_path / "toy", n_train=120, n_test=24)
    model_path = save_toy_bert(tmp_path)
    task = load_task(model_path, data, log=lambda m: None)
    config = CompressionConfig(schedule="budgeted", target_flops=0.7, distillation_epochs=1, batch_size=16,
                               calibration_samples=64, min_rank_ratio=0.05, feature_weight=1.0)
    report = compress_task(task, config, tmp_path / "run", export_precision="fp32", log=lambda m: None)
    assert report["student"]["flops"] <= 0.7 * report["teacher"]["flops"]
    assert report["layers"] and all(path.startswith("bert_backbone/transformer_layer_") for path in report["layers"])
    student = load_model(tmp_path / "run" / "student.keras")
    assert student.count_params() == report["student"]["params"] < report["teacher"]["params"]
    assert report["export"]["student"]["flex_ops"] == []


@pytest.mark.slow
def test_pretrained_minilm_embeds_related_sentences_closer():
    pytest.importorskip("safetensors")
    from rmtkd_tf.transformers import load_bert_backbone, pretrained_minilm_folder

    try:
        folder = pretrained_minilm_folder()
    except RMTKDError as error:
        pytest.skip(str(error))
    backbone = load_bert_backbone(folder)
    tokenizer = load_bert_tokenizer(folder)
    assert backbone.get_config()["num_layers"] == 6 and backbone.get_config()["hidden_dim"] == 384
    # The vocab.txt alone gives the same tokenizer (the convention used beside saved models).
    texts = ["A man is eating food.", "A man is eating a piece of bread.",
             "The stock market fell sharply today.", "Investors sold shares as prices dropped."]
    x = encode_texts(texts, tokenizer, 32)
    np.testing.assert_array_equal(encode_texts(texts, load_bert_tokenizer(folder / "vocab.txt"), 32)["token_ids"],
                                  x["token_ids"])
    sequence = keras.ops.convert_to_numpy(backbone(x)["sequence_output"])
    mask = x["padding_mask"][..., None]
    embeddings = (sequence * mask).sum(1) / mask.sum(1)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = embeddings @ embeddings.T
    related = min(similarity[0, 1], similarity[2, 3])
    unrelated = max(similarity[0, 2], similarity[0, 3], similarity[1, 2], similarity[1, 3])
    assert related > 0.5 > 0.2 > unrelated


def test_validation_is_the_data_sets_own_split_when_it_has_one(tmp_path):
    data = write_sentiment_tsv(tmp_path / "toy", n_train=60, n_test=10, n_dev=14)
    model_path = save_toy_bert(tmp_path)
    own = load_task(model_path, data, log=lambda m: None)
    assert len(own.data.y_validation) == 14 and len(own.data.y_train) == 60  # dev.tsv; nothing held out of train
    np.testing.assert_array_equal(own.data.y_validation, own.splits.y_val)
    carved = load_task(model_path, data, validation="train", validation_fraction=0.2, log=lambda m: None)
    assert len(carved.data.y_validation) == 12 and len(carved.data.y_train) == 48
    with pytest.raises(RMTKDError, match="validation"):
        load_task(model_path, data, validation="test", log=lambda m: None)


@pytest.mark.slow
def test_block_by_block_order_reduces_one_encoder_block_per_step(tmp_path):
    data = write_sentiment_tsv(tmp_path / "toy", n_train=80, n_test=16)
    model_path = save_toy_bert(tmp_path)
    task = load_task(model_path, data, log=lambda m: None)
    config = CompressionConfig(max_steps=2, max_drop=100.0, batch_size=16, calibration_samples=64,
                               rank_rule="fixed-ratio", rule_params={"ratio": 0.25}, order="block-by-block")
    compress_task(task, config, tmp_path / "run", export_precision=None, log=lambda m: None)
    steps = json.loads((tmp_path / "run" / "history.json").read_text())["steps"]
    parts = ["attention_query", "attention_key", "attention_value", "attention_output", "ffn_intermediate", "ffn_output"]
    for i, step in enumerate(steps):
        assert step["layers"] == [f"bert_backbone/transformer_layer_{i}/{part}" for part in parts]
