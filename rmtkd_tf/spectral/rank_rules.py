"""Rules that pick how many leading eigenvectors of a covariance to keep.

Each rule is a small estimator: explicit constructor parameters, and
`select(eigenvalues, n_samples, noise=None) -> k` which stores its fitted
state with a trailing underscore (`rank_`, `threshold_`, and rule-specific
extras such as `noise_`) and returns `k` in `0..d`. `to_dict()` gives a
JSON-ready report. `get_rank_rule(name, **params)` builds a rule from its CLI
name.

Eigenvalues are those of a `d × d` sample covariance `Xᵀ X / n`, in any order;
roundoff negatives are clipped to 0. `n_samples` is the number of samples the
noise behaves as if it came from: for correlated samples (the positions of one
image, the tokens of one text) pass the effective sample size
(`LayerStatistics.n_effective`), not the number of rows.

`noise` is a previous `NoiseFit` of the same layer (or its `to_dict()`), as
in scikit-learn where data-dependent inputs go to the fitting call and
constructor parameters stay hyperparameters. `MarchenkoPasturRule` then keeps
that fit's `sigma2` and `q` instead of re-fitting them, so re-analysing the
subspace a layer kept (the bottleneck of a factorized layer, whose spectrum is
the kept spikes only) keeps its rank instead of re-fitting a "bulk" to the
signal. The other rules accept and ignore it, so callers pass it uniformly.

Example:
>>> import numpy as np
>>> eigenvalues = np.array([9.0, 0.5, 4.0, 1.0, 1.2, 0.8, 1.1, 0.9])
>>> EnergyRule(fraction=0.7).select(eigenvalues, n_samples=1000)
2
>>> FixedRatioRule(0.25).select(eigenvalues, n_samples=1000)
2
>>> get_rank_rule("fixed-rank", rank=3).select(eigenvalues, n_samples=1000)
3
"""

import math
import numbers

import numpy as np

from .marchenko_pastur import marchenko_pastur_edges
from .noise import NoiseFit, estimate_noise_variance, validate_eigenvalues, validate_n_samples


class RankRule:
    """Base class: parameter handling, fitted-state checks and `to_dict`."""

    #: CLI name, used by `get_rank_rule` and in reports.
    name = None
    #: Names of the constructor parameters, in order.
    param_names = ()

    def get_params(self):
        """Constructor parameters as a dict."""
        return {param: getattr(self, param) for param in self.param_names}

    def __repr__(self):
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def select(self, eigenvalues, n_samples, noise=None):
        """Return the number `k` of leading eigenvectors to keep (0..d); `noise` is a prior `NoiseFit`."""
        raise NotImplementedError

    def _fitted_dict(self):
        """Rule-specific fitted attributes for `to_dict` (JSON-serialisable)."""
        return {}

    def to_dict(self):
        """JSON-serialisable report: rule name, parameters and, once `select` ran, the fitted state."""
        report = {"rule": self.name, "params": self.get_params()}
        if hasattr(self, "rank_"):
            report.update(
                rank=int(self.rank_),
                threshold=None if self.threshold_ is None else float(self.threshold_),
                n_eigenvalues=int(self.n_eigenvalues_),
                n_samples=int(self.n_samples_),
            )
            report.update(self._fitted_dict())
        return report

    def _store(self, rank, threshold, descending, n_samples):
        self.rank_ = int(rank)
        self.threshold_ = threshold
        self.n_eigenvalues_ = int(descending.size)
        self.n_samples_ = int(n_samples)
        return self.rank_


def _check_fraction(value, name, allow_one=True):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    if not (0.0 < value < 1.0 or (allow_one and value == 1.0)):
        interval = "(0, 1]" if allow_one else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


