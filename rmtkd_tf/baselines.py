"""The alternatives RMT-KD is compared with, on the same teacher, data and fine-tuning budget.

Each builds a student of (about) the same parameter count as an RMT-KD
student, so that accuracy, latency and size can be compared at equal size:

- `svd_factors`: data-free truncated SVD of each layer's weight matrix at
  given ranks (e.g. the ranks RMT-KD chose, read with `factorized_ranks`).
  Same layers, same shapes, same parameter count as the RMT-KD student;
  only where the factors come from differs (weights vs. activations).
- `uniform_rank_plan`: one rank ratio `k/d` for every layer, the largest that
  keeps the factorized model within a parameter budget (the usual "compress
  every layer by the same factor" recipe).
- `scaled_width_model` / `width_for_parameter_count`: the same architecture
  with every hidden Conv2D/Dense narrowed by one width multiplier, freshly
  initialized (a dense small student, trained from scratch by distillation).
  For a transformer (keras-hub `TransformerEncoder` blocks, e.g. a BERT
  classifier) the multiplier narrows the model width (embeddings, every
  encoder, a multiple of the head count) and the FFN width; layers, heads,
  vocabulary and sequence length stay. `encoder_parameter_count` counts the
  encoder blocks alone (embeddings are a large, fixed share of a BERT).
- `magnitude_masks` / `MagnitudePruning`: global unstructured magnitude
  pruning of the kernels to a number of nonzero weights, with masks kept
  during fine-tuning. Written here because TensorFlow Model Optimization
  (0.8.x) requires `tf-keras` (Keras 2) and does not prune Keras 3 models.
  Unstructured zeros do not make a `.tflite` smaller or faster with the
  stock dense kernels (only its compressed size shrinks).
- `fine_tune`: knowledge distillation from the teacher (the `SelfDistiller`
  loss and settings of `rmtkd_tf.compression`), with optional callbacks.

Example:

>>> import numpy as np, keras
>>> from rmtkd_tf.surgery import factorize_model
>>> inputs = keras.Input((16,))
>>> hidden = keras.layers.Dense(32, activation="relu", name="fc")(inputs)
>>> model = keras.Model(inputs, keras.layers.Dense(3, name="head")(hidden))
>>> student = factorize_model(model, svd_factors(model, {"fc": 4}))
>>> factorized_ranks(student)
{'fc': 4}
>>> ratio, ranks = uniform_rank_plan(model, target_params=400)  # 16k + 32k + 32 + 99 (head) <= 400
>>> ranks, factorized_parameter_count(model, ranks) <= 400
({'fc': 5}, True)
"""

from __future__ import annotations

import math

import keras
import numpy as np

from rmtkd_tf.arguments import check_integer
from rmtkd_tf.batch_norm import recalibrate_batch_norm  # noqa: F401  (part of this module's interface)
from rmtkd_tf.collection import candidate_layers
from rmtkd_tf.errors import RMTKDError
from rmtkd_tf.factorization import low_rank_parameter_count
from rmtkd_tf.model_walk import (
    composite_parts,
    dense_matrix_shape,
    factorized_kernel,
    iter_factorizable_layers,
    iter_graph_layers,
    layer_kind,
    output_layers,
)
from rmtkd_tf.selection import layer_geometry
from rmtkd_tf.surgery import LayerFactors, effective_kernel, unsupported_reason


def factorized_ranks(model):
    """`{path: rank}` of the factorized (`LowRankDense` / `LowRankConv2D`) layers of `model`."""
    return {path: int(layer.rank) for path, layer in _all_layers(model).items() if hasattr(layer, "bottleneck")}


def _all_layers(model):
    # Graph layers plus the parts of composite layers (transformer encoders), as rmtkd_tf.model_walk names them.
    return {**dict(iter_graph_layers(model)), **dict(iter_factorizable_layers(model))}


def _plain_layers(model, paths):
    layers = _all_layers(model)
    unknown = sorted(set(paths) - set(layers))
    if unknown:
        raise RMTKDError(f"no layer at paths {unknown}")
    out = {}
    for path in paths:
        layer = layers[path]
        if hasattr(layer, "bottleneck"):
            raise RMTKDError(f"layer '{path}' is already factorized; give the original (teacher) model")
        reason = unsupported_reason(layer)
        if reason:
            raise RMTKDError(f"layer '{path}': {reason}")
        out[path] = layer
    return out


