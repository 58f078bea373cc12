"""`LowRankSeparableConv2D`: a SeparableConv2D whose pointwise (1x1) part is factorized."""

import keras
from keras import ops
from keras.src.backend.config import standardize_data_format

from rmtkd_tf.arguments import check_int_tuple, check_integer


@keras.saving.register_keras_serializable(package="rmtkd_tf")
class LowRankSeparableConv2D(keras.layers.Layer):
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
        filters = check_integer(filters, "filters")
        rank = check_integer(rank, "rank")
        depth_multiplier = check_integer(depth_multiplier, "depth_multiplier")
        kernel_size = check_int_tuple(kernel_size, "kernel_size", length=2)
        strides = check_int_tuple(strides, "strides", length=2)
        dilation_rate = check_int_tuple(dilation_rate, "dilation_rate", length=2)
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        super().__init__(**kwargs)
        self.filters = filters
        self.rank = rank
        self.depth_multiplier = depth_multiplier
        self.kernel_size = kernel_size
        self.strides = strides
        self.dilation_rate = dilation_rate
        self.padding = padding
        self.data_format = standardize_data_format(data_format)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.depthwise_initializer = keras.initializers.get(depthwise_initializer)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        in_channels = input_shape[self._channel_axis]
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
        self.up_kernel = self.add_weight(
            name="up_kernel", shape=(1, 1, self.rank, self.filters), initializer=self.kernel_initializer
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={self._channel_axis: in_channels})

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

    def expand(self, hidden):
        """1×1 convolution to `filters` channels, bias and activation."""
        outputs = ops.conv(hidden, self.up_kernel, data_format=self.data_format)
        if self.bias is not None:
            bias_shape = (1, 1, 1, self.filters) if self.data_format == "channels_last" else (1, self.filters, 1, 1)
            outputs = ops.add(outputs, ops.reshape(self.bias, bias_shape))
        return self.activation(outputs)

    def call(self, inputs):
        return self.expand(self.bottleneck(inputs))

    def compute_output_shape(self, input_shape):
        probe = keras.layers.SeparableConv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
            depth_multiplier=self.depth_multiplier,
        )
        return probe.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "rank": self.rank,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
                "depth_multiplier": self.depth_multiplier,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "depthwise_initializer": keras.initializers.serialize(self.depthwise_initializer),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
