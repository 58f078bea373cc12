"""keras.applications teachers (ResNet-50, MobileNetV2, EfficientNet-B0) on CIFAR-10, trained with Keras 3 on JAX.

The GPU machine this project borrows has PyTorch and JAX but no TensorFlow and no internet; Keras 3 runs there on
its JAX backend once three wheels travel with the tree (keras, namex, optree: the image has Keras' other needs,
absl-py, numpy, rich, h5py, ml-dtypes, packaging). Steps:

Here (this checkout, TensorFlow's venv or any Python):

    python benchmarks/gpu_teachers/train_keras_apps.py pack-data   # .gpu_teachers/keras_apps/cifar10_jpeg.npz
    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \\
        -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0                                  # 2.9 MB

On the GPU machine (the device tool's `run`, carry [".gpu_teachers/keras_apps", ".whl"]; 10 minutes a call;
`run_keras_apps.sh` installs the wheels into /tmp/site and sets KERAS_BACKEND=jax, then runs this file):

    bash benchmarks/gpu_teachers/run_keras_apps.sh train --max-seconds 400            # all three, in parallel
    bash benchmarks/gpu_teachers/run_keras_apps.sh pack cifar10_resnet50 cifar10_mobilenetv2 cifar10_efficientnetb0
                                                        # -> $OUT: 6 shards, 57 MiB, within what one call returns

RUN ON THE GPU on 2026-12-04 (one NVIDIA H200, the image's JAX 0.11.2 with Keras 3.15.1): the two commands
above, joined in one call (`train --max-seconds 400`, then `pack` of all three: 6 shards, 57.1 MiB), trained all
three for their full 30 epochs in parallel in 269 s (ResNet-50), 284 s (MobileNetV2) and 395 s (EfficientNet-B0),
about 6 s an epoch after a 50-125 s first epoch that includes compilation; the call took 535 s and the lease 571 s
of device time. `import --weights FOLDER --out benchmarks/models/gpu_e30` measured 80.28%, 75.67% and 69.97% test
here (BENCHMARKS.md, "GPU route"). On a CPU with JAX 0.10.2, `train --smoke`
runs all three and their JAX-saved .keras files load with TensorFlow.

The same code also trains on TensorFlow's backend on the 2-core build machine (`KERAS_BACKEND=tensorflow ...
one cifar10_mobilenetv2 --work .gpu_teachers/cpu --epochs 10 --max-seconds 3600`, 33 min; then `recalibrate`,
`pack` and `import` as below): BENCHMARKS.md, "MobileNetV2 trained on the CPU";
`one cifar10_efficientnetb0 ... --epochs 10` took 42 min: "EfficientNet-B0 trained on the CPU";
`one cifar10_mobilenetv2 --work .gpu_teachers/cpu25 --epochs 25` took 86.5 min (76.3% test), imported with
`--out benchmarks/models/e25`: "MobileNetV2 trained for 25 epochs".

Long runs checkpoint: after every epoch but the last, `one`/`train` write `--work/NAME/NAME.checkpoint.keras` (the
model with its optimizer state) and `NAME.checkpoint.json` (settings, history, the augmentation generator's state),
each renamed into place. A run stopped by --max-seconds, or killed, continues with the same command plus `--resume`
(a ResNet-50 over several CPU sessions); without it a new run refuses to overwrite the checkpoint. The checkpoint
is removed once the last epoch is done. Fit's shuffling is reseeded at a resume, so the epochs after it see
another order than an uninterrupted run would (same augmentation draws).

After the last epoch `train` re-estimates every BatchNorm's moving statistics on 5,000 training images
(`recalibrate_batch_norm`): MobileNetV2's BatchNorms use momentum 0.999, and after a short schedule their
moving averages still trail the weights, so the model scores at chance in inference mode (MobileNetV2 after 10
epochs: 10.00% on test before, 61.78% after; after 25: 67.59% and 76.53%). Where the moving statistics were
already current it can cost accuracy: EfficientNet-B0 (momentum 0.99) after 10 epochs scored 48.31% on test before
and 47.40% after; after 30 epochs on the GPU, ResNet-50 82.98% and 80.26%, EfficientNet-B0 72.37% and 70.02%. So
the recalibrated statistics are now kept only when they score at least as well, in inference mode, on 5,000 other
training images (never the test split); otherwise the trained ones stay. The record keeps both training-image
scores, the choice, and the test score before. `recalibrate NAME --work W` does the same to a model trained before.

Here again (TensorFlow; evaluates with the project's own CIFAR-10 loader and saves benchmarks/models/NAME.keras):

    python benchmarks/gpu_teachers/train_keras_apps.py import --weights FOLDER [NAME ...]

The data travel as the dataset's own JPEG files, byte for byte: all 60,000 share one 623-byte header (quantisation
and Huffman tables, 32x32 frame) and the 2-byte end marker, so `pack-data` keeps those once and each file's entropy-
coded scan (17.8 MB in all, against 88 MiB as a tar). The GPU machine decodes them with PIL, whose pixels differ
from TensorFlow's decoder (which `rmtkd_tf.data` uses) by up to a few levels; the accuracies that count are the
ones `import` measures here on TensorFlow's pixels.

Models: `keras.applications.<App>(weights=None, classes=10, classifier_activation=None)` built flat on a
`keras.Input((32, 32, 3))` of raw 0-255 pixels (ResNet-50 and MobileNetV2 behind `Rescaling(1/127.5, offset=-1)`;
EfficientNet-B0 rescales itself), at 32x32 unless `--input-size` upsamples with a `Resizing` layer (then the
model still takes CIFAR's 32x32 images). All 50,000 training images, random crop (4-pixel zero padding) and
horizontal flip, SGD with Nesterov momentum 0.9, linear warm-up over 2 epochs then cosine decay to 0, decoupled
weight decay (5e-3 * learning rate per step: PyTorch's coupled 5e-4 with momentum 0.9), no selection on the test
split (the last epoch is kept), as `benchmarks.train_cifar10` trains the project's CNN.

The weights travel back as `NAME.pK.npz` shards (float16 for tensors of 65,536 values or more, float32 below,
so BatchNorm statistics stay exact; at most 14 MiB raw each: the device tool returns 8 files of 16 MiB a call)
with the model's Keras config, its training record, and 64 probe test images with the logits the rounded weights
give on JAX; `import` checks TensorFlow's logits on them. `train` also saves the fp32 `.keras` on the GPU machine
(`--work/NAME/NAME.keras`; ResNet-50's is 94 MB, over what one call returns).

`train --smoke` runs the same code on 256 training and 64 test images for one epoch (MobileNetV2 at alpha 0.35):
on a CPU with a JAX venv it checks the whole path, `train` -> `pack` -> `import` with TensorFlow, in minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

if __package__:
    from .script_command import script_command
    from .shard_pack import pack_shards
else:  # run as a script on the GPU machine (no TensorFlow, no rmtkd_tf): import from this folder
    from script_command import script_command
    from shard_pack import pack_shards

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
DEFAULT_PACK = ROOT / ".gpu_teachers" / "keras_apps" / "cifar10_jpeg.npz"
COMMON = dict(epochs=30, batch_size=128, learning_rate=0.1, weight_decay=5e-3, warmup_epochs=2, input_size=32)
MODELS = {
    "cifar10_resnet50": dict(COMMON, application="ResNet50"),
    "cifar10_mobilenetv2": dict(COMMON, application="MobileNetV2", alpha=1.0),
    "cifar10_efficientnetb0": dict(COMMON, application="EfficientNetB0"),
}
SMOKE = dict(epochs=1, batch_size=32, warmup_epochs=0, train_rows=256, test_rows=64)
SHARD_BYTES = 14 * 2**20
FP16_FROM = 2**16  # tensors with at least this many values travel as float16
PROBE_ROWS = 64
BN_IMAGES = 5000  # training images whose batch statistics become the BatchNorms' moving statistics
BN_BATCH = 100
BN_CHOICE_IMAGES = 5000  # other training images on which recalibrated statistics must score at least as well
PROBE_RTOL = 1e-3  # TF logits vs JAX logits on the probe images, relative to the largest |logit|
JPEG_END = b"\xff\xd9"


# ---------------------------------------------------------------- data on the wire
def jpeg_header_length(data: bytes) -> int:
    """Bytes up to the end of the start-of-scan segment (what precedes the entropy-coded data)."""
    index = data.find(b"\xff\xda")
    if index < 0:
        raise ValueError("no start-of-scan marker: not a baseline JPEG")
    return index + 2 + int.from_bytes(data[index + 2 : index + 4], "big")


def pack_jpeg_folders(root: Path, out: Path) -> dict:
    """`root/{train,test}/<class>/*.jpg` -> one .npz: the shared header once, each file's scan, labels.

    Classes are the sorted sub-folders of `train/` and files are taken in sorted order, as `rmtkd_tf.data`
    lists them. Raises ValueError when the files do not share one header (then they cannot travel this way).
    """
    classes = sorted(e.name for e in os.scandir(root / "train") if e.is_dir() and not e.name.startswith("."))
    header, arrays, info = None, {}, {"classes": classes}
    for split in ("train", "test"):
        scans, labels = [], []
        for label, name in enumerate(classes):
            folder = root / split / name
            for file in sorted(os.listdir(folder)):
                data = (folder / file).read_bytes()
                cut = jpeg_header_length(data)
                if header is None:
                    header = data[:cut]
                if data[:cut] != header or not data.endswith(JPEG_END):
                    raise ValueError(f"{folder / file} does not share the first file's JPEG header")
                scans.append(data[cut : -len(JPEG_END)])
                labels.append(label)
        lengths = np.array([len(s) for s in scans], np.int64)
        arrays[f"{split}_scan"] = np.frombuffer(b"".join(scans), np.uint8)
        arrays[f"{split}_offsets"] = np.concatenate([[0], np.cumsum(lengths)])
        arrays[f"{split}_y"] = np.array(labels, np.uint8)
        info[f"{split}_rows"] = len(labels)
    arrays["header"] = np.frombuffer(header, np.uint8)
    arrays["info"] = np.frombuffer(json.dumps(info).encode(), np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    return info


def jpeg_files(pack, split, rows=None):
    """The JPEG files of `split` (bytes, byte for byte as packed) and their labels; `rows`: a seeded subset."""
    header, offsets, scan = pack["header"].tobytes(), pack[f"{split}_offsets"], pack[f"{split}_scan"]
    n = len(offsets) - 1
    # A subset (smoke runs) is a seeded draw across the classes, which are packed one after the other.
    index = np.arange(n) if rows is None else np.sort(np.random.default_rng(0).permutation(n)[:rows])
    files = [header + scan[offsets[i] : offsets[i + 1]].tobytes() + JPEG_END for i in index]
    return files, pack[f"{split}_y"][index].astype(np.int32)


def decode_jpegs(files):
    """uint8 `(n, h, w, 3)` decoded with PIL (up to a few levels off TensorFlow's decoder)."""
    import io

    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files])