def svd_factors(model, ranks):
    """Data-free factors: the `rank` leading right singular vectors of each layer's kernel.

    A layer computes `h = x W + b` with `W` the kernel flattened to
    `(fan_in, d)`. With `B_k` its `k` leading right singular vectors,
    `W B_k B_kᵀ` is the best rank-`k` approximation of `W` (Eckart–Young),
    and `LayerFactors(basis=B_k, mean=b)` makes `factorize_model` build
    exactly `x → (x W B_k) B_kᵀ + b`: the bias is kept whole (with
    `mean = b`, the projection of `b − mean` vanishes). No data is seen.

    Args:
        model: the original model (plain Dense/Conv2D layers at `ranks`' paths).
        ranks: `{path: k}` with `1 <= k <= d` (the layer's output width).

    Returns:
        `{path: LayerFactors}` for `rmtkd_tf.surgery.factorize_model`.

    >>> import keras
    >>> model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, name="d")])
    >>> svd_factors(model, {"d": 2})["d"].basis.shape
    (4, 2)
    """
    layers = _plain_layers(model, ranks)
    factors = {}
    for path, rank in ranks.items():
        kernel, bias = effective_kernel(layers[path])
        d = kernel.shape[-1]
        rank = check_integer(rank, f"rank of '{path}'", maximum=d, error=RMTKDError)
        matrix = kernel.reshape(-1, d)
        # A wide layer (fan_in < d, e.g. a transformer's FFN expansion) has only fan_in singular directions;
        # a rank beyond that takes an orthonormal completion (W B Bᵀ = W already at rank fan_in).
        _, _, right = np.linalg.svd(matrix, full_matrices=int(rank) > min(matrix.shape))
        mean = np.zeros(d) if bias is None else bias
        factors[path] = LayerFactors(basis=right[: int(rank)].T.copy(), mean=mean)
    return factors


def factorized_parameter_count(model, ranks):
    """Parameters of `model` once the layers in `ranks` (`{path: k}`) are factorized at rank `k`.

    Counted from the layer shapes (`fan_in·k + k·d + d` per factorized layer),
    without building the model.
    """
    layers = _plain_layers(model, ranks)
    total = int(model.count_params())
    for path, rank in ranks.items():
        fan_in, units, params = layer_geometry(layers[path])
        total += low_rank_parameter_count(fan_in, units, int(rank)) - params
    return total


def _uniform_ranks(geometry, ratio):
    ranks = {}
    for path, (fan_in, units, params) in geometry.items():
        rank = max(1, math.ceil(ratio * units - 1e-9))
        # A layer whose rank-k form is not smaller stays dense: factorizing it would only add work.
        if rank < units and low_rank_parameter_count(fan_in, units, rank) < params:
            ranks[path] = rank
    return ranks


def uniform_rank_plan(model, target_params, layers=None, include_outputs=False):
    """The largest single ratio `k/d` whose factorized model has at most `target_params` parameters.

    Every eligible layer (those RMT-KD would consider: `candidate_layers`
    with the same `layers` / `include_outputs`) gets rank `ceil(ratio·d)`
    (at least 1); a layer whose rank-`k` form would not be smaller keeps its
    dense kernel.

    Returns:
        `(ratio, {path: rank})`.

    Raises:
        RMTKDError: when even rank 1 everywhere exceeds `target_params`.
    """
    eligible = [p for p, l in candidate_layers(model, layers, include_outputs=include_outputs)
                if not unsupported_reason(l) and not hasattr(l, "bottleneck")]
    if not eligible:
        raise RMTKDError("the model has no plain Dense or Conv2D layer to factorize")
    geometry = {p: layer_geometry(l) for p, l in _plain_layers(model, eligible).items()}
    if target_params <= 0:
        raise RMTKDError(f"target_params must be positive, got {target_params}")

    def count(ratio):
        return factorized_parameter_count(model, _uniform_ranks(geometry, ratio))

    smallest = max(units for _, units, _ in geometry.values())
    low = 1.0 / (smallest + 1)  # rank 1 everywhere
    if count(low) > target_params:
        raise RMTKDError(
            f"rank 1 in every layer still leaves {count(low):,} parameters > target {int(target_params):,}"
        )
    high = 1.0
    if count(high) <= target_params:
        return high, _uniform_ranks(geometry, high)
    for _ in range(60):  # the count is a non-decreasing step function of the ratio
        middle = 0.5 * (low + high)
        if count(middle) <= target_params:
            low = middle
        else:
            high = middle
    return low, _uniform_ranks(geometry, low)


