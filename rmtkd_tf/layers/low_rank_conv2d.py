"""`LowRankConv2D`: a Conv2D factorized into a rank-`k` conv and a 1×1 conv."""

import keras

from rmtkd_tf.layers.base_conv import LowRankConvBase


@keras.saving.register_keras_serializable(package="rmtkd_tf")
class LowRankConv2D(LowRankConvBase):
    """Conv2D whose filters are factorized through `rank` intermediate channels.

    Computes `Conv2D(rank, kernel_size, strides, padding, dilation)` without
    bias, then a 1×1 convolution to `filters` channels with the bias and the
    activation. Both are ordinary dense convolutions, so TFLite runs them as
    two `CONV_2D` ops with XNNPACK: no sparsity, no custom kernels.

    RMT-KD sets `down_kernel = kernel ×₃ U_k` and `up_kernel = U_kᵀ` from the
    leading eigenvectors `U_k` of the per-position pre-activation covariance.

    Args:
        filters: output channels `d`, a positive integer.
        rank: intermediate channels `k`, a positive integer.
        kernel_size, strides, padding, dilation_rate, data_format: as in
            `keras.layers.Conv2D` (`groups` is not supported).
        activation, use_bias, kernel_initializer, bias_initializer: as in
            `keras.layers.Conv2D`.

    Example:

    >>> import numpy as np
    >>> layer = LowRankConv2D(filters=16, rank=4, kernel_size=3, padding="same")
    >>> tuple(layer(np.ones((2, 8, 8, 3), "float32")).shape)
    (2, 8, 8, 16)
    >>> layer.count_params()  # 3*3*3*4 + 4*16 + 16
    188
    """

    spatial_rank = 2
    keras_layer = keras.layers.Conv2D

    def __init__(
        self,
        filters,
        rank,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(filters, rank, kernel_size, strides, padding, data_format, dilation_rate, activation,
                         use_bias, kernel_initializer, bias_initializer, **kwargs)
