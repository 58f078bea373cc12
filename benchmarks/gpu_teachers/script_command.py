"""The command line a GPU-route script was run with, as its records keep it.

Standard library only, like `shard_pack.py`: `train_torch.py` and `train_keras_apps.py` run as scripts on the
borrowed GPU machine, without TensorFlow or this package, so they cannot use `benchmarks.driver.command_line`.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def script_command(script: str, argv: list[str] | None = None) -> str:
    """`python benchmarks/gpu_teachers/SCRIPT ARGS...` for the script file `script` (pass `__file__`).

    >>> script_command("/anywhere/train_torch.py", ["one", "sst2", "--epochs", "3"])
    'python benchmarks/gpu_teachers/train_torch.py one sst2 --epochs 3'
    """
    args = sys.argv[1:] if argv is None else argv
    return f"python benchmarks/gpu_teachers/{Path(script).name} " + shlex.join(args)
