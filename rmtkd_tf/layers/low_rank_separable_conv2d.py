"""`LowRankSeparableConv2D`: a SeparableConv2D whose pointwise (1x1) part is factorized."""

import keras
from keras import ops

from rmtkd_tf.arguments import check_integer
from rmtkd_tf.layers.base_conv import LowRankConvBase


@keras.saving.register_keras_serializable(package="rmtkd_tf")
class LowRankSeparableConv2D(LowRankConvBase):
    """SeparableConv2D whose pointwise convolution goes through `rank` channels.

    A `SeparableConv2D` is a depthwise convolution (`depth_multiplier`
    filters per input channel, no channel mixing) followed by a 1×1
    convolution to `filters` channels: the pointwise part is the only matrix
    product. This layer keeps the depthwise convolution as it is and replaces
    the pointwise one by a 1×1 convolution to `rank` channels (no bias) and a
    1×1 convolution to `filters` channels with the bias and the activation.
    TFLite runs it as `DEPTHWISE_CONV_2D` + two `CONV_2D` ops.

    RMT-KD analyses the pointwise convolution's pre-activation output (every
    spatial position a sample) and sets `down_kernel = pointwise ×₃ U_k` and
    `up_kernel = U_kᵀ`; the depthwise kernel is copied.

    Args:
        filters: output channels `d`, a positive integer.
        rank: intermediate channels `k` of the pointwise part, a positive integer.
        kernel_size, strides, padding, dilation_rate, data_format,
            depth_multiplier: as in `keras.layers.SeparableConv2D`.
        activation, use_bias, depthwise_initializer, kernel_initializer
            (both pointwise factors), bias_initializer: as in
            `keras.layers.SeparableConv2D`.

    Example:

    >>> import numpy as np
    >>> layer = LowRankSeparableConv2D(filters=16, rank=4, kernel_size=3, padding="same")
    >>> tuple(layer(np.ones((2, 8, 8, 3), "float32")).shape)
    (2, 8, 8, 16)
    >>> layer.count_params()  # 3*3*3 + 3*4 + 4*16 + 16
    119
    """

    spatial_rank = 2
    keras_layer = keras.layers.SeparableConv2D
    refuse_strided_dilation = False

    def __init__(
        self,
        filters,
        rank,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        depth_multiplier=1,
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        depth_multiplier = check_integer(depth_multiplier, "depth_multiplier")
        super().__init__(filters, rank, kernel_size, strides, padding, data_format, dilation_rate, activation,
                         use_bias, kernel_initializer, bias_initializer, **kwargs)
        self.depth_multiplier = depth_multiplier
        self.depthwise_initializer = keras.initializers.get(depthwise_initializer)

    def _build_input_factors(self, in_channels):
        self.depthwise_kernel = self.add_weight(
            name="depthwise_kernel",
            shape=self.kernel_size + (in_channels, self.depth_multiplier),
            initializer=self.depthwise_initializer,
        )
        self.down_kernel = self.add_weight(
            name="down_kernel",
            shape=(1, 1, in_channels * self.depth_multiplier, self.rank),
            initializer=self.kernel_initializer,
        )

    def depthwise(self, inputs):
        """The depthwise convolution (`in_channels * depth_multiplier` channels): the pointwise part's input."""
        return ops.depthwise_conv(
            inputs,
            self.depthwise_kernel,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )

    def bottleneck(self, inputs):
        """The `rank`-channel hidden feature map: the depthwise convolution, then the first 1×1 factor."""
        return ops.conv(self.depthwise(inputs), self.down_kernel, data_format=self.data_format)

    def _keras_layer_arguments(self):
        return {**super()._keras_layer_arguments(), "depth_multiplier": self.depth_multiplier}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "depth_multiplier": self.depth_multiplier,
                "depthwise_initializer": keras.initializers.serialize(self.depthwise_initializer),
            }
        )
        return config
