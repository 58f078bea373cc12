"""`LowRankConvBase`: what the low-rank convolutions share (arguments, 1-wide factor, bias, shape, config)."""

import keras
from keras import ops
from keras.src.backend.config import standardize_data_format

from rmtkd_tf.arguments import check_int_tuple, check_integer


class LowRankConvBase(keras.layers.Layer):
    """Base of `LowRankConv1D`, `LowRankConv2D` and `LowRankSeparableConv2D` (not for direct use).

    A low-rank convolution maps its input to `rank` channels (`bottleneck`, the
    subclass's own) and then through a 1-wide convolution to `filters` channels
    with the bias and the activation (`expand`, shared). As in Keras' `BaseConv`,
    a subclass names its spatial rank and the Keras layer it factorizes; this
    class checks the common arguments, builds the weights (`down_kernel`,
    `up_kernel`, `bias`), computes the output shape and writes the common
    config keys. Subclasses are
    registered under their own names: the base adds nothing to a saved model.

    Subclasses set the class attributes
        spatial_rank: 1 or 2 (the number of spatial axes).
        paddings: the `padding` values accepted.
        keras_layer: the Keras layer factorized (its output shape is this one's).
        refuse_strided_dilation: whether `strides > 1` with `dilation_rate > 1` is refused.
    and may override `_build_input_factors(in_channels)` (the weights created
    before `up_kernel`, in the order they are saved) and `bottleneck(inputs)`.

    Example (a subclass's hidden map has `rank` channels, its output `filters`):

    >>> import numpy as np
    >>> from rmtkd_tf.layers import LowRankConv2D
    >>> layer = LowRankConv2D(filters=6, rank=2, kernel_size=3)
    >>> x = np.ones((1, 5, 5, 3), "float32")
    >>> layer.build(x.shape)
    >>> tuple(layer.bottleneck(x).shape)
    (1, 3, 3, 2)
    >>> layer.compute_output_shape(x.shape)
    (1, 3, 3, 6)
    """

    spatial_rank = None
    paddings = ("valid", "same")
    keras_layer = None
    refuse_strided_dilation = True

    def __init__(
        self,
        filters,
        rank,
        kernel_size,
        strides,
        padding,
        data_format,
        dilation_rate,
        activation,
        use_bias,
        kernel_initializer,
        bias_initializer,
        **kwargs,
    ):
        filters = check_integer(filters, "filters")
        rank = check_integer(rank, "rank")
        kernel_size = check_int_tuple(kernel_size, "kernel_size", length=self.spatial_rank)
        strides = check_int_tuple(strides, "strides", length=self.spatial_rank)
        dilation_rate = check_int_tuple(dilation_rate, "dilation_rate", length=self.spatial_rank)
        if self.refuse_strided_dilation and max(strides) > 1 and max(dilation_rate) > 1:
            raise ValueError(f"strides > 1 cannot be combined with dilation_rate > 1 (as in "
                             f"keras.layers.{self.keras_layer.__name__}), got strides={strides}, "
                             f"dilation_rate={dilation_rate}")
        if str(padding).lower() not in self.paddings:
            quoted = [repr(value) for value in self.paddings]
            raise ValueError(f"padding must be {', '.join(quoted[:-1])} or {quoted[-1]}, got {padding!r}")
        super().__init__(**kwargs)
        self.filters = filters
        self.rank = rank
        self.kernel_size = kernel_size
        self.strides = strides
        self.dilation_rate = dilation_rate
        self.padding = str(padding).lower()
        self.data_format = standardize_data_format(data_format)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=self.spatial_rank + 2)

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def _build_input_factors(self, in_channels):
        """The weights created before `up_kernel`, in the order they are saved: here the first convolution's."""
        self.down_kernel = self.add_weight(
            name="down_kernel", shape=self.kernel_size + (in_channels, self.rank), initializer=self.kernel_initializer
        )

    def build(self, input_shape):
        in_channels = input_shape[self._channel_axis]
        self._build_input_factors(in_channels)
        self.up_kernel = self.add_weight(
            name="up_kernel",
            shape=(1,) * self.spatial_rank + (self.rank, self.filters),
            initializer=self.kernel_initializer,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )
        self.input_spec = keras.layers.InputSpec(ndim=self.spatial_rank + 2, axes={self._channel_axis: in_channels})

    def _down_conv(self, inputs, padding):
        return ops.conv(
            inputs,
            self.down_kernel,
            strides=self.strides,
            padding=padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )

    def bottleneck(self, inputs):
        """The `rank`-channel hidden map (the first convolution)."""
        return self._down_conv(inputs, self.padding)

    def expand(self, hidden):
        """1-wide convolution to `filters` channels, bias and activation."""
        outputs = ops.conv(hidden, self.up_kernel, data_format=self.data_format)
        if self.bias is not None:
            bias_shape = [1] * (self.spatial_rank + 2)
            bias_shape[self._channel_axis] = self.filters
            outputs = ops.add(outputs, ops.reshape(self.bias, tuple(bias_shape)))
        return self.activation(outputs)

    def call(self, inputs):
        return self.expand(self.bottleneck(inputs))

    def _keras_layer_arguments(self):
        """The arguments of `keras_layer` that fix the output shape (beyond `filters` and `kernel_size`)."""
        return {
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
        }

    def compute_output_shape(self, input_shape):
        probe = self.keras_layer(self.filters, self.kernel_size, **self._keras_layer_arguments())
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
