"""The Marchenko–Pastur (MP) law: edges, density, CDF and quantile.

Conventions used throughout `rmtkd_tf.spectral`: `d`-dimensional features,
`n` samples, aspect ratio `q = d / n`, and the sample covariance
`Σ = Xᵀ X / n` of a pure-noise `n × d` matrix `X` with i.i.d. entries of
variance `sigma2`. As `d, n → ∞` with `d / n → q`, the eigenvalues of `Σ`
follow the MP law with support edges

    lambda_minus = sigma2 * (1 - sqrt(q))**2
    lambda_plus  = sigma2 * (1 + sqrt(q))**2

For `q > 1` only `n` of the `d` eigenvalues can be nonzero: the law then has
an atom of mass `1 - 1/q` at zero, and its continuous part integrates to
`1/q` (not 1).

The CDF is evaluated in closed form through the substitution
`x = sigma2 * (1 + q - 2 sqrt(q) cos θ)`, θ ∈ [0, π], which turns the
density into `(2/π) sin²θ / (1 + q - 2 sqrt(q) cos θ) dθ` and has an
elementary antiderivative; it is exact, vectorised and fast, and the tests
check it against `scipy.integrate.quad` of the density. The quantile inverts
the CDF with `scipy.optimize.brentq` in θ and caches scalar results.
"""

import functools
import math

import numpy as np
from scipy import optimize


def _check_sigma2_q(sigma2, q):
    # Plain floats so that numpy scalars, ints and 0-d arrays all work.
    try:
        sigma2 = float(sigma2)
        q = float(q)
    except (TypeError, ValueError) as error:
        raise ValueError(f"sigma2 and q must be real numbers, got sigma2={sigma2!r}, q={q!r}") from error
    if not (math.isfinite(sigma2) and sigma2 > 0):
        raise ValueError(f"sigma2 must be a finite positive number, got {sigma2!r}")
    if not (math.isfinite(q) and q > 0):
        raise ValueError(f"q = d / n must be a finite positive number, got {q!r}")
    return sigma2, q


def marchenko_pastur_edges(sigma2, q):
    """Return the support edges `(lambda_minus, lambda_plus)` of the MP law.

    `lambda_∓ = sigma2 * (1 ∓ sqrt(q))**2`. For `q > 1` there is in addition
    an atom at 0 (not an edge of the continuous part).

    Example:
    >>> marchenko_pastur_edges(1.0, 0.25)
    (0.25, 2.25)
    >>> marchenko_pastur_edges(2.0, 1.0)
    (0.0, 8.0)
    """
    sigma2, q = _check_sigma2_q(sigma2, q)
    root_q = math.sqrt(q)
    return sigma2 * (1.0 - root_q) ** 2, sigma2 * (1.0 + root_q) ** 2


def marchenko_pastur_density(x, sigma2, q):
    """Density of the continuous part of the MP law, vectorised over `x`.

    `f(x) = sqrt((lambda_plus - x) (x - lambda_minus)) / (2 π sigma2 q x)` on
    the open interval `(lambda_minus, lambda_plus)` and 0 elsewhere. It
    integrates to 1 for `q <= 1` and to `1/q` for `q > 1`; the missing mass
    `1 - 1/q` is the atom at zero, which this function does not represent.
    For `q = 1` the density diverges like `x**-1/2` at 0 (still integrable);
    the single point `x = 0` returns 0.

    Returns a float for scalar `x`, else an array of `x`'s shape.

    Example:
    >>> from scipy.integrate import quad
    >>> round(quad(marchenko_pastur_density, 0.25, 2.25, args=(1.0, 0.25))[0], 6)
    1.0
    >>> round(quad(marchenko_pastur_density, 0.0, 5.83, args=(1.0, 2.0), limit=200)[0], 6)
    0.5
    >>> float(marchenko_pastur_density(3.0, 1.0, 0.25))
    0.0
    """
    sigma2, q = _check_sigma2_q(sigma2, q)
    lambda_minus, lambda_plus = marchenko_pastur_edges(sigma2, q)
    x = np.asarray(x, dtype=np.float64)
    inside = (x > lambda_minus) & (x < lambda_plus)
    # Evaluate only inside the support: outside, the square root is of a
    # negative number and x may be 0.
    safe_x = np.where(inside, x, 0.5 * (lambda_minus + lambda_plus))
    value = np.sqrt((lambda_plus - safe_x) * (safe_x - lambda_minus)) / (2.0 * math.pi * sigma2 * q * safe_x)
    density = np.where(inside, value, 0.0)
    return float(density) if density.ndim == 0 else density


