"""`rmtkd-tf export --data TEXT`: raw text tokenized with the vocabulary beside the model, as `compress` does.

Through the real CLI (`cli.main.cli`) on the tiny random BERT classifier of `test_transformers_bert`, saved
with its small vocabulary beside it, and a toy sentiment TSV folder (train / dev / test).
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from cli.main import cli  # noqa: E402
from rmtkd_tf.export import tflite_predict  # noqa: E402
from rmtkd_tf.io import load_model  # noqa: E402
from rmtkd_tf.transformers import encode_texts, load_bert_tokenizer, vocabulary_path  # noqa: E402
from test_transformers_bert import SEQ_LEN, VOCABULARY, save_toy_bert, tiny_tokenizer, write_sentiment_tsv  # noqa: E402


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(model path with `toy_bert.vocab.txt` beside it, TSV folder with train/dev/test)."""
    root = tmp_path_factory.mktemp("text_export")
    return save_toy_bert(root), write_sentiment_tsv(root / "toy", n_train=120, n_test=40, n_dev=60, seed=1)


def run(args):
    return CliRunner().invoke(cli, ["export", *[str(arg) for arg in args]])


def one_line_error(result):
    """The error text, after checking it is one `Error:` line with no traceback."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("precision", ["int8", "int16x8"])
def test_calibrated_export_tokenizes_text_with_the_vocabulary_beside_the_model(toy, tmp_path, precision):
    model_path, data = toy
    output, report_json = tmp_path / f"{precision}.tflite", tmp_path / "report.json"
    result = run([model_path, "-o", output, "--precision", precision, "--data", data, "--representative-samples", 64,
                  "--report-json", report_json])
    assert result.exit_code == 0, result.output
    assert f"encoding texts with {vocabulary_path(model_path)} (lowercase=True), {SEQ_LEN} tokens" in result.output
    report = json.loads(report_json.read_text())
    assert report["precision"] == precision and report["flex_ops"] == []
    assert report["verification"]["n"] == 40  # every test sentence, encoded
    assert report["verification"]["top1_agreement"] >= 0.95
    # The file takes what compress feeds the model: the test sentences encoded with the saved vocabulary.
    from rmtkd_tf.data import load_data

    x = encode_texts(load_data(str(data)).x_test, load_bert_tokenizer(vocabulary_path(model_path)), SEQ_LEN)
    keras_out = load_model(model_path).predict(x, verbose=0)
    tflite_out = tflite_predict(output, x)
    assert np.isfinite(tflite_out).all() and (tflite_out.argmax(-1) == keras_out.argmax(-1)).mean() >= 0.95
    assert np.abs(tflite_out - keras_out).mean() < (0.04 if precision == "int8" else 0.015)


def test_auto_scores_precisions_on_the_encoded_validation_split(toy, tmp_path):
    model_path, data = toy
    output, report_json = tmp_path / "auto.tflite", tmp_path / "auto.json"
    # A 100-point bound: the first candidate (int8) is accepted on the 60 dev sentences.
    result = run([model_path, "-o", output, "--precision", "auto", "--max-drop", 100, "--data", data,
                  "--representative-samples", 64, "--report-json", report_json])
    assert result.exit_code == 0, result.output
    assert "auto: scoring precisions on 60 examples of the validation split" in result.output
    auto = json.loads(report_json.read_text())["auto"]
    assert auto["chosen"] == "int8" and auto["accepted"] and auto["validation_examples"] == 60
    assert auto["tried"][0]["tflite_accuracy"] is not None and auto["tried"][0]["keras_accuracy"] is not None


def test_missing_vocabulary_is_one_line_and_names_where_it_looked(toy, tmp_path):
    model_path, data = toy
    bare = tmp_path / "bare.keras"
    bare.write_bytes(model_path.read_bytes())
    for precision in ("int8", "auto"):
        line = one_line_error(run([bare, "-o", tmp_path / "b.tflite", "--precision", precision, "--data", data]))
        assert "no vocabulary was found at" in line and "bare.vocab.txt" in line, line
    assert not (tmp_path / "b.tflite").exists()
    # --tokenizer names one instead (as in compress).
    vocab = tmp_path / "words.txt"
    vocab.write_text("\n".join(VOCABULARY) + "\n")
    result = run([bare, "-o", tmp_path / "b.tflite", "--precision", "int8", "--data", data, "--tokenizer", vocab,
                  "--representative-samples", 32, "--verify-samples", 8])
    assert result.exit_code == 0, result.output
    assert f"encoding texts with {vocab}" in result.output


def test_text_data_for_a_model_without_token_ids_is_one_line(toy, tmp_path):
    import keras

    _, data = toy
    dense = tmp_path / "dense.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(dense)
    line = one_line_error(run([dense, "-o", tmp_path / "d.tflite", "--precision", "int8", "--data", data]))
    assert "token_ids" in line
    # --tokenizer with numeric data is refused too.
    npz = tmp_path / "d.npz"
    np.savez(npz, x_train=np.zeros((8, 4), "float32"), y_train=np.arange(8) % 2,
             x_test=np.zeros((4, 4), "float32"), y_test=np.arange(4) % 2)
    vocab = tmp_path / "v.txt"
    vocab.write_text("\n".join(VOCABULARY) + "\n")
    line = one_line_error(run([dense, "-o", tmp_path / "d.tflite", "--precision", "int8", "--data", npz,
                               "--tokenizer", vocab]))
    assert "not text" in line


def test_compress_saves_the_vocabulary_beside_the_student(tmp_path):
    """What `export run/student.keras --data TEXT` finds: `student.vocab.txt`, the tokenizer compress encoded with."""
    from rmtkd_tf.pipeline import _save_student_vocabulary

    lines = []
    path = _save_student_vocabulary(tiny_tokenizer(), tmp_path / "student.keras", lines.append)
    assert path == vocabulary_path(tmp_path / "student.keras") == tmp_path / "student.vocab.txt"
    assert load_bert_tokenizer(path).get_vocabulary() == VOCABULARY and lines == [f"wrote {path}"]
