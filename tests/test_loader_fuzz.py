"""Fuzzing every loader with mutated small valid files: only the project's one-line error may escape.

Each hypothesis example flips, inserts or deletes a few bytes of a valid file (or truncates it) and
loads the result: it must load, or fail with `RMTKDError` (a `DataLoadError` for data) whose message
is one line. `.tflite` files go through the `bench` command, whose errors are click's one line.
Examples are few and files tiny, so the whole module runs in seconds.
"""

import pickle
import sys
import types

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmtkd_tf.data import load_data
from rmtkd_tf.data.loaders import DataLoadError
from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.io import load_model

FUZZ = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                derandomize=True)


@st.composite
def mutations(draw, size):
    """A list of (kind, position, byte) edits, or a truncation, applied by `_mutate`."""
    edits = draw(st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete"]),
                                    st.integers(0, max(size - 1, 0)), st.integers(0, 255)), min_size=1, max_size=6))
    truncate = draw(st.one_of(st.none(), st.integers(0, size)))
    return edits, truncate


def _mutate(data: bytes, mutation) -> bytes:
    edits, truncate = mutation
    out = bytearray(data)
    for kind, position, value in edits:
        position = min(position, max(len(out) - 1, 0))
        if not out:
            break
        if kind == "flip":
            out[position] ^= 1 << (value % 8)
        elif kind == "set":
            out[position] = value
        elif kind == "insert":
            out.insert(position, value)
        else:
            del out[position]
    return bytes(out if truncate is None else out[:truncate])


def _load_or_one_line(spec):
    try:
        load_data(str(spec))
    except DataLoadError as error:
        assert "\n" not in str(error) and str(error)


