"""Estimate the noise variance `sigma2` of a covariance spectrum with the MP law.

The model: the eigenvalues of a `d × d` sample covariance from `n` samples are
a Marchenko–Pastur bulk of noise with variance `sigma2` plus a few "spikes"
(signal directions) above its edge `lambda_plus = sigma2 (1 + sqrt(q))²`,
`q = d / n`. `estimate_noise_variance` finds `sigma2` in two steps:

1. Quantile initialisation. The `tau`-quantile of the nonzero eigenvalues,
   divided by the matching quantile of the unit-variance MP law, is a
   consistent estimate of `sigma2` for pure noise and is barely moved by a
   few spikes (they only shift the median by a few ranks).
2. Bulk quantile regression with iterative spike removal. Repeat: the `k`
   eigenvalues above `lambda_plus(sigma2)` plus three Tracy-Widom widths (the
   largest noise eigenvalue's typical fluctuation) are spikes and the other
   `N` form the bulk; `sigma2` is the least-squares slope, through the origin,
   of the sorted bulk eigenvalues against the quantiles `m_i` of the
   unit-variance MP law of aspect ratio `q_bulk = (d - k) / n` at the plotting
   positions `(i + 1/2) / N`:

       sigma2 = sum(lambda_i * m_i) / sum(m_i ** 2)

   Stop when `k` no longer changes (`converged=True`).

Why a regression and not an optimiser: the slope is a closed form, defined
for every spectrum, and uses every bulk eigenvalue. For small `q` the MP law
is a narrow semicircle around `sigma2` of half-width `2 sqrt(q) sigma2`, the
slope is then essentially the mean of the bulk (the efficient estimate,
relative error `sqrt(2 / (n d))`), whereas a distance between CDFs is flat in
`sigma2` once the fitted law misses the data entirely (the previous
Cramér-von Mises fit landed on its search-bracket edge: `sigma2 = 0.48` for
white noise with `d = 256`, `n = 100000`). The regression has no bracket.

Why `q_bulk`: with `k` spike directions removed, the covariance compressed
to the other `d - k` directions is exactly a white Wishart matrix of aspect
ratio `(d - k) / n`, and the bulk eigenvalues interlace with its
eigenvalues. Fitting the bulk against the full-`q` law instead biases
`sigma2` by O(k / d). The reported edge `lambda_plus` still uses the full
`q = d / n`, the classical BBP detection edge.

Convergence and fallback: the spike count is a step function of `sigma2`,
so the iteration either reaches a fixed point (`converged=True`,
`fallback=None`) or revisits a spike count (a cycle, typically between two counts that
straddle one eigenvalue). Then the iterate of the cycle with the largest
`sigma2` (fewest spikes: a direction is noise unless shown otherwise) is
returned with `converged=False` and `fallback="cycle: largest sigma2"`; the
same holds after `MAX_FIT_ITERATIONS` rounds (`fallback="max-iterations:
largest sigma2"`). Every returned value is a bulk regression, never an
unchecked bound. `ks_distance` (Kolmogorov-Smirnov distance between the bulk
and the fitted law) says how well the bulk looks like MP noise.

A spectrum without an MP bulk (measured on a trained CIFAR-10 CNN: smooth,
heavy-tailed conv spectra with `n_eff` of 5,000-40,000) has no such fixed
point short of a tiny bulk: with that many samples the MP bulk is narrow
(half-width `2 sqrt(q) sigma2`) and almost every direction is
distinguishable from isotropic noise, so peeling goes deep into the
spectrum (on the first conv layers down to the minimum bulk of two
eigenvalues). The fit then reports a large `ks_distance` (0.4 to 1
there, against about `1 / sqrt(d)` for noise): the MP rule keeps nearly all
directions of such a layer, which is the right answer to "which directions
are not noise", not to "which directions matter".

Everything is scale-equivariant: multiplying all eigenvalues by `c`
multiplies `sigma2` by `c` and leaves the spike count unchanged.

`n_samples` is the number of independent samples the noise behaves as if it
came from: for correlated samples (positions of one image, tokens of one
text) pass the effective sample size (`LayerStatistics.n_effective`, see
`rmtkd_tf.collection`), not the number of rows.
"""

import dataclasses
import math
import numpy as np

from rmtkd_tf.arguments import check_fraction, check_integer

from .marchenko_pastur import marchenko_pastur_cdf, marchenko_pastur_edges, marchenko_pastur_quantile

# Negative eigenvalues of a covariance are roundoff. Down to this fraction of
# the largest eigenvalue they are clipped to 0; below it the input is not a
# covariance spectrum and we refuse it.
NEGATIVE_EIGENVALUE_RTOL = 1e-4

