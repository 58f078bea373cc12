"""Factorized Keras layers produced by RMT-KD surgery."""

from rmtkd_tf.layers.low_rank_conv1d import LowRankConv1D
from rmtkd_tf.layers.low_rank_conv2d import LowRankConv2D
from rmtkd_tf.layers.low_rank_dense import LowRankDense
from rmtkd_tf.layers.low_rank_separable_conv2d import LowRankSeparableConv2D

__all__ = ["LowRankConv1D", "LowRankConv2D", "LowRankDense", "LowRankSeparableConv2D"]
