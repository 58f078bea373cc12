"""Query and key factorized jointly: the best low-rank bilinear form of every attention head.

Pure NumPy. In self-attention, head `h` scores query token `i` against key
token `j` with

    z_ij = (x_iᵀ W_q,h + b_q,h) (x_jᵀ W_k,h + b_k,h)ᵀ / √d
         = ãᵢᵀ M_h x_j / √d  +  ãᵢᵀ W̃_q,h b_k,hᵀ / √d,        ã = [x; 1],  W̃_q,h = [W_q,h; b_q,hᵀ],

with `M_h = W̃_q,h W_k,hᵀ` (`(D+1) × D`) and `d` the head's key dimension.
The second term does not depend on the key `j`, and a softmax over keys
ignores anything constant over `j`: the key bias `b_k` never changes the
attention, while the query bias does (it scores `b_q W_kᵀ x_j`). What the
attention sees of query and key is therefore the bilinear form `M_h`, and
factorizing `W_q` and `W_k` separately spends parameters on directions the
product does not need.

**The metric.** Replace `M_h` by `A_h B_hᵀ` of rank `r` (a query kernel
`A_h`, `(D+1) × r` with its bias as last row, and a key kernel `B_h`,
`D × r`, no bias). With `E = M_h − A_h B_hᵀ`, queries `ã` and keys `x`
drawn independently with second moments `S = E[ã ãᵀ]` and `C = E[x xᵀ]`,

    E[(ãᵀ E x)²] = tr(Eᵀ S E C) = ‖S^½ E C^½‖²_F,

the mean squared score error (before the `1/√d` scale). Taking `C` as the
*centred* covariance of the keys (`key_metric="centred"`, the default)
measures the error modulo anything constant over keys, the part a softmax
ignores; `key_metric="uncentred"` uses the augmented second moment on both
sides, `M_h = W̃_q,h W̃_k,hᵀ`, and the error of the raw scores.

**The optimum.** `S^½` and `C^½` are invertible on the data (pseudo-inverse
on the directions with no variance: a LayerNorm output lives in a hyperplane,
so the augmented `S` of a BERT layer input is singular), so by Eckart–Young
the best rank-`r` `A_h B_hᵀ` is the truncated SVD `S^½ M_h C^½ ≈ U_r Σ_r V_rᵀ`:

    A_h = S^-½ U_r Σ_r^½,   B_h = C^-½ V_r Σ_r^½,   error = Σ_{i>r} σ_i²,

exact at `r = d` (the rank of `M_h` is at most `d`). The head keeps a
*smaller key dimension* `r` for query and key (the value is untouched), which
also cuts the score product `QKᵀ` from `L²·d` to `L²·r` multiply-adds per head.

**Scaling.** Keras' `MultiHeadAttention` multiplies the scores by
`1/√key_dim`. The student keeps the attention layer's `key_dim = d` and
replaces only the query/key projections (whose width becomes `r`), so the
scale stays `1/√d` and `A_h B_hᵀ ≈ M_h` needs no compensation. An attention
rebuilt with `key_dim = r` would scale by `1/√r`: multiply `A_h` by
`score_scale_compensation(d, r) = √r / √d` then.

**Equal parameters is not a theorem.** The joint factors are optimal among
approximations whose every head has rank ≤ `r`. Separate rank-`k`
factorizations of `W_q` and `W_k` at the *same parameter count* have
`k ≈ r·heads·(D+1) / (D + heads·d)` (6·r for MiniLM), so each head's
product may have rank up to `min(k, d) > r`: which is better at equal
parameters is an empirical question, measured in `tools/joint_qk_minilm.py`.

Example: at full rank the factors reproduce the scores modulo constants over keys.

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(200, 6))
>>> wq, wk, bq = rng.normal(size=(6, 2, 3)), rng.normal(size=(6, 2, 3)), rng.normal(size=(2, 3))
>>> S, C = augmented_second_moment(x), np.cov(x.T, bias=True)
>>> f = joint_qk_factors(wq, bq, wk, 3, S, C)
>>> f.query_kernel.shape, f.query_bias.shape, f.key_kernel.shape
((6, 2, 3), (2, 3), (6, 2, 3))
>>> z = np.einsum("ihd,jhd->hij", np.einsum("ic,chd->ihd", x, wq) + bq, np.einsum("jc,chd->jhd", x, wk))
>>> z_hat = np.einsum("ihr,jhr->hij", np.einsum("ic,chr->ihr", x, f.query_kernel) + f.query_bias,
...                   np.einsum("jc,chr->jhr", x, f.key_kernel))
>>> centre = lambda z: z - z.mean(axis=-1, keepdims=True)
>>> bool(np.allclose(centre(z), centre(z_hat)))
True
"""

