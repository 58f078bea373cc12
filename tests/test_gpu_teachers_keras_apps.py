"""The keras.applications teachers' GPU route (benchmarks/gpu_teachers/train_keras_apps.py), the parts that run here.

The training itself runs on a GPU machine with Keras on JAX; here, with TensorFlow, the same code checks what
travels: the CIFAR-10 JPEG files packed byte for byte, and the weights coming back as shards that `import`
rebuilds with TensorFlow, checked on the probe images and saved as a `.keras` the pipeline loads.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks.gpu_teachers import train_keras_apps as apps


def _image_folder(root, per_class=3, classes=("cat", "dog"), seed=0):
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                (root / split / name / f"{i:04d}.jpg").write_bytes(tf.io.encode_jpeg(image, quality=90).numpy())
    return root


def test_packed_jpegs_are_the_files_byte_for_byte(tmp_path):
    root = _image_folder(tmp_path / "images")
    info = apps.pack_jpeg_folders(root, tmp_path / "pack.npz")
    assert info["classes"] == ["cat", "dog"] and info["train_rows"] == info["test_rows"] == 6
    with np.load(tmp_path / "pack.npz") as pack:
        files, labels = apps.jpeg_files(pack, "test")
    expected = sorted((root / "test").glob("*/*.jpg"))
    assert files == [p.read_bytes() for p in expected]
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    # PIL (the GPU machine's decoder) is within a few levels of TensorFlow's on the same bytes.
    pil = apps.decode_jpegs(files)
    ours = np.stack([tf.io.decode_jpeg(f).numpy() for f in files])
    assert pil.shape == ours.shape and np.abs(pil.astype(int) - ours).max() <= 8


def test_files_with_another_header_are_refused(tmp_path):
    root = _image_folder(tmp_path / "images")
    other = tf.io.encode_jpeg(np.zeros((32, 32, 3), np.uint8), quality=50).numpy()  # other quantisation tables
    (root / "train" / "cat" / "0009.jpg").write_bytes(other)
    with pytest.raises(ValueError, match="does not share"):
        apps.pack_jpeg_folders(root, tmp_path / "pack.npz")


def test_trained_model_comes_back_through_shards(tmp_path):
    """`finish` (end of training, any backend) -> shards -> `import_one` with TensorFlow -> a loadable .keras."""
    root = _image_folder(tmp_path / "images", classes=tuple("abcdefghij"), per_class=2)
    keras.utils.set_random_seed(0)
    model = apps.build_model("MobileNetV2", alpha=0.35, name="cifar10_mobilenetv2")
    assert [layer.name for layer in model.layers[:2]] == ["image", "rescale"]  # flat, on raw pixels
    x = np.stack([tf.io.decode_jpeg(p.read_bytes()).numpy() for p in sorted((root / "test").glob("*/*.jpg"))])
    y = np.repeat(np.arange(10), 2)
    work = tmp_path / "work" / "cifar10_mobilenetv2"
    work.mkdir(parents=True)
    meta = apps.finish(model, "cifar10_mobilenetv2", work, {"settings": {}, "history": []}, x, y)
    assert (work / "DONE").is_file() and meta["params"] == model.count_params()

    record = apps.import_one("cifar10_mobilenetv2", work, tmp_path / "models", data_root=root)
    assert record["probe_max_abs_err"] < 1e-4  # same weights, same pixels, same backend here
    assert record["test_rows"] == 20 and record["test_accuracy"] == pytest.approx(meta["test_accuracy_there"])
    reloaded = keras.models.load_model(tmp_path / "models" / "cifar10_mobilenetv2.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert json.loads((tmp_path / "models" / "cifar10_mobilenetv2.train.json").read_text())["backend_import"]


def test_large_tensors_travel_as_float16_and_batchnorm_statistics_exactly(tmp_path):
    keras.utils.set_random_seed(0)
    model = apps.build_model("MobileNetV2", alpha=0.35)
    original = model.get_weights()
    travelled = apps.round_weights(model)
    assert {w.dtype for w in travelled if w.size >= apps.FP16_FROM} == {np.dtype(np.float16)}
    small = [(a, b) for a, b in zip(original, travelled) if a.size < apps.FP16_FROM]
    assert small and all(np.array_equal(a, b) for a, b in small)


def test_batchnorm_recalibration_sets_the_plain_average_of_batch_statistics():
    # momentum 0.999 and moving statistics far from the data: inference mode is off until they are re-estimated
    inputs = keras.Input((4,))
    norm = keras.layers.BatchNormalization(momentum=0.999, name="bn")
    model = keras.Model(inputs, norm(inputs))
    x = np.random.default_rng(0).normal(3.0, 2.0, (1000, 4)).astype("float32")
    norm.moving_mean.assign(np.full(4, -5.0, "float32"))
    norm.moving_variance.assign(np.full(4, 50.0, "float32"))
    assert apps.recalibrate_batch_norm(model, x) == 1
    batches = x.reshape(-1, apps.BN_BATCH, 4)
    np.testing.assert_allclose(norm.moving_mean.numpy(), batches.mean(1).mean(0), rtol=1e-4)
    np.testing.assert_allclose(norm.moving_variance.numpy(), batches.var(1).mean(0), rtol=1e-3)
    assert norm.momentum == 0.999  # restored
    normalised = keras.ops.convert_to_numpy(model(x, training=False))
    assert abs(normalised.mean()) < 0.05 and abs(normalised.std() - 1.0) < 0.05


def _threshold_model():
    """Input(1) -> BatchNorm -> Dense(2) whose logit difference is the normalised input: right only when the
    BatchNorm's moving mean is the data's (100), at chance when it is stale (0)."""
    inputs = keras.Input((1,))
    norm = keras.layers.BatchNormalization()
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(norm(inputs)))
    dense.set_weights([np.array([[-0.5, 0.5]], "float32"), np.zeros(2, "float32")])
    return model, norm


def _threshold_data(n=400, seed=0):
    y = np.random.default_rng(seed).integers(0, 2, n)
    return (100.0 + np.where(y == 1, 1.0, -1.0))[:, None].astype("float32"), y


@pytest.mark.parametrize("trained_mean, expect", [(0.0, "recalibrated"), (100.0, "trained")])
def test_recalibrated_statistics_are_kept_only_when_no_worse_on_other_training_images(trained_mean, expect,
                                                                                     monkeypatch):
    """Stale moving statistics (mean 0) are replaced; current ones (mean 100) survive a recalibration that would
    make them worse (here one that sets the mean to 0), and the record says which were kept and why."""
    model, norm = _threshold_model()
    norm.moving_mean.assign([trained_mean])
    x, y = _threshold_data()
    if expect == "trained":
        def stale_recalibration(model, x, batch_size=apps.BN_BATCH):
            norm.moving_mean.assign([0.0])
            return 1

        monkeypatch.setattr(apps, "recalibrate_batch_norm", stale_recalibration)
    record = {}
    apps.recalibrate(model, x, y, record, seed=0)
    info = record["batch_norm_recalibration"]
    assert info["kept"] == expect
    assert info["train_images"] == 200 and info["choice_train_images"] == 200  # a small set is split in half
    mean = float(keras.ops.convert_to_numpy(norm.moving_mean)[0])
    if expect == "recalibrated":
        assert info["choice_accuracy_trained"] < 70  # stale statistics: one class always, chance here
        assert info["choice_accuracy_recalibrated"] == 100.0 and abs(mean - 100.0) < 0.5
    else:
        assert info["choice_accuracy_trained"] == 100.0 and info["choice_accuracy_recalibrated"] < 60
        assert mean == 100.0  # the trained statistics were restored


def _train_args(tmp_path, pack, **overrides):
    import argparse

    values = dict(work=tmp_path / "work", data=pack, epochs=3, batch_size=None, input_size=None,
                  max_seconds=1e9, eval_every=5, seed=0, smoke=True, resume=False)
    return argparse.Namespace(**dict(values, **overrides))


def _small_model(application, input_size=32, alpha=None, num_classes=10, name=None):
    """A few-layer stand-in for the application (what is checkpointed does not depend on the architecture)."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=4)(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.BatchNormalization()(x))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name=name)


