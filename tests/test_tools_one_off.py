"""tools/one_off.py: the checks and the recorded command line the one-off tools share, and a tool using them."""

import argparse

import pytest

from tools import paired_test_drop, time_precision
from tools.one_off import (add_teacher_student_arguments, refuse_existing_out, require_existing, tool_command)


def test_tool_command_quotes_like_a_shell():
    command = tool_command("tools.retime_pair", ["--a", "x y.tflite", "--runs", "5"])
    assert command == "python -m tools.retime_pair --a 'x y.tflite' --runs 5"


def test_require_existing_names_the_first_missing_path(tmp_path):
    present = tmp_path / "teacher.keras"
    present.write_text("")
    require_existing(present)
    with pytest.raises(SystemExit, match="student.keras does not exist"):
        require_existing(present, tmp_path / "student.keras", tmp_path / "other.keras")


def test_refuse_existing_out(tmp_path):
    out = tmp_path / "result.json"
    refuse_existing_out(out)
    out.write_text("{}")
    with pytest.raises(SystemExit, match="exists; remove it or choose another --out"):
        refuse_existing_out(out)


def test_teacher_student_arguments_parse():
    parser = argparse.ArgumentParser()
    add_teacher_student_arguments(parser)
    args = parser.parse_args(["--teacher", "t.keras", "--student", "s.keras", "--data", "d", "--limit", "9"])
    assert (str(args.teacher), str(args.student), args.data, args.limit, args.seed) == ("t.keras", "s.keras", "d", 9, 0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--teacher", "t.keras", "--data", "d"])


@pytest.mark.parametrize("tool", [paired_test_drop, time_precision])
def test_tools_stop_before_loading_on_a_bad_path(tool, tmp_path):
    teacher, student, out = tmp_path / "t.keras", tmp_path / "s.keras", tmp_path / "out.json"
    teacher.write_text("")
    argv = ["--teacher", str(teacher), "--student", str(student), "--data", str(tmp_path), "--out", str(out)]
    with pytest.raises(SystemExit, match="s.keras does not exist"):
        tool.main(argv)
    student.write_text("")
    out.write_text("{}")
    with pytest.raises(SystemExit, match="exists; remove it"):
        tool.main(argv)


def test_time_precision_times_an_image_classifier_as_it_is(tmp_path):
    # image inputs have no token length: --seq-len does not apply (recorded null) and nothing is padded or rebuilt
    import json

    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "images.npz"
    np.savez(data, x_train=rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8), y_train=rng.integers(0, 3, 60),
             x_test=rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8), y_test=rng.integers(0, 3, 20))

    def classifier(width):
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(width, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
        return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))

    teacher, student, out = tmp_path / "t.keras", tmp_path / "s.keras", tmp_path / "out.json"
    classifier(32).save(teacher)
    classifier(4).save(student)
    argv = ["--teacher", str(teacher), "--student", str(student), "--data", str(data), "--precision", "fp32",
            "--runs", "3", "--out", str(out)]
    assert time_precision.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["seq_len"] is None and result["precision"] == "fp32"
    assert result["median_ms"]["a"] > 0 and result["median_ms"]["b"] > 0 and result["speedup_a_over_b"] > 0


def test_paired_test_drop_on_the_test_half_a_test_split_run_left(tmp_path):
    # a compress run with --validation test-split validated on half of the test split: its test figures, and
    # the paired drop, are on the other half only
    import json

    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "images.npz"
    np.savez(data, x_train=rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8), y_train=np.arange(60) % 3,
             x_test=rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8), y_test=np.arange(40) % 3)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    teacher, out = tmp_path / "t.keras", tmp_path / "out.json"
    model.save(teacher)
    argv = ["--teacher", str(teacher), "--student", str(teacher), "--data", str(data), "--out", str(out)]
    assert paired_test_drop.main(argv + ["--validation", "test-split"]) == 0
    result = json.loads(out.read_text())
    assert result["n_test"] == 20 and result["drop"] == 0.0  # the same model twice: nothing discordant
    assert result["teacher_only_correct"] == result["student_only_correct"] == 0
    out.unlink()
    assert paired_test_drop.main(argv) == 0
    assert json.loads(out.read_text())["n_test"] == 40  # validation from train: the whole test split