from __future__ import annotations

import dataclasses

import numpy as np

KEY_METRICS = ("centred", "uncentred")
DEFAULT_RCOND = 1e-10  # eigenvalues below this fraction of the largest are treated as zero (pseudo-inverse)


def augmented_second_moment(x, weights=None):
    """`E[ã ãᵀ]` with `ã = [x; 1]`: the uncentred second moment of the rows of `x` (`(n, D)`), `(D+1, D+1)`.

    `weights` (`(n,)`, e.g. 0 for padding tokens) weight the rows.

    >>> augmented_second_moment(np.array([[1.0], [3.0]])).tolist()
    [[5.0, 2.0], [2.0, 1.0]]
    """
    x = np.asarray(x, dtype=np.float64)
    weights = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    augmented = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    return (augmented * weights[:, None]).T @ augmented / weights.sum()


def psd_sqrt_and_pinv(matrix, rcond=DEFAULT_RCOND):
    """`(M^½, pinv(M^½))` of a symmetric positive semi-definite matrix; eigenvalues below `rcond·max` count as 0.

    >>> root, inverse = psd_sqrt_and_pinv(np.diag([4.0, 0.0]))
    >>> root.tolist(), inverse.tolist()
    ([[2.0, 0.0], [0.0, 0.0]], [[0.5, 0.0], [0.0, 0.0]])
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    keep = values > rcond * max(values.max(), 0.0)
    if not keep.any():
        raise ValueError("the second moment is zero: no data")
    root = np.where(keep, np.sqrt(np.where(keep, values, 1.0)), 0.0)
    inverse_root = np.where(keep, 1.0 / root.clip(min=np.finfo(float).tiny), 0.0)
    return (vectors * root) @ vectors.T, (vectors * inverse_root) @ vectors.T


def bilinear_forms(query_kernel, query_bias, key_kernel, key_bias=None, key_metric="centred"):
    """`M_h` of every head, `(heads, D+1, D)` (`"centred"`) or `(heads, D+1, D+1)` (`"uncentred"`).

    Kernels have the Keras `EinsumDense` layout `(D, heads, head_dim)`, biases `(heads, head_dim)` (None: zero).
    """
    _check_key_metric(key_metric)
    query = _augmented_kernel(query_kernel, query_bias)  # (heads, D+1, d)
    key = _key_side(key_kernel, key_bias, key_metric)
    return query @ np.transpose(key, (0, 2, 1))


def _augmented_kernel(kernel, bias):
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 3:
        raise ValueError(f"kernel must be (hidden, heads, head_dim), got shape {kernel.shape}")
    bias = np.zeros(kernel.shape[1:]) if bias is None else np.asarray(bias, dtype=np.float64)
    if bias.shape != kernel.shape[1:]:
        raise ValueError(f"bias must have shape {kernel.shape[1:]}, got {bias.shape}")
    return np.transpose(np.concatenate([kernel, bias[None]], axis=0), (1, 0, 2))  # (heads, D+1, d)


def _key_side(key_kernel, key_bias, key_metric):
    if key_metric == "centred":
        return np.transpose(np.asarray(key_kernel, dtype=np.float64), (1, 0, 2))  # (heads, D, d)
    return _augmented_kernel(key_kernel, key_bias)


def _low_rank_svd(left, right):
    """SVD of `left @ rightᵀ` per head (`(heads, m, d)`, `(heads, n, d)`), through two thin QRs: the product has
    rank <= d, so `U`, `σ` (descending), `V` (`(heads, m, d)`, `(heads, d)`, `(heads, n, d)`) come from a d×d SVD."""
    q_left, r_left = np.linalg.qr(left)
    q_right, r_right = np.linalg.qr(right)
    u, s, vt = np.linalg.svd(r_left @ np.transpose(r_right, (0, 2, 1)))
    return q_left @ u, s, q_right @ np.transpose(vt, (0, 2, 1))


def _check_key_metric(key_metric):
    if key_metric not in KEY_METRICS:
        raise ValueError(f"key_metric must be one of {KEY_METRICS}, got {key_metric!r}")


@dataclasses.dataclass
class JointQKFactors:
    """Query/key projections of key dimension `rank` for every head, in the Keras `EinsumDense` layout.

    `query_kernel` `(D, heads, rank)`, `query_bias` `(heads, rank)`,
    `key_kernel` `(D, heads, rank)` and `key_bias` `(heads, rank)` (zero for
    the centred metric: constant over keys). `singular_values` `(heads, d)`
    are those of `S^½ M_h C^½`; `errors` `(heads,)` the weighted squared
    error of each head's scores (before the `1/√d` scale), `Σ_{i>rank} σ_i²`.
    """

    query_kernel: np.ndarray
    query_bias: np.ndarray
    key_kernel: np.ndarray
    key_bias: np.ndarray
    singular_values: np.ndarray
    errors: np.ndarray
    key_metric: str = "centred"

    @property
    def rank(self):
        return int(self.query_kernel.shape[-1])


def joint_qk_factors(query_kernel, query_bias, key_kernel, rank, query_moment, key_moment,
                     key_bias=None, key_metric="centred", rcond=DEFAULT_RCOND):
    """The best rank-`rank` query/key factors of every head in the metric of the module docstring.

    Args:
        query_kernel, key_kernel: `(D, heads, head_dim)` `EinsumDense` kernels.
        query_bias, key_bias: `(heads, head_dim)` or None; `key_bias` is only
            read by the uncentred metric.
        rank: the new key dimension `r` of every head, `1 <= r <= head_dim`.
        query_moment: `(D+1, D+1)` `augmented_second_moment` of the queries' input.
        key_moment: the keys' input covariance `(D, D)` (`"centred"`), or
            their `augmented_second_moment` `(D+1, D+1)` (`"uncentred"`).
        key_metric: `"centred"` (error modulo constants over keys) or `"uncentred"`.
        rcond: relative eigenvalue floor of the pseudo-inverse square roots.

    Returns:
        `JointQKFactors`.
    """
    _check_key_metric(key_metric)
    forms = bilinear_forms(query_kernel, query_bias, key_kernel, key_bias, key_metric)
    heads, query_dim, key_dim_in = forms.shape
    head_dim = np.asarray(query_kernel).shape[-1]
    if not 1 <= int(rank) <= head_dim:
        raise ValueError(f"rank must be in [1, head_dim={head_dim}], got {rank}")
    rank = int(rank)
    query_moment, key_moment = np.asarray(query_moment, float), np.asarray(key_moment, float)
    if query_moment.shape != (query_dim, query_dim):
        raise ValueError(f"query_moment must be {(query_dim, query_dim)}, got {query_moment.shape}")
    if key_moment.shape != (key_dim_in, key_dim_in):
        raise ValueError(f"key_moment for key_metric={key_metric!r} must be {(key_dim_in, key_dim_in)}, "
                         f"got {key_moment.shape}")
    query_root, query_inverse_root = psd_sqrt_and_pinv(query_moment, rcond)
    key_root, key_inverse_root = psd_sqrt_and_pinv(key_moment, rcond)
    u, s, v = _low_rank_svd(query_root[None] @ _augmented_kernel(query_kernel, query_bias),
                            key_root[None] @ _key_side(key_kernel, key_bias, key_metric))
    root_s = np.sqrt(s[:, :rank])
    a = query_inverse_root[None] @ (u[:, :, :rank] * root_s[:, None, :])  # (heads, D+1, r)
    b = key_inverse_root[None] @ (v[:, :, :rank] * root_s[:, None, :])
    hidden = query_dim - 1
    key_bias_out = np.zeros((heads, rank)) if key_metric == "centred" else b[:, hidden, :]
    return JointQKFactors(
        query_kernel=np.transpose(a[:, :hidden, :], (1, 0, 2)),
        query_bias=a[:, hidden, :],
        key_kernel=np.transpose(b[:, :hidden, :], (1, 0, 2)),
        key_bias=key_bias_out,
        singular_values=s,
        errors=(s[:, rank:] ** 2).sum(axis=1),
        key_metric=key_metric,
    )


def weighted_bilinear_error(forms, approximations, query_moment, key_moment):
    """`tr(Eᵀ S E C)` per head for `E = forms − approximations` (`(heads, ·, ·)` arrays): the mean squared score error."""
    error = np.asarray(forms, float) - np.asarray(approximations, float)
    # tr(Eᵀ S E C) = Σ (S E) ∘ (E C), two matmuls per head (S and C symmetric).
    return ((np.asarray(query_moment, float) @ error) * (error @ np.asarray(key_moment, float))).sum(axis=(1, 2))


def factor_forms(factors):
    """`A_h B_hᵀ` of `JointQKFactors` (or of any query/key projections), laid out like `bilinear_forms`."""
    return bilinear_forms(factors.query_kernel, factors.query_bias, factors.key_kernel, factors.key_bias,
                          factors.key_metric)


def score_scale_compensation(head_dim, rank):
    """Factor for `A_h` when the attention's own `1/√key_dim` scale changes from `1/√head_dim` to `1/√rank`."""
    return float(np.sqrt(rank) / np.sqrt(head_dim))