# ---------------------------------------------------------------------------------------------
# Dense small student
# ---------------------------------------------------------------------------------------------


def scaled_width_model(model, width, seed=0):
    """A freshly initialized copy of `model` whose hidden Dense/Conv2D layers are `width` times as wide.

    Output layers (the classifier head) keep their width, so the student
    predicts the same classes; every other Dense `units` / Conv2D `filters`
    becomes `max(1, round(width · n))`. Layers in between (BatchNorm,
    pooling, ...) adapt to the new widths when the clone is built. Weights
    are *not* copied: this is a student trained from scratch.

    A model with transformer encoder blocks (keras-hub `TransformerEncoder`,
    as in a BERT classifier) is narrowed as a transformer: its model width
    `H` (the residual stream: token/segment embeddings, every encoder, hidden
    Dense layers of width `H`) becomes `heads · max(1, round(width · H / heads))`
    so every encoder keeps its head count, and each encoder's FFN width
    becomes `max(1, round(width · intermediate_dim))`. Layers, heads,
    vocabulary size and input shapes (sequence length) are unchanged.

    >>> import keras
    >>> inputs = keras.Input((8,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(16)(inputs)))
    >>> scaled_width_model(model, 0.5).count_params()  # 8*8+8 + 8*2+2
    90
    """
    if not width > 0:
        raise RMTKDError(f"width must be > 0, got {width}")
    heads = {id(layer) for layer in output_layers(model)}
    model_width = _transformer_width(model, width)  # (H, H') for a transformer, else None
    keras.utils.set_random_seed(int(seed))

    def clone_layer(layer):
        config = layer.get_config()
        if composite_parts(layer) is not None:  # a transformer encoder block
            config["intermediate_dim"] = max(1, int(round(width * config["intermediate_dim"])))
        elif model_width is not None and isinstance(layer, keras.layers.Embedding) \
                and config.get("output_dim") == model_width[0]:
            config["output_dim"] = model_width[1]
        elif id(layer) not in heads and layer_kind(layer) is not None:
            if hasattr(layer, "bottleneck"):
                raise RMTKDError(f"layer '{layer.name}' is factorized; scale the original model")
            key = "units" if layer_kind(layer) == "dense" else "filters"
            if model_width is not None and config[key] == model_width[0]:
                config[key] = model_width[1]
            else:
                config[key] = max(1, int(round(width * config[key])))
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone_layer, recursive=True)


def _encoders(model):
    """`{path: layer}` of the composite layers (transformer encoder blocks) of `model`."""
    return {path: layer for path, layer in iter_graph_layers(model) if composite_parts(layer) is not None}


def _transformer_width(model, width):
    """`(H, H')`: the encoders' model width and its value narrowed by `width` (a multiple of the heads), or None."""
    encoders = _encoders(model)
    if not encoders:
        return None
    widths, head_counts = set(), set()
    for path, encoder in encoders.items():
        parts = composite_parts(encoder)
        if any(hasattr(part, "bottleneck") for part in parts.values()):
            raise RMTKDError(f"layer '{path}' is factorized; scale the original model")
        widths.add(dense_matrix_shape(parts["ffn_output"])[1])
        head_counts.add(int(encoder.num_heads))
    if len(widths) != 1:
        raise RMTKDError(f"transformer encoders of different widths {sorted(widths)}; cannot narrow them together")
    hidden = widths.pop()
    heads = math.lcm(*head_counts)  # every encoder keeps its head count
    return hidden, heads * max(1, int(round(width * hidden / heads)))