def test_a_stopped_run_resumes_from_its_checkpoint_with_the_optimizer_state(tmp_path, monkeypatch):
    """--max-seconds stops after epoch 1 and leaves a checkpoint; a new run refuses to overwrite it; --resume
    continues the same schedule (the optimizer's step count carries on) to the last epoch, then removes it."""
    monkeypatch.setattr(apps, "build_model", _small_model)
    root = _image_folder(tmp_path / "images", classes=tuple("abcdefghij"), per_class=4)
    apps.pack_jpeg_folders(root, tmp_path / "pack.npz")
    name, folder = "cifar10_mobilenetv2", tmp_path / "work" / "cifar10_mobilenetv2"
    apps.train_one(name, _train_args(tmp_path, tmp_path / "pack.npz", max_seconds=0.0))
    checkpoint, state_file = (folder / f"{name}.checkpoint.keras", folder / f"{name}.checkpoint.json")
    state = json.loads(state_file.read_text())
    assert checkpoint.is_file() and [e["epoch"] for e in state["history"]] == [1]

    with pytest.raises(SystemExit, match="pass --resume"):
        apps.train_one(name, _train_args(tmp_path, tmp_path / "pack.npz"))
    with pytest.raises(SystemExit, match="other settings"):
        apps.load_checkpoint(folder, name, dict(state["settings"], epochs=4), 0)

    apps.train_one(name, _train_args(tmp_path, tmp_path / "pack.npz", resume=True))
    _, meta, _, _ = apps.read_shards(folder, name)
    assert [e["epoch"] for e in meta["history"]] == [1, 2, 3] and meta["resumed_after_epochs"] == 1
    assert len(meta["commands"]) == 2 and meta["command"] == meta["commands"][0]
    assert meta["stopped_early"] is None and not checkpoint.exists() and not state_file.exists()
    steps_per_epoch = -(-40 // apps.SMOKE["batch_size"])
    final = keras.models.load_model(folder / f"{name}.keras")
    assert int(final.optimizer.iterations) == 3 * steps_per_epoch  # not 2 epochs' worth: the state was restored