def joint_qk_parameter_count(hidden, heads, rank):
    """Parameters of joint query and key projections, `hidden·heads·r` each plus a bias `heads·r` each.

    (The key bias is zero for the centred metric; the layer keeps it so that it stays an ordinary
    Keras query/key `EinsumDense`.)
    """
    return 2 * heads * rank * (hidden + 1)


def separate_qk_parameter_count(hidden, heads, head_dim, rank):
    """Parameters of query and key each factorized `hidden -> rank -> heads·head_dim` (with a bias)."""
    units = heads * head_dim
    return 2 * (hidden * rank + rank * units + units)


def separate_rank_at_equal_params(hidden, heads, head_dim, joint_rank):
    """Largest separate rank `k` whose query+key parameters do not exceed the joint ones at `joint_rank`.

    >>> separate_rank_at_equal_params(384, 12, 32, 8)  # MiniLM: 73,920 parameters -> k = 47
    47
    """
    budget = joint_qk_parameter_count(hidden, heads, joint_rank)
    units = heads * head_dim
    return max(0, (budget - 2 * units) // (2 * (hidden + units)))


def joint_rank_at_equal_params(hidden, heads, head_dim, params):
    """Largest per-head rank (at least 1, at most `head_dim`) whose joint parameters do not exceed `params`."""
    return int(min(head_dim, max(1, params // (2 * heads * (hidden + 1)))))


def separate_truncation(kernel, bias, rank, input_moment):
    """`(kernel, bias)` of one projection factorized on its own, as RMT-KD's per-part surgery does.

    The rank-`rank` PCA projection of the projection's outputs (`rmtkd_tf.factorization.project_kernel`
    on the leading eigenvectors of their covariance, derived from the input's `augmented_second_moment`),
    returned as an equivalent dense `(D, heads, head_dim)` kernel and `(heads, head_dim)` bias for comparison
    with `joint_qk_factors` (the layer itself would hold the two factors).
    """
    from rmtkd_tf.factorization import leading_eigenvectors, project_kernel

    kernel = np.asarray(kernel, dtype=np.float64)
    hidden, heads, head_dim = kernel.shape
    augmented = _augmented_kernel(kernel, bias)  # (heads, D+1, d)
    flat = np.transpose(augmented, (1, 0, 2)).reshape(hidden + 1, heads * head_dim)
    moment = np.asarray(input_moment, dtype=np.float64)
    input_mean = moment[-1]  # E[ã], its last entry is 1
    mean = input_mean @ flat
    covariance = flat.T @ (moment - np.outer(input_mean, input_mean)) @ flat
    basis = leading_eigenvectors(covariance, rank)[1]
    down, up, new_bias = project_kernel(flat[:hidden], flat[hidden], mean, basis)
    return (down @ up).reshape(hidden, heads, head_dim), new_bias.reshape(heads, head_dim)