def encoder_parameter_count(model, pruned_kernels=None):
    """Parameters inside the transformer encoder blocks of `model` (None when it has none).

    This is the count a transformer's compression is measured by: RMT-KD only
    reduces the encoders, and the embedding tables (11.9M of MiniLM-L6's 22.6M)
    cost a lookup, not compute. With `pruned_kernels` (`{path: kernel}`, as
    `prunable_kernels` gives), the exactly-zero weights of the kernels inside
    the encoders are not counted.

    >>> import keras
    >>> encoder_parameter_count(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])) is None
    True
    """
    encoders = _encoders(model)
    if not encoders:
        return None
    total = sum(int(layer.count_params()) for layer in encoders.values())
    for path, kernel in (pruned_kernels or {}).items():
        if path.rpartition("/")[0] in encoders:
            array = keras.ops.convert_to_numpy(kernel)
            total -= int(np.size(array)) - int(np.count_nonzero(array))
    return total


def width_for_parameter_count(model, target_params, seed=0, count=None):
    """The widest `scaled_width_model(model, width)` with at most `target_params` parameters.

    Args:
        count: the count to match, a function of a model; default
            `model.count_params()` (e.g. `encoder_parameter_count` for a transformer).

    Returns:
        `(width, student)`.
    """
    counter = count or (lambda m: m.count_params())

    def measure(width):
        return int(counter(scaled_width_model(model, width, seed=seed)))

    if measure(1.0) <= target_params:
        return 1.0, scaled_width_model(model, 1.0, seed=seed)
    low, high = 1e-3, 1.0
    if measure(low) > target_params:
        raise RMTKDError(f"even width {low} leaves {measure(low):,} parameters > target {int(target_params):,}")
    # Hidden widths are integers: ~20 halvings resolve every distinct width of layers up to 10^5 units.
    for _ in range(20):
        middle = 0.5 * (low + high)
        if measure(middle) <= target_params:
            low = middle
        else:
            high = middle
    return low, scaled_width_model(model, low, seed=seed)


# ---------------------------------------------------------------------------------------------
# Global magnitude pruning
# ---------------------------------------------------------------------------------------------


def prunable_kernels(model, layers=None, include_outputs=False):
    """`{path: kernel variable}` of the plain Dense/Conv2D layers pruning acts on (RMT-KD's eligible set)."""
    kernels = {}
    for path, layer in candidate_layers(model, layers, include_outputs=include_outputs):
        if hasattr(layer, "bottleneck"):
            raise RMTKDError(f"layer '{path}' is factorized; prune the original model")
        kernels[path] = factorized_kernel(layer)  # a SeparableConv2D: its pointwise kernel
    return kernels


def magnitude_masks(kernels, keep):
    """Global magnitude masks keeping the `keep` largest-|w| weights across all `kernels`.

    Ties at the threshold are broken by position (a stable sort), so exactly
    `keep` weights are kept.

    Args:
        kernels: `{path: variable or array}`.
        keep: number of weights to keep in all of them together.

    Returns:
        `{path: float32 array of 0/1}` shaped like each kernel.

    >>> import numpy as np
    >>> masks = magnitude_masks({"a": np.array([0.1, -3.0]), "b": np.array([[2.0, 0.5]])}, keep=2)
    >>> masks["a"].tolist(), masks["b"].tolist()
    ([0.0, 1.0], [[1.0, 0.0]])
    """
    arrays = {p: np.asarray(keras.ops.convert_to_numpy(k)) for p, k in kernels.items()}
    total = sum(a.size for a in arrays.values())
    keep = check_integer(keep, "keep", minimum=0, maximum=total, error=RMTKDError)  # weights kept in the kernels
    flat = np.concatenate([np.abs(a).ravel() for a in arrays.values()])
    kept = np.zeros(total, dtype=np.float32)
    kept[np.argsort(-flat, kind="stable")[: int(keep)]] = 1.0
    masks, start = {}, 0
    for path, array in arrays.items():
        masks[path] = kept[start:start + array.size].reshape(array.shape)
        start += array.size
    return masks


def apply_masks(kernels, masks):
    """Zero the pruned weights in place (`kernel *= mask`)."""
    for path, kernel in kernels.items():
        kernel.assign(keras.ops.convert_to_numpy(kernel) * masks[path].astype(kernel.dtype))


