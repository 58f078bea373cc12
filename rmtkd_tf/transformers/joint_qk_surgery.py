"""Joint query/key surgery on keras-hub `TransformerEncoder` blocks (the maths: `rmtkd_tf.joint_qk`).

Three steps, each usable on its own:

1. `collect_qk_moments(model, data)`: for every encoder, the second moments of
   its attention input (what query and key both see in self-attention):
   the augmented `E[[x;1][x;1]ᵀ]` on the query side and, on the key side, the
   covariance of the keys *within each sequence* (`key_covariance="within"`,
   the default: a softmax over the keys of one text ignores anything constant
   over them) or over all tokens (`"global"`). Padding tokens are no samples.
2. `qk_factors(model, moments, ranks)`: `{encoder path: JointQKFactors}` at
   the given per-head ranks.
3. `factorize_joint_qk(model, factors)`: a new model whose encoders hold
   those factors as `LowRankTransformerEncoder(joint_qk_rank=r)` (dense
   `EinsumDense` query/key of per-head width `r`: standard ops, serializable,
   TFLite builtins); every other weight is copied, the input model is untouched.

Example:

>>> import numpy as np, keras_hub
>>> from rmtkd_tf.transformers import bert_classifier
>>> backbone = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
...                                          intermediate_dim=16, max_sequence_length=8, name="bert_backbone")
>>> model = bert_classifier(backbone, num_classes=2, sequence_length=8, dropout=0.0)
>>> x = {"token_ids": np.arange(64).reshape(8, 8) % 50, "padding_mask": np.ones((8, 8), "int32"),
...      "segment_ids": np.zeros((8, 8), "int32")}
>>> moments = collect_qk_moments(model, x)
>>> list(moments)
['bert_backbone/transformer_layer_0']
>>> student = factorize_joint_qk(model, qk_factors(model, moments, {"bert_backbone/transformer_layer_0": 2}))
>>> encoder = student.get_layer("bert_backbone").get_layer("transformer_layer_0")
>>> type(encoder).__name__, encoder.joint_qk_rank, tuple(encoder._self_attention_layer._query_dense.kernel.shape)
('LowRankTransformerEncoder', 2, (8, 2, 2))
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from rmtkd_tf.errors import UnsupportedModelError
from rmtkd_tf.joint_qk import joint_qk_factors
from rmtkd_tf.model_walk import check_rebuildable, is_attention_input_projection, iter_graph_layers
from rmtkd_tf.transformers.low_rank_encoder import (
    is_transformer_encoder,
    low_rank_encoder_like,
)
from rmtkd_tf.transformers.padding import PaddingMaskStash

KEY_COVARIANCES = ("within", "global")


@dataclasses.dataclass
class QKMoments:
    """Second moments of one encoder's attention input (`rmtkd_tf.joint_qk`).

    `query_moment` `(D+1, D+1)`: `E[ã ãᵀ]`, `ã = [x; 1]`; `key_moment`
    `(D, D)`: the keys' covariance, within sequences or global; `n_tokens`,
    `n_sequences`: the unpadded tokens and the sequences they came from.
    """

    query_moment: np.ndarray
    key_moment: np.ndarray
    n_tokens: int
    n_sequences: int
    key_covariance: str = "within"


class _MomentSums:
    def __init__(self):
        self.second = None  # Σ ã ãᵀ
        self.within = None  # Σ_s Σ_j (x_j − x̄_s)(x_j − x̄_s)ᵀ
        self.tokens = 0
        self.sequences = 0

    def add(self, x, mask):
        x = np.asarray(x, dtype=np.float64)  # (batch, length, D)
        mask = np.ones(x.shape[:2]) if mask is None else np.asarray(mask, dtype=np.float64)
        weights = mask.reshape(-1, 1)
        augmented = np.concatenate([x, np.ones(x.shape[:2] + (1,))], axis=-1).reshape(-1, x.shape[-1] + 1)
        second = (augmented * weights).T @ augmented  # padded tokens weigh 0 (a 0/1 mask: w² = w)
        counts = mask.sum(axis=1)
        means = (x * mask[..., None]).sum(axis=1) / np.maximum(counts, 1.0)[:, None]
        centred = ((x - means[:, None, :]) * mask[..., None]).reshape(-1, x.shape[-1])
        within = centred.T @ centred
        self.second = second if self.second is None else self.second + second
        self.within = within if self.within is None else self.within + within
        self.tokens += int(counts.sum())
        self.sequences += int((counts > 0).sum())

    def moments(self, key_covariance):
        if self.tokens == 0:
            raise UnsupportedModelError("no unpadded token reached the encoder: cannot collect query/key moments")
        query_moment = self.second / self.tokens
        if key_covariance == "within":
            key_moment = self.within / self.tokens
        else:
            mean = query_moment[-1, :-1]
            key_moment = query_moment[:-1, :-1] - np.outer(mean, mean)
        return QKMoments(query_moment, key_moment, self.tokens, self.sequences, key_covariance)


def moments_from_inputs(inputs, mask=None, key_covariance="within"):
    """`QKMoments` of attention inputs `(batch, length, D)` already at hand (`mask` `(batch, length)`: 1 real, 0 pad).

    >>> m = moments_from_inputs(np.array([[[1.0], [3.0], [9.0]]]), np.array([[1, 1, 0]]))
    >>> m.query_moment.tolist(), m.key_moment.tolist(), m.n_tokens
    ([[5.0, 2.0], [2.0, 1.0]], [[1.0]], 2)
    """
    if key_covariance not in KEY_COVARIANCES:
        raise ValueError(f"key_covariance must be one of {KEY_COVARIANCES}, got {key_covariance!r}")
    sums = _MomentSums()
    sums.add(inputs, mask)
    return sums.moments(key_covariance)


def _encoders(model, paths=None):
    encoders = {path: layer for path, layer in iter_graph_layers(model) if is_transformer_encoder(layer)}
    if paths is None:
        return encoders
    unknown = sorted(set(paths) - set(encoders))
    if unknown:
        raise KeyError(f"no transformer encoder at paths {unknown}")
    return {path: encoders[path] for path in paths}


def _batches(data, batch_size):
    if isinstance(data, dict):
        n = len(next(iter(data.values())))
        for start in range(0, n, batch_size):
            yield {name: value[start:start + batch_size] for name, value in data.items()}
    else:
        n = len(data)
        for start in range(0, n, batch_size):
            yield data[start:start + batch_size]


def collect_qk_moments(model, data, encoder_paths=None, batch_size=32, key_covariance="within"):
    """`{encoder path: QKMoments}` of the attention inputs of `model`'s encoders over `data` (run eagerly).

    `data`: the model's inputs (a dict of arrays for a BERT classifier), `batch_size` rows at a time.
    """
    if key_covariance not in KEY_COVARIANCES:
        raise ValueError(f"key_covariance must be one of {KEY_COVARIANCES}, got {key_covariance!r}")
    encoders = _encoders(model, encoder_paths)
    sums = {path: _MomentSums() for path in encoders}
    stashes, hooked = [], []
    for path, encoder in encoders.items():
        stash = PaddingMaskStash(encoder)
        stash.install()
        stashes.append(stash)
        query = encoder._self_attention_layer._query_dense
        original = query.call

        def recording_call(inputs, *args, _original=original, _sums=sums[path], _stash=stash, **kwargs):
            mask = _stash.sample_weights(inputs)
            _sums.add(keras.ops.convert_to_numpy(inputs),
                      None if mask is None else keras.ops.convert_to_numpy(mask))
            return _original(inputs, *args, **kwargs)

        query.call = recording_call
        hooked.append(query)
    try:
        for batch in _batches(data, batch_size):
            model(batch, training=False)
    finally:
        for query in hooked:
            del query.call
        for stash in stashes:
            stash.remove()
    return {path: s.moments(key_covariance) for path, s in sums.items()}


def as_float64(variable):
    return keras.ops.convert_to_numpy(variable).astype(np.float64)


def encoder_qk_factors(encoder, moments, rank, rcond=None):
    """`JointQKFactors` of one encoder's query/key at per-head rank `rank` from its `QKMoments`."""
    attention = encoder._self_attention_layer
    query, key = attention._query_dense, attention._key_dense
    for dense in (query, key):
        if not is_attention_input_projection(dense):
            raise UnsupportedModelError(
                f"layer '{encoder.name}': joint query/key needs dense query and key projections, "
                f"got {type(dense).__name__}")
    kwargs = {} if rcond is None else {"rcond": rcond}
    return joint_qk_factors(as_float64(query.kernel), as_float64(query.bias), as_float64(key.kernel), rank,
                            moments.query_moment, moments.key_moment, **kwargs)


