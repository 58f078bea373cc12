"""Streaming collection of layer pre-activation covariances.

RMT-KD needs, for every candidate layer, the covariance `Σ` of its
pre-activations `h = x W + b` over a calibration set. `X` is never kept: each
layer owns a `CovarianceAccumulator` of float64 TensorFlow variables (count,
mean, centred second moment), merged batch by batch with the pairwise update
of Chan, Golub & LeVeque, which stays accurate when the mean is large compared
with the spread (unlike `E[xxᵀ] − μμᵀ`). Memory is O(d²) per layer whatever the
number of samples. Conv outputs count every spatial position (Conv1D: every
time step) as a sample; a SeparableConv2D is analysed on its pointwise
convolution's pre-activation output, the map that is factorized.

Those samples are not independent (the positions of one image, the tokens of
one text), so each accumulator also streams, per example (the first axis of a
sample tensor), the O(d) moments from which
`rmtkd_tf.spectral.effective_samples` estimates the effective sample size
`n_effective`, the `n` that the Marchenko–Pastur rank rule must be given (see
that module for the model and why). Padding weights are respected: a padded
token is no sample, and an example's size is its number of unpadded tokens.

The accumulators are fed by *hooks*: while collecting, a layer's `call` is
wrapped so that it records its output before the activation. Because the
update is a TensorFlow op inside the traced step, the same mechanism works in
compiled `fit`/`evaluate`/`predict` (through `ActivationCollector`) and in the
plain `collect_activations` function.

Under a `tf.distribute` strategy (accumulators created in its scope; see
`rmtkd_tf.distribute`), every replica of every worker accumulates its own part
of the batches; the per-replica states are gathered in one collective operation
and merged exactly (`merge_states`: Chan's merge of means and centred second
moments, sums of counts, and the per-example moment products moved to one shift
by `shift_moment_products`), so the statistics equal one device's to rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from rmtkd_tf.errors import NonFiniteActivationError, RMTKDError
from rmtkd_tf.model_walk import (
    channels_first,
    composite_parts,
    dense_matrix_shape,
    is_attention_input_projection,
    is_attention_output_projection,
    is_graph_model,
    iter_factorizable_layers,
    iter_graph_layers,
    layer_kind,
    output_layers,
)
from rmtkd_tf.spectral.effective_samples import effective_sample_size_from_sums, paired_feature


@dataclasses.dataclass
class LayerStatistics:
    """Pre-activation statistics of one layer (population covariance `XXᵀ/n` of centred X).

    `n_effective` is the number of independent samples the covariance is worth
    (`rmtkd_tf.spectral.effective_samples`; the `n` for the rank rules) and
    `n_examples` the number of examples the samples came from; both default
    to `n_samples` when unknown (`design_effect` then 1.0).
    """

    path: str
    kind: str
    n_samples: int
    mean: np.ndarray
    covariance: np.ndarray
    n_effective: int | None = None
    n_examples: int | None = None
    design_effect: float = 1.0

    def __post_init__(self):
        if self.n_effective is None:
            self.n_effective = self.n_samples
        if self.n_examples is None:
            self.n_examples = self.n_samples

    @property
    def dim(self):
        return int(self.mean.shape[0])


class CovarianceAccumulator:
    """Running mean and covariance of `dim`-dimensional samples in float64.

    `update(samples, weights)` takes samples of shape `(..., dim)`; every
    leading position is one sample, and the first axis is the example (rows of
    one example may be correlated, different examples are independent).
    Rows with a zero weight (padding) are ignored; rows with NaN/Inf are
    ignored and counted in `nonfinite`. The update has static shapes only, so
    it also runs under XLA.

    Besides the mean and covariance it streams, in float64, a shift (the mean
    of the first non-empty batch), the per-example moment products
    `Σ_e m_e m_eᵀ` of shape `(dim, 4, 4)` and the number of examples, from
    which `effective_sample_size()` computes `n_effective`
    (`rmtkd_tf.spectral.effective_samples`).

    Example:

    >>> acc = CovarianceAccumulator(2)
    >>> acc.update(tf.constant([[1.0, 2.0], [3.0, 6.0]]))
    >>> acc.update(tf.constant([[5.0, 10.0]]))
    >>> n, mean, cov, bad = acc.numpy()
    >>> n, mean.tolist(), bad
    (3, [3.0, 6.0], 0)
    >>> acc.effective_sample_size().n_examples   # 3 examples of one sample each
    3
    """

    def __init__(self, dim, name="covariance"):
        self.dim = int(dim)
        # Created under a tf.distribute strategy, every replica keeps its own statistics (sync-on-read
        # variables, updated locally in replica context); `state()` merges them exactly.
        self.strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        with tf.init_scope():
            self.count = self._variable(tf.zeros((), tf.float64), f"{name}_count")
            self.mean = self._variable(tf.zeros((self.dim,), tf.float64), f"{name}_mean")
            self.m2 = self._variable(tf.zeros((self.dim, self.dim), tf.float64), f"{name}_m2")
            self.nonfinite = self._variable(tf.zeros((), tf.float64), f"{name}_nonfinite")
            self.shift = self._variable(tf.zeros((self.dim,), tf.float64), f"{name}_shift")
            self.moment_products = self._variable(tf.zeros((self.dim, 4, 4), tf.float64), f"{name}_moment_products")
            self.examples = self._variable(tf.zeros((), tf.float64), f"{name}_examples")

    def _variable(self, initial, name):
        if self.strategy is None:
            return tf.Variable(initial, trainable=False, name=name)
        return tf.Variable(initial, trainable=False, name=name, synchronization=tf.VariableSynchronization.ON_READ,
                           aggregation=tf.VariableAggregation.SUM)

    def _variables(self):
        return [self.count, self.mean, self.m2, self.nonfinite, self.shift, self.moment_products, self.examples]

    def state(self):
        """`dict` of NumPy statistics (count, mean, m2, nonfinite, shift, moment_products, examples).

        Under a strategy, each replica's statistics (of every worker) are gathered and merged exactly:
        `merge_states`.
        """
        if self.strategy is None:
            return dict(zip(_STATE_NAMES, (v.numpy() for v in self._variables())))
        return merged_states([self])[0]

    def reset(self):
        for variable in self._variables():
            variable.assign(tf.zeros_like(variable))

    def update(self, samples, weights=None):
        samples = tf.cast(samples, tf.float64)
        # (examples, positions, dim): the first axis is the example, unless there is only one axis.
        examples = 1 if samples.shape.rank is not None and samples.shape.rank < 2 else tf.shape(samples)[0]
        # Samples per example, spelled out (not -1): a replica may get an empty batch under tf.distribute.
        positions = tf.reduce_prod(tf.shape(samples)[1:-1]) if samples.shape.rank != 1 else 1
        grouped = tf.reshape(samples, tf.stack([examples, positions, self.dim]))
        x = tf.reshape(grouped, (-1, self.dim))
        w = tf.ones(tf.shape(x)[:1], tf.float64)
        if weights is not None:
            w = tf.reshape(tf.cast(weights, tf.float64), (-1,)) * w
        finite = tf.reduce_all(tf.math.is_finite(x), axis=1)
        self.nonfinite.assign_add(tf.reduce_sum(tf.where(finite, tf.zeros_like(w), w)))
        w = tf.where(finite, w, tf.zeros_like(w))
        x = tf.where(finite[:, None], x, tf.zeros_like(x))
        self._update_example_moments(x, w, examples, positions)

        batch_count = tf.reduce_sum(w)
        batch_mean = tf.math.divide_no_nan(tf.reduce_sum(x * w[:, None], axis=0), batch_count)
        centred = x - batch_mean
        batch_m2 = tf.matmul(centred * w[:, None], centred, transpose_a=True)

        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.m2.assign_add(
            batch_m2
            + tf.tensordot(delta, delta, axes=0) * tf.math.divide_no_nan(self.count * batch_count, total)
        )
        self.mean.assign_add(delta * tf.math.divide_no_nan(batch_count, total))
        self.count.assign(total)

    def _update_example_moments(self, x, w, examples, positions):
        """Add `Σ_e m_e m_eᵀ` of this batch (module `rmtkd_tf.spectral.effective_samples`)."""
        batch_count = tf.reduce_sum(w)
        batch_mean = tf.math.divide_no_nan(tf.reduce_sum(x * w[:, None], axis=0), batch_count)
        # The shift is the mean of the first batch with any weight; until then the sums are all zero.
        self.shift.assign(tf.where(self.count > 0.0, self.shift, batch_mean))
        shifted = tf.reshape(x - self.shift, tf.stack([examples, positions, self.dim]))
        weights = tf.reshape(w, tf.stack([examples, positions]))
        partner = tf.gather(shifted, paired_feature(self.dim), axis=-1)
        weighted = shifted * weights[..., None]
        sums = tf.reduce_sum(weighted, axis=1)
        example_weights = tf.reduce_sum(weights, axis=1)
        moments = tf.stack(
            [
                tf.reduce_sum(weighted * partner, axis=1),
                sums,
                tf.gather(sums, paired_feature(self.dim), axis=-1),
                tf.broadcast_to(example_weights[:, None], tf.shape(sums)),
            ],
            axis=-1,
        )
        self.moment_products.assign_add(tf.einsum("edi,edj->dij", moments, moments))
        self.examples.assign_add(tf.reduce_sum(tf.cast(example_weights > 0.0, tf.float64)))

    def effective_sample_size(self, state=None):
        """`EffectiveSampleSize` (n_effective, n_samples, n_examples, design_effect) of what was seen."""
        state = self.state() if state is None else state
        n = float(state["count"])
        covariance = state["m2"] / n if n > 0 else np.zeros((self.dim, self.dim))
        return effective_sample_size_from_sums(
            n, state["mean"] - state["shift"], covariance, state["moment_products"], float(state["examples"]),
        )

    def numpy(self, state=None):
        """`(n, mean, covariance, nonfinite)` as NumPy values; covariance = M2 / n."""
        state = self.state() if state is None else state
        n = float(state["count"])
        m2 = state["m2"]
        covariance = m2 / n if n > 0 else np.zeros_like(m2)
        return int(round(n)), state["mean"], covariance, int(round(float(state["nonfinite"])))


_STATE_NAMES = ("count", "mean", "m2", "nonfinite", "shift", "moment_products", "examples")


def merged_states(accumulators):
    """The `state()` of each of `accumulators` (created under one strategy), gathered from every replica of
    every worker in one collective operation and merged (`merge_states`)."""
    from rmtkd_tf.distribute import gather_replicas

    variables = [v for accumulator in accumulators for v in accumulator._variables()]
    (stacked,) = gather_replicas(accumulators[0].strategy,
                                 lambda: [tf.concat([tf.reshape(v, (-1,)) for v in variables], axis=0)])
    sizes = [int(np.prod(v.shape)) for v in variables]
    offsets = np.cumsum([0] + sizes)
    per_replica = [[row[a:b].reshape(v.shape) for a, b, v in zip(offsets[:-1], offsets[1:], variables)]
                   for row in stacked]
    merged = []
    for index in range(len(accumulators)):
        names = len(_STATE_NAMES)
        parts = [dict(zip(_STATE_NAMES, values[index * names:(index + 1) * names])) for values in per_replica]
        merged.append(merge_states(parts))
    return merged


def shift_moment_products(moment_products, delta):
    """Per-example moment products `Σ_e m_e m_eᵀ` re-expressed for a shift moved by `-delta` (samples
    `y = x − s` become `y + delta`, `delta = s − s_new`).

    Each example's moments per feature `i` (partner `p`) are `(Σ w y_i y_p, Σ w y_i, Σ w y_p, Σ w)`, which
    move linearly with the shift: `m' = T m` with `T` upper triangular, so `Σ m' m'ᵀ = T (Σ m mᵀ) Tᵀ`.

    >>> rng = np.random.default_rng(0)
    >>> y, delta = rng.normal(size=(5, 3, 2)), np.array([0.5, -2.0])
    >>> def products(samples):
    ...     partner = samples[..., ::-1]
    ...     m = np.stack([(samples * partner).sum(1), samples.sum(1), partner.sum(1), np.full((5, 2), 3.0)], -1)
    ...     return np.einsum("edi,edj->dij", m, m)
    >>> bool(np.allclose(shift_moment_products(products(y), delta), products(y + delta)))
    True
    """
    dim = len(delta)
    partner_delta = np.asarray(delta)[paired_feature(dim)]
    transform = np.zeros((dim, 4, 4))
    transform[:, [0, 1, 2, 3], [0, 1, 2, 3]] = 1.0
    transform[:, 0, 1] = partner_delta
    transform[:, 0, 2] = delta
    transform[:, 0, 3] = delta * partner_delta
    transform[:, 1, 3] = delta
    transform[:, 2, 3] = partner_delta
    return np.einsum("dij,djk,dlk->dil", transform, moment_products, transform)


def merge_states(states):
    """One accumulator state from the states of several (e.g. one per replica), exactly as if one had seen
    every sample: counts, non-finite counts, examples and moment products add up (the products moved to one
    shift, `shift_moment_products`); means and centred second moments merge by Chan, Golub & LeVeque.

    >>> rng = np.random.default_rng(1)
    >>> parts = [rng.normal(3.0, 1.0, size=(n, 2)) for n in (4, 0, 7)]
    >>> def state(x):
    ...     mean = x.mean(0) if len(x) else np.zeros(2)
    ...     return {"count": float(len(x)), "mean": mean, "m2": (x - mean).T @ (x - mean), "nonfinite": 0.0,
    ...             "shift": mean, "moment_products": np.zeros((2, 4, 4)), "examples": float(len(x))}
    >>> merged, everything = merge_states([state(p) for p in parts]), np.concatenate(parts)
    >>> bool(np.allclose(merged["m2"], state(everything)["m2"])), merged["count"]
    (True, 11.0)
    """
    seen = [s for s in states if float(s["count"]) > 0]
    if not seen:
        return dict(states[0])
    count = sum(float(s["count"]) for s in seen)
    mean = sum(float(s["count"]) * np.asarray(s["mean"]) for s in seen) / count
    m2 = sum(np.asarray(s["m2"]) + float(s["count"]) * np.outer(s["mean"] - mean, s["mean"] - mean) for s in seen)
    shift = np.asarray(seen[0]["shift"])
    products = sum(shift_moment_products(np.asarray(s["moment_products"]), np.asarray(s["shift"]) - shift)
                   for s in seen)
    return {"count": count, "mean": mean, "m2": m2, "nonfinite": sum(float(s["nonfinite"]) for s in states),
            "shift": shift, "moment_products": products, "examples": sum(float(s["examples"]) for s in seen)}


class _LayerHook:
    """Wraps one layer's `call` so it feeds an accumulator with its pre-activations."""

    def __init__(self, path, layer, recording, weights_provider=None, context=None):
        self.path = path
        self.layer = layer
        self.kind = layer_kind(layer) or type(layer).__name__
        self.recording = recording
        # weights_provider(inputs) -> per-sample weights to multiply in (e.g. a padding mask), or None.
        self.weights_provider = weights_provider
        # An object with install()/remove() that must wrap the hook's lifetime (e.g. the owner that
        # stashes the padding mask for weights_provider); installed first, removed last.
        self.context = context
        self.factorized = hasattr(layer, "bottleneck")
        width = int(layer.rank) if self.factorized else _output_width(layer)
        self.accumulator = CovarianceAccumulator(width, name=path.replace("/", "__"))
        self._installed = False

    def install(self):
        if self.context is not None:
            self.context.install()
        layer, original_call = self.layer, self.layer.call
        self._activation = layer.activation
        if self.factorized:
            return self._install_bottleneck()
        # Record h = xW + b, not act(h): the factorization is linear in h.
        layer.activation = keras.activations.linear
        activation, accumulator, recording, weights_provider = (
            self._activation,
            self.accumulator,
            self.recording,
            self.weights_provider,
        )
        flatten_heads = is_attention_input_projection(layer)

        def hooked_call(inputs, *args, **kwargs):
            pre_activation = original_call(inputs, *args, **kwargs)
            outputs = pre_activation
            if channels_first(layer):
                outputs = tf.experimental.numpy.moveaxis(outputs, 1, -1)
            if flatten_heads:  # (..., heads, head_dim) -> (..., heads * head_dim): one sample per token
                outputs = tf.reshape(outputs, tf.concat([tf.shape(outputs)[:-2], [-1]], axis=0))
            weights = tf.cast(recording, tf.float64)
            extra = weights_provider(inputs) if weights_provider is not None else None
            if extra is not None:
                weights = weights * tf.cast(extra, tf.float64)
            accumulator.update(outputs, tf.broadcast_to(weights, tf.shape(outputs)[:-1]))
            return activation(pre_activation)

        layer.call = hooked_call
        self._installed = True

    def _install_bottleneck(self):
        # A factorized layer is analysed through its rank-k bottleneck z = x·down:
        # its output lives in a k-dimensional affine subspace, so the d×d output
        # covariance would show d−k structural zeros rather than noise.
        layer, accumulator, recording, weights_provider = (
            self.layer,
            self.accumulator,
            self.recording,
            self.weights_provider,
        )

        def hooked_call(inputs, *args, **kwargs):
            hidden = layer.bottleneck(inputs)
            samples = hidden
            if channels_first(layer):
                samples = tf.experimental.numpy.moveaxis(hidden, 1, -1)
            weights = tf.cast(recording, tf.float64)
            extra = weights_provider(inputs) if weights_provider is not None else None
            if extra is not None:
                weights = weights * tf.cast(extra, tf.float64)
            accumulator.update(samples, tf.broadcast_to(weights, tf.shape(samples)[:-1]))
            return layer.expand(hidden)

        layer.call = hooked_call
        self._installed = True

    def remove(self):
        if self._installed:
            del self.layer.call
            self.layer.activation = self._activation
            self._installed = False
            if self.context is not None:
                self.context.remove()

    def statistics(self, state=None):
        state = self.accumulator.state() if state is None else state
        n, mean, covariance, nonfinite = self.accumulator.numpy(state)
        if nonfinite:
            raise NonFiniteActivationError(
                f"layer '{self.path}' produced NaN/Inf activations in {nonfinite} of "
                f"{n + nonfinite} calibration samples; check the model and the input scaling"
            )
        ess = self.accumulator.effective_sample_size(state)
        return LayerStatistics(self.path, self.kind, n, mean, covariance, n_effective=ess.n_effective,
                               n_examples=ess.n_examples, design_effect=ess.design_effect)