def pruned_parameter_count(model, kernels):
    """`model.count_params()` minus the exactly-zero weights of `kernels` (what a sparse format would store)."""
    zeros = sum(int(np.size(k)) - int(np.count_nonzero(keras.ops.convert_to_numpy(k))) for k in kernels.values())
    return int(model.count_params()) - zeros


class MagnitudePruning(keras.callbacks.Callback):
    """Prune `kernels` globally by magnitude down to `keep` weights while a model trains.

    At the start of each epoch `e` (0-based) of the first `ramp_epochs`, the
    kept fraction follows the cubic schedule of Zhu & Gupta (2017), as in
    TF Model Optimization's `PolynomialDecay`: sparsity
    `s_e = s_final · (1 − (1 − (e+1)/ramp_epochs)³)`, so the final sparsity
    is reached at the start of epoch `ramp_epochs − 1` (one-shot pruning for
    `ramp_epochs=1`). Masks are recomputed from the current magnitudes (pruned
    weights are zero, so they stay pruned) and re-applied after every
    training batch, because the optimizer's momentum would otherwise revive
    them.

    Args:
        kernels: `{path: kernel variable}` (e.g. `prunable_kernels(student)`).
        keep: weights to keep at the end, all kernels together.
        ramp_epochs: epochs over which the sparsity rises, >= 1.
    """

    def __init__(self, kernels, keep, ramp_epochs=1):
        super().__init__()
        if not kernels:
            raise RMTKDError("no kernels to prune")
        ramp_epochs = check_integer(ramp_epochs, "ramp_epochs", error=RMTKDError)
        self.kernels = dict(kernels)
        self.total_ = sum(int(np.prod(k.shape)) for k in self.kernels.values())
        self.keep = check_integer(keep, "keep", minimum=0, maximum=self.total_, error=RMTKDError)
        self.ramp_epochs = ramp_epochs
        self.masks_ = None

    def keep_at_epoch(self, epoch):
        """Weights kept during (0-based) `epoch`."""
        final_sparsity = 1.0 - self.keep / self.total_
        progress = min(1.0, (epoch + 1) / self.ramp_epochs)
        sparsity = final_sparsity * (1.0 - (1.0 - progress) ** 3)
        return max(self.keep, int(round(self.total_ * (1.0 - sparsity))))

    def prune(self, keep):
        """Recompute the masks for `keep` weights and apply them now."""
        self.masks_ = magnitude_masks(self.kernels, keep)
        apply_masks(self.kernels, self.masks_)

    def on_epoch_begin(self, epoch, logs=None):
        self.prune(self.keep_at_epoch(epoch))

    def on_train_batch_end(self, batch, logs=None):
        apply_masks(self.kernels, self.masks_)

    def on_train_end(self, logs=None):
        # Whatever the number of epochs, training ends at the final sparsity.
        self.prune(self.keep)


# ---------------------------------------------------------------------------------------------
# Fine-tuning
# ---------------------------------------------------------------------------------------------


def fine_tune(student, teacher, data, epochs, learning_rate=1e-4, batch_size=64, alpha=0.7, temperature=4.0,
              seed=0, callbacks=()):
    """Distil `student` from frozen `teacher` for `epochs` on `data.x_train` (the loss RMT-KD uses).

    `data` is a `rmtkd_tf.compression.CompressionData`. The teacher's trainable
    flags are restored afterwards. Returns the last epoch's logs.
    """
    from rmtkd_tf.distill import SelfDistiller
    from rmtkd_tf.steps import training_dataset

    if epochs <= 0:
        return {}
    flags = [(layer, layer.trainable) for layer in teacher._flatten_layers(include_self=True)]
    try:
        keras.utils.set_random_seed(int(seed))
        distiller = SelfDistiller(student, teacher, alpha=alpha, temperature=temperature)
        distiller.compile(optimizer=keras.optimizers.Adam(learning_rate))
        history = distiller.fit(training_dataset(data, batch_size, seed), epochs=int(epochs), verbose=0,
                                shuffle=False, callbacks=list(callbacks))
        return {k: float(v[-1]) for k, v in history.history.items()}
    finally:
        for layer, flag in flags:
            layer.trainable = flag
