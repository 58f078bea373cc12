"""`LowRankConv1D`: a Conv1D factorized into a rank-`k` Conv1D and a 1-wide Conv1D."""

import keras
from keras import ops

from rmtkd_tf.layers.base_conv import LowRankConvBase


@keras.saving.register_keras_serializable(package="rmtkd_tf")
class LowRankConv1D(LowRankConvBase):
    """Conv1D whose filters are factorized through `rank` intermediate channels.

    Computes `Conv1D(rank, kernel_size, strides, padding, dilation)` without
    bias, then a 1-wide convolution to `filters` channels with the bias and the
    activation. TFLite runs each as a `CONV_2D` (between reshapes): no
    sparsity, no custom kernels. RMT-KD sets `down_kernel = kernel ×₂ U_k` and
    `up_kernel = U_kᵀ` from the leading eigenvectors `U_k` of the per-position
    pre-activation covariance (every time step of every sequence is a sample).

    Args:
        filters: output channels `d`, a positive integer.
        rank: intermediate channels `k`, a positive integer.
        kernel_size, strides, dilation_rate: positive integers (or 1-tuples),
            as in `keras.layers.Conv1D`.
        padding: `"valid"`, `"same"` or `"causal"`, as in `keras.layers.Conv1D`.
        data_format: `"channels_last"` or `"channels_first"`.
        activation, use_bias, kernel_initializer, bias_initializer: as in
            `keras.layers.Conv1D` (`groups` is not supported).

    Example:

    >>> import numpy as np
    >>> layer = LowRankConv1D(filters=16, rank=4, kernel_size=3, padding="causal")
    >>> tuple(layer(np.ones((2, 10, 3), "float32")).shape)
    (2, 10, 16)
    >>> layer.count_params()  # 3*3*4 + 4*16 + 16
    116
    """

    spatial_rank = 1
    paddings = ("valid", "same", "causal")
    keras_layer = keras.layers.Conv1D

    def __init__(
        self,
        filters,
        rank,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(filters, rank, kernel_size, strides, padding, data_format, dilation_rate, activation,
                         use_bias, kernel_initializer, bias_initializer, **kwargs)
        if self.padding == "causal" and self.data_format == "channels_first":
            raise ValueError("padding='causal' needs data_format='channels_last' (as in keras.layers.Conv1D)")

    def bottleneck(self, inputs):
        """The `rank`-channel hidden sequence (the first convolution)."""
        if self.padding != "causal":
            return super().bottleneck(inputs)
        # pad the past only, as keras.layers.Conv1D does
        inputs = ops.pad(inputs, [[0, 0], [self.dilation_rate[0] * (self.kernel_size[0] - 1), 0], [0, 0]])
        return self._down_conv(inputs, "valid")
