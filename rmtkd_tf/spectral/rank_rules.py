"""Rules that pick how many leading eigenvectors of a covariance to keep.

Each rule is a small scikit-learn style estimator: constructor parameters are
stored exactly as given and checked when the rule is used (`select`), with a
one-line `rmtkd_tf.errors.RankRuleError`; `get_params(deep=False)` /
`set_params(**params)` read and change them, `clone(rule)` gives an unfitted
copy. `select(eigenvalues, n_samples, noise=None) -> k` returns `k` in `0..d`
and stores the fitted state with a trailing underscore (`rank_`,
`threshold_`, `n_eigenvalues_`, `n_samples_`, and rule-specific extras such as
`noise_`). `to_dict()` gives a JSON-ready report of parameters and fitted state.

`get(identifier, **params)` resolves a rule the way `keras.initializers.get`
does, from a name (`"mp"`, `"energy"`, `"gavish-donoho"`, `"fixed-rank"`,
`"fixed-ratio"`, or the class name), a dict (`{"class_name": ..., "config":
{...}}` as `serialize` writes it, or `{"name": ..., **params}`) or a `RankRule`
instance; `serialize(rule)` is its inverse, for `report.json`, `state.json`
and resume checks. `register` adds a rule class of your own.

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
(There is no `fit` method: `MarchenkoPasturRule` has a `fit` parameter.)

Example:
>>> import numpy as np
>>> eigenvalues = np.array([9.0, 0.5, 4.0, 1.0, 1.2, 0.8, 1.1, 0.9])
>>> rule = EnergyRule(fraction=0.7)
>>> rule.select(eigenvalues, n_samples=1000), rule.rank_
(2, 2)
>>> FixedRatioRule(0.25).select(eigenvalues, n_samples=1000)
2
>>> get("fixed-rank", rank=3).select(eigenvalues, n_samples=1000)
3
>>> serialize(rule)
{'class_name': 'EnergyRule', 'config': {'fraction': 0.7}}
>>> get({"class_name": "EnergyRule", "config": {"fraction": 0.7}})
EnergyRule(fraction=0.7)
>>> EnergyRule(fraction=1.5).select(eigenvalues, n_samples=1000)
Traceback (most recent call last):
...
rmtkd_tf.errors.RankRuleError: EnergyRule: fraction must be in (0, 1], got 1.5
"""

import copy
import math
import inspect

import numpy as np

from rmtkd_tf.arguments import check_bool, check_fraction, check_integer
from rmtkd_tf.errors import RankRuleError

from .marchenko_pastur import marchenko_pastur_edges
from .noise import NoiseFit, estimate_noise_variance, validate_eigenvalues, validate_n_samples


