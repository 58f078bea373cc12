"""The text teachers' builders: BERT-tiny's shape (`train bert --shape tiny`) and the user-style keras-hub encoder."""

import doctest
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import pytest  # noqa: E402

from benchmarks import train_bert, train_encoder  # noqa: E402
from rmtkd_tf.baselines import encoder_parameter_count  # noqa: E402
from rmtkd_tf.collection import candidate_layers  # noqa: E402
from rmtkd_tf.transformers import bert_classifier  # noqa: E402


def test_docstring_examples():
    assert doctest.testmod(train_encoder).failed == 0


def test_bert_tiny_has_google_bert_tiny_shape_and_minilm_stays_the_default():
    backbone = train_bert.bert_shaped_backbone(30522, "tiny")
    config = backbone.get_config()
    assert (config["num_layers"], config["hidden_dim"], config["num_heads"], config["intermediate_dim"]) == (2, 128, 2, 512)
    model = bert_classifier(backbone, num_classes=2, sequence_length=64)
    # 30,522 x 128 token table + 512 positions + 2 segments + norm, 2 blocks of 198,272, a 2-way head.
    assert model.count_params() == 4_369_666 and encoder_parameter_count(model) == 396_544
    assert train_bert.minilm_shaped_backbone(100).get_config()["hidden_dim"] == 384


def test_pretrained_weights_exist_only_for_the_minilm_shape(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_bert.main(["--task", "sst2", "--init", "pretrained", "--shape", "tiny"])
    assert exit_info.value.code == 2 and "--shape tiny is trained from scratch only" in capsys.readouterr().err


def test_keras_hub_encoder_is_a_user_functional_model_whose_encoders_are_candidates():
    model = train_encoder.keras_hub_encoder_classifier(200, 4, 16, hidden_dim=16, num_heads=2, intermediate_dim=32)
    assert not any(isinstance(layer, keras_hub.models.Backbone) for layer in model.layers)
    encoders = [layer.name for layer in model.layers if isinstance(layer, keras_hub.layers.TransformerEncoder)]
    assert encoders == ["encoder_0", "encoder_1"]
    paths = [path for path, _ in candidate_layers(model)]
    assert "encoder_0/ffn_intermediate" in paths and "encoder_1/attention_query" in paths
    assert isinstance(model.get_layer("pooling"), keras.layers.GlobalAveragePooling1D)


class _Tokenizer:
    def vocabulary_size(self):
        return 64


def _record_of(trainer, monkeypatch, argv, tmp_path):
    """The record `trainer.main(argv)` hands to `fit_and_save`, with data loading and training replaced."""
    captured = {}

    def fake_load_and_encode(args, folder, seq_len, t0):
        return type("Data", (), {"num_classes": 2})(), None, _Tokenizer(), None, 0.0

    def fake_fit_and_save(model, splits, encoded, tokenizer, args, *, name, learning_rate, t0, record):
        captured.update(record)
        return record

    monkeypatch.setattr(trainer, "load_and_encode", fake_load_and_encode)
    monkeypatch.setattr(trainer, "fit_and_save", fake_fit_and_save)
    monkeypatch.setattr(trainer, "pretrained_minilm_folder", lambda: tmp_path)
    trainer.main(argv)
    return captured


@pytest.mark.parametrize("trainer, name, argv", [
    (train_bert, "bert", ["--task", "sst2", "--init", "scratch", "--shape", "tiny", "--seq-len", "8",
                          "--name", "a b", "--learning-rate", "1e-3"]),
    (train_encoder, "keras-hub-encoder", ["--task", "agnews", "--seq-len", "8", "--hidden-dim", "8", "--heads", "2",
                                          "--intermediate-dim", "16", "--layers", "1"]),
])
def test_training_record_carries_the_command_that_ran(trainer, name, argv, monkeypatch, tmp_path):
    record = _record_of(trainer, monkeypatch, argv, tmp_path)
    assert record["command"] == f"python -m benchmarks train {name} " + " ".join(
        f"'{value}'" if " " in value else value for value in argv)