class MarchenkoPasturRule(RankRule):
    """Keep the eigenvalues above the MP noise edge `lambda_plus` (the BBP spikes).

    The noise variance is estimated from the spectrum itself with
    `estimate_noise_variance(eigenvalues, n_samples, tau, fit)`, unless
    `select` is given the `noise` of an earlier analysis of the same layer:
    then its `sigma2` and `q` (hence its `lambda_plus`) are re-used as they
    are, a fixed point under re-analysis of the kept subspace.

    Fitted attributes: `rank_`, `threshold_` (= `lambda_plus`), `noise_`
    (the `NoiseFit` used), `noise_source_` ("fitted" or "prior").

    On pure noise the largest eigenvalue exceeds `lambda_plus` now and then
    (Tracy-Widom fluctuation of order `n**(-2/3)`), so expect an occasional
    spurious extra rank near the edge (the property tests bound it by
    `max(1, 2% of d)`).

    Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> n, d = 2000, 100
    >>> x = rng.normal(size=(n, d))
    >>> x[:, :3] *= np.array([4.0, 3.0, 2.5])   # three strong directions
    >>> eigenvalues = np.linalg.eigvalsh(x.T @ x / n)
    >>> rule = MarchenkoPasturRule()
    >>> rule.select(eigenvalues, n)
    3
    >>> round(rule.noise_.sigma2, 1), rule.noise_source_
    (1.0, 'fitted')
    >>> kept = np.sort(eigenvalues)[::-1][:3]     # re-analysing the kept subspace
    >>> MarchenkoPasturRule().select(kept, n, noise=rule.noise_.to_dict())
    3
    """

    name = "mp"
    param_names = ("tau", "fit")

    def __init__(self, tau=0.5, fit=True):
        self.tau = _check_fraction(tau, "tau", allow_one=False)
        if not isinstance(fit, (bool, np.bool_)):
            raise ValueError(f"fit must be True or False, got {fit!r}")
        self.fit = bool(fit)

    def select(self, eigenvalues, n_samples, noise=None):
        n_samples = validate_n_samples(n_samples)
        descending = validate_eigenvalues(eigenvalues)
        if noise is None:
            # The raw input keeps its dtype, which sets the numerical-zero tolerance.
            self.noise_ = estimate_noise_variance(eigenvalues, n_samples, tau=self.tau, fit=self.fit)
            self.noise_source_ = "fitted"
        else:
            self.noise_ = NoiseFit.from_dict(noise)
            self.noise_source_ = "prior"
        # Recomputed from sigma2 and q, which also checks a prior read from JSON.
        threshold = marchenko_pastur_edges(self.noise_.sigma2, self.noise_.q)[1]
        return self._store(np.count_nonzero(descending > threshold), threshold, descending, n_samples)

    def _fitted_dict(self):
        return {"noise": self.noise_.to_dict(), "noise_source": self.noise_source_}


class EnergyRule(RankRule):
    """Smallest `k` whose leading eigenvalues hold at least `fraction` of the total.

    Fitted attributes: `rank_`, `threshold_` (the k-th eigenvalue),
    `energy_` (cumulative energy fraction kept).

    Example:
    >>> EnergyRule(0.9).select([5.0, 3.0, 1.0, 1.0], n_samples=50)
    3
    >>> EnergyRule(0.8).select([5.0, 3.0, 1.0, 1.0], n_samples=50)
    2
    """

    name = "energy"
    param_names = ("fraction",)

    def __init__(self, fraction=0.95):
        self.fraction = _check_fraction(fraction, "fraction")

    def select(self, eigenvalues, n_samples, noise=None):
        n_samples = validate_n_samples(n_samples)
        descending = validate_eigenvalues(eigenvalues)
        cumulative = np.cumsum(descending)
        if cumulative[-1] <= 0.0:
            raise ValueError("all eigenvalues are zero: the energy fraction is undefined")
        energy = cumulative / cumulative[-1]
        # The slack keeps fraction = 0.3 from missing a cumulative 0.29999999999999993.
        rank = int(np.searchsorted(energy, self.fraction - 1e-12, side="left")) + 1
        rank = min(rank, descending.size)
        self.energy_ = float(energy[rank - 1])
        return self._store(rank, float(descending[rank - 1]), descending, n_samples)

    def _fitted_dict(self):
        return {"energy": self.energy_}


def gavish_donoho_omega(beta):
    """Gavish & Donoho (2014) approximation of the optimal threshold coefficient for unknown noise.

    `omega(beta) ≈ 0.56 β³ − 0.95 β² + 1.82 β + 1.43` for aspect ratio
    `beta = min(d, n) / max(d, n)` in (0, 1]; singular values above
    `omega(beta) * median singular value` are kept.

    Example:
    >>> round(gavish_donoho_omega(1.0), 2)
    2.86
    """
    return 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43


