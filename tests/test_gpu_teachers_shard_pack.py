"""benchmarks/gpu_teachers/shard_pack.py, and both GPU scripts' `pack` run as the GPU machine runs them.

There the scripts run as files (`python3 benchmarks/gpu_teachers/train_torch.py pack ...`) on an image without
TensorFlow and without this package: the scripts are run here the same way, with both made unimportable.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_teachers.shard_pack import CALL_FILES, pack_shards

GPU_TEACHERS = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_teachers"


def _trained(work, folder, name, shards=2, done=True):
    (work / folder).mkdir(parents=True)
    for k in range(shards):
        (work / folder / f"{name}.p{k}.npz").write_bytes(bytes([k]) * 10)
    if done:
        (work / folder / "DONE").write_text("")
    return work / folder


def test_pack_copies_every_shard_of_each_trained_folder(tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "out"
    folders = [_trained(work, "a", "a"), _trained(work, "b.reg", "b", shards=1)]
    pack_shards(folders, ["a", "b"], out)
    assert sorted(p.name for p in out.iterdir()) == ["a.p0.npz", "a.p1.npz", "b.p0.npz"]
    assert (out / "a.p1.npz").read_bytes() == bytes([1]) * 10
    assert "packed 3 files" in capsys.readouterr().out


def test_pack_refuses_an_untrained_folder(tmp_path):
    folder = _trained(tmp_path / "work", "a", "a", done=False)
    with pytest.raises(SystemExit, match="a is not trained in"):
        pack_shards([folder], ["a"], tmp_path / "out")


def test_pack_refuses_more_than_one_call_returns(tmp_path):
    folder = _trained(tmp_path / "work", "a", "a", shards=CALL_FILES + 1)
    with pytest.raises(SystemExit, match="pack fewer models per call"):
        pack_shards([folder], ["a"], tmp_path / "out")


@pytest.mark.parametrize("script, name", [("train_torch.py", "sst2_minilm_scratch"),
                                          ("train_keras_apps.py", "cifar10_mobilenetv2")])
def test_scripts_pack_without_tensorflow_or_this_package(tmp_path, script, name):
    blocked = tmp_path / "blocked"
    for module in ("tensorflow", "rmtkd_tf", "benchmarks"):
        (blocked / module).mkdir(parents=True)
        (blocked / module / "__init__.py").write_text(f"raise ImportError('no {module} on the GPU machine')\n")
    work, out = tmp_path / "work", tmp_path / "out"
    _trained(work, name, name)
    result = subprocess.run([sys.executable, str(GPU_TEACHERS / script), "pack", "--work", str(work), "--out", str(out),
                             name], cwd=tmp_path, env={"PYTHONPATH": str(blocked), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{name}.p0.npz", f"{name}.p1.npz"]
