"""Issue 12, "nothing lost, nothing silently wrong": every case of the README's table, at the CLI.

Each case runs the command a user would type (click's runner on the `rmtkd-tf` group, or the console
script) and checks the exit code, that the error is one line, and that every input is byte-identical.
"""

import hashlib
import json
import os
import stat
import subprocess
import sys

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from rmtkd_tf.io import current_umask

FAST = ["--schedule", "iterative", "--epochs-per-step", "0", "--max-steps", "1", "--calibration-samples", "64", "-q"]


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _run(args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _one_line_error(result, code=1):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.output and len(lines) == 1, result.output
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small trained 3-class image classifier, its .npz data, and its .tflite."""
    root = tmp_path_factory.mktemp("tiny_rel")
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, size=(n, 8, 8, 3)).astype("uint8")
    x[np.arange(n), :, :, y] += 150
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Rescaling(1 / 255.0)(inputs)
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(24, activation="relu", name="fc")(h)
    outputs = keras.layers.Dense(3, name="logits")(h)
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:160], y[:160], epochs=3, verbose=0)
    model_path = root / "model.keras"
    model.save(model_path)
    data_path = root / "data.npz"
    np.savez(data_path, x_train=x[:160], y_train=y[:160], x_test=x[160:], y_test=y[160:])
    tflite_path = root / "s.tflite"
    assert _run(["export", model_path, "-o", tflite_path, "--verify-samples", "0"]).exit_code == 0
    return model_path, data_path, tflite_path


def _other_model(tmp_path, shape=(8, 8, 3), classes=3, name="other.keras"):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(16, name="h"),
                              keras.layers.Dense(classes, name="out")])
    path = tmp_path / name
    model.save(path)
    return path


# --- inputs are never overwritten ----------------------------------------------------------------------


def test_bench_output_onto_its_input_is_refused(tiny):
    _, _, tflite = tiny
    before = _sha(tflite)
    line = _one_line_error(_run(["bench", tflite, "-o", tflite, "--runs", "1", "--warmup", "0"]))
    assert "is the input model" in line and _sha(tflite) == before


def test_export_report_json_onto_the_input_model_is_refused(tiny, tmp_path):
    model, _, _ = tiny
    before = _sha(model)
    line = _one_line_error(_run(["export", model, "-o", tmp_path / "m.tflite", "--report-json", model]))
    assert "is the input model" in line and _sha(model) == before
    assert not (tmp_path / "m.tflite").exists()  # refused before anything was written


def test_compress_of_a_checkpoint_inside_the_output_folder_is_refused(tiny, tmp_path):
    model, data, _ = tiny
    checkpoint = tmp_path / "OUT" / "checkpoints" / "step_001.keras"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(model.read_bytes())
    before = _sha(checkpoint)
    line = _one_line_error(_run(["compress", checkpoint, "--data", data, "-o", tmp_path / "OUT", *FAST]))
    assert "lies inside the output folder" in line and _sha(checkpoint) == before


def test_output_folder_inside_an_input_data_folder_is_refused(tiny, tmp_path):
    model, _, _ = tiny
    data_folder = tmp_path / "images"
    (data_folder / "cat").mkdir(parents=True)
    line = _one_line_error(_run(["compress", model, "--data", data_folder, "-o", data_folder / "out", *FAST]))
    assert "lies inside the input data folder" in line and not (data_folder / "out").exists()


def test_non_empty_folder_without_a_run_is_refused_unless_overwrite(tiny, tmp_path):
    model, data, _ = tiny
    out = tmp_path / "mine"
    out.mkdir()
    (out / "student.keras").write_bytes(b"the user's own model")
    (out / "notes.txt").write_text("keep me")
    line = _one_line_error(_run(["compress", model, "--data", data, "-o", out, *FAST, "--no-export"]))
    assert "not empty" in line and "--overwrite" in line
    assert (out / "student.keras").read_bytes() == b"the user's own model"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "student.keras"]
    line = _one_line_error(_run(["analyze", model, "--data", data, "-o", out, "-q", "--no-plots"]))
    assert "not empty" in line
    bench_target = tmp_path / "notes.bin"
    bench_target.write_bytes(b"\x00\x01 not json")
    line = _one_line_error(_run(["bench", tiny[2], "-o", bench_target, "--runs", "1", "--warmup", "0"]))
    assert "not a JSON report" in line and bench_target.read_bytes() == b"\x00\x01 not json"


def test_permission_error_on_the_output_is_one_line(tiny, tmp_path, monkeypatch):
    model, data, _ = tiny
    import rmtkd_tf.run_folder as run_folder

    real_access = os.access
    # Tests run as root, for whom every folder is writable: fake the denial on the output's parent.
    monkeypatch.setattr(run_folder.os, "access", lambda path, mode: str(path) != str(tmp_path) and real_access(path, mode))
    line = _one_line_error(_run(["compress", model, "--data", data, "-o", tmp_path / "locked" / "out", *FAST]))
    assert "permission denied" in line
    (tmp_path / "a_file").write_text("x")
    monkeypatch.undo()
    line = _one_line_error(_run(["compress", model, "--data", data, "-o", tmp_path / "a_file" / "out", *FAST]))
    assert "is a file" in line


def test_an_oserror_inside_a_command_is_one_line(tiny, tmp_path, monkeypatch):
    model, data, _ = tiny
    import rmtkd_tf.pipeline as pipeline

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out" / "state.json"))

    monkeypatch.setattr(pipeline, "_compress_task", denied)
    line = _one_line_error(_run(["compress", model, "--data", data, "-o", tmp_path / "out", *FAST]))
    assert line.startswith("Error: permission denied:")
    assert not (tmp_path / "out").exists()  # the failed start removed the folder it created


# --- bad data: refused before anything is written ------------------------------------------------------


def _npz(tmp_path, name, x, y):
    path = tmp_path / name
    np.savez(path, x=x, y=y)
    return path


@pytest.mark.parametrize(
    "case,message",
    [
        ("labels_out_of_range", "labels go up to 50 but the model has 3 outputs"),
        ("nan_inputs", "NaN or Inf"),
        ("three_examples", "at least 2 are needed"),
    ],
)
def test_bad_data_is_refused_before_anything_is_written(tiny, tmp_path, case, message):
    model, _, _ = tiny
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (200, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, 200)
    if case == "labels_out_of_range":
        y[7] = 50
    elif case == "nan_inputs":
        x[3, 0, 0, 0] = np.nan
    else:
        x, y = x[:3], np.array([0, 1, 2])
    data = _npz(tmp_path, f"{case}.npz", x, y)
    before = _sha(data)
    out = tmp_path / "out"
    line = _one_line_error(_run(["compress", model, "--data", data, "-o", out, *FAST]))
    assert message in line and _sha(data) == before
    assert not out.exists()


def test_regression_model_is_refused_and_a_rerun_is_not_blocked(tiny, tmp_path):
    _, data, _ = tiny
    regression = _other_model(tmp_path, classes=1, name="regression.keras")
    out = tmp_path / "out"
    out.mkdir()
    line = _one_line_error(_run(["compress", regression, "--data", data, "-o", out, *FAST]))
    assert "classifiers" in line
    assert list(out.iterdir()) == []  # nothing left that would block a rerun


def test_failure_at_the_first_step_leaves_nothing_that_blocks_a_rerun(tiny, tmp_path, monkeypatch):
    model, data, _ = tiny
    import rmtkd_tf.steps as steps

    def broken(*args, **kwargs):
        raise steps.RMTKDError("simulated failure inside the first step")

    monkeypatch.setattr(steps, "collect_activations", broken)
    out = tmp_path / "out"
    line = _one_line_error(_run(["compress", model, "--data", data, "-o", out, *FAST, "--no-export"]))
    assert "simulated failure" in line and not out.exists()


def test_nan_in_training_stops_the_run_without_saving_a_nan_student(tiny, tmp_path, monkeypatch):
    model, data, _ = tiny
    import rmtkd_tf.steps as steps

    def diverging(student, *args, **kwargs):
        for weight in student.trainable_weights:
            weight.assign(np.full(weight.shape, np.nan, weight.dtype))
        return {"loss": float("nan")}

    monkeypatch.setattr(steps, "_fit_distiller", diverging)
    out = tmp_path / "out"
    line = _one_line_error(_run(["compress", model, "--data", data, "-o", out, "-q", "--schedule", "iterative",
                                 "--max-steps", "1", "--calibration-samples", "64", "--no-export"]))
    assert "training diverged" in line
    assert not (out / "student.keras").exists() and not (out / "checkpoints" / "step_001.keras").exists()


# --- run folder: lock, fingerprint, resume, interrupt ----------------------------------------------------


def test_a_second_run_on_a_locked_folder_is_refused_and_a_killed_runs_lock_is_taken_over(tiny, tmp_path):
    """Another process holds the folder's lock (as a running `compress` does); then it is killed (SIGKILL)."""
    model, data, _ = tiny
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom rmtkd_tf.run_folder import RunLock\n"
         "RunLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(600)\n", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = _one_line_error(_run(["compress", model, "--data", data, "-o", out, *FAST, "--no-export"]))
        assert f"in use by another run (pid {holder.pid} on" in line and not (out / "state.json").exists()
    finally:
        holder.kill()
        holder.wait()
    not_quiet = [a for a in FAST if a != "-q"]  # the take-over notice is a progress line
    result = CliRunner().invoke(cli, ["compress", str(model), "--data", str(data), "-o", str(out), *not_quiet,
                                      "--no-export"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"taking over the stale lock of {out} (pid {holder.pid}" in result.output
    assert not (out / "run.lock").exists()  # released at the end


def test_resume_with_another_model_or_setting_is_refused_naming_what_differs(tiny, tmp_path):
    model, data, _ = tiny
    out = tmp_path / "out"
    assert _run(["compress", model, "--data", data, "-o", out, *FAST, "--no-export"]).exit_code == 0
    fingerprint = json.loads((out / "fingerprint.json").read_text())
    assert fingerprint["model"]["sha256"] == _sha(model) and fingerprint["data"]["kind"] == "file content"
    state_before = (out / "state.json").read_bytes()
    other = _other_model(tmp_path)
    line = _one_line_error(_run(["compress", other, "--data", data, "-o", out, *FAST, "--no-export", "--resume"]))
    assert "cannot resume" in line and "the model" in line and "the data" not in line
    line = _one_line_error(_run(["compress", model, "--data", data, "-o", out, *FAST, "--no-export", "--resume",
                                 "--seed", "3"]))
    assert "settings seed (0 here, 3 now)" in line
    assert (out / "state.json").read_bytes() == state_before
    # Without --resume the folder is refused; --overwrite starts over.
    line = _one_line_error(_run(["compress", model, "--data", data, "-o", out, *FAST, "--no-export"]))
    assert "already holds a run" in line
    assert _run(["compress", model, "--data", data, "-o", out, *FAST, "--no-export", "--overwrite"]).exit_code == 0


def test_interrupt_exits_130_and_the_run_resumes(tiny, tmp_path, monkeypatch):
    model, data, _ = tiny
    import rmtkd_tf.steps as steps

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        # The iterative schedule's step (steps.reduction_step) does the surgery.
        patch.setattr(steps, "factorize_model", interrupted)
        result = CliRunner().invoke(cli, ["compress", str(model), "--data", str(data), "-o", str(out), *FAST,
                                          "--no-export"])
    assert result.exit_code == 130, result.output
    assert "interrupted; rerun with --resume to continue" in result.output and "Aborted" not in result.output
    assert not (out / "run.lock").exists()
    result = _run(["compress", model, "--data", data, "-o", out, *FAST, "--no-export", "--resume"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["steps"] == 1


def test_interrupted_budgeted_distillation_keeps_its_checkpoint_and_resumes(tiny, tmp_path, monkeypatch):
    model, data, _ = tiny
    from rmtkd_tf.schedules import budgeted

    original = budgeted._EpochCheckpoint.on_epoch_end

    def interrupt_after_saving(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt

    out = tmp_path / "out"
    budget = ["--target-params", "0.6", "--distillation-epochs", "2", "--calibration-samples", "64", "-q",
              "--no-export"]
    with monkeypatch.context() as patch:
        patch.setattr(budgeted._EpochCheckpoint, "on_epoch_end", interrupt_after_saving)
        result = CliRunner().invoke(cli, ["compress", str(model), "--data", str(data), "-o", str(out), *budget])
    assert result.exit_code == 130, result.output
    assert "rerun with --resume" in result.output
    # The epoch's checkpoint and the state survive the interrupt (a failed *start* would be cleaned up).
    assert (out / "checkpoints" / "attempt_1.keras").exists()
    assert (out / "checkpoints" / "attempt_1.optimizer.npz").exists()
    assert json.loads((out / "state.json").read_text())["attempts"][0]["epochs_done"] == 1
    result = _run(["compress", model, "--data", data, "-o", out, *budget, "--resume"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["attempts"][0]["epochs_done"] == 2 and report["layers"]
    # --overwrite over that run removes its checkpoints, not just the iterative schedule's (a run without
    # distillation epochs writes no attempt checkpoint of its own).
    result = _run(["compress", model, "--data", data, "-o", out, *budget, "--overwrite", "--distillation-epochs", "0"])
    assert result.exit_code == 0, result.output
    assert not (out / "checkpoints" / "attempt_1.keras").exists()
    assert not (out / "checkpoints" / "attempt_1.optimizer.npz").exists()


def test_output_files_follow_the_umask_and_json_is_strict(tiny, tmp_path):
    model, data, _ = tiny
    out = tmp_path / "out"
    result = _run(["compress", model, "--data", data, "-o", out, *FAST])
    assert result.exit_code == 0, result.output
    expected = 0o666 & ~current_umask()
    for name in ("student.keras", "student.tflite", "teacher.tflite", "report.json", "state.json", "history.json",
                 "fingerprint.json", "checkpoints/step_000.keras"):
        assert stat.S_IMODE(os.stat(out / name).st_mode) == expected, name
    for name in ("report.json", "state.json", "history.json", "fingerprint.json"):
        json.loads((out / name).read_text(), parse_constant=lambda token: pytest.fail(f"{name} holds {token}"))


# --- other commands ----------------------------------------------------------------------------------


def test_bench_vs_a_model_with_other_inputs_is_refused(tiny, tmp_path):
    _, _, tflite = tiny
    other_keras = _other_model(tmp_path, shape=(16, 16, 3))
    other = tmp_path / "other.tflite"
    assert _run(["export", other_keras, "-o", other, "--verify-samples", "0"]).exit_code == 0
    line = _one_line_error(_run(["bench", tflite, "--vs", other, "--runs", "1", "--warmup", "0"]))
    assert "cannot compare" in line and "[-1, 8, 8, 3]" in line and "[-1, 16, 16, 3]" in line


def test_unsafe_compress_of_a_lambda_model_works_end_to_end(tiny, tmp_path):
    _, data, _ = tiny
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Lambda(lambda t: t / 255.0)(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu", name="fc")(h)
    outputs = keras.layers.Dense(3, name="logits")(h)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    line = _one_line_error(_run(["compress", path, "--data", data, "-o", tmp_path / "safe", *FAST]))
    assert "Lambda" in line and not (tmp_path / "safe").exists()
    out = tmp_path / "out"
    result = _run(["compress", path, "--data", data, "-o", out, "--unsafe", "-q", "--schedule", "iterative", "--epochs-per-step", "0",
                   "--max-steps", "1", "--calibration-samples", "64", "--max-drop", "100"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["accepted_steps"] >= 1 and (out / "student.tflite").exists()


def test_loading_an_unregistered_layer_names_what_to_import(tmp_path):
    from rmtkd_tf.errors import RMTKDError
    from rmtkd_tf.io import load_model

    @keras.saving.register_keras_serializable(package="reliability_tests")
    class Doubler(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    model = keras.Sequential([keras.Input((3,)), Doubler(), keras.layers.Dense(2)])
    path = tmp_path / "custom.keras"
    model.save(path)
    keras.saving.get_custom_objects().pop("reliability_tests>Doubler")
    with pytest.raises(RMTKDError, match=r"uses the class 'Doubler' .*; import ") as error:
        load_model(path)
    assert "\n" not in str(error.value)


def test_console_script_interrupt_is_130_not_aborted(tmp_path):
    """The real entry point: Ctrl-C arriving inside a command (here: while reading the model)."""
    code = (
        "import sys, rmtkd_tf.io as io\n"
        "def interrupt(*a, **k): raise KeyboardInterrupt\n"
        "io.load_model = interrupt\n"
        "from cli.main import main\n"
        f"main(['analyze', sys.argv[1], '--data', sys.argv[2], '-o', sys.argv[3], '-q'])\n"
    )
    model = tmp_path / "m.keras"
    model.write_bytes(b"x")
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((4, 2)), y=np.zeros(4, int))
    proc = subprocess.run([sys.executable, "-c", code, str(model), str(data), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert "interrupted" in proc.stderr and "Aborted" not in proc.stderr and "Traceback" not in proc.stderr


def test_plain_keras_error_for_a_student_gets_the_import_hint(tiny, tmp_path):
    """`keras.models.load_model` without `import rmtkd_tf` fails in Keras; our hint names the import."""
    from rmtkd_tf.io import missing_class_hint
    from rmtkd_tf.surgery import LayerFactors, factorize_model

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="d")])
    student = factorize_model(model, {"d": LayerFactors(np.eye(4)[:, :2], np.zeros(4))})
    path = tmp_path / "student.keras"
    student.save(path)
    registry = keras.saving.get_custom_objects()
    saved = {key: registry.pop(key) for key in list(registry) if key.startswith("rmtkd_tf>")}
    try:
        with pytest.raises(Exception) as error:  # what a user without `import rmtkd_tf` sees
            keras.models.load_model(path)
    finally:
        registry.update(saved)
    assert missing_class_hint(str(error.value)) == (
        "it uses the rmtkd-tf layer 'LowRankDense'; run `import rmtkd_tf` before keras.models.load_model"
    )


# --- the run folder's parts, directly ------------------------------------------------------------------


def test_run_lock_is_exclusive_and_an_unreadable_old_lock_is_stale(tmp_path):
    from rmtkd_tf.errors import RunFolderError
    from rmtkd_tf.run_folder import RunLock

    messages = []
    with RunLock(tmp_path, log=messages.append):
        with pytest.raises(RunFolderError, match=f"in use by another run \\(pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / "run.lock").exists()
    (tmp_path / "run.lock").write_text("")  # a crash between creating and writing the lock
    os.utime(tmp_path / "run.lock", (0, 0))
    with RunLock(tmp_path, log=messages.append):
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    assert any("stale lock" in m for m in messages)


def test_interrupt_before_the_first_checkpoint_keeps_nothing(tmp_path):
    from rmtkd_tf.errors import RunInterrupted
    from rmtkd_tf.run_folder import claimed_run_folder

    out = tmp_path / "out"
    with pytest.raises(RunInterrupted, match="nothing was kept"):
        with claimed_run_folder(out, fingerprint={"model": {}, "data": {}, "settings": {}}, log=lambda m: None):
            (out / "checkpoints").mkdir()
            raise KeyboardInterrupt
    assert not out.exists()


def test_an_unexpected_error_is_one_line_with_the_traceback_switch(tiny, tmp_path, monkeypatch):
    model, data, _ = tiny
    import rmtkd_tf.pipeline as pipeline

    def bug(*args, **kwargs):
        raise TypeError("unsupported operand type(s)\nsecond line")

    monkeypatch.setattr(pipeline, "analyze_model", bug)
    line = _one_line_error(_run(["analyze", model, "--data", data, "-o", tmp_path / "a", "-q"]))
    assert "unexpected TypeError: unsupported operand" in line and "RMTKD_TF_TRACEBACK=1" in line
    assert not (tmp_path / "a").exists()
