"""rmtkd-tf: Random-Matrix-Theoretic Knowledge Distillation for Keras 3.

>>> import rmtkd_tf
>>> student, report = rmtkd_tf.compress(model, x_train, y_train, target_params=0.5)  # doctest: +SKIP

- `compress(model, x, y, ...)`: RMT-KD in one call, `(student, report)` out (`rmtkd_tf.api`);
- `CompressionConfig`: every setting of a run;
- `RMTKDCallback`: RMT-KD inside your own `model.fit` (`rmtkd_tf.callbacks`);
- `export_tflite`: a model to `.tflite`, verified against Keras (`rmtkd_tf.export`).

Importing the package registers the factorized layers (`LowRankDense`, `LowRankConv2D`,
`LowRankTransformerEncoder` and its parts), so that `keras.models.load_model("student.keras")` works
after `import rmtkd_tf`. The four names above are imported on first use, so `import rmtkd_tf` stays
as light as the layers.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

from rmtkd_tf.layers import LowRankConv2D, LowRankDense  # noqa: E402  (registers layers)
from rmtkd_tf.transformers import LowRankTransformerEncoder  # noqa: E402  (registers the transformer layers)

# name -> the module that defines it, imported when the name is first used (PEP 562).
_LAZY = {
    "compress": "rmtkd_tf.api",
    "CompressionConfig": "rmtkd_tf.compression",
    "RMTKDCallback": "rmtkd_tf.callbacks",
    "export_tflite": "rmtkd_tf.export",
}

if TYPE_CHECKING:  # pragma: no cover  (for type checkers and IDEs)
    from rmtkd_tf.api import compress
    from rmtkd_tf.callbacks import RMTKDCallback
    from rmtkd_tf.compression import CompressionConfig
    from rmtkd_tf.export import export_tflite


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rmtkd_tf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CompressionConfig",
    "LowRankConv2D",
    "LowRankDense",
    "LowRankTransformerEncoder",
    "RMTKDCallback",
    "__version__",
    "compress",
    "export_tflite",
]
