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


def project_kernel(kernel, bias, mean, basis):
    """Factorize a kernel whose last axis is the output width `d`.

    Args:
        kernel: `(..., d)` array: `(d_in, d)` for Dense, `(kh, kw, c_in, d)`
            for Conv2D.
        bias: `(d,)` array or None (no bias).
        mean: `(d,)` mean of the pre-activations.
        basis: `(d, k)` orthonormal columns (the leading eigenvectors).

    Returns:
        `(down_kernel, up_kernel, new_bias)` with `down_kernel` of shape
        `(..., k)`, `up_kernel` of shape `(k, d)` and `new_bias` `(d,)`.

    >>> W = np.random.default_rng(0).normal(size=(5, 4))
    >>> down, up, b = project_kernel(W, np.zeros(4), np.zeros(4), np.eye(4))
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
    projector = basis @ basis.T
    down_kernel = kernel @ basis
    up_kernel = basis.T.copy()
    new_bias = (bias - mean) @ projector + mean
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