def qk_factors(model, moments, ranks, rcond=None):
    """`{encoder path: JointQKFactors}` for `ranks` (`{encoder path: per-head rank}`)."""
    encoders = _encoders(model, list(ranks))
    return {path: encoder_qk_factors(encoders[path], moments[path], rank, rcond) for path, rank in ranks.items()}


def joint_qk_encoder(encoder, factors, input_shape):
    """A built `LowRankTransformerEncoder` copy of `encoder` with `factors` in its query/key, other weights copied."""
    new_encoder = low_rank_encoder_like(encoder, {}, joint_qk_rank=factors.rank)
    new_encoder.build(input_shape)
    _set_joint_qk_weights(encoder, new_encoder, factors)
    return new_encoder


def _set_joint_qk_weights(encoder, new_encoder, factors):
    old_attention, new_attention = encoder._self_attention_layer, new_encoder._self_attention_layer
    qk = {id(old_attention._query_dense): (new_attention._query_dense, factors.query_kernel, factors.query_bias),
          id(old_attention._key_dense): (new_attention._key_dense, factors.key_kernel, factors.key_bias)}
    old_subs = list(encoder._flatten_layers(include_self=False, recursive=True))
    new_subs = list(new_encoder._flatten_layers(include_self=False, recursive=True))
    if len(old_subs) != len(new_subs) or any(type(a) is not type(b) for a, b in zip(old_subs, new_subs)):
        raise UnsupportedModelError(f"layer '{encoder.name}': its rebuilt copy has different sublayers")
    for old_sub, new_sub in zip(old_subs, new_subs):
        if id(old_sub) in qk:
            target, kernel, bias = qk[id(old_sub)]
            if target is not new_sub:
                raise UnsupportedModelError(f"layer '{encoder.name}': sublayer order changed in its rebuilt copy")
            target.kernel.assign(kernel.astype(target.kernel.dtype))
            target.bias.assign(bias.astype(target.bias.dtype))
        elif not list(old_sub._flatten_layers(include_self=False)) and new_sub.weights:
            new_sub.set_weights(old_sub.get_weights())