MAX_FIT_ITERATIONS = 50
# Spikes for the fit: eigenvalues more than this many Tracy-Widom widths above
# lambda_plus (P(TW1 > 3) is about 0.2%), so that the largest noise
# eigenvalue is not taken for a spike, which would shrink q_bulk and bias
# sigma2 low.
TRACY_WIDOM_MARGIN = 3.0
# Resolution of the angle grid that tabulates the MP quantile function.
QUANTILE_GRID_SIZE = 4097


def validate_n_samples(n_samples):
    """Return `n_samples` as an int, or raise ValueError if it is not a positive integer."""
    return check_integer(n_samples, "n_samples")


def validate_eigenvalues(eigenvalues):
    """Return the eigenvalues as a float64 array sorted in descending order.

    Accepts any order. Small negative values (roundoff of a positive
    semi-definite matrix, down to `-1e-4 * max`) are clipped to 0. Raises
    ValueError for an empty or non 1-D input, NaN/inf, or clearly negative
    values.

    Example:
    >>> validate_eigenvalues([0.5, 2.0, -1e-12, 1.0])
    array([2. , 1. , 0.5, 0. ])
    """
    try:
        values = np.asarray(eigenvalues, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"eigenvalues must be a 1-D array of real numbers: {error}") from error
    if values.ndim != 1:
        raise ValueError(f"eigenvalues must be a 1-D array, got shape {values.shape}")
    if values.size == 0:
        raise ValueError("eigenvalues is empty")
    if not np.all(np.isfinite(values)):
        raise ValueError("eigenvalues contain NaN or inf")
    largest = float(np.max(np.abs(values)))
    smallest = float(values.min())
    if smallest < -NEGATIVE_EIGENVALUE_RTOL * largest:
        raise ValueError(
            f"eigenvalues contain {smallest:.3g}, too negative for roundoff (largest |eigenvalue| {largest:.3g}); "
            "expected the spectrum of a positive semi-definite covariance"
        )
    return np.sort(np.clip(values, 0.0, None))[::-1]


