"""The README's Python example runs as written, on the packaged CIFAR-10 CNN and sample.

The README names its files `teacher.keras` and `data.npz`, as a user's would be; here they are copies
of `rmtkd_tf/assets/cifar10_cnn.keras` and `cifar10_sample.npz` in a temporary working folder.
"""

import doctest
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "rmtkd_tf" / "assets"


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    shutil.copy(ASSETS / "cifar10_cnn.keras", tmp_path / "teacher.keras")
    shutil.copy(ASSETS / "cifar10_sample.npz", tmp_path / "data.npz")
    monkeypatch.chdir(tmp_path)
    result = doctest.testfile(str(ROOT / "README.md"), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3, "the README lost its doctested example"
    assert result.failed == 0
    assert (tmp_path / "student.keras").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "student.keras", "teacher.keras"]
