"""Train the CIFAR-10 teachers used by the examples and benchmarks.

    python -m benchmarks train cifar10 --data ../shared/data/cifar10 --out benchmarks/models

writes `cifar10_cnn.keras` (a VGG-style CNN with a Dense head) and
`cifar10_mlp.keras` (a Dense-heavy MLP), and `teachers.json` with their test
accuracies. Data are read through `rmtkd_tf.data.load_data`, the code path the
CLI uses; images stay uint8 and each model rescales them itself.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from rmtkd_tf.data import load_data  # noqa: E402
from rmtkd_tf.io import save_model, write_json  # noqa: E402


def cifar10_cnn(num_classes=10):
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    for i, width in enumerate((32, 64, 128)):
        for j in range(2):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i + 1}_{j + 1}")(x)
            x = keras.layers.BatchNormalization(name=f"bn{i + 1}_{j + 1}")(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.Dense(256, activation="relu", name="fc1")(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="cifar10_cnn")


def cifar10_mlp(num_classes=10):
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(1024, activation="relu", name="fc1")(x)
    x = keras.layers.Dropout(0.2)(x)
    x = keras.layers.Dense(512, activation="relu", name="fc2")(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="cifar10_mlp")


def augment(images, labels):
    import tensorflow as tf

    images = tf.image.random_flip_left_right(images)
    padded = tf.image.pad_to_bounding_box(images, 4, 4, 40, 40)
    images = tf.image.random_crop(padded, tf.shape(images))
    return images, labels


def train(model, x, y, x_test, y_test, epochs, batch_size, lr, augment_data, seed):
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    steps = epochs * int(np.ceil(len(x) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(lr, steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).batch(batch_size)
    if augment_data:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    model.fit(ds.prefetch(2), epochs=epochs, verbose=2)
    return float(model.evaluate(x_test, y_test, verbose=0)[1] * 100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "models"))
    parser.add_argument("--cnn-epochs", type=int, default=12)
    parser.add_argument("--mlp-epochs", type=int, default=15)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["cnn", "mlp"], default=None)
    args = parser.parse_args(argv)

    t0 = time.time()
    splits = load_data(args.data, limit=args.limit, seed=args.seed)
    print(f"loaded {splits.describe()} in {time.time() - t0:.0f}s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "teachers.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    jobs = {"cnn": (cifar10_cnn, args.cnn_epochs, 2e-3, True), "mlp": (cifar10_mlp, args.mlp_epochs, 1e-3, False)}
    for name, (build, epochs, lr, aug) in jobs.items():
        if args.only and name != args.only:
            continue
        t1 = time.time()
        model = build()
        acc = train(model, splits.x_train, splits.y_train, splits.x_test, splits.y_test, epochs, 128, lr, aug, args.seed)
        save_model(model, out / f"cifar10_{name}.keras")
        results[f"cifar10_{name}"] = {
            "params": int(model.count_params()),
            "test_accuracy": acc,
            "epochs": epochs,
            "train_examples": int(len(splits.y_train)),
            "wall_s": round(time.time() - t1),
        }
        print(f"{name}: test accuracy {acc:.2f}% ({model.count_params():,} params) in {time.time() - t1:.0f}s", flush=True)
        write_json(results_path, results)


if __name__ == "__main__":
    main()
