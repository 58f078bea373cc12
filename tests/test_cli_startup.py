"""A run a person can follow: a fast --help, no TensorFlow noise on stderr, -v to see it again."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What TensorFlow prints on every start (CPU machine, no GPU) or during a compress run.
NOISE = re.compile(
    r"cuInit|UNKNOWN ERROR \(303\)|Could not find cuda drivers|oneDNN custom operations|absl::InitializeLog"
    r"|triggered tf\.function retracing|XNNPACK delegate|cpu_feature_guard|^[IW]\d{4} \d\d:\d\d",
    re.MULTILINE,
)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "RMTKD_TF_VERBOSE")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _cli(*args, timeout=600, **env):
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, cwd=ROOT,
                          env=_env(**env), timeout=timeout)


@pytest.mark.parametrize("args", [["--help"], ["compress", "--help"], ["analyze", "--help"], ["export", "--help"],
                                  ["bench", "--help"]])
def test_help_is_fast_and_imports_no_tensorflow(args):
    code = ("import sys\nfrom cli.main import main\ntry:\n    main(%r)\nexcept SystemExit as e:\n    assert e.code in (0, None)\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'rmtkd_tf', 'matplotlib') if m in sys.modules]\n"
            "print('HEAVY', heavy)" % (args,))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    assert "HEAVY []" in proc.stdout, proc.stdout.splitlines()[-1]
    assert elapsed < 3.0, f"{' '.join(args)} took {elapsed:.1f} s"


def test_the_cli_reads_the_library_constants_from_their_one_file_without_tensorflow():
    # In a fresh interpreter: cli.library_constants executes rmtkd_tf/constants.py without the rmtkd_tf package.
    code = ("import sys\nfrom cli import library_constants as c\n"
            "print(c.SOURCE, 'rmtkd_tf' in sys.modules, 'tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(ROOT / "rmtkd_tf" / "constants.py"), "False", "False"]


def test_cli_constants_are_the_library_ones():
    from cli import export_cmd, library_constants, main
    from rmtkd_tf import constants, errors, export

    assert export_cmd.PRECISIONS == export.PRECISIONS == constants.PRECISIONS
    assert export_cmd.CALIBRATED_PRECISIONS == export.CALIBRATED_PRECISIONS == constants.CALIBRATED_PRECISIONS
    assert export_cmd.EXPORTERS == export.EXPORTERS == constants.EXPORTERS
    for command in ("compress", "export"):
        (precision,) = [p for p in main.cli.commands[command].params if p.name == "precision"]
        assert tuple(precision.type.choices) == export.PRECISIONS + ("auto",)
    assert main.EXIT_INTERRUPTED == errors.EXIT_INTERRUPTED == constants.EXIT_INTERRUPTED
    # No copies left: the values are written once, in rmtkd_tf/constants.py.
    for path in [*(ROOT / "cli").glob("*.py"), ROOT / "rmtkd_tf" / "export.py", ROOT / "rmtkd_tf" / "errors.py"]:
        source = path.read_text()
        assert '"int8-dynamic", "int8-mixed"' not in source and "= 130" not in source, path
    assert library_constants.SOURCE == Path(constants.__file__).resolve()


def test_verbose_requested_reads_options_before_the_command_and_the_environment(monkeypatch):
    from cli.quiet_tf import verbose_requested

    monkeypatch.delenv("RMTKD_TF_VERBOSE", raising=False)
    assert verbose_requested(["-v", "analyze"]) and verbose_requested(["--verbose", "compress", "-o", "x"])
    assert not verbose_requested(["compress", "-v"]) and not verbose_requested([])
    monkeypatch.setenv("RMTKD_TF_VERBOSE", "1")
    assert verbose_requested(["compress"])
    monkeypatch.setenv("RMTKD_TF_VERBOSE", "0")
    assert not verbose_requested(["compress"])


def test_noise_filter_keeps_real_messages():
    from cli.quiet_tf import is_noise

    kept = ["Error: --data is required when a model is given", "[    1.0s] loading model m.keras",
            "Traceback (most recent call last):", "E0000 00:00:1.0   1 op_kernel.cc:1] OOM when allocating tensor"]
    dropped = ["WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
               "I0000 00:00:1796207620.278320    7436 port.cc:153] oneDNN custom operations are on.",
               "E0000 00:00:1796207623.568239    7436 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
               "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
               "W0000 00:00:1796207623.568239    7436 tf_tfl_flatbuffer_helpers.cc:365] Ignored output_format."]
    assert [is_noise(line) for line in kept] == [False] * len(kept)
    assert [is_noise(line) for line in dropped] == [True] * len(dropped)


@pytest.mark.slow
def test_analyze_is_silent_about_tensorflow_by_default_and_verbose_shows_it(tmp_path):
    quiet = _cli("analyze", "-o", str(tmp_path / "a"), "--limit", "200", "--no-plots")
    assert quiet.returncode == 0, quiet.stderr
    assert not NOISE.search(quiet.stderr), NOISE.search(quiet.stderr).group(0)
    assert "loading TensorFlow" in quiet.stderr.splitlines()[0]
    assert "collecting activations of 8 layers" in quiet.stderr  # a plain line per stage (stderr is no TTY)
    verbose = _cli("-v", "analyze", "-o", str(tmp_path / "b"), "--limit", "200", "--no-plots")
    assert verbose.returncode == 0, verbose.stderr
    assert NOISE.search(verbose.stderr)  # TensorFlow's own start-up lines are back


@pytest.mark.slow
def test_compress_in_a_subprocess_prints_no_tensorflow_noise_and_follows_the_run(tmp_path):
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    x = rng.normal(size=(240, 12)).astype("float32")
    x[np.arange(240), y] += 3.0
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(32, activation="relu", name="fc"),
                              keras.layers.Dense(3, name="logits")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:200], y[:200], epochs=3, verbose=0)
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    out = tmp_path / "out"
    proc = _cli("compress", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"), "-o", str(out),
                "--target-params", "0.6", "--distillation-epochs", "2", "--tensorboard", str(tmp_path / "tb"))
    assert proc.returncode == 0, proc.stderr
    assert not NOISE.search(proc.stderr), NOISE.search(proc.stderr).group(0)
    assert not NOISE.search(proc.stdout)
    lines = proc.stderr.splitlines()
    assert lines[0].endswith("loading TensorFlow and Keras")
    # Not a terminal: one plain line per stage, with its elapsed time.
    assert any(re.search(r"collecting activations of \d+ layers: 1 batch in \d", line) for line in lines)
    assert any(re.search(r"epoch 2/2: \d+ batches in \d", line) for line in lines)
    assert any("report.md" in line for line in lines) and (out / "report.md").exists()
    assert "tflite latency" in proc.stdout
