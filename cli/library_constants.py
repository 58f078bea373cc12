"""The constants of `rmtkd_tf.constants`, read without importing the `rmtkd_tf` package.

Importing any `rmtkd_tf` module runs `rmtkd_tf/__init__.py`, which imports TensorFlow (seconds). The
options of `rmtkd-tf --help` need a few plain values from the library (exit codes, precisions,
exporters); rmtkd_tf/constants.py imports nothing, so it is executed here straight from its file (found
with `importlib.util.find_spec`, which locates a top-level package without running it). One source of
truth, and `--help` imports no TensorFlow (tests/test_cli_startup.py checks both).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

def _library_constants():
    """The `rmtkd_tf.constants` module: the imported one if it is, else executed from its file."""
    if "rmtkd_tf.constants" in sys.modules:
        return sys.modules["rmtkd_tf.constants"]
    package = importlib.util.find_spec("rmtkd_tf")
    source = Path(package.submodule_search_locations[0]) / "constants.py"
    spec = importlib.util.spec_from_file_location("_rmtkd_tf_constants_for_cli", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_CONSTANTS = _library_constants()
SOURCE = Path(_CONSTANTS.__file__).resolve()
EXIT_INTERRUPTED = _CONSTANTS.EXIT_INTERRUPTED
PRECISIONS = tuple(_CONSTANTS.PRECISIONS)
CALIBRATED_PRECISIONS = tuple(_CONSTANTS.CALIBRATED_PRECISIONS)
EXPORTERS = tuple(_CONSTANTS.EXPORTERS)
