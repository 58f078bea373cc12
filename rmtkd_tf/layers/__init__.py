"""Factorized Keras layers produced by RMT-KD surgery."""

from rmtkd_tf.layers.low_rank_conv2d import LowRankConv2D
from rmtkd_tf.layers.low_rank_dense import LowRankDense

__all__ = ["LowRankConv2D", "LowRankDense"]
