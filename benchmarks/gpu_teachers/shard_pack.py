"""Copy trained models' weight shards to the folder a GPU call returns, within what one call may return.

Standard library only: `train_torch.py` (PyTorch) and `train_keras_apps.py` (Keras on JAX) both use it on the
borrowed GPU machine, which has neither TensorFlow nor this package (run there as scripts, they import it from
their own folder).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

FILE_LIMIT = 16 * 2**20  # the largest file one call returns
CALL_FILES, CALL_BYTES = 8, 63 * 2**20  # files and bytes one call returns (64 MiB, less a margin)


def pack_shards(folders: list[Path], names: list[str], out: Path) -> None:
    """Copy each trained `folder/NAME.pK.npz` to `out`; exit when a folder is untrained or a call could not return it."""
    out.mkdir(parents=True, exist_ok=True)
    total, count = 0, 0
    for folder, name in zip(folders, names, strict=True):
        if not (folder / "DONE").is_file():
            sys.exit(f"{folder.name} is not trained in {folder.parent}")
        for path in sorted(folder.glob(f"{name}.p*.npz")):
            size = path.stat().st_size
            if size > FILE_LIMIT:
                sys.exit(f"{path} is {size} bytes, over the 16 MiB a returned file may have")
            shutil.copy(path, out / path.name)
            total, count = total + size, count + 1
    print(f"packed {count} files, {total / 2**20:.1f} MiB into {out}", flush=True)
    if count > CALL_FILES or total > CALL_BYTES:
        sys.exit("over what one call can return (8 files, 64 MiB): pack fewer models per call")
