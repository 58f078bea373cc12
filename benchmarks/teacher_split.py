"""Write a data folder whose validation split is the one a teacher was selected on, not trained on.

    python -m benchmarks train teacher-split --data ../shared/data/agnews --out benchmarks/runs/agnews_teacher_split

AG News ships only `dev.tsv` (training rows) and `test.tsv`. `python -m benchmarks train bert` (and
`benchmarks/gpu_teachers/`) hold out a stratified 10% of `dev.tsv` (`split_train(..., (0.1, 0), seed)`)
to select the teacher's epoch and train on the rest. A compression run that carves its validation
split from `dev.tsv` again would validate mostly on examples the teacher was trained on (and fits
better than new ones). This script writes `train.tsv` (the teacher's training rows), `dev.tsv` (its
held-out rows) and `test.tsv` (unchanged), line for line from the source files, so that
`rmtkd_tf.pipeline.load_task` uses the held-out rows as validation and never fine-tunes on them.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from rmtkd_tf.data import load_data, split_train
from rmtkd_tf.data.text import read_delimited_text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with dev.tsv (training rows) and test.tsv")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fraction", type=float, default=0.1, help="held-out fraction (train_bert.py: 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    source = args.data / "dev.tsv"
    data = load_data(str(args.data), seed=args.seed)
    parts = split_train(data.x_train, data.y_train, (args.fraction, 0), seed=args.seed)
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    texts, _ = read_delimited_text(source)
    # load_data keeps the source order with no limit: row i of x_train is line i of the file.
    if len(lines) != len(data.x_train) or list(texts) != list(data.x_train):
        raise SystemExit(f"{source}: rows and lines do not line up; cannot write the split line for line")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, index in (("train.tsv", parts.train), ("dev.tsv", parts.calibration)):
        with open(args.out / name, "w", encoding="utf-8") as handle:
            handle.writelines(lines[i] for i in np.sort(index))
    shutil.copyfile(args.data / "test.tsv", args.out / "test.tsv")
    print(f"wrote {args.out}: {len(parts.train)} training rows, {len(parts.calibration)} held-out rows, test unchanged")


if __name__ == "__main__":
    main()