@dataclasses.dataclass(frozen=True)
class NoiseFit:
    """Result of `estimate_noise_variance`; `to_dict()` / `NoiseFit.from_dict()` round-trip through JSON.

    Attributes:
        sigma2: estimated noise variance (the fitted value, or the initial one
            when `fit=False`).
        sigma2_init: the quantile initialisation.
        lambda_minus, lambda_plus: MP edges for `sigma2` and `q`.
        q: aspect ratio used, `n_effective / n_samples`.
        q_bulk: aspect ratio of the noise without the spikes,
            `(n_effective - n_spikes) / n_samples`, used in the fit (= q when
            `fit=False`).
        n_samples: number of (effective) samples `n` given.
        n_eigenvalues: number of eigenvalues given, `d`.
        n_effective: dimension the noise lives in: `d`, unless the spectrum is
            rank deficient beyond what `n` explains (dead features), then the
            number of nonzero eigenvalues.
        n_nonzero: eigenvalues that take part in the fit, `min(n_effective, n)`.
        n_bulk: nonzero eigenvalues `<= lambda_plus` (the rest are spikes).
            The fit itself also keeps eigenvalues up to three Tracy-Widom
            widths above `lambda_plus` in the bulk.
        tau: quantile level of the initialisation.
        method: "quantile" (`fit=False`) or "quantile+bulk-regression".
        converged: the spike count of the fit reached a fixed point (always
            True for "quantile").
        n_iterations: spike-removal rounds done.
        fallback: None when converged, else which fallback gave `sigma2`
            ("cycle: largest sigma2" or "max-iterations: largest sigma2").
        ks_distance: Kolmogorov-Smirnov distance between the nonzero
            eigenvalues `<= lambda_plus` and the MP law fitted to them (a
            goodness-of-fit diagnostic; about `1 / sqrt(d)` for pure noise).
        tracy_widom_scale: typical fluctuation of the largest noise eigenvalue
            around `lambda_plus`, `sigma2 (sqrt(n) + sqrt(d)) / n *
            (1/sqrt(n) + 1/sqrt(d)) ** (1/3)`.
    """

    sigma2: float
    sigma2_init: float
    lambda_minus: float
    lambda_plus: float
    q: float
    q_bulk: float
    n_samples: int
    n_eigenvalues: int
    n_effective: int
    n_nonzero: int
    n_bulk: int
    tau: float
    method: str
    converged: bool
    n_iterations: int
    fallback: str | None = None
    ks_distance: float | None = None
    tracy_widom_scale: float | None = None

    def to_dict(self):
        """Plain JSON-serialisable dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        """Rebuild a `NoiseFit` from `to_dict()` output (unknown keys are ignored).

        Example:
        >>> import numpy as np
        >>> fit = estimate_noise_variance(np.linspace(0.5, 1.5, 50), 500)
        >>> NoiseFit.from_dict(fit.to_dict()) == fit
        True
        """
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"a NoiseFit needs a dict, got {type(data).__name__}")
        names = {field.name for field in dataclasses.fields(cls)}
        missing = sorted(field.name for field in dataclasses.fields(cls)
                         if field.default is dataclasses.MISSING and field.name not in data)
        if missing:
            raise ValueError(f"NoiseFit dict lacks {', '.join(missing)}")
        return cls(**{key: value for key, value in data.items() if key in names})


def tracy_widom_scale(sigma2, n_dimensions, n_samples):
    """Typical fluctuation of the largest eigenvalue of white noise around `lambda_plus`.

    `sigma2 (sqrt(n) + sqrt(d)) / n * (1/sqrt(n) + 1/sqrt(d)) ** (1/3)`
    (Johnstone 2001); for `n >> d` it is about `sigma2 * sqrt(q) * d ** (-2/3)`.

    Example:
    >>> round(tracy_widom_scale(1.0, 100, 10000), 5)
    0.00527
    """
    root_n, root_d = math.sqrt(n_samples), math.sqrt(n_dimensions)
    return sigma2 * (root_n + root_d) / n_samples * (1.0 / root_n + 1.0 / root_d) ** (1.0 / 3.0)


def _zero_tolerance(eigenvalues, n_samples):
    """Eigenvalues at or below this are numerically zero (numpy matrix_rank's rule)."""
    array = np.asarray(eigenvalues)
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float64
    return float(np.max(np.abs(array))) * max(array.size, n_samples) * float(np.finfo(dtype).eps)


def _normalised_bulk_cdf(x, sigma2, q):
    """CDF of the continuous MP part, renormalised to 1 (the nonzero eigenvalues' law)."""
    atom = max(0.0, 1.0 - 1.0 / q)
    return (marchenko_pastur_cdf(x, sigma2, q) - atom) / (1.0 - atom)


def _normalised_bulk_quantiles(p, q):
    """Quantiles at probabilities `p` of the law of the nonzero MP eigenvalues (sigma2 = 1), vectorised.

    Tabulates the continuous CDF on a grid of the angle θ of
    `x = 1 + q - 2 sqrt(q) cos θ` (in which the density is smooth) and
    interpolates; the error is far below the sampling noise of any spectrum.
    """
    theta = np.linspace(0.0, math.pi, QUANTILE_GRID_SIZE)
    cdf = _normalised_bulk_cdf(1.0 + q - 2.0 * math.sqrt(q) * np.cos(theta), 1.0, q)
    cdf[0], cdf[-1] = 0.0, 1.0
    angles = np.interp(p, np.maximum.accumulate(cdf), theta)
    return 1.0 + q - 2.0 * math.sqrt(q) * np.cos(angles)


def _bulk_regression(bulk, q_bulk):
    """Least-squares slope of the sorted `bulk` on the unit MP quantiles (see module docstring)."""
    positions = (np.arange(bulk.size) + 0.5) / bulk.size
    model = _normalised_bulk_quantiles(positions, q_bulk)
    return float(np.dot(bulk, model) / np.dot(model, model))


def _ks_distance(bulk, sigma2, q):
    """Kolmogorov-Smirnov distance between the sorted `bulk` and the normalised MP law."""
    if bulk.size == 0:
        return 0.0
    model = _normalised_bulk_cdf(bulk, sigma2, q)
    upper = np.arange(1, bulk.size + 1) / bulk.size
    return float(max(np.max(upper - model), np.max(model - upper + 1.0 / bulk.size)))


def estimate_noise_variance(eigenvalues, n_samples, tau=0.5, fit=True):
    """Estimate the MP noise variance of a covariance spectrum.

    Args:
        eigenvalues: the `d` eigenvalues of a sample covariance `Xᵀ X / n`,
            any order; roundoff negatives are clipped to 0.
        n_samples: `n`, the number of (effective) samples behind the
            covariance.
        tau: quantile level in (0, 1) of the initialisation (0.5 = median).
        fit: refine the initial value by the bulk quantile regression with
            iterative spike removal (module docstring).

    Returns:
        A `NoiseFit`.

    For `q = d / n > 1` the smallest `d - n` eigenvalues are the MP atom at
    zero and are left out; the `tau`-quantile of the `n` others is matched to
    the MP quantile at `1 - 1/q + tau/q`, so the initial value stays
    consistent for pure noise. Zero eigenvalues beyond that (dead features)
    shrink the effective dimension instead of dragging the quantile to 0.

    Raises ValueError on NaN/inf, a single eigenvalue, fewer than two nonzero
    eigenvalues (e.g. all zero), a bad `n_samples` or `tau`.

    Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(scale=np.sqrt(2.0), size=(2000, 200))   # sigma2 = 2, q = 0.1
    >>> fit = estimate_noise_variance(np.linalg.eigvalsh(x.T @ x / 2000), 2000)
    >>> round(fit.sigma2, 1), fit.q, fit.converged, fit.fallback
    (2.0, 0.1, True, None)
    """
    n_samples = validate_n_samples(n_samples)
    tau = check_fraction(tau, "tau", allow_one=False)
    descending = validate_eigenvalues(eigenvalues)
    n_eigenvalues = descending.size
    if n_eigenvalues < 2:
        raise ValueError("need at least 2 eigenvalues to estimate an MP noise level (got d = 1)")
    if descending[0] <= 0.0:
        raise ValueError("all eigenvalues are zero: no noise level to estimate")

    # At most min(d, n) eigenvalues can be nonzero; the others are the atom.
    candidates = descending[: min(n_eigenvalues, n_samples)]
    zero_tolerance = _zero_tolerance(eigenvalues, n_samples)
    nonzero = np.sort(candidates[candidates > zero_tolerance])
    n_nonzero = nonzero.size
    if n_nonzero < 2:
        raise ValueError(
            f"only {n_nonzero} nonzero eigenvalue(s) out of {n_eigenvalues}: cannot fit an MP bulk"
        )
    # Full rank (given n): the noise spans all d dimensions. Lower rank: the
    # extra zero directions are dead features and the noise lives in n_nonzero.
    n_effective = n_eigenvalues if n_nonzero == candidates.size else n_nonzero
    q = n_effective / n_samples

    atom = max(0.0, 1.0 - 1.0 / q)
    tau_full_law = atom + tau * (1.0 - atom)
    sigma2_init = float(np.quantile(nonzero, tau)) / marchenko_pastur_quantile(tau_full_law, q)

    def n_spikes(sigma2):
        edge = marchenko_pastur_edges(sigma2, q)[1] + TRACY_WIDOM_MARGIN * tracy_widom_scale(
            sigma2, n_effective, n_samples)
        # At least two eigenvalues stay in the bulk so that it can be fitted.
        return min(n_nonzero - 2, n_nonzero - int(np.searchsorted(nonzero, edge, side="right")))

    sigma2, q_bulk, converged, fallback, n_iterations, method = sigma2_init, q, True, None, 0, "quantile"
    if fit:
        method = "quantile+bulk-regression"
        fits = {}  # spike count -> (sigma2, q_bulk) fitted with it
        order = []
        spikes = n_spikes(sigma2_init)
        converged = False
        for n_iterations in range(1, MAX_FIT_ITERATIONS + 1):
            q_bulk = (n_effective - spikes) / n_samples
            fits[spikes] = (_bulk_regression(nonzero[: n_nonzero - spikes], q_bulk), q_bulk)
            order.append(spikes)
            next_spikes = n_spikes(fits[spikes][0])
            if next_spikes == spikes:
                converged = True
                break
            if next_spikes in fits:
                fallback = "cycle: largest sigma2"
                cycle = order[order.index(next_spikes):]
                break
            spikes = next_spikes
        else:
            fallback = "max-iterations: largest sigma2"
            cycle = order
        if converged:
            sigma2, q_bulk = fits[spikes]
        else:
            sigma2, q_bulk = max((fits[count] for count in cycle), key=lambda pair: pair[0])

    lambda_minus, lambda_plus = marchenko_pastur_edges(sigma2, q)
    n_bulk = int(np.searchsorted(nonzero, lambda_plus, side="right"))
    return NoiseFit(
        sigma2=float(sigma2),
        sigma2_init=float(sigma2_init),
        lambda_minus=float(lambda_minus),
        lambda_plus=float(lambda_plus),
        q=float(q),
        q_bulk=float(q_bulk),
        n_samples=n_samples,
        n_eigenvalues=int(n_eigenvalues),
        n_effective=int(n_effective),
        n_nonzero=int(n_nonzero),
        n_bulk=n_bulk,
        tau=tau,
        method=method,
        converged=bool(converged),
        n_iterations=int(n_iterations),
        fallback=fallback,
        ks_distance=_ks_distance(nonzero[:n_bulk], sigma2, q_bulk),
        tracy_widom_scale=float(tracy_widom_scale(sigma2, n_effective, n_samples)),
    )
