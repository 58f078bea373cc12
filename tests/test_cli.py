import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import keras

from cli.main import cli
from distribute_helpers import make_tiny_task


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small trained image classifier and an .npz data set in the keras.datasets layout."""
    return make_tiny_task(tmp_path_factory.mktemp("tiny"))


def _run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_compress_writes_student_tflite_and_report(tiny, tmp_path):
    model_path, data_path = tiny
    before = model_path.read_bytes()
    out = tmp_path / "out"
    # 25 validation examples cannot show a drop within 1 point, so the run is given a target.
    result = _run(["compress", str(model_path), "--data", str(data_path), "-o", str(out), "--target-params", "0.6",
                   "--distillation-epochs", "1", "-q", "--tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    assert "params" in result.output and "test acc %" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["student"]["params"] < report["teacher"]["params"]
    assert set(report["layers"]) <= {"conv", "fc"}
    for name in ("student.keras", "student.tflite", "teacher.tflite", "history.json", "report.md",
                 "report/compared.png", "report/ranks.png", "report/spectrum_fc.png"):
        assert (out / name).exists(), name
    assert report["latency"]["teacher_ms"] > 0 and report["latency"]["student_ms"] > 0
    assert "![rank per layer](report/ranks.png)" in (out / "report.md").read_text()
    from rmtkd_tf.tensorboard import read_histograms, read_scalars

    scalars = read_scalars(tmp_path / "tb")
    assert {"rank/conv", "rank/fc"} & set(scalars) and scalars["model/params"][0][1] == report["student"]["params"]
    assert len(scalars["distillation/loss"]) == 1 and "validation/accuracy" in scalars
    assert {"spectrum/conv", "spectrum/fc"} <= set(read_histograms(tmp_path / "tb"))
    assert report["export"]["student"]["flex_ops"] == []
    assert model_path.read_bytes() == before  # the input model is never modified
    reloaded = keras.models.load_model(out / "student.keras")
    assert reloaded.count_params() == report["student"]["params"]


def test_analyze_writes_spectra_and_plots(tiny, tmp_path):
    model_path, data_path = tiny
    out = tmp_path / "analysis"
    result = _run(["analyze", str(model_path), "--data", str(data_path), "-o", str(out), "--rank-rule", "gavish-donoho", "-q"])
    assert result.exit_code == 0, result.output
    spectra = json.loads((out / "spectra.json").read_text())
    by_path = {layer["path"]: layer for layer in spectra["layers"]}
    assert by_path["conv"]["n_samples"] == 25 * 36  # 10% calibration of 250, 6x6 positions each
    assert len(by_path["fc"]["eigenvalues"]) == 32 and "lambda_plus" in by_path["fc"]["noise"]
    assert (out / by_path["fc"]["plot"]).stat().st_size > 1000


@pytest.mark.parametrize(
    "args_fn,message",
    [
        (lambda m, d, t: ["compress", str(t / "missing.keras"), "--data", str(d)], "model file not found"),
        (lambda m, d, t: ["compress", str(_corrupt(t)), "--data", str(d)], "not a valid .keras"),
        (lambda m, d, t: ["compress", str(m), "--data", str(_wrong_shape(t))], "expects"),
        (lambda m, d, t: ["compress", str(m), "--data", str(_empty(t))], "empty"),
        (lambda m, d, t: ["compress", str(m), "--data", str(t / "nope.npz")], "not"),
        (lambda m, d, t: ["compress", str(_lambda_model(t)), "--data", str(d)], "Lambda"),
    ],
)
def test_bad_input_gives_one_line_error(tiny, tmp_path, args_fn, message):
    model_path, data_path = tiny
    result = _run(args_fn(model_path, data_path, tmp_path) + ["-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def _corrupt(tmp):
    path = tmp / "corrupt.keras"
    path.write_bytes(b"this is not a zip archive")
    return path


def _wrong_shape(tmp):
    path = tmp / "wrong.npz"
    np.savez(path, x=np.zeros((20, 192), "float32"), y=np.zeros(20, "int64"))
    return path


def _empty(tmp):
    path = tmp / "empty.npz"
    np.savez(path, x=np.zeros((0, 8, 8, 3), "uint8"), y=np.zeros(0, "int64"))
    return path


def _lambda_model(tmp):
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(outputs))
    path = tmp / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    return path


def test_console_script_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "compress", str(tmp_path / "nope.keras"), "--data", "x.npz", "-o", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"Error: model file not found: {tmp_path / 'nope.keras'}"


def test_compress_precision_auto_exports_and_reports_what_it_tried(tiny, tmp_path):
    model_path, data_path = tiny
    out = tmp_path / "out"
    # 25 validation examples: only a loose --max-drop can confirm anything; int8 is then the first that holds.
    result = _run(["compress", str(model_path), "--data", str(data_path), "-o", str(out), "--target-params", "0.6",
                   "--distillation-epochs", "1", "--max-drop", "50", "--precision", "auto", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    for name in ("teacher", "student"):
        export = report["export"][name]
        assert export["precision"] == export["auto"]["chosen"] == "int8"
        assert export["auto"]["tried"][0]["precision"] == "int8" and export["auto"]["tried"][0]["accepted"]
        assert export["exporter"] in ("keras-litert", "saved-model")
    assert "student.tflite: int8, via" in result.output and "(auto)" in result.output
    assert report["latency"]["student_ms"] > 0  # the int8 file was timed on a quantized real row
