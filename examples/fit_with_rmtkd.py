"""RMT-KD inside your own `model.fit`: a small MLP on the packaged CIFAR-10 sample.

Run it from the repository root with the virtual environment of the README's first command (it needs
TensorFlow, Keras and rmtkd-tf installed; another Python stops with a one-line hint):

    .venv/bin/python examples/fit_with_rmtkd.py             # about 6 minutes on 2 busy CPU cores
    .venv/bin/python examples/fit_with_rmtkd.py --output student.keras

What happens:

1. The packaged sample (`rmtkd_tf/assets/cifar10_sample.npz`: 1500 train / 500
   test real CIFAR-10 images) is loaded with `rmtkd_tf.data.load_data`, and a
   stratified validation split is held out of the *train* split with
   `split_train` (the test split is only used for the final report).
2. An ordinary Keras MLP is trained with `model.fit(...)`, with one extra
   callback: `RMTKDCallback`. Until the validation accuracy reaches
   `--start-accuracy`, the callback does nothing.
3. At that epoch end it snapshots the model (the teacher) and, every epoch
   after that, factorizes one Dense layer at the rank the Marchenko–Pastur
   rule picks on the calibration activations, self-distils it from the model
   before the step, and rolls the step back if the validation accuracy drops
   more than `--max-drop` points below the snapshot's.
4. When no layer can be reduced further it stops `fit`. The compressed model
   is `callback.student_`; the script prints teacher vs student parameters and
   test accuracy and, with `--output`, saves the student as `.keras` and
   checks that it reloads (`import rmtkd_tf` registers the factorized layers).

One run here (seed 0, 2 CPU cores shared with other jobs, 368 s): snapshot at epoch 7 (val 30.7%),
19 accepted steps, all on hidden1 (512 -> 245 at the first step, then 1-4 directions per step down to
209), hidden2's one step (256 -> 96) rolled back (validation drop 3.67 > 3), `fit` stopped at epoch 27
of 30 when no layer could be reduced further; 1,707,274 -> 883,466 parameters (x1.9, 48.3% removed),
test accuracy 29.6% -> 34.0%. The student can beat the snapshot because an MLP on 1275 images is a
weak, early-snapshotted teacher and every step adds distillation epochs; with 300 validation images one
image is 0.33 points, hence the loose default `--max-drop 3`. The cut is modest because a layer analysed
again reuses its first noise fit (its kept subspace is a fixed point), so after the first big cut each
step removes only the few directions that fell below the fitted edge; `rmtkd-tf compress` with a
`--target-params` is the way to a given size.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import keras  # noqa: E402
    import numpy as np  # noqa: E402

    import rmtkd_tf  # noqa: E402,F401  (registers LowRankDense / LowRankConv2D for load_model)
except ImportError as error:  # run with a Python that lacks the install
    raise SystemExit(
        f"{error}: run this example with the Python rmtkd-tf is installed in, e.g. "
        "`.venv/bin/python examples/fit_with_rmtkd.py` after the README's first command"
    ) from None
from rmtkd_tf.callbacks import RMTKDCallback  # noqa: E402
from rmtkd_tf.steps import accuracy  # noqa: E402
from rmtkd_tf.data import load_data, split_train  # noqa: E402

SAMPLE = Path(rmtkd_tf.__file__).resolve().parent / "assets" / "cifar10_sample.npz"


def build_mlp(input_shape, num_classes):
    """Rescale pixels, flatten, two ReLU hidden layers, logits."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Rescaling(1.0 / 255.0),
            keras.layers.Flatten(),
            keras.layers.Dense(512, activation="relu", name="hidden1"),
            keras.layers.Dense(256, activation="relu", name="hidden2"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="cifar10_mlp",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="most epochs for fit (RMT-KD stops it when done)")
    parser.add_argument("--start-accuracy", type=float, default=0.3, help="val accuracy (fraction) to start at")
    parser.add_argument("--max-drop", type=float, default=3.0, help="val accuracy points a step may lose")
    parser.add_argument("--output", type=Path, default=None, help="where to save the student (.keras)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t0 = time.time()

    data = load_data(str(SAMPLE))
    print(data.describe())
    # Validation comes out of the train split, stratified; the test split is kept for the report.
    parts = split_train(data.x_train, data.y_train, fractions=(0.0, 0.2), seed=args.seed)
    x_train, y_train = data.x_train[parts.train], data.y_train[parts.train]
    x_val, y_val = data.x_train[parts.validation], data.y_train[parts.validation]

    keras.utils.set_random_seed(args.seed)
    model = build_mlp(data.x_train.shape[1:], data.num_classes)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    rmtkd = RMTKDCallback(
        calibration_data=x_train,  # activations of training images pick the ranks
        train_data=(x_train, y_train),
        validation_data=(x_val, y_val),
        start_accuracy=args.start_accuracy,
        reduce_every=1,
        rank_rule="mp",
        max_drop=args.max_drop,
        epochs_per_step=3,
        learning_rate=5e-4,
        batch_size=64,
        seed=args.seed,
    )
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        epochs=args.epochs,
        batch_size=64,
        callbacks=[rmtkd],
        verbose=2,
    )

    print()
    print(f"fit ran {len(history.history['loss'])} of {args.epochs} epochs; RMT-KD: {rmtkd.stopped_ or 'not finished'}")
    if rmtkd.teacher_ is None:
        print(f"validation accuracy never reached {args.start_accuracy}: nothing was compressed")
        return 1
    print(f"{'step':>4} {'epoch':>5}  {'layer':<8} {'ranks':<14} {'params':>9} {'val acc':>8}  outcome")
    for record in rmtkd.history_:
        ranks = ", ".join(f"{d['dim']}->{d['rank']}" for d in record["decisions"] if d["rank"] is not None) or "-"
        val = "-" if record["val_accuracy"] is None else f"{record['val_accuracy']:.2f}"
        print(
            f"{record['step']:>4} {record['epoch'] + 1:>5}  {record['layers'][0]:<8} {ranks:<14} "
            f"{record['params_after']:>9} {val:>8}  {record['outcome']}"
        )

    teacher, student = rmtkd.teacher_, rmtkd.student_
    teacher_params, student_params = teacher.count_params(), student.count_params()
    teacher_test = accuracy(teacher, data.x_test, data.y_test)
    student_test = accuracy(student, data.x_test, data.y_test)
    print()
    print(f"teacher (snapshot at epoch {rmtkd.start_epoch_ + 1}): {teacher_params:>9,} params, "
          f"test accuracy {teacher_test:.2f}%")
    print(f"student (RMT-KD):              {student_params:>9,} params, test accuracy {student_test:.2f}%")
    print(f"parameters: x{teacher_params / student_params:.1f} fewer ({100 * (1 - student_params / teacher_params):.1f}% "
          f"removed); test accuracy change {student_test - teacher_test:+.2f} points")
    print(f"(your model after the last epoch: test accuracy {accuracy(model, data.x_test, data.y_test):.2f}%)")

    output = args.output or Path(tempfile.mkdtemp()) / "student.keras"
    student.save(output)
    reloaded = keras.models.load_model(output)
    same = np.allclose(reloaded.predict(data.x_test[:32], verbose=0), student.predict(data.x_test[:32], verbose=0),
                       atol=1e-5)
    print(f"student saved to {output} and reloaded ({'identical predictions' if same else 'PREDICTIONS DIFFER'})")
    print(f"total time {time.time() - t0:.0f} s")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
