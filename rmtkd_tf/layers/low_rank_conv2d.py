"""`LowRankConv2D`: a Conv2D factorized into a rank-`k` conv and a 1×1 conv."""

import keras
from keras import ops
from keras.src.backend.config import standardize_data_format

from rmtkd_tf.arguments import check_int_tuple, check_integer


@keras.saving.register_keras_serializable(package="rmtkd_tf")
class LowRankConv2D(keras.layers.Layer):
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
        filters = check_integer(filters, "filters")
        rank = check_integer(rank, "rank")
        kernel_size = check_int_tuple(kernel_size, "kernel_size")
        strides = check_int_tuple(strides, "strides")
        dilation_rate = check_int_tuple(dilation_rate, "dilation_rate")
        if max(strides) > 1 and max(dilation_rate) > 1:
            raise ValueError(f"strides > 1 cannot be combined with dilation_rate > 1 (as in keras.layers.Conv2D), "
                             f"got strides={strides}, dilation_rate={dilation_rate}")
        super().__init__(**kwargs)
        self.filters = filters
        self.rank = rank
        self.kernel_size = kernel_size
        self.strides = strides
        self.dilation_rate = dilation_rate
        self.padding = str(padding).lower()
        if self.padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        self.data_format = standardize_data_format(data_format)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        in_channels = input_shape[self._channel_axis]
        self.down_kernel = self.add_weight(
            name="down_kernel",
            shape=self.kernel_size + (in_channels, self.rank),
            initializer=self.kernel_initializer,
        )
        self.up_kernel = self.add_weight(
            name="up_kernel",
            shape=(1, 1, self.rank, self.filters),
            initializer=self.kernel_initializer,
        )
        self.bias = (
            self.add_weight(
                name="bias", shape=(self.filters,), initializer=self.bias_initializer
            )
            if self.use_bias
            else None
        )
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={self._channel_axis: in_channels}
        )

    def bottleneck(self, inputs):
        """The `rank`-channel hidden feature map (the first convolution)."""
        return ops.conv(
            inputs,
            self.down_kernel,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )

    def expand(self, hidden):
        """1×1 convolution to `filters` channels, bias and activation."""
        outputs = ops.conv(hidden, self.up_kernel, data_format=self.data_format)
        if self.bias is not None:
            bias_shape = (1, 1, 1, self.filters)
            if self.data_format == "channels_first":
                bias_shape = (1, self.filters, 1, 1)
            outputs = ops.add(outputs, ops.reshape(self.bias, bias_shape))
        return self.activation(outputs)

    def call(self, inputs):
        return self.expand(self.bottleneck(inputs))

    def compute_output_shape(self, input_shape):
        probe = keras.layers.Conv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
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
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
