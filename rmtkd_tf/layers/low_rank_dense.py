"""`LowRankDense`: a Dense layer factorized through a rank-`k` bottleneck."""

import keras
from keras import ops

from rmtkd_tf.arguments import check_integer
from rmtkd_tf.layers.shapes import matmul_last_axis


@keras.saving.register_keras_serializable(package="rmtkd_tf")
class LowRankDense(keras.layers.Layer):
    """Dense layer whose kernel is the product of two thin matrices.

    Computes `activation(inputs @ down_kernel @ up_kernel + bias)` with
    `down_kernel` of shape `(input_dim, rank)` and `up_kernel` of shape
    `(rank, units)`. It replaces `Dense(units)` by `Dense(rank)` followed by
    `Dense(units)` inside a single layer, so the student stays dense and maps
    to two `FULLY_CONNECTED` ops in TFLite: no sparsity, no custom kernels.

    RMT-KD sets the weights from the projection `P = U_kᵀ` onto the leading
    eigenvectors of the layer's pre-activation covariance (see
    `rmtkd_tf.factorization`). Parameters: `input_dim * rank + rank * units
    (+ units)`, which is smaller than the dense `input_dim * units (+ units)`
    whenever `rank < input_dim * units / (input_dim + units)`.

    Args:
        units: output width `d`, a positive integer.
        rank: bottleneck width `k`, a positive integer.
        activation: activation applied to the output (as in `Dense`).
        use_bias: whether the output has a bias.
        kernel_initializer, bias_initializer: initializers for fresh layers.

    Example:

    >>> import numpy as np
    >>> layer = LowRankDense(units=8, rank=2)
    >>> tuple(layer(np.ones((3, 5), "float32")).shape)
    (3, 8)
    >>> layer.count_params()  # 5*2 + 2*8 + 8
    34
    """

    def __init__(
        self,
        units,
        rank,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        # Checked before the base layer is set up, as keras.layers.Dense does: 2.5 is refused, not truncated.
        units = check_integer(units, "units")
        rank = check_integer(rank, "rank")
        super().__init__(**kwargs)
        self.units = units
        self.rank = rank
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True

    def build(self, input_shape):
        input_dim = input_shape[-1]
        self.down_kernel = self.add_weight(
            name="down_kernel",
            shape=(input_dim, self.rank),
            initializer=self.kernel_initializer,
        )
        self.up_kernel = self.add_weight(
            name="up_kernel",
            shape=(self.rank, self.units),
            initializer=self.kernel_initializer,
        )
        self.bias = (
            self.add_weight(
                name="bias", shape=(self.units,), initializer=self.bias_initializer
            )
            if self.use_bias
            else None
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})

    def bottleneck(self, inputs):
        """The rank-`k` hidden representation `inputs @ down_kernel`."""
        return matmul_last_axis(inputs, self.down_kernel)

    def expand(self, hidden):
        """`activation(hidden @ up_kernel + bias)`."""
        outputs = matmul_last_axis(hidden, self.up_kernel)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        return self.activation(outputs)

    def call(self, inputs):
        return self.expand(self.bottleneck(inputs))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "rank": self.rank,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
