"""Model surgery: rebuild a Sequential/Functional model with chosen layers factorized.

`factorize_model(model, factors)` returns a *new* model (the input model and
its weights are left untouched): every layer listed in `factors` is replaced by
a `LowRankDense` / `LowRankConv1D` / `LowRankConv2D` / `LowRankSeparableConv2D`
(the pointwise part factorized, the depthwise kernel copied) whose weights come from the projection onto
the given eigenvectors; every other layer is an identical copy with copied
weights. Nested models, residual connections, BatchNorm and shared layers are
handled by `keras.models.clone_model(recursive=True)`, which keeps layer names
(so layer paths stay stable) and clones a shared layer once.

Parts of a keras-hub transformer encoder (paths `<encoder>/attention_query`,
`<encoder>/ffn_intermediate`, ...) are factorized by cloning the encoder as a
`rmtkd_tf.transformers.LowRankTransformerEncoder` with those ranks; its other
sublayers get the encoder's weights.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from rmtkd_tf.errors import UnsupportedModelError
from rmtkd_tf.factorization import project_kernel
from rmtkd_tf.layers import LowRankConv1D, LowRankConv2D, LowRankDense, LowRankSeparableConv2D
from rmtkd_tf.model_walk import (
    check_rebuildable,
    composite_parts,
    factorized_kernel,
    is_attention_input_projection,
    is_attention_output_projection,
    iter_factorizable_layers,
    iter_graph_layers,
    layer_kind,
    unsupported_reason,  # noqa: F401  (public here: selection and baselines import it from surgery)
)


@dataclasses.dataclass
class LayerFactors:
    """What to put in place of one layer: the leading eigenvectors, the pre-activation mean, the metric's scale.

    With `output_scale` (a following BatchNormalization's per-channel scale
    `s`, see `rmtkd_tf.output_weighting`), `basis` holds eigenvectors of
    `diag(s) Σ diag(s)` and the factors are the oblique projection of
    `rmtkd_tf.factorization.project_kernel`. All three live on the analysed
    axis: the layer's outputs, or the bottleneck of a factorized layer.
    """

    basis: np.ndarray  # (d, k) orthonormal columns
    mean: np.ndarray  # (d,)
    output_scale: np.ndarray | None = None  # (d,) positive; None: orthogonal projection

    @property
    def rank(self):
        return int(self.basis.shape[1])


def effective_kernel(layer):
    """`(kernel, bias)` of a Dense/Conv layer as float64 NumPy arrays (bias may be None).

    The kernel's last axis is the output width; an attention input projection's
    `(hidden, heads, head_dim)` kernel is returned as `(hidden, heads * head_dim)`,
    a SeparableConv2D's is its pointwise kernel `(1, 1, channels, filters)`.
    """
    kernel = keras.ops.convert_to_numpy(factorized_kernel(layer)).astype(np.float64)
    bias = None if layer.bias is None else keras.ops.convert_to_numpy(layer.bias).astype(np.float64).reshape(-1)
    if is_attention_input_projection(layer):
        kernel = kernel.reshape(kernel.shape[0], -1)
    return kernel, bias


def _low_rank_replacement(layer, rank):
    config = layer.get_config()
    common = dict(
        rank=rank,
        activation=config["activation"],
        use_bias=True,  # the bias carries the mean of the discarded directions
        name=layer.name,
        dtype=layer.dtype_policy,
        trainable=layer.trainable,
    )
    if is_attention_output_projection(layer):
        from rmtkd_tf.transformers.low_rank_encoder import LowRankAttentionOutput

        return LowRankAttentionOutput(units=int(layer.kernel.shape[-1]), **common)
    if is_attention_input_projection(layer):
        from rmtkd_tf.transformers.low_rank_encoder import LowRankAttentionProjection

        _, heads, head_dim = tuple(layer.kernel.shape)
        return LowRankAttentionProjection(num_heads=heads, head_dim=head_dim, **common)
    kind = layer_kind(layer)
    if kind == "dense":
        return LowRankDense(units=config["units"], **common)
    conv_class = {"conv1d": LowRankConv1D, "conv2d": LowRankConv2D, "separable_conv2d": LowRankSeparableConv2D}[kind]
    if kind == "separable_conv2d":
        common["depth_multiplier"] = config["depth_multiplier"]
    return conv_class(
        filters=config["filters"],
        kernel_size=config["kernel_size"],
        strides=config["strides"],
        padding=config["padding"],
        data_format=config["data_format"],
        dilation_rate=config["dilation_rate"],
        **common,
    )


def factorize_model(model, factors):
    """A copy of `model` with the layers in `factors` (path -> `LayerFactors`) factorized.

    Example:

    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="d")])
    >>> student = factorize_model(model, {"d": LayerFactors(np.eye(4)[:, :2], np.zeros(4))})
    >>> type(student.get_layer("d")).__name__, student.get_layer("d").rank
    ('LowRankDense', 2)
    """
    check_rebuildable(model)
    paths = dict(iter_factorizable_layers(model))
    unknown = set(factors) - set(paths)
    if unknown:
        raise KeyError(f"no layer at paths {sorted(unknown)}")
    for path in factors:
        reason = unsupported_reason(paths[path])
        if reason:
            raise UnsupportedModelError(f"layer '{path}': {reason}")
    graph_layers = dict(iter_graph_layers(model))
    replaced = {id(graph_layers[p]): factors[p] for p in factors if p in graph_layers}
    # Composite layers (transformer encoders): {id(encoder): {part: LayerFactors}}.
    composite_factors = {}
    for path, layer_factors in factors.items():
        if path not in graph_layers:
            owner_path, _, part = path.rpartition("/")
            composite_factors.setdefault(id(graph_layers[owner_path]), {})[part] = layer_factors

    def clone_layer(layer):
        if id(layer) in replaced:
            return _low_rank_replacement(layer, replaced[id(layer)].rank)
        if id(layer) in composite_factors:
            from rmtkd_tf.transformers.low_rank_encoder import low_rank_encoder_like

            return low_rank_encoder_like(layer, {p: f.rank for p, f in composite_factors[id(layer)].items()})
        return layer.__class__.from_config(layer.get_config())

    student = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    student_layers = dict(iter_graph_layers(student))
    for path, layer in graph_layers.items():
        new_layer = student_layers[path]
        if path in factors:
            _set_factorized_weights(layer, new_layer, factors[path])
        elif id(layer) in composite_factors:
            _set_composite_weights(layer, new_layer, composite_factors[id(layer)])
        elif new_layer.weights:
            new_layer.set_weights(layer.get_weights())
    return student


def _set_composite_weights(layer, new_layer, part_factors):
    """Weights of a cloned composite layer: factorized parts from `part_factors`, the rest copied."""
    if layer._trainable_variables or layer._non_trainable_variables:
        # Only sublayers are copied below; keras-hub encoders own no variables themselves.
        raise UnsupportedModelError(f"layer '{layer.name}': cannot copy the variables it owns directly")
    old_parts, new_parts = composite_parts(layer), composite_parts(new_layer)
    factorized = {id(old_parts[part]): (new_parts[part], f) for part, f in part_factors.items()}
    # Both layers list their sublayers in the same order (the factorized ones take their place).
    old_subs = list(layer._flatten_layers(include_self=False, recursive=True))
    new_subs = list(new_layer._flatten_layers(include_self=False, recursive=True))
    same_structure = len(old_subs) == len(new_subs) and all(
        id(old) in factorized or type(old) is type(new) for old, new in zip(old_subs, new_subs)
    )
    if not same_structure:
        raise UnsupportedModelError(f"layer '{layer.name}': its rebuilt copy has different sublayers")
    for old_sub, new_sub in zip(old_subs, new_subs):
        if id(old_sub) in factorized:
            new_part, layer_factors = factorized[id(old_sub)]
            if new_sub is not new_part:
                raise UnsupportedModelError(f"layer '{layer.name}': sublayer order changed in its rebuilt copy")
            _set_factorized_weights(old_sub, new_part, layer_factors)
        elif not list(old_sub._flatten_layers(include_self=False)) and new_sub.weights:
            new_sub.set_weights(old_sub.get_weights())


def _set_factorized_weights(layer, new_layer, layer_factors):
    if isinstance(layer, (keras.layers.SeparableConv2D, LowRankSeparableConv2D)):
        new_layer.depthwise_kernel.assign(layer.depthwise_kernel)  # only the pointwise part is factorized
    if hasattr(layer, "bottleneck"):
        # Re-factorize through the bottleneck z (k-dim): z ≈ μ_z + (z − μ_z) V Vᵀ,
        # so down' = down·V, up' = Vᵀ·up, bias' = μ_z (I − V Vᵀ)·up + bias.
        down_kernel = keras.ops.convert_to_numpy(layer.down_kernel).astype(np.float64)
        up_kernel = keras.ops.convert_to_numpy(layer.up_kernel).astype(np.float64).reshape(layer.rank, -1)
        bias = keras.ops.convert_to_numpy(layer.bias).astype(np.float64).reshape(-1)
        down, up_z, bias_z = project_kernel(
            down_kernel, None, layer_factors.mean, layer_factors.basis, layer_factors.output_scale
        )
        up, new_bias = up_z @ up_kernel, bias_z @ up_kernel + bias
    else:
        kernel, bias = effective_kernel(layer)
        down, up, new_bias = project_kernel(
            kernel, bias, layer_factors.mean, layer_factors.basis, layer_factors.output_scale
        )
    up = up.reshape(tuple(new_layer.up_kernel.shape))
    dtype = new_layer.down_kernel.dtype
    new_layer.down_kernel.assign(down.astype(dtype))
    new_layer.up_kernel.assign(up.astype(dtype))
    new_layer.bias.assign(new_bias.reshape(tuple(new_layer.bias.shape)).astype(dtype))
