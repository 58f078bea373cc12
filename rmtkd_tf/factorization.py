"""Weights of a factorized layer from the projection onto leading eigenvectors.

Pure NumPy. A layer computes pre-activations `h = x W + b` (for a Conv2D, at
every spatial position, with `W` the kernel flattened over its receptive
field). With `μ` the mean and `U` (d×k, orthonormal columns) the leading
eigenvectors of the covariance of `h`, RMT-KD keeps

    h ≈ μ + (h − μ) U Uᵀ = x (W U) Uᵀ + [(b − μ) U Uᵀ + μ]

so the factorized layer is `x → x·down → ·up + bias` with `down = W U`
(the `P = Uᵀ` projection folded into the first factor), `up = Uᵀ` and
`bias = (b − μ) U Uᵀ + μ`. Centring on `μ` means the discarded directions are
replaced by their mean rather than by zero, which is what a PCA keeps. At
`k = d`, `U Uᵀ = I` and the layer is reproduced exactly.

**Weighted error (output scale).** When what follows the layer rescales its
channels first, `h → h D` with `D = diag(s)` (a BatchNormalization in
inference mode, see `rmtkd_tf.output_weighting`), the error that matters is
`‖(ĥ − h) D‖`, not `‖ĥ − h‖`. The best rank-k approximation in that metric is
the PCA of `g = h D`, whose covariance is `D Σ D` (`weighted_covariance`):
with `V` its leading eigenvectors, `g ≈ μ D + (g − μ D) V Vᵀ`, i.e. in the
layer's own space the *oblique* projection

    h ≈ μ + (h − μ) D V Vᵀ D⁻¹,   down = W D V,   up = Vᵀ D⁻¹,
    bias = (b − μ) D V Vᵀ D⁻¹ + μ,

still rank k, exact at `k = d`. The eigenvalues of `D Σ D` are the variances
after the rescaling, so the sum of the dropped ones is the mean squared error
after it. `project_kernel(..., output_scale=s)` builds these factors; with no
scale it is the orthogonal case above (`s = 1`).
"""

from __future__ import annotations

import numpy as np


def leading_eigenvectors(covariance, rank):
    """Eigenvalues (descending) and the `rank` leading eigenvectors of `covariance`.

    >>> vals, vecs = leading_eigenvectors(np.diag([1.0, 3.0, 2.0]), 2)
    >>> vals.tolist(), np.abs(vecs[:, 0]).tolist()
    ([3.0, 2.0, 1.0], [0.0, 1.0, 0.0])
    """
    covariance = np.asarray(covariance, dtype=np.float64)
    if covariance.ndim != 2 or covariance.shape[0] != covariance.shape[1]:
        raise ValueError(f"covariance must be square, got shape {covariance.shape}")
    if not 0 <= rank <= covariance.shape[0]:
        raise ValueError(f"rank must be in [0, {covariance.shape[0]}], got {rank}")
    # eigh on the symmetrised matrix: accumulated covariances are symmetric only up to roundoff.
    values, vectors = np.linalg.eigh((covariance + covariance.T) / 2.0)
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order[:rank]]


def validate_output_scale(output_scale, d):
    """`output_scale` as a float64 `(d,)` array of positive finite values (None stays None).

    >>> validate_output_scale([1, 2], 2).tolist()
    [1.0, 2.0]
    >>> validate_output_scale([1.0, 0.0], 2)
    Traceback (most recent call last):
    ...
    ValueError: output_scale must be positive and finite, got min 0
    """
    if output_scale is None:
        return None
    scale = np.asarray(output_scale, dtype=np.float64)
    if scale.shape != (d,):
        raise ValueError(f"output_scale must have shape ({d},), got {scale.shape}")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(f"output_scale must be positive and finite, got min {scale.min():g}")
    return scale


def weighted_covariance(covariance, output_scale):
    """`D Σ D` with `D = diag(output_scale)`: the covariance of the rescaled outputs `h D`.

    >>> weighted_covariance(np.ones((2, 2)), np.array([1.0, 3.0])).tolist()
    [[1.0, 3.0], [3.0, 9.0]]
    """
    covariance = np.asarray(covariance, dtype=np.float64)
    scale = validate_output_scale(output_scale, covariance.shape[0])
    return covariance * scale[:, None] * scale[None, :]


def project_kernel(kernel, bias, mean, basis, output_scale=None):
    """Factorize a kernel whose last axis is the output width `d`.

    Args:
        kernel: `(..., d)` array: `(d_in, d)` for Dense, `(kh, kw, c_in, d)`
            for Conv2D.
        bias: `(d,)` array or None (no bias).
        mean: `(d,)` mean of the pre-activations.
        basis: `(d, k)` orthonormal columns: the leading eigenvectors of the
            covariance, or of `weighted_covariance(covariance, output_scale)`
            when `output_scale` is given.
        output_scale: `(d,)` positive per-channel scale `s` of the metric the
            error is measured in (see the module docstring), or None for the
            plain (orthogonal) projection.

    Returns:
        `(down_kernel, up_kernel, new_bias)` with `down_kernel` of shape
        `(..., k)`, `up_kernel` of shape `(k, d)` and `new_bias` `(d,)`.

    >>> W = np.random.default_rng(0).normal(size=(5, 4))
    >>> down, up, b = project_kernel(W, np.zeros(4), np.zeros(4), np.eye(4))
    >>> bool(np.allclose(down @ up, W))
    True

    With an output scale the projection is oblique, `D V Vᵀ D⁻¹`, and still exact at full rank:

    >>> down, up, b = project_kernel(W, np.zeros(4), np.zeros(4), np.eye(4)[:, ::-1], output_scale=[1, 2, 3, 4])
    >>> bool(np.allclose(down @ up, W))
    True
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    basis = np.asarray(basis, dtype=np.float64)
    d = kernel.shape[-1]
    if basis.ndim != 2 or basis.shape[0] != d:
        raise ValueError(f"basis must be (d={d}, k), got {basis.shape}")
    mean = np.zeros(d) if mean is None else np.asarray(mean, dtype=np.float64)
    bias = np.zeros(d) if bias is None else np.asarray(bias, dtype=np.float64)
    scale = validate_output_scale(output_scale, d)
    if scale is None:
        scale = np.ones(d)
    # Row-vector convention: h -> μ + (h − μ) D V Vᵀ D⁻¹ with D = diag(scale).
    down_basis = scale[:, None] * basis  # D V
    up_kernel = basis.T / scale[None, :]  # Vᵀ D⁻¹
    down_kernel = kernel @ down_basis
    new_bias = (bias - mean) @ down_basis @ up_kernel + mean
    return down_kernel, up_kernel, new_bias


def dense_parameter_count(input_dim, units, use_bias=True):
    return input_dim * units + (units if use_bias else 0)


def low_rank_parameter_count(fan_in, units, rank):
    """Parameters of a factorized layer: `fan_in·k + k·d + d` (always a bias)."""
    return fan_in * rank + rank * units + units


def break_even_rank(fan_in, units, use_bias=True):
    """Largest rank at which factorizing still saves at least one parameter."""
    dense = dense_parameter_count(fan_in, units, use_bias)
    # fan_in*k + k*d + d < dense  <=>  k < (dense - d) / (fan_in + d)
    return max(0, int(np.ceil((dense - units) / (fan_in + units))) - 1)