def load_pack(path, rows=None):
    with np.load(path) as pack:
        info = json.loads(pack["info"].tobytes())
        splits = {}
        for split in ("train", "test"):
            files, y = jpeg_files(pack, split, None if rows is None else rows[split])
            splits[split] = (decode_jpegs(files), y)
    return info, splits


# ---------------------------------------------------------------- model and training (any Keras 3 backend)
def build_model(application, input_size=32, alpha=None, num_classes=10, name=None):
    """The keras.applications model, flat, on raw 0-255 32x32 images (see the module docstring)."""
    import keras

    inputs = keras.Input((32, 32, 3), name="image")
    x = inputs
    if application != "EfficientNetB0":  # EfficientNet's own first layers rescale 0-255 pixels
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(x)
    if input_size != 32:
        x = keras.layers.Resizing(input_size, input_size, name="upsample")(x)
    kwargs = dict(weights=None, classes=num_classes, classifier_activation=None, input_tensor=x,
                  input_shape=(input_size, input_size, 3))
    if alpha is not None:
        kwargs["alpha"] = alpha
    base = getattr(keras.applications, application)(**kwargs)
    return keras.Model(inputs, base.outputs[0], name=name or application.lower())


def augment(x, rng, pad=4):
    """Random crop of the zero-padded image and random horizontal flip, vectorised per offset."""
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy, dx = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
    out = np.empty_like(x)
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            rows = np.flatnonzero((dy == oy) & (dx == ox))
            out[rows] = padded[rows, oy : oy + h, ox : ox + w]
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out