def _continuous_mass_up_to_angle(theta, q):
    """Mass of the continuous part (sigma2 = 1) below `x = 1 + q - 2 sqrt(q) cos θ`.

    Antiderivative of `(2/π) sin²θ / (m - r cos θ)` with `m = 1 + q`,
    `r = 2 sqrt(q)`, using `m² - r² = (1 - q)²`; it equals 1 (q <= 1) or
    1/q (q > 1) at θ = π.
    """
    root_q = math.sqrt(q)
    # tan(θ/2) -> inf at θ = π, where arctan(inf) = π/2 is the right limit.
    with np.errstate(divide="ignore", over="ignore"):
        half_tangent = np.tan(0.5 * theta)
        if abs(1.0 - root_q) > 0.0:
            arctan_term = np.arctan((1.0 + root_q) / abs(1.0 - root_q) * half_tangent)
        else:
            arctan_term = np.zeros_like(theta)
    arctan_term = np.where(theta >= math.pi, 0.5 * math.pi, arctan_term)
    return (2.0 / math.pi) * (
        np.sin(theta) / (2.0 * root_q)
        + (1.0 + q) * theta / (4.0 * q)
        - abs(1.0 - q) / (2.0 * q) * arctan_term
    )


def marchenko_pastur_cdf(x, sigma2, q):
    """CDF of the full MP law (atom included), vectorised over `x`.

    For `q > 1` the CDF jumps from 0 to `1 - 1/q` at `x = 0` (the atom of
    zero eigenvalues), then rises to 1 at `lambda_plus`. For `q <= 1` it is
    continuous, 0 up to `lambda_minus`.

    Returns a float for scalar `x`, else an array of `x`'s shape.

    Example:
    >>> marchenko_pastur_cdf(2.25, 1.0, 0.25)
    1.0
    >>> marchenko_pastur_cdf(0.0, 1.0, 4.0)   # the atom at zero
    0.75
    >>> round(marchenko_pastur_cdf(1.0, 1.0, 1.0), 4)
    0.609
    """
    sigma2, q = _check_sigma2_q(sigma2, q)
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        raise ValueError("marchenko_pastur_cdf got NaN in x")
    root_q = math.sqrt(q)
    scaled = x / sigma2
    cos_theta = np.clip((1.0 + q - scaled) / (2.0 * root_q), -1.0, 1.0)
    theta = np.arccos(cos_theta)
    continuous = _continuous_mass_up_to_angle(theta, q)
    atom = max(0.0, 1.0 - 1.0 / q)
    cdf = np.where(scaled < 0.0, 0.0, atom + continuous)
    # Below lambda_minus theta is 0 and the continuous mass is 0, so q <= 1
    # gives 0 there and q > 1 gives the atom, as it should.
    cdf = np.clip(cdf, 0.0, 1.0)
    return float(cdf) if cdf.ndim == 0 else cdf


@functools.lru_cache(maxsize=4096)
def _quantile_scalar(p, q):
    """Quantile of the MP law with sigma2 = 1 for one probability `p`."""
    atom = max(0.0, 1.0 - 1.0 / q)
    if p <= atom:
        # Inside the atom (q > 1) the quantile is 0; for q <= 1 and p = 0 it
        # is lambda_minus, which the θ = 0 branch below returns.
        if atom > 0.0:
            return 0.0
    target = p - atom
    total = 1.0 - atom
    if target >= total:
        return (1.0 + math.sqrt(q)) ** 2
    if target <= 0.0:
        return (1.0 - math.sqrt(q)) ** 2
    theta = optimize.brentq(
        lambda angle: float(_continuous_mass_up_to_angle(np.float64(angle), q)) - target,
        0.0,
        math.pi,
        xtol=1e-14,
        rtol=4 * np.finfo(float).eps,
    )
    return 1.0 + q - 2.0 * math.sqrt(q) * math.cos(theta)


def marchenko_pastur_quantile(p, q, sigma2=1.0):
    """Quantile (inverse CDF) of the full MP law; `sigma2 = 1` unless given.

    The smallest `x` with `marchenko_pastur_cdf(x, sigma2, q) >= p`. For
    `q > 1` every `p <= 1 - 1/q` maps to 0 (the atom). Scalars are solved with
    `brentq` and cached, arrays element by element through the same cache.

    Used to calibrate the noise-level initialisation:
    `sigma2_init = empirical_quantile / marchenko_pastur_quantile(p, q)`.

    Example:
    >>> round(marchenko_pastur_quantile(0.5, 0.25), 6)
    0.916004
    >>> marchenko_pastur_quantile(1.0, 0.25)
    2.25
    >>> marchenko_pastur_quantile(0.5, 4.0)   # inside the atom of mass 3/4
    0.0
    """
    _, q = _check_sigma2_q(sigma2, q)
    sigma2 = float(sigma2)
    p = np.asarray(p, dtype=np.float64)
    if not np.all((p >= 0.0) & (p <= 1.0)):  # also rejects NaN
        raise ValueError(f"probabilities must lie in [0, 1], got {p!r}")
    if p.ndim == 0:
        return sigma2 * _quantile_scalar(float(p), q)
    flat = [sigma2 * _quantile_scalar(float(value), q) for value in p.ravel()]
    return np.asarray(flat, dtype=np.float64).reshape(p.shape)
