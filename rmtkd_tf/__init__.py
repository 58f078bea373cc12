"""rmtkd-tf: Random-Matrix-Theoretic Knowledge Distillation for Keras 3.

Importing the package registers the factorized layers, so that
`keras.models.load_model("student.keras")` works after `import rmtkd_tf`.
"""

__version__ = "0.1.0"

from rmtkd_tf.layers import LowRankConv1D, LowRankConv2D, LowRankDense, LowRankSeparableConv2D  # noqa: E402  (registers layers)
from rmtkd_tf.transformers import LowRankTransformerEncoder  # noqa: E402  (registers the transformer layers)

__all__ = ["LowRankConv1D", "LowRankConv2D", "LowRankDense", "LowRankSeparableConv2D", "LowRankTransformerEncoder", "__version__"]
