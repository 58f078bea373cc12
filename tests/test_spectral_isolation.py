"""`rmtkd_tf.spectral` is pure NumPy/SciPy: no TensorFlow, no eager matplotlib; its doctests run."""

import doctest
import pathlib
import subprocess
import sys

import pytest

import rmtkd_tf.spectral
from rmtkd_tf.spectral import effective_samples, marchenko_pastur, noise, plotting, rank_rules

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# `rmtkd_tf/__init__.py` may import Keras (it registers layers), so the child
# process stands in an empty package object for `rmtkd_tf` and imports only
# the `spectral` subpackage from the source tree.
IMPORT_SPECTRAL_ALONE = f"""
import sys, types
package = types.ModuleType("rmtkd_tf")
package.__path__ = [{str(REPO_ROOT / "rmtkd_tf")!r}]
sys.modules["rmtkd_tf"] = package
import rmtkd_tf.spectral
from rmtkd_tf.spectral import get_rank_rule
assert rmtkd_tf.spectral.__file__.startswith({str(REPO_ROOT)!r}), rmtkd_tf.spectral.__file__
heavy = sorted(name for name in ("tensorflow", "keras", "tf_keras", "jax", "torch", "matplotlib")
               if name in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


def test_importing_spectral_does_not_import_tensorflow_or_matplotlib():
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_SPECTRAL_ALONE], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY:\n" in result.stdout, result.stdout


@pytest.mark.parametrize(
    "module",
    [rmtkd_tf.spectral, marchenko_pastur, noise, rank_rules, plotting, effective_samples],
    ids=lambda module: module.__name__,
)
def test_docstring_examples_run(module):
    failures, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert attempted > 0
    assert failures == 0
