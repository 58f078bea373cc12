"""`LowRankConv1D`: a Conv1D factorized into a rank-`k` Conv1D and a 1-wide Conv1D."""

import keras
from keras import ops
from keras.src.backend.config import standardize_data_format

from rmtkd_tf.arguments import check_int_tuple, check_integer


@keras.saving.register_keras_serializable(package="rmtkd_tf")
class LowRankConv1D(keras.layers.Layer):
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
        filters = check_integer(filters, "filters")
        rank = check_integer(rank, "rank")
        kernel_size = check_int_tuple(kernel_size, "kernel_size", length=1)
        strides = check_int_tuple(strides, "strides", length=1)
        dilation_rate = check_int_tuple(dilation_rate, "dilation_rate", length=1)
        if strides[0] > 1 and dilation_rate[0] > 1:
            raise ValueError(f"strides > 1 cannot be combined with dilation_rate > 1 (as in keras.layers.Conv1D), "
                             f"got strides={strides}, dilation_rate={dilation_rate}")
        padding = str(padding).lower()
        if padding not in ("valid", "same", "causal"):
            raise ValueError(f"padding must be 'valid', 'same' or 'causal', got {padding!r}")
        super().__init__(**kwargs)
        self.filters = filters
        self.rank = rank
        self.kernel_size = kernel_size
        self.strides = strides
        self.dilation_rate = dilation_rate
        self.padding = padding
        self.data_format = standardize_data_format(data_format)
        if self.padding == "causal" and self.data_format == "channels_first":
            raise ValueError("padding='causal' needs data_format='channels_last' (as in keras.layers.Conv1D)")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=3)

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        in_channels = input_shape[self._channel_axis]
        self.down_kernel = self.add_weight(
            name="down_kernel", shape=self.kernel_size + (in_channels, self.rank), initializer=self.kernel_initializer
        )
        self.up_kernel = self.add_weight(
            name="up_kernel", shape=(1, self.rank, self.filters), initializer=self.kernel_initializer
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={self._channel_axis: in_channels})

    def bottleneck(self, inputs):
        """The `rank`-channel hidden sequence (the first convolution)."""
        padding = self.padding
        if padding == "causal":  # pad the past only, as keras.layers.Conv1D does
            inputs = ops.pad(inputs, [[0, 0], [self.dilation_rate[0] * (self.kernel_size[0] - 1), 0], [0, 0]])
            padding = "valid"
        return ops.conv(
            inputs,
            self.down_kernel,
            strides=self.strides,
            padding=padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )

    def expand(self, hidden):
        """1-wide convolution to `filters` channels, bias and activation."""
        outputs = ops.conv(hidden, self.up_kernel, data_format=self.data_format)
        if self.bias is not None:
            bias_shape = (1, 1, self.filters) if self.data_format == "channels_last" else (1, self.filters, 1)
            outputs = ops.add(outputs, ops.reshape(self.bias, bias_shape))
        return self.activation(outputs)

    def call(self, inputs):
        return self.expand(self.bottleneck(inputs))

    def compute_output_shape(self, input_shape):
        probe = keras.layers.Conv1D(
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