def _output_width(layer):
    if hasattr(layer, "units"):
        return int(layer.units)
    if hasattr(layer, "filters"):
        return int(layer.filters)
    if is_attention_output_projection(layer) or is_attention_input_projection(layer):
        return dense_matrix_shape(layer)[1]
    raise RMTKDError(f"cannot collect activations of layer '{layer.name}' ({type(layer).__name__})")


def candidate_layers(model, layers=None, include_outputs=True):
    """`[(path, layer)]` of the factorizable layers of `model`, optionally restricted to `layers` (paths).

    Transformer encoders contribute their parts (`<encoder path>/attention_query`,
    ..., `<encoder path>/ffn_output`; see `rmtkd_tf.transformers`), not themselves.

    With `include_outputs=False` the layers producing the model outputs (the
    classifier head) are left out unless named in `layers`: squeezing the
    logits through a bottleneck narrower than the class count saves little
    and costs accuracy.
    """
    if not is_graph_model(model):
        from rmtkd_tf.errors import UnsupportedModelError

        raise UnsupportedModelError(
            f"{type(model).__name__} is a subclassed Keras model; rmtkd-tf supports Sequential and "
            "Functional models (nested ones too) and keras-hub tasks"
        )
    found = [(p, l) for p, l in iter_factorizable_layers(model) if layer_kind(l) is not None]
    if not include_outputs and layers is None:
        heads = {id(l) for l in output_layers(model)}
        found = [(p, l) for p, l in found if id(l) not in heads]
    if layers is not None:
        wanted = set(layers)
        unknown = wanted - {p for p, _ in found}
        if unknown:
            raise RMTKDError(f"no factorizable layer named {sorted(unknown)} in the model")
        found = [(p, l) for p, l in found if p in wanted]
    return found


