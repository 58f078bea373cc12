"""`--validation` and `--confidence` through the real CLI: where validation comes from, said in the report."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import keras

from cli.main import cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An untrained Dense classifier (compression needs no accuracy here) and an .npz with train and test."""
    root = tmp_path_factory.mktemp("cli_validation")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu", name="fc"),
                              keras.layers.Dense(3, name="logits")])
    model.save(root / "model.keras")
    rng = np.random.default_rng(0)
    np.savez(root / "data.npz", x_train=rng.normal(size=(90, 6)).astype("float32"), y_train=np.arange(90) % 3,
             x_test=rng.normal(size=(40, 6)).astype("float32"), y_test=np.arange(40) % 3)
    return root


def _compress(root, out, *extra):
    args = ["compress", str(root / "model.keras"), "--data", str(root / "data.npz"), "-o", str(out),
            "--max-steps", "1", "--epochs-per-step", "0", "--no-export", "--calibration-samples", "32", *extra]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_compress_with_test_split_validation_says_so_in_the_report(tiny, tmp_path):
    result = _compress(tiny, tmp_path / "out", "--validation", "test-split", "--confidence", "0.9")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["validation"] == {"origin": "half of test", "examples": 20}
    assert "test figures are on the remaining half (20)" in report["data"]
    assert "carved from the training split" not in result.output
    assert "warning: 20 validation examples are too few" in result.output  # max-drop 1 needs thousands
    config = json.loads((tmp_path / "out" / "history.json").read_text())["config"]
    assert config["confidence"] == 0.9


def test_compress_default_validation_warns_that_it_is_carved_from_train(tiny, tmp_path):
    result = _compress(tiny, tmp_path / "out")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "warning: the data has no validation split" in line]
    assert len(warnings) == 1 and "optimistic" in warnings[0]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["validation"]["origin"] == "carved from train"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--validation", "nowhere"], "--validation must be auto, train, test-split or a data path"),
        (["--confidence", "1.5"], "--confidence"),
    ],
)
def test_bad_validation_options_are_one_line_errors(tiny, tmp_path, extra, message):
    result = _compress(tiny, tmp_path / "out", *extra)
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


def test_analyze_has_no_validation_warning(tiny, tmp_path):
    args = ["analyze", str(tiny / "model.keras"), "--data", str(tiny / "data.npz"), "-o", str(tmp_path / "a"), "--no-plots"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.output