def recalibrate_batch_norm(model, x, batch_size=BN_BATCH):
    """Set every BatchNormalization's moving mean/variance to the plain average of its batch statistics over `x`.

    MobileNetV2's BatchNorms keep moving averages with momentum 0.999 (keras.applications' others: 0.99), which
    after a short schedule still trail weights that changed fast, so a model that trains well can score at chance
    in inference mode. Each batch `i` runs in training mode with momentum `i / (i + 1)` (a cumulative average,
    PyTorch's `update_bn`, as `rmtkd_tf.baselines.recalibrate_batch_norm`, which this script cannot import on the
    GPU machine); the momenta are restored after. Dropout is active during these passes; no weight changes.
    Returns the number of BatchNormalization layers updated.
    """
    import keras

    layers = [layer for layer in model._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    try:
        for i, start in enumerate(range(0, len(x), batch_size)):
            for layer in layers:
                layer.momentum = i / (i + 1.0)
            model(x[start:start + batch_size].astype("float32"), training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)


def recalibrate(model, x_train, y_train, record, seed):
    """`recalibrate_batch_norm` on BN_IMAGES seeded training images (not augmented), kept only when it scores at
    least as well in inference mode on BN_CHOICE_IMAGES other training images; notes both scores in `record`.

    The choice never looks at the test split. With fewer than 2 x BN_IMAGES training images (a smoke run) the
    images are split in half between the two uses.
    """
    order = np.random.default_rng(seed).permutation(len(x_train))
    used = min(BN_IMAGES, len(order) // 2)
    rows, held = np.sort(order[:used]), np.sort(order[used:used + BN_CHOICE_IMAGES])
    t0 = time.time()
    trained_weights = model.get_weights()
    before = accuracy(model, x_train[held], y_train[held])[0]
    count = recalibrate_batch_norm(model, x_train[rows])
    after = accuracy(model, x_train[held], y_train[held])[0]
    kept = after >= before
    if not kept:
        model.set_weights(trained_weights)
    record["batch_norm_recalibration"] = {
        "layers": count, "train_images": int(len(rows)), "batch_size": BN_BATCH,
        "choice_train_images": int(len(held)), "choice_accuracy_trained": before, "choice_accuracy_recalibrated": after,
        "kept": "recalibrated" if kept else "trained", "wall_s": round(time.time() - t0, 1)}


def accuracy(model, x, y, batch_size=500):
    logits = model.predict(x.astype("float32"), batch_size=batch_size, verbose=0)
    return float((logits.argmax(-1) == y).mean() * 100), logits


def round_weights(model):
    """Round the large tensors to float16 (as they travel) and return the weights as they travel."""
    weights = [w if w.size < FP16_FROM else w.astype(np.float16) for w in model.get_weights()]
    model.set_weights([w.astype(np.float32) for w in weights])
    return weights


def train_settings(name, args):
    """MODELS[name] with the smoke-run and command-line overrides applied."""
    settings = dict(MODELS[name])
    if args.smoke:
        settings.update(SMOKE)
        if settings["application"] == "MobileNetV2":
            settings["alpha"] = 0.35
    for key in ("epochs", "batch_size", "input_size"):
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    return settings


def compiled_model(name, settings, num_classes, train_rows, seed):
    """The untrained model with its optimizer: SGD + Nesterov, linear warm-up then cosine decay to 0."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(settings["application"], settings["input_size"], settings.get("alpha"), num_classes, name=name)
    steps_per_epoch = math.ceil(train_rows / settings["batch_size"])
    total, warmup = settings["epochs"] * steps_per_epoch, settings["warmup_epochs"] * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else settings["learning_rate"], max(total - warmup, 1), alpha=0.0,
        warmup_target=settings["learning_rate"] if warmup else None, warmup_steps=warmup)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                                 weight_decay=settings["weight_decay"]),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


# ---------------------------------------------------------------- checkpoints (resume a long CPU run)
def _checkpoint_files(folder, name):
    return folder / f"{name}.checkpoint.keras", folder / f"{name}.checkpoint.json"


def save_checkpoint(model, folder, name, state):
    """After each epoch: the model with its optimizer state (Keras saves both) and `state` (settings, seed,
    history, the augmentation generator's state, wall seconds so far), each written to a temporary file and
    renamed, so that a run killed while saving leaves the previous checkpoint whole."""
    model_file, state_file = _checkpoint_files(folder, name)
    model.save(model_file.with_name(f"{name}.partial.keras"))
    os.replace(model_file.with_name(f"{name}.partial.keras"), model_file)
    state_file.with_suffix(".partial").write_text(json.dumps(state))
    os.replace(state_file.with_suffix(".partial"), state_file)


def load_checkpoint(folder, name, settings, seed):
    """(model, state) from `save_checkpoint`, or (None, None) when there is none; exits with one line when the
    checkpoint was written with other settings or another seed (it cannot continue this run)."""
    import keras

    model_file, state_file = _checkpoint_files(folder, name)
    if not (model_file.exists() and state_file.exists()):
        return None, None
    state = json.loads(state_file.read_text())
    if state["settings"] != settings or state["seed"] != seed:
        sys.exit(f"{name}: the checkpoint in {folder} was written with other settings or seed "
                 f"({state['settings']}, seed {state['seed']}); rerun with those or move it away")
    return keras.models.load_model(model_file), state


def start_or_resume(name, folder, settings, args, num_classes, train_rows):
    """(model, history, augmentation generator, wall seconds already trained, the commands that trained it so
    far). A checkpoint in `folder` is continued with --resume and refused without it (a new run would overwrite
    it)."""
    import keras

    model, state = load_checkpoint(folder, name, settings, args.seed)
    if state is not None and not args.resume:
        sys.exit(f"{name}: {folder} holds a checkpoint after epoch {len(state['history'])} of "
                 f"{settings['epochs']}; pass --resume to continue it, or use another --work")
    rng = np.random.default_rng(args.seed)
    if state is None:
        return compiled_model(name, settings, num_classes, train_rows, args.seed), [], rng, 0.0, []
    rng.bit_generator.state = state["augment_rng"]
    # fit's shuffling draws from Keras' global seed: reseeded per resume point, so epochs after a resume are
    # shuffled differently from an uninterrupted run (the augmentation draws are the same)
    keras.utils.set_random_seed(args.seed + len(state["history"]))
    print(f"{name}: resumed after epoch {len(state['history'])} of {settings['epochs']}", flush=True)
    return model, state["history"], rng, state["train_wall_s"], state["commands"]


def train_one(name, args):
    import keras

    settings = train_settings(name, args)
    folder = args.work / name
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rows = {"train": settings.get("train_rows"), "test": settings.get("test_rows")}
    info, splits = load_pack(args.data, rows if args.smoke else None)
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    print(f"{name}: {len(y_train)} train / {len(y_test)} test images decoded in {time.time() - t0:.0f}s", flush=True)

    model, history, rng, wall_before, commands = start_or_resume(name, folder, settings, args, len(info["classes"]),
                                                                 len(y_train))
    commands = commands + [script_command(__file__)]
    stopped, start, first_epoch = None, time.time(), len(history)
    for epoch in range(first_epoch, settings["epochs"]):
        t_epoch = time.time()
        logs = model.fit(augment(x_train, rng).astype("float32"), y_train, batch_size=settings["batch_size"],
                         epochs=epoch + 1, initial_epoch=epoch, shuffle=True, verbose=0).history
        entry = {"epoch": epoch + 1, "loss": float(logs["loss"][-1]), "train_accuracy": float(logs["accuracy"][-1]) * 100,
                 "wall_s": round(time.time() - t_epoch, 1)}
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == settings["epochs"]:
            entry["test_accuracy"] = accuracy(model, x_test, y_test)[0]
        history.append(entry)
        print(f"{name}: {json.dumps(entry)}", flush=True)
        elapsed = time.time() - start
        if epoch + 1 < settings["epochs"]:
            save_checkpoint(model, folder, name, {
                "settings": settings, "seed": args.seed, "history": history,
                "augment_rng": rng.bit_generator.state, "train_wall_s": round(wall_before + elapsed, 1),
                "commands": commands})
            # this invocation's own epochs estimate the next one's time
            if elapsed + elapsed / (epoch + 1 - first_epoch) > args.max_seconds:
                stopped = (f"stopped after epoch {epoch + 1} of {settings['epochs']}: the next would end past "
                           f"--max-seconds (--resume continues from the checkpoint)")
                print(f"{name}: {stopped}", flush=True)
                break
    # the last epoch was scored already unless training stopped early
    before_recalibration = history[-1].get("test_accuracy")
    if before_recalibration is None:
        before_recalibration = accuracy(model, x_test, y_test)[0]
    record = {
        "name": name, "command": commands[0],
        "settings": settings, "backend": keras.backend.backend(), "keras": keras.__version__,
        "jax": _version("jax"), "device": _device(), "smoke": bool(args.smoke), "seed": args.seed,
        "train_rows": int(len(y_train)), "test_rows": int(len(y_test)), "classes": info["classes"],
        "history": history, "stopped_early": stopped,
        "train_wall_s": round(wall_before + time.time() - start, 1),
        "test_accuracy_before_bn_recalibration": before_recalibration,
    }
    if first_epoch:  # the first command started it, each later one resumed it
        record.update(resumed_after_epochs=first_epoch, commands=commands)
    meta = recalibrate_and_finish(model, name, folder, record, splits, args.seed)
    if stopped is None:
        for file in _checkpoint_files(folder, name):
            file.unlink(missing_ok=True)
    print(f"{name}: kept the {meta['batch_norm_recalibration']['kept']} BatchNorm statistics; test accuracy "
          f"{meta['test_accuracy_there']:.2f}% (PIL pixels, weights as they travel), {meta['train_wall_s']:.0f}s",
          flush=True)


def recalibrate_and_finish(model, name, folder, record, splits, seed):
    """The end of a training run (and of `recalibrate`): BatchNorm statistics re-estimated on training images
    (kept if no worse there), the fp32 model saved as `folder/NAME.keras` (it stays on this machine), then
    `finish` on the test split; `splits` as `load_pack` returns them. Returns the meta."""
    recalibrate(model, *splits["train"], record, seed)
    model.save(folder / f"{name}.keras")
    return finish(model, name, folder, record, *splits["test"])


def finish(model, name, folder, record, x_test, y_test):
    """Round the weights as they travel, measure, write `folder/NAME.pK.npz` and `DONE`; returns the meta."""
    weights = round_weights(model)
    test_accuracy, logits = accuracy(model, x_test, y_test)
    meta = dict(record, test_accuracy_there=test_accuracy, params=int(model.count_params()),
                variables=[v.path for v in model.weights], config=model.to_json())
    write_shards(weights, meta, x_test[:PROBE_ROWS], logits[:PROBE_ROWS], folder, name)
    (folder / "DONE").write_text("")
    return meta


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def _device():
    """What trained the model: JAX's first device, or for another backend the CPU count (no GPU there)."""
    import keras

    if keras.backend.backend() == "jax":
        try:
            import jax

            return str(jax.devices()[0])
        except Exception:  # JAX without a usable device
            return None
    return f"{keras.backend.backend()} on a CPU with {os.cpu_count()} cores"


def write_shards(weights, meta, probe_x, probe_logits, folder, name):
    """`name.pK.npz` files of at most SHARD_BYTES raw bytes; the first holds the meta and the probe."""
    shards, current, size = [], {}, 0
    for i, w in enumerate(weights):
        if current and size + w.nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[f"w{i}"], size = w, size + w.nbytes
    shards.append(current)
    meta = dict(meta, shards=len(shards), tensors=len(weights))
    shards[0].update(__meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), probe_x=probe_x,
                     probe_logits=probe_logits.astype(np.float32))
    for k, shard in enumerate(shards):
        np.savez_compressed(folder / f"{name}.p{k}.npz", **shard)


def read_shards(folder, name):
    """(weights as float32 arrays in model order, meta, probe_x, probe_logits)."""
    with np.load(folder / f"{name}.p0.npz") as first:
        meta = json.loads(first["__meta__"].tobytes())
        probe_x, probe_logits = first["probe_x"], first["probe_logits"]
    weights = {}
    for k in range(meta["shards"]):
        with np.load(folder / f"{name}.p{k}.npz") as shard:
            weights.update({key: shard[key] for key in shard.files if key.startswith("w")})
    return [weights[f"w{i}"].astype(np.float32) for i in range(meta["tensors"])], meta, probe_x, probe_logits


# ---------------------------------------------------------------- commands
def cmd_pack_data(args):
    t0 = time.time()
    info = pack_jpeg_folders(args.cifar, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB, {info['train_rows']} train / "
          f"{info['test_rows']} test) in {time.time() - t0:.0f}s")


def cmd_train(args):
    names = args.models or list(MODELS)
    procs = {}
    for name in names:
        command = [sys.executable, __file__, "one", name, "--work", str(args.work), "--data", str(args.data),
                   "--max-seconds", str(args.max_seconds), "--seed", str(args.seed), "--eval-every", str(args.eval_every)]
        for key in ("epochs", "batch_size", "input_size"):
            if getattr(args, key) is not None:
                command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
        command += ["--smoke"] * args.smoke + ["--resume"] * args.resume
        # Several JAX processes share one GPU: none may preallocate most of its memory.
        env = dict(os.environ, PYTHONUNBUFFERED="1", KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"),
                   XLA_PYTHON_CLIENT_PREALLOCATE="false")
        procs[name] = subprocess.Popen(command, env=env)
        if not args.parallel:
            procs[name].wait()
    failed = [n for n, p in procs.items() if p.wait() != 0]
    if failed:
        sys.exit(f"training failed for {failed}")


def cmd_recalibrate(args):
    """Recalibrate the BatchNorms of a model `train` already wrote (`--work/NAME/NAME.keras`, fp32) and write its
    shards again; for a model trained before `train` did this itself."""
    import keras

    folder = args.work / args.name
    _, meta, _, _ = read_shards(folder, args.name)
    if "batch_norm_recalibration" in meta:
        sys.exit(f"{args.name}: its BatchNorms were recalibrated already")
    model = keras.models.load_model(folder / f"{args.name}.keras")
    _, splits = load_pack(args.data)
    record = {k: v for k, v in meta.items() if k not in ("test_accuracy_there", "params", "variables", "config")}
    record["test_accuracy_before_bn_recalibration"] = accuracy(model, *splits["test"])[0]
    record["batch_norm_recalibration_command"] = script_command(__file__)
    meta = recalibrate_and_finish(model, args.name, folder, record, splits, args.seed)
    print(f"{args.name}: kept the {meta['batch_norm_recalibration']['kept']} BatchNorm statistics; test accuracy "
          f"{record['test_accuracy_before_bn_recalibration']:.2f}% -> {meta['test_accuracy_there']:.2f}% "
          "(PIL pixels, weights as they travel)", flush=True)


def cmd_pack(args):
    pack_shards([args.work / name for name in args.names], args.names, args.out)


def import_one(name, folder, out, data_root=DEFAULT_CIFAR, test_rows=None):
    """Rebuild NAME from its shards with this Keras (TensorFlow here), check it, save `out/NAME.keras`."""
    import keras

    from rmtkd_tf.data import load_data
    from rmtkd_tf.io import save_model, write_json

    weights, meta, probe_x, probe_logits = read_shards(folder, name)
    model = keras.models.model_from_json(meta["config"])
    if [v.path for v in model.weights] != meta["variables"]:
        raise SystemExit(f"{name}: the rebuilt model's variables differ from the trained model's")
    model.set_weights(weights)
    logits = keras.ops.convert_to_numpy(model(probe_x.astype("float32"), training=False))
    probe_err = float(np.abs(logits - probe_logits).max())
    scale = max(1.0, float(np.abs(probe_logits).max()))
    if probe_err > PROBE_RTOL * scale:
        raise SystemExit(f"{name}: logits differ from the trained model's by {probe_err:.2e} on the probe images")
    data = load_data(str(data_root), limit=test_rows, seed=0)
    test_logits = model.predict(data.x_test.astype("float32"), batch_size=500, verbose=0)
    test_accuracy = float((test_logits.argmax(-1) == data.y_test).mean() * 100)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out / f"{name}.keras")
    record = {k: v for k, v in meta.items() if k not in ("config", "variables")}
    record.update(test_accuracy=test_accuracy, test_rows=int(len(data.y_test)), probe_max_abs_err=probe_err,
                  keras_import=keras.__version__, backend_import=keras.backend.backend(),
                  note=f"Trained with Keras {meta.get('keras')} on its {meta.get('backend')} backend "
                       f"({meta.get('device')}; benchmarks/gpu_teachers/train_keras_apps.py); test accuracy "
                       "measured here with rmtkd_tf.data's TensorFlow-decoded pixels.")
    record["import_command"] = script_command(__file__)
    write_json(out / f"{name}.train.json", record)
    print(f"{name}: test accuracy {test_accuracy:.2f}% here ({meta.get('test_accuracy_there', float('nan')):.2f}% "
          f"there), probe logits within {probe_err:.1e}, saved {out / (name + '.keras')}", flush=True)
    return record


def cmd_import(args):
    for name in args.names or list(MODELS):
        folder = next((f for f in args.weights if (f / f"{name}.p0.npz").is_file()), None)
        if folder is None:
            sys.exit(f"no {name}.p0.npz under {[str(f) for f in args.weights]}")
        import_one(name, folder, args.out, args.cifar, args.test_rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack-data", help="CIFAR-10 JPEG folders -> one .npz for the GPU machine")
    p.add_argument("--cifar", type=Path, default=DEFAULT_CIFAR)
    p.add_argument("--out", type=Path, default=DEFAULT_PACK)
    for command in ("train", "one"):
        p = sub.add_parser(command, help="train the models (KERAS_BACKEND=jax)" if command == "train" else None)
        if command == "train":
            p.add_argument("models", nargs="*", help=f"default: all of {list(MODELS)}")
            p.add_argument("--sequential", dest="parallel", action="store_false", help="one model at a time")
        else:
            p.add_argument("name", choices=list(MODELS))
        p.add_argument("--work", type=Path, required=True)
        p.add_argument("--data", type=Path, default=DEFAULT_PACK)
        p.add_argument("--epochs", type=int, default=None)
        p.add_argument("--batch-size", type=int, default=None)
        p.add_argument("--input-size", type=int, default=None, help="upsample inside the model (default 32)")
        p.add_argument("--max-seconds", type=float, default=420.0, help="start no epoch that would end past this")
        p.add_argument("--eval-every", type=int, default=5)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--smoke", action="store_true", help="256 train / 64 test images, 1 epoch, alpha 0.35")
        p.add_argument("--resume", action="store_true",
                       help="continue from the checkpoint the last run left in --work (one after every epoch)")
    p = sub.add_parser("recalibrate", help="re-estimate a trained model's BatchNorm statistics, write its shards again")
    p.add_argument("name", choices=list(MODELS))
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_PACK)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("pack", help="copy trained models' shards to --out (what one call returns)")
    p.add_argument("names", nargs="+", choices=list(MODELS))
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("import", help="rebuild with TensorFlow here, measure on CIFAR-10, save .keras")
    p.add_argument("names", nargs="*", help=f"default: all of {list(MODELS)}")
    p.add_argument("--weights", type=Path, nargs="+", required=True)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "models")
    p.add_argument("--cifar", type=Path, default=DEFAULT_CIFAR)
    p.add_argument("--test-rows", type=int, default=None, help="a class-balanced subset of the test split")
    args = parser.parse_args(argv)
    unknown = set(getattr(args, "models", None) or getattr(args, "names", None) or []) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}: choose from {list(MODELS)}")
    {"pack-data": cmd_pack_data, "train": cmd_train, "one": lambda a: train_one(a.name, a), "pack": cmd_pack,
     "recalibrate": cmd_recalibrate, "import": cmd_import}[args.command](args)


if __name__ == "__main__":
    main()