class _HookSet:
    def __init__(self, model, layers=None, hooks=None):
        self.model = model
        self.recording = tf.Variable(True, trainable=False, name="rmtkd_recording")
        if hooks is None:
            hooks = _default_hooks(model, layers, self.recording)
        else:
            for hook in hooks:
                hook.recording = self.recording
        self.hooks = hooks

    def install(self):
        for hook in self.hooks:
            hook.install()
        _reset_compiled_functions(self.model)

    def remove(self):
        for hook in self.hooks:
            hook.remove()
        _reset_compiled_functions(self.model)

    def statistics(self):
        accumulators = [hook.accumulator for hook in self.hooks]
        if self.hooks and accumulators[0].strategy is not None:  # every replica's statistics, in one gather
            states = merged_states(accumulators)
        else:
            states = [None] * len(self.hooks)
        return {hook.path: hook.statistics(state) for hook, state in zip(self.hooks, states)}


def _default_hooks(model, layers, recording):
    """One `_LayerHook` per candidate layer; parts of a transformer encoder skip its padding tokens."""
    graph_layers = dict(iter_graph_layers(model))
    stashes = {}  # encoder path -> PaddingMaskStash shared by that encoder's parts
    hooks = []
    for path, layer in candidate_layers(model, layers):
        owner_path = path.rpartition("/")[0]
        if path not in graph_layers and composite_parts(graph_layers.get(owner_path)) is not None:
            from rmtkd_tf.transformers.padding import PaddingMaskStash

            stash = stashes.setdefault(owner_path, PaddingMaskStash(graph_layers[owner_path]))
            hooks.append(_LayerHook(path, layer, recording, weights_provider=stash.sample_weights, context=stash))
        else:
            hooks.append(_LayerHook(path, layer, recording))
    return hooks