def _cifar_batch(labels, rng):
    return {b"batch_label": b"training batch 1 of 1", b"labels": list(labels),
            b"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), b"filenames": [b"a.png"] * len(labels)}


def test_protocol_2_cifar_batches_load(tmp_path):
    """A batch pickled with protocol 2 stores bytes through `_codecs.encode`: a legitimate file."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "data_batch_1", "wb") as fh:
        pickle.dump(_cifar_batch([0, 1, 2, 1], rng), fh, protocol=2)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [b"a", b"b", b"c"]}, fh, protocol=2)
    data = load_data(str(tmp_path))
    assert data.x_train.shape == (4, 32, 32, 3) and data.class_names == ["a", "b", "c"]


def test_codecs_encode_is_allowed_only_for_latin1(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()

    class Sneaky:
        def __reduce__(self):
            import _codecs

            return _codecs.encode, ("x", "rot13")

    with open(folder / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": Sneaky()}, fh, protocol=2)
    with pytest.raises(DataLoadError, match="refusing _codecs.encode with encoding 'rot13'"):
        load_data(str(folder))


@pytest.mark.parametrize("payload", [b"\x80\x02\x8a\x08" + b"\xff" * 8 + b".",  # huge long
                                     b"\x80\x04\x8e" + b"\xff" * 7 + b"\x7f",  # 2**63-byte BINBYTES8
                                     b"\x80\x02]q\x00(" + b"K\x01" * 3, b"\x80\x02}q\x00X"])
def test_malformed_cifar_pickles_are_one_line(tmp_path, payload):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(payload)
    with pytest.raises(DataLoadError, match="cannot read") as error:
        load_data(str(folder))
    assert "\n" not in str(error.value)


def test_tfds_offline_says_network(monkeypatch):
    import rmtkd_tf.data.loaders as loaders

    def load(name, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'")

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.SimpleNamespace(load=load, as_numpy=lambda t: t))
    monkeypatch.setattr(loaders, "_network_reachable", lambda *a, **k: False)
    with pytest.raises(DataLoadError, match="no network connection") as error:
        load_data("tfds:mnist")
    assert "\n" not in str(error.value)


# --- fuzzers -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("valid")
    rng = np.random.default_rng(0)
    files = {}
    npz = root / "d.npz"
    np.savez(npz, x_train=rng.random((6, 2, 2), dtype=np.float32), y_train=np.arange(6) % 3,
             x_test=rng.random((3, 2, 2), dtype=np.float32), y_test=np.arange(3))
    files["npz"] = npz.read_bytes()
    cifar = root / "data_batch_1"
    with open(cifar, "wb") as fh:
        pickle.dump(_cifar_batch([0, 1, 2], rng), fh, protocol=2)
    files["cifar"] = cifar.read_bytes()
    import tensorflow as tf

    files["png"] = tf.io.encode_png(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).numpy()
    files["tsv"] = b"sentence\tlabel\nfine film\t1\nbad plot\t0\nvery good\t1\nawful\t0\n"
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    keras_path = root / "m.keras"
    model.save(keras_path)
    files["keras"] = keras_path.read_bytes()
    files["tflite"] = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    return files


@FUZZ
@given(data=st.data())
def test_fuzz_npz(valid_files, tmp_path_factory, data):
    blob = valid_files["npz"]
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    path.write_bytes(_mutate(blob, data.draw(mutations(len(blob)))))
    _load_or_one_line(path)


@FUZZ
@given(data=st.data())
def test_fuzz_cifar_batches(valid_files, tmp_path_factory, data):
    blob = valid_files["cifar"]
    folder = tmp_path_factory.mktemp("cifar")
    (folder / "data_batch_1").write_bytes(_mutate(blob, data.draw(mutations(len(blob)))))
    _load_or_one_line(folder)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(data=st.data())
def test_fuzz_image_folder(valid_files, tmp_path_factory, data):
    blob = valid_files["png"]
    root = tmp_path_factory.mktemp("images")
    for name in ("cat", "dog"):
        (root / name).mkdir()
        (root / name / "a.png").write_bytes(blob)
    (root / "dog" / "b.png").write_bytes(_mutate(blob, data.draw(mutations(len(blob)))))
    _load_or_one_line(root)


@FUZZ
@given(data=st.data())
def test_fuzz_tsv_and_csv(valid_files, tmp_path_factory, data):
    blob = valid_files["tsv"]
    folder = tmp_path_factory.mktemp("tsv")
    (folder / "train.tsv").write_bytes(_mutate(blob, data.draw(mutations(len(blob)))))
    _load_or_one_line(folder)
    _load_or_one_line(folder / "train.tsv")
    csv = tmp_path_factory.mktemp("csv") / "train.csv"
    csv.write_bytes(_mutate(blob.replace(b"\t", b","), data.draw(mutations(len(blob)))))
    _load_or_one_line(csv)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(data=st.data())
def test_fuzz_keras(valid_files, tmp_path_factory, data):
    """Mutations of the archive's bytes (mostly caught by the zip CRC) and of one member's content
    (config.json, metadata.json or the weights' HDF5), re-zipped so that Keras parses the damage."""
    import io
    import zipfile

    blob = valid_files["keras"]
    path = tmp_path_factory.mktemp("keras") / "m.keras"
    if data.draw(st.booleans()):
        path.write_bytes(_mutate(blob, data.draw(mutations(len(blob)))))
    else:
        with zipfile.ZipFile(io.BytesIO(blob)) as source:
            members = {name: source.read(name) for name in source.namelist()}
        name = data.draw(st.sampled_from(sorted(members)))
        members[name] = _mutate(members[name], data.draw(mutations(len(members[name]))))
        with zipfile.ZipFile(path, "w") as target:
            for member, content in members.items():
                target.writestr(member, content)
    try:
        load_model(path)
    except RMTKDError as error:
        assert "\n" not in str(error) and str(error)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(data=st.data())
def test_fuzz_tflite_through_bench(valid_files, tmp_path_factory, data):
    from cli.main import cli

    blob = valid_files["tflite"]
    folder = tmp_path_factory.mktemp("tflite")
    path = folder / "m.tflite"
    path.write_bytes(_mutate(blob, data.draw(mutations(len(blob)))))
    result = CliRunner().invoke(cli, ["bench", str(path), "--vs", str(path), "--runs", "1", "--warmup", "0",
                                      "--block-runs", "1"])
    assert result.exit_code in (0, 1), result.output
    if result.exit_code == 1:
        lines = [line for line in result.output.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