class RankRule:
    """Base class: parameter handling (scikit-learn conventions), serialisation and `to_dict`.

    A subclass sets `name` (its registry name), takes its hyperparameters as
    keyword arguments of `__init__` stored unchanged under the same names, checks
    them in `_checked_params()` (returning them as JSON-ready Python values) and
    implements `_select(descending, eigenvalues, n_samples, noise, params)`.
    """

    #: Registry name, used by `get` and in reports.
    name = None

    @classmethod
    def _get_param_names(cls):
        """Names of the constructor parameters, in order (from the signature, as scikit-learn does)."""
        signature = inspect.signature(cls.__init__)
        return tuple(p.name for p in signature.parameters.values()
                     if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def get_params(self, deep=False):
        """Constructor parameters as a dict, exactly as given (`deep` is accepted for scikit-learn; no nesting)."""
        return {param: getattr(self, param) for param in self._get_param_names()}

    def set_params(self, **params):
        """Set constructor parameters (checked when the rule is next used); returns the rule.

        >>> EnergyRule().set_params(fraction=0.8)
        EnergyRule(fraction=0.8)
        >>> EnergyRule().set_params(tau=0.5)
        Traceback (most recent call last):
        ...
        rmtkd_tf.errors.RankRuleError: EnergyRule has no parameter 'tau'; its parameters: fraction
        """
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise RankRuleError(
                    f"{type(self).__name__} has no parameter {key!r}; its parameters: {', '.join(valid) or 'none'}"
                )
            setattr(self, key, value)
        return self

    def _checked_params(self):
        """The parameters checked and as plain Python values; raises `RankRuleError` (one line) if one is bad."""
        return {}

    def check_params(self):
        """Check the parameters now (`select` does it anyway); returns the rule.

        >>> FixedRankRule(2.5).check_params()
        Traceback (most recent call last):
        ...
        rmtkd_tf.errors.RankRuleError: FixedRankRule: rank must be a positive integer, got 2.5
        """
        self._checked_params()
        return self

    def get_config(self):
        """The checked parameters, JSON-ready (`type(rule).from_config(rule.get_config())` rebuilds the rule)."""
        return self._checked_params()

    @classmethod
    def from_config(cls, config):
        """A rule from `get_config()`'s dict."""
        return cls(**config)

    def __repr__(self):
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def select(self, eigenvalues, n_samples, noise=None):
        """Return the number `k` of leading eigenvectors to keep (0..d) and store the fitted state.

        `noise` is a prior `NoiseFit` of the same layer (or its `to_dict()`); rules other than
        `MarchenkoPasturRule` ignore it.
        """
        params = self._checked_params()
        n_samples = validate_n_samples(n_samples)
        descending = validate_eigenvalues(eigenvalues)
        return self._select(descending, eigenvalues, n_samples, noise, params)

    def _select(self, descending, eigenvalues, n_samples, noise, params):
        raise NotImplementedError

    def _fitted_dict(self):
        """Rule-specific fitted attributes for `to_dict` (JSON-serialisable)."""
        return {}

    def to_dict(self):
        """JSON-serialisable report: rule name, parameters and, once `select` ran, the fitted state."""
        report = {"rule": self.name, "params": self._checked_params()}
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

    def _check(self, check, value, name, **options):
        """Run an `rmtkd_tf.arguments` check, naming the rule in the one-line error."""
        try:
            return check(value, name, **options)
        except ValueError as error:
            raise RankRuleError(f"{type(self).__name__}: {error}") from None


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

    def __init__(self, tau=0.5, fit=True):
        self.tau = tau
        self.fit = fit

    def _checked_params(self):
        return {"tau": self._check(check_fraction, self.tau, "tau", allow_one=False),
                "fit": self._check(check_bool, self.fit, "fit")}

    def _select(self, descending, eigenvalues, n_samples, noise, params):
        if noise is None:
            # The raw input keeps its dtype, which sets the numerical-zero tolerance.
            self.noise_ = estimate_noise_variance(eigenvalues, n_samples, tau=params["tau"], fit=params["fit"])
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

    def __init__(self, fraction=0.95):
        self.fraction = fraction

    def _checked_params(self):
        return {"fraction": self._check(check_fraction, self.fraction, "fraction")}

    def _select(self, descending, eigenvalues, n_samples, noise, params):
        cumulative = np.cumsum(descending)
        if cumulative[-1] <= 0.0:
            raise ValueError("all eigenvalues are zero: the energy fraction is undefined")
        energy = cumulative / cumulative[-1]
        # The slack keeps fraction = 0.3 from missing a cumulative 0.29999999999999993.
        rank = int(np.searchsorted(energy, params["fraction"] - 1e-12, side="left")) + 1
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

    def _select(self, descending, eigenvalues, n_samples, noise, params):
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

    def __init__(self, rank):
        self.rank = rank

    def _checked_params(self):
        return {"rank": self._check(check_integer, self.rank, "rank")}

    def _select(self, descending, eigenvalues, n_samples, noise, params):
        rank = min(params["rank"], descending.size)
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

    def __init__(self, ratio):
        self.ratio = ratio

    def _checked_params(self):
        return {"ratio": self._check(check_fraction, self.ratio, "ratio")}

    def _select(self, descending, eigenvalues, n_samples, noise, params):
        d = descending.size
        # The slack absorbs binary roundoff of ratio * d (0.3 * 10 > 3).
        rank = min(d, max(1, math.ceil(params["ratio"] * d - 1e-9)))
        return self._store(rank, float(descending[rank - 1]), descending, n_samples)


RANK_RULES = {}


def register(rule_class):
    """Class decorator: make a `RankRule` subclass resolvable by `get` from its `name` or class name.

    >>> @register
    ... class KeepTwo(RankRule):
    ...     name = "keep-two"
    ...     def _select(self, descending, eigenvalues, n_samples, noise, params):
    ...         return self._store(min(2, descending.size), None, descending, n_samples)
    >>> get({"class_name": "KeepTwo", "config": {}}).select([3.0, 2.0, 1.0], n_samples=10)
    2
    >>> _ = RANK_RULES.pop("keep-two")
    """
    if not (isinstance(rule_class, type) and issubclass(rule_class, RankRule)):
        raise RankRuleError(f"only RankRule subclasses can be registered, got {rule_class!r}")
    if not isinstance(rule_class.name, str) or not rule_class.name:
        raise RankRuleError(f"{rule_class.__name__} needs a class attribute `name` (a non-empty string)")
    key = _key(rule_class.name)
    for other in RANK_RULES.values():
        if other is not rule_class and _key(other.__name__) == _key(rule_class.__name__):
            raise RankRuleError(f"a rank rule class named {rule_class.__name__} is already registered")
    if RANK_RULES.get(key, rule_class) is not rule_class:
        raise RankRuleError(f"rank rule name {rule_class.name!r} is already taken by {RANK_RULES[key].__name__}")
    RANK_RULES[key] = rule_class
    return rule_class


def _key(name):
    return str(name).strip().lower().replace("_", "-")


for _rule_class in (MarchenkoPasturRule, EnergyRule, GavishDonohoRule, FixedRankRule, FixedRatioRule):
    register(_rule_class)


def _lookup(name):
    if not isinstance(name, str):
        raise RankRuleError(f"a rank rule name is a string, got {name!r}")
    key = _key(name)
    for registered, rule_class in RANK_RULES.items():
        if key in (registered, _key(rule_class.__name__)):
            return rule_class
    raise RankRuleError(f"unknown rank rule {name!r}; valid names: {', '.join(RANK_RULES)}")


def _build(rule_class, params):
    accepted = rule_class._get_param_names()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise RankRuleError(f"rank rule {rule_class.name!r} got unknown parameter(s) {', '.join(unknown)}; "
                            f"accepted: {', '.join(accepted) or 'none'}")
    try:
        return rule_class(**params)
    except TypeError as error:  # a required parameter is missing
        raise RankRuleError(f"rank rule {rule_class.name!r}: {error}") from None


_KERAS_DICT_KEYS = {"class_name", "config", "module", "registered_name"}


def get(identifier, **params):
    """Resolve a rank rule, as `keras.initializers.get` resolves an initializer; its parameters are checked.

    Args:
        identifier: a `RankRule` instance (returned as it is); a name
            (`"mp"`, `"energy"`, `"gavish-donoho"`, `"fixed-rank"`,
            `"fixed-ratio"`, a class name such as `"EnergyRule"`, or a name
            given with `register`; case and `_`/`-` do not matter); a dict
            `{"class_name": NAME, "config": {...}}` (what `serialize` writes)
            or `{"name": NAME, **params}`; or a `RankRule` subclass.
        **params: constructor parameters for a name or a class; for a dict,
            they override its parameters. Not allowed with an instance.

    Raises `rmtkd_tf.errors.RankRuleError` (a `ValueError`, one line) for an
    unknown name (listing the valid ones), an unknown, missing or bad parameter.

    Example:
    >>> get("energy", fraction=0.9)
    EnergyRule(fraction=0.9)
    >>> get({"name": "mp", "tau": 0.4})
    MarchenkoPasturRule(tau=0.4, fit=True)
    >>> get({"class_name": "FixedRankRule", "config": {"rank": 4}}, rank=8)
    FixedRankRule(rank=8)
    >>> get("svd")
    Traceback (most recent call last):
    ...
    rmtkd_tf.errors.RankRuleError: unknown rank rule 'svd'; valid names: mp, energy, gavish-donoho, fixed-rank, fixed-ratio
    >>> get("energy", tau=0.5)
    Traceback (most recent call last):
    ...
    rmtkd_tf.errors.RankRuleError: rank rule 'energy' got unknown parameter(s) tau; accepted: fraction
    """
    if isinstance(identifier, RankRule):
        if params:
            raise RankRuleError(f"parameters {', '.join(sorted(params))} given with the rule instance {identifier!r}; "
                                "set them on the instance (set_params) instead")
        rule = identifier
    elif isinstance(identifier, type) and issubclass(identifier, RankRule):
        rule = _build(identifier, params)
    elif isinstance(identifier, str):
        rule = _build(_lookup(identifier), params)
    elif isinstance(identifier, dict):
        if "class_name" in identifier:
            extra = sorted(set(identifier) - _KERAS_DICT_KEYS)
            if extra:
                raise RankRuleError(f"a rank rule dict with 'class_name' takes its parameters in 'config', "
                                    f"not as {', '.join(extra)}")
            name, config = identifier["class_name"], identifier.get("config") or {}
            if not isinstance(config, dict):
                raise RankRuleError(f"a rank rule dict's 'config' is a dict of parameters, got {config!r}")
        elif "name" in identifier:
            name = identifier["name"]
            config = {key: value for key, value in identifier.items() if key != "name"}
        else:
            raise RankRuleError(f"a rank rule dict needs 'class_name' (and 'config') or 'name', got {identifier!r}")
        rule = _build(_lookup(name), {**config, **params})
    else:
        raise RankRuleError(f"a rank rule is a name, a dict or a RankRule, got {identifier!r}")
    return rule.check_params()


#: The former name of `get`, kept for callers: the same function.
get_rank_rule = get


def serialize(rule):
    """`{"class_name": ..., "config": {...}}` of a rule (checked, JSON-ready); `get` turns it back into the rule.

    >>> serialize(get("mp"))
    {'class_name': 'MarchenkoPasturRule', 'config': {'tau': 0.5, 'fit': True}}
    """
    rule = get(rule)
    if RANK_RULES.get(_key(rule.name)) is not type(rule):
        raise RankRuleError(f"{type(rule).__name__} is not a registered rank rule, so it cannot be written to "
                            "JSON and read back; decorate it with rmtkd_tf.spectral.rank_rules.register")
    return {"class_name": type(rule).__name__, "config": rule.get_config()}


def clone(rule):
    """An unfitted copy of `rule` with the same parameters (scikit-learn's `clone`).

    >>> rule = FixedRankRule(3)
    >>> _ = rule.select([3.0, 2.0, 1.0, 0.5], n_samples=10)
    >>> copy_ = clone(rule)
    >>> copy_, hasattr(copy_, "rank_")
    (FixedRankRule(rank=3), False)
    """
    if not isinstance(rule, RankRule):
        raise RankRuleError(f"clone takes a RankRule, got {rule!r}")
    return type(rule)(**copy.deepcopy(rule.get_params()))