def _reset_compiled_functions(model):
    # Keras caches traced train/test/predict functions; force a retrace so the
    # hooks are (or stop being) part of the graph.
    for attr in ("train_function", "test_function", "predict_function"):
        if hasattr(model, attr):
            setattr(model, attr, None)


class ActivationCollector(keras.callbacks.Callback):
    """Keras callback that accumulates pre-activation covariances during `fit`, `evaluate` or `predict`.

    Args:
        layers: paths of the layers to watch (default: every Dense/Conv2D and
            factorized layer).
        modes: which phases record: any of `"train"`, `"test"`, `"predict"`.
            In `fit`, validation batches record only if `"test"` is in modes.

    After the call, `statistics_` maps layer paths to `LayerStatistics`.

    Example:

    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    >>> collector = ActivationCollector()
    >>> _ = model.predict(np.ones((5, 4), "float32"), callbacks=[collector], verbose=0)
    >>> collector.statistics_["d"].n_samples
    5
    """

    def __init__(self, layers=None, modes=("train", "test", "predict")):
        super().__init__()
        unknown = set(modes) - {"train", "test", "predict"}
        if unknown:
            raise ValueError(f"unknown modes {sorted(unknown)}; use 'train', 'test', 'predict'")
        self.layers = layers
        self.modes = tuple(modes)
        self._hooks = None
        self._in_fit = False
        self.statistics_ = None

    def set_model(self, model):
        super().set_model(model)
        if self._hooks is None:
            self._hooks = _HookSet(model, self.layers)
            self._hooks.install()

    def _set_recording(self, mode):
        self._hooks.recording.assign(mode in self.modes)

    def _finish(self):
        try:
            self.statistics_ = self._hooks.statistics()
        finally:
            self._hooks.remove()
            self._hooks = None

    def on_train_begin(self, logs=None):
        self._in_fit = True
        self._set_recording("train")

    def on_train_end(self, logs=None):
        self._in_fit = False
        self._finish()

    def on_test_begin(self, logs=None):
        self._set_recording("test")

    def on_test_end(self, logs=None):
        if self._in_fit:
            self._set_recording("train")
        else:
            self._finish()

    def on_predict_begin(self, logs=None):
        self._set_recording("predict")

    def on_predict_end(self, logs=None):
        self._finish()