class GavishDonohoRule(RankRule):
    """Optimal hard threshold for unknown noise (Gavish & Donoho 2014), on covariance eigenvalues.

    The data matrix `X` (n × d) has singular values `s_i = sqrt(n * eig_i)`
    for its `min(d, n)` largest eigenvalues. With `beta = min(d, n) / max(d, n)`
    the rule keeps singular values above `omega(beta) * median(s)`, that is,
    eigenvalues above `threshold_ = (omega(beta) * median(s))**2 / n`.

    Fitted attributes: `rank_`, `threshold_` (eigenvalue units),
    `singular_value_threshold_`, `beta_`, `omega_`.

    Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> n, d = 1000, 200
    >>> signal = rng.normal(size=(n, 2)) @ rng.normal(size=(2, d))
    >>> x = signal + rng.normal(size=(n, d))
    >>> GavishDonohoRule().select(np.linalg.eigvalsh(x.T @ x / n), n)
    2
    """

    name = "gavish-donoho"
    param_names = ()

    def select(self, eigenvalues, n_samples, noise=None):
        n_samples = validate_n_samples(n_samples)
        descending = validate_eigenvalues(eigenvalues)
        if descending[0] <= 0.0:
            raise ValueError("all eigenvalues are zero: the Gavish-Donoho threshold is undefined")
        d = descending.size
        # Only min(d, n) singular values exist; the other eigenvalues are the zero atom.
        singular_values = np.sqrt(n_samples * descending[: min(d, n_samples)])
        self.beta_ = min(d, n_samples) / max(d, n_samples)
        self.omega_ = float(gavish_donoho_omega(self.beta_))
        self.singular_value_threshold_ = float(self.omega_ * np.median(singular_values))
        threshold = self.singular_value_threshold_**2 / n_samples
        return self._store(np.count_nonzero(singular_values > self.singular_value_threshold_), threshold,
                           descending, n_samples)

    def _fitted_dict(self):
        return {
            "beta": float(self.beta_),
            "omega": self.omega_,
            "singular_value_threshold": self.singular_value_threshold_,
        }


class FixedRankRule(RankRule):
    """Keep a fixed number of eigenvectors, `min(rank, d)`.

    A layer narrower than `rank` keeps all its `d` directions (no compression
    there) rather than failing, so one rank can be applied to a whole model.

    Example:
    >>> FixedRankRule(3).select([4.0, 3.0, 2.0, 1.0, 0.5], n_samples=10)
    3
    >>> FixedRankRule(8).select([4.0, 3.0], n_samples=10)
    2
    """

    name = "fixed-rank"
    param_names = ("rank",)

    def __init__(self, rank):
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        self.rank = int(rank)

    def select(self, eigenvalues, n_samples, noise=None):
        n_samples = validate_n_samples(n_samples)
        descending = validate_eigenvalues(eigenvalues)
        rank = min(self.rank, descending.size)
        return self._store(rank, float(descending[rank - 1]), descending, n_samples)


class FixedRatioRule(RankRule):
    """Keep `ceil(ratio * d)` eigenvectors, at least 1.

    Example:
    >>> FixedRatioRule(0.3).select(np.ones(10), n_samples=100)   # not 4 from 0.3 * 10 = 3.0000000000000004
    3
    >>> FixedRatioRule(0.01).select(np.ones(10), n_samples=100)
    1
    """

    name = "fixed-ratio"
    param_names = ("ratio",)

    def __init__(self, ratio):
        self.ratio = _check_fraction(ratio, "ratio")

    def select(self, eigenvalues, n_samples, noise=None):
        n_samples = validate_n_samples(n_samples)
        descending = validate_eigenvalues(eigenvalues)
        d = descending.size
        # The slack absorbs binary roundoff of ratio * d (0.3 * 10 > 3).
        rank = min(d, max(1, math.ceil(self.ratio * d - 1e-9)))
        return self._store(rank, float(descending[rank - 1]), descending, n_samples)


RANK_RULES = {
    rule.name: rule
    for rule in (MarchenkoPasturRule, EnergyRule, GavishDonohoRule, FixedRankRule, FixedRatioRule)
}


def get_rank_rule(name, **params):
    """Build a rank rule from its CLI name: "mp", "energy", "gavish-donoho", "fixed-rank", "fixed-ratio".

    Underscores and case are tolerated ("Gavish_Donoho"). Raises ValueError
    for an unknown name (listing the valid ones) or unknown parameters.

    Example:
    >>> get_rank_rule("energy", fraction=0.9)
    EnergyRule(fraction=0.9)
    >>> get_rank_rule("svd")
    Traceback (most recent call last):
    ...
    ValueError: unknown rank rule 'svd'; valid names: mp, energy, gavish-donoho, fixed-rank, fixed-ratio
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in RANK_RULES:
        raise ValueError(f"unknown rank rule {name!r}; valid names: {', '.join(RANK_RULES)}")
    rule_class = RANK_RULES[key]
    unknown = sorted(set(params) - set(rule_class.param_names))
    if unknown:
        accepted = ", ".join(rule_class.param_names) or "none"
        raise ValueError(f"rank rule {key!r} got unknown parameter(s) {', '.join(unknown)}; accepted: {accepted}")
    try:
        return rule_class(**params)
    except TypeError as error:  # a required parameter is missing
        raise ValueError(f"rank rule {key!r}: {error}") from error