def factorize_joint_qk(model, factors):
    """A copy of `model` whose encoders at the paths of `factors` (`{path: JointQKFactors}`) hold joint query/key."""
    check_rebuildable(model)
    graph_layers = dict(iter_graph_layers(model))
    encoders = _encoders(model, list(factors))
    replaced = {id(encoders[path]): factors[path] for path in factors}

    def clone_layer(layer):
        if id(layer) in replaced:
            return low_rank_encoder_like(layer, {}, joint_qk_rank=replaced[id(layer)].rank)
        return layer.__class__.from_config(layer.get_config())

    student = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    student_layers = dict(iter_graph_layers(student))
    for path, layer in graph_layers.items():
        new_layer = student_layers[path]
        if id(layer) in replaced:
            _set_joint_qk_weights(layer, new_layer, replaced[id(layer)])
        elif new_layer.weights:
            new_layer.set_weights(layer.get_weights())
    return student


def factorize_with_joint_qk(model, factors, moments, rcond=None):
    """`rmtkd_tf.surgery.factorize_model(model, factors)`, except that every encoder whose query AND key
    are both in `factors` gets them factorized jointly instead, at the largest per-head rank whose
    parameters do not exceed those of the two separate factorizations (`joint_rank_at_equal_params`).

    `moments`: `{encoder path: QKMoments}` (`collect_qk_moments` on the original model); an encoder
    without moments, or whose query/key are not dense, keeps its separate factors.

    Returns `(student, {encoder path: per-head rank})`.
    """
    from rmtkd_tf.factorization import low_rank_parameter_count
    from rmtkd_tf.joint_qk import joint_rank_at_equal_params
    from rmtkd_tf.surgery import factorize_model

    encoders = _encoders(model)
    joint, rest = {}, dict(factors)
    for path, encoder in encoders.items():
        query_path, key_path = f"{path}/attention_query", f"{path}/attention_key"
        if query_path not in factors or key_path not in factors or path not in moments:
            continue
        attention = encoder._self_attention_layer
        if not all(is_attention_input_projection(d) for d in (attention._query_dense, attention._key_dense)):
            continue
        hidden, heads, head_dim = (int(s) for s in attention._query_dense.kernel.shape)
        separate = sum(low_rank_parameter_count(hidden, heads * head_dim, factors[p].rank) for p in (query_path, key_path))
        rank = joint_rank_at_equal_params(hidden, heads, head_dim, separate)
        joint[path] = encoder_qk_factors(encoder, moments[path], rank, rcond)
        del rest[query_path], rest[key_path]
    student = factorize_model(model, rest) if rest else model
    if joint:
        student = factorize_joint_qk(student, joint)
    return student, {path: f.rank for path, f in joint.items()}