def _as_dataset(data, batch_size):
    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        data = data[0]
    if isinstance(data, dict):
        n = len(next(iter(data.values())))
    else:
        data = np.asarray(data)
        n = len(data)
    if n == 0:
        raise RMTKDError("calibration data is empty")
    return tf.data.Dataset.from_tensor_slices(data).batch(batch_size)


def _inputs_of(batch):
    # (x, y) / (x, y, w) tuples from a labelled dataset: keep x.
    if isinstance(batch, tuple) and len(batch) in (2, 3):
        return batch[0]
    return batch


@contextlib.contextmanager
def hooked(model, layers=None, hooks=None):
    """Context manager installing collection hooks; yields the `_HookSet`."""
    hook_set = _HookSet(model, layers, hooks)
    hook_set.install()
    try:
        yield hook_set
    finally:
        hook_set.remove()


def collect_activations(model, data, layers=None, batch_size=64, max_batches=None, hooks=None, progress=None):
    """Covariance statistics of the pre-activations of `model`'s layers over `data`.

    Args:
        model: a built Sequential/Functional Keras model.
        data: NumPy array, dict of arrays, `(x, y)` tuple, or `tf.data.Dataset`
            of inputs or `(inputs, labels)` batches.
        layers: paths to restrict collection to (default: all factorizable).
        batch_size: batch size when `data` is not already a dataset.
        max_batches: stop after this many batches.
        progress: optional callable `(batches_done)` for progress display.

    Returns:
        dict path -> `LayerStatistics`.
    """
    dataset = _as_dataset(data, batch_size)
    strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
    if strategy is not None:
        # Each replica (of each worker) collects its part of the batches; `LayerHook.statistics` merges them.
        from rmtkd_tf.distribute import distribute_dataset

        dataset = distribute_dataset(strategy, dataset.map(lambda *batch: _inputs_of(batch if len(batch) > 1 else batch[0])))
    with hooked(model, layers, hooks) as hook_set:

        @tf.function(reduce_retracing=True)
        def step(inputs):
            if strategy is None:
                model(inputs, training=False)
            else:
                strategy.run(lambda x: model(x, training=False), args=(inputs,))

        batches = 0
        for batch in dataset:
            step(_inputs_of(batch))
            batches += 1
            if progress is not None:
                progress(batches)
            if max_batches is not None and batches >= max_batches:
                break
        if batches == 0:
            raise RMTKDError("calibration data is empty")
        return hook_set.statistics()
