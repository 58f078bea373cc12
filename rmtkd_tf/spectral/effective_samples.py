"""Effective sample size of a covariance estimated from correlated samples.

A layer's covariance is estimated from `n` rows, but the rows are not
independent: the spatial positions of one image (Conv2D) or the tokens of one
text (transformer parts) are correlated. The Marchenko–Pastur bulk of the noise
is then wider than `n` independent rows would give, and a rank rule that
believed `n` would take noise for signal.

Model. With separable correlation `X = A^{1/2} Z Σ^{1/2}` (`A` the `n × n`
correlation between samples, `Z` white), every entry of the sample covariance
`S = Xᵀ X / n` fluctuates like that of `n_eff = n² / tr(A²)` independent rows:
for `j ≠ k`, `Var(S_jk) = Σ_jj Σ_kk tr(A²) / n²` against `Σ_jj Σ_kk / n` for
independent rows. The width of the MP bulk is set by these fluctuations (its
eigenvalue variance is `(1/d) Σ_jk Var(S_jk) ≈ sigma2² d / n_eff`, the MP
value with `q = d / n_eff`), so `n_eff` is the `n` to give the MP law: it
matches the bulk's second moment exactly, and for `d / n_eff` small the whole
bulk (a semicircle fixed by its second moment).

Estimator. Samples are grouped by example (the first axis of a sample tensor:
rows of different examples are independent). For a pair of features
`(j, k)` and example `e` with weight sum `W_e` (its number of unpadded
positions), let `P_e = Σ_t w_t (x_tj - μ_j)(x_tk - μ_k)` be the example's
contribution to the covariance entry `c_jk`. Examples are independent, so the
observed variance of the covariance entry is

    V_jk = Σ_e (P_e - W_e c_jk)²  /  (1 - Σ_e W_e² / n²)

(the denominator undoes the degree of freedom spent on `c_jk`), while `n`
independent Gaussian rows would give `n (Σ_jj Σ_kk + c_jk²)`. Their ratio is
the design effect `DEFF_jk`; for groups of `m` positions it is
`1 + (m - 1) · mean ρ²` (the design effect of second moments, `ρ` the
correlation between positions of one example). `n_eff = n / median(DEFF_jk)`,
over the pairs `(j, j + 1 mod d)` (one pair per feature; the median is robust
to the few features whose correlation differs), clipped to
`[n_examples, n]`: at worst all positions of an example are one sample, and
rows are never taken to be better than independent. (Without separability
`DEFF_jk` can be below 1: `Cov(x_tj x_tk, x_sj x_sk)` holds the term
`C_jk(t - s) C_kj(t - s)`, negative when the cross-covariance of the pair
changes sign with the lag; the clip then gives `n`.) A layer with one sample per example
(Dense on a batch of vectors) gets exactly `n`.

Why cross-products and not the squares of single features: the squares also
react to heavy tails of a single feature (kurtosis), which do not widen the MP
bulk (universality), and a fourth-moment correction is needed to remove them;
the cross-product of two uncorrelated features has no such term, and it is
the quantity (`S_jk`, `j ≠ k`) whose fluctuation the bulk width is made of.
A common scale per example (e.g. image contrast) does widen the bulk, and is
seen by the cross-products too. For `d = 1` the pair is `(0, 0)` and the
Gaussian reference `2 Σ_00²` still applies.

Limit, measured: `n_eff` matches the second moment of the bulk, not its edge.
With strong correlation the noise bulk is a generalised MP law (the free
product with the spectrum of `A`), slightly more skewed than MP with `q = d /
n_eff`, so its top eigenvalue can pass the MP edge by a few Tracy-Widom widths.
White noise in AR(1)-correlated groups (coefficient 0.9, 16 positions, 200
examples, d = 100; 40 draws): 0-2 eigenvalues above the MP edge of `n_eff`
(most draws 1) against 50 or more above the edge of the nominal `n`; with
`d / n_eff` near 1 (d = 256, `n_eff` = 261) up to 8 of 256.

The sums need only the per-example moments `m_e = (Σ w x'_j x'_k, Σ w x'_j,
Σ w x'_k, W_e)` of the data shifted by a provisional mean `x' = x - shift`
(the shift keeps the raw sums well conditioned when the mean is large), summed
as outer products `Σ_e m_e m_eᵀ`: O(d) state per layer, no data kept.
`rmtkd_tf.collection.CovarianceAccumulator` streams them in TensorFlow;
`effective_sample_size` computes the same thing from an array.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class EffectiveSampleSize:
    """Result of the design-effect estimate.

    Attributes:
        n_effective: effective number of independent samples, in
            `[n_examples, n_samples]`.
        n_samples: weighted number of rows `n`.
        n_examples: number of examples with at least one weighted row.
        design_effect: median over feature pairs of `DEFF_jk` (before the
            clipping of `n_effective`), 1.0 when it could not be estimated.
        n_pairs: feature pairs that entered the median.
    """

    n_effective: int
    n_samples: int
    n_examples: int
    design_effect: float
    n_pairs: int

    def to_dict(self):
        return dataclasses.asdict(self)


def paired_feature(dim):
    """Index of the partner of each feature in the design-effect pairs: `(j + 1) % dim`."""
    return (np.arange(dim) + 1) % dim


def example_moments(shifted, weights):
    """Per-example moments `m_e` of shape `(examples, dim, 4)` (see the module docstring).

    Args:
        shifted: `(examples, positions, dim)` samples minus the shift.
        weights: `(examples, positions)` sample weights.
    """
    partner = shifted[..., paired_feature(shifted.shape[-1])]
    weighted = shifted * weights[..., None]
    products = np.sum(weighted * partner, axis=1)
    sums = np.sum(weighted, axis=1)
    counts = np.broadcast_to(np.sum(weights, axis=1)[:, None], sums.shape)
    return np.stack([products, sums, sums[:, paired_feature(sums.shape[-1])], counts], axis=-1)


def effective_sample_size_from_sums(count, shifted_mean, covariance, moment_products, n_examples):
    """`EffectiveSampleSize` from streamed sums.

    Args:
        count: weighted number of rows `n`.
        shifted_mean: `(dim,)` mean of the data minus the shift.
        covariance: `(dim, dim)` population covariance (M2 / n).
        moment_products: `(dim, 4, 4)` sums over examples of `m_e m_eᵀ`.
        n_examples: number of examples with a positive weight.
    """
    count = float(count)
    n_samples = int(round(count))
    n_examples = int(round(float(n_examples)))
    if count <= 0.0 or n_examples <= 0:
        return EffectiveSampleSize(n_samples, n_samples, n_examples, 1.0, 0)
    dim = shifted_mean.shape[0]
    partner = paired_feature(dim)
    mu_j, mu_k = shifted_mean, shifted_mean[partner]
    # P_e = g · m_e centres the example's cross-product at the final mean.
    g = np.stack([np.ones(dim), -mu_k, -mu_j, mu_j * mu_k], axis=-1)
    sum_p_squared = np.einsum("di,dij,dj->d", g, moment_products, g)
    sum_w_p = np.einsum("dj,dj->d", moment_products[:, 3, :], g)
    sum_w_squared = moment_products[:, 3, 3]
    variances = np.diag(covariance)
    entry = covariance[np.arange(dim), partner]
    observed = sum_p_squared - 2.0 * entry * sum_w_p + entry**2 * sum_w_squared
    dof_correction = 1.0 - sum_w_squared / count**2
    reference = count * (variances * variances[partner] + entry**2)
    valid = (reference > 0.0) & (dof_correction > 0.0) & np.isfinite(observed)
    if not np.any(valid):
        return EffectiveSampleSize(n_samples, n_samples, n_examples, 1.0, 0)
    design_effects = observed[valid] / dof_correction[valid] / reference[valid]
    design_effect = float(np.median(design_effects))
    n_effective = count / design_effect if design_effect > 0.0 else count
    n_effective = int(round(min(max(n_effective, n_examples), count)))
    return EffectiveSampleSize(n_effective, n_samples, n_examples, design_effect, int(np.count_nonzero(valid)))


def effective_sample_size(samples, weights=None):
    """Effective sample size of `samples` of shape `(examples, positions, dim)` (or `(examples, dim)`).

    Rows of one example may be correlated, different examples are independent;
    `weights` (`(examples, positions)`, e.g. a padding mask) scale rows, 0
    leaves a row out. The same estimate that `CovarianceAccumulator` streams.

    Example: 200 examples of 16 positions, each position AR(1)-correlated with
    the previous one (coefficient 0.9), 40 independent features.
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(200, 16, 40))
    >>> x = np.empty_like(z); x[:, 0] = z[:, 0]
    >>> for t in range(1, 16): x[:, t] = 0.9 * x[:, t - 1] + np.sqrt(1 - 0.81) * z[:, t]
    >>> ess = effective_sample_size(x)
    >>> ess.n_samples, ess.n_examples, 400 < ess.n_effective < 550   # exact n^2 / tr(A^2): 469
    (3200, 200, True)
    >>> effective_sample_size(rng.normal(size=(500, 8))).n_effective   # one row per example
    500
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim == 2:
        samples = samples[:, None, :]
    if samples.ndim != 3:
        raise ValueError(f"samples must have shape (examples, [positions,] dim), got {samples.shape}")
    weights = np.ones(samples.shape[:2]) if weights is None else np.asarray(weights, np.float64).reshape(
        samples.shape[:2])
    count = weights.sum()
    mean = np.einsum("et,etd->d", weights, samples) / count
    shifted = samples - mean
    covariance = np.einsum("et,eti,etj->ij", weights, shifted, shifted) / count
    moments = example_moments(shifted, weights)
    products = np.einsum("edi,edj->dij", moments, moments)
    n_examples = int(np.count_nonzero(weights.sum(axis=1) > 0))
    return effective_sample_size_from_sums(count, np.zeros(samples.shape[-1]), covariance, products, n_examples)
