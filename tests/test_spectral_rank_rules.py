"""Tests of the rank-selection rules."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmtkd_tf.spectral import (
    RANK_RULES,
    RankRule,
    EnergyRule,
    FixedRankRule,
    FixedRatioRule,
    GavishDonohoRule,
    MarchenkoPasturRule,
    NoiseFit,
    gavish_donoho_omega,
    get_rank_rule,
)
from rmtkd_tf.errors import RankRuleError
from rmtkd_tf.spectral.rank_rules import clone, get, register, serialize

from spectral_helpers import spiked_spectrum


def noise_spectrum(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return np.linalg.eigvalsh(x.T @ x / n)


# ---------------------------------------------------------------- MP rule


@pytest.mark.parametrize("q", [0.05, 0.2, 0.5, 1.0, 2.0])
def test_mp_rule_finds_almost_nothing_in_pure_noise(q):
    d = 200
    n = int(round(d / q))
    rule = MarchenkoPasturRule()
    assert rule.select(noise_spectrum(n, d, seed=11), n) <= 2
    assert rule.threshold_ == rule.noise_.lambda_plus
    assert isinstance(rule.noise_, NoiseFit)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "n, d, strong, weak",
    [
        # q = 0.25, BBP threshold sqrt(q) = 0.5
        (800, 200, [3.0, 5.0, 10.0], [0.1]),
        # q = 2 (d > n), threshold 1.41
        (100, 200, [8.0, 15.0, 30.0], [0.3]),
        # q = 0.05, threshold 0.22
        (2000, 100, [1.0, 2.0, 4.0, 8.0], [0.03]),
    ],
)
def test_mp_rule_recovers_spikes_above_bbp_and_not_below(n, d, strong, weak, seed):
    bbp = math.sqrt(d / n)
    assert min(strong) > 2 * bbp and max(weak) < bbp / 4
    eigenvalues = spiked_spectrum(n, d, strong + weak, seed=seed)
    rule = MarchenkoPasturRule()
    assert rule.select(eigenvalues, n) == len(strong)
    assert rule.noise_.sigma2 == pytest.approx(1.0, rel=0.05)


SPIKED = spiked_spectrum(800, 200, [3.0, 6.0, 12.0], seed=7)


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(min_value=1e-6, max_value=1e6))
def test_rules_are_scale_invariant(scale):
    for name, params in [("mp", {}), ("gavish-donoho", {}), ("energy", {"fraction": 0.5})]:
        reference, scaled = get_rank_rule(name, **params), get_rank_rule(name, **params)
        assert scaled.select(SPIKED * scale, 800) == reference.select(SPIKED, 800)
        assert scaled.threshold_ == pytest.approx(scale * reference.threshold_, rel=1e-7)


def test_mp_rule_unsorted_and_roundoff_negatives():
    eigenvalues, n = spiked_spectrum(100, 200, [8.0, 15.0, 30.0], seed=3), 100
    assert eigenvalues.min() < 0  # eigvalsh roundoff on the zero atom: the case we must accept
    shuffled = np.random.default_rng(0).permutation(eigenvalues)
    assert MarchenkoPasturRule().select(shuffled, n) == MarchenkoPasturRule().select(np.clip(eigenvalues, 0, None), n)


# ---------------------------------------------------------- energy rule


@pytest.mark.parametrize(
    "fraction, expected",
    [(0.5, 1), (0.8, 2), (0.81, 3), (0.9, 3), (0.91, 4), (1.0, 4)],
)
def test_energy_rule_known_cases(fraction, expected):
    # Energies 5, 3, 1, 1 of 10: cumulative 0.5, 0.8, 0.9, 1.0 (given unsorted).
    rule = EnergyRule(fraction)
    assert rule.select([1.0, 5.0, 1.0, 3.0], n_samples=20) == expected
    assert rule.energy_ >= fraction - 1e-12


def test_energy_rule_with_zero_eigenvalues_and_roundoff():
    assert EnergyRule(1.0).select([4.0, 0.0, -1e-14, 0.0], n_samples=3) == 1
    # 0.7 of a total 10 is reached at 7 by 0.1 steps that do not add up exactly in binary.
    assert EnergyRule(0.7).select(np.full(10, 0.1), n_samples=3) == 7


# -------------------------------------------------------- Gavish-Donoho


def test_gavish_donoho_omega_polynomial():
    assert gavish_donoho_omega(1.0) == pytest.approx(2.86)
    assert gavish_donoho_omega(0.5) == pytest.approx(0.56 / 8 - 0.95 / 4 + 0.91 + 1.43)


def test_gavish_donoho_threshold_by_hand():
    eigenvalues = np.array([10.0, 6.0, 1.0, 0.9, 0.8, 0.7])
    n = 12  # d = 6: beta = 0.5
    rule = GavishDonohoRule()
    rank = rule.select(eigenvalues[::-1], n)
    singular_values = np.sqrt(n * eigenvalues)
    tau = gavish_donoho_omega(0.5) * np.median(singular_values)
    assert rule.beta_ == 0.5
    assert rule.singular_value_threshold_ == pytest.approx(tau)
    assert rule.threshold_ == pytest.approx(tau**2 / n)
    assert rank == np.count_nonzero(singular_values > tau) == 2


def test_gavish_donoho_uses_only_min_d_n_singular_values():
    # d = 200 > n = 100: the 100 zero eigenvalues are not singular values and
    # must not drag the median to 0 (which would keep everything).
    eigenvalues = noise_spectrum(100, 200, seed=5)
    rule = GavishDonohoRule()
    assert rule.select(eigenvalues, 100) == 0
    assert rule.beta_ == 0.5
    assert rule.threshold_ > eigenvalues.max()


def test_gavish_donoho_recovers_a_strong_low_rank_signal():
    rng = np.random.default_rng(1)
    n, d, rank = 1000, 200, 4
    signal = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))
    x = signal + rng.normal(size=(n, d))
    assert GavishDonohoRule().select(np.linalg.eigvalsh(x.T @ x / n), n) == rank


# ---------------------------------------------------------- fixed rules


def test_fixed_rank_rule():
    rule = FixedRankRule(3)
    assert rule.select([0.5, 4.0, 3.0, 2.0, 1.0], n_samples=10) == 3
    assert rule.threshold_ == 2.0
    assert FixedRankRule(8).select([4.0, 3.0], n_samples=10) == 2  # capped at d


@pytest.mark.parametrize(
    "ratio, d, expected",
    [(0.3, 10, 3), (0.25, 10, 3), (0.5, 7, 4), (0.01, 10, 1), (1.0, 10, 10), (0.1, 30, 3), (0.7, 10, 7)],
)
def test_fixed_ratio_rule(ratio, d, expected):
    assert FixedRatioRule(ratio).select(np.arange(1.0, d + 1.0), n_samples=5) == expected


# ------------------------------------------------------- common behaviour


ALL_RULES = [
    MarchenkoPasturRule(),
    EnergyRule(0.9),
    GavishDonohoRule(),
    FixedRankRule(2),
    FixedRatioRule(0.5),
]


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda rule: rule.name)
def test_rules_return_python_int_in_range_and_json_report(rule):
    assert json.loads(json.dumps(rule.to_dict())) == {"rule": rule.name, "params": rule.get_params()}
    rank = rule.select(SPIKED, 800)
    assert type(rank) is int and 0 <= rank <= SPIKED.size
    assert rule.rank_ == rank
    report = json.loads(json.dumps(rule.to_dict()))
    assert report["rank"] == rank and report["rule"] == rule.name
    assert report["n_eigenvalues"] == 200 and report["n_samples"] == 800
    if rule.name == "mp":
        assert report["noise"]["sigma2"] == rule.noise_.sigma2


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda rule: rule.name)
@pytest.mark.parametrize(
    "eigenvalues, n_samples",
    [([1.0, float("nan")], 10), ([], 10), ([1.0, -3.0], 10), (np.ones((2, 2)), 10), ([1.0, 2.0], 0), ([1.0, 2.0], 2.0)],
)
def test_rules_reject_bad_input(rule, eigenvalues, n_samples):
    with pytest.raises(ValueError):
        rule.select(eigenvalues, n_samples)


@pytest.mark.parametrize("name", ["mp", "energy", "gavish-donoho"])
def test_value_based_rules_reject_all_zero_spectrum(name):
    with pytest.raises(ValueError, match="zero"):
        get_rank_rule(name).select(np.zeros(5), 10)


BAD_PARAMETERS = [
    (EnergyRule, {"fraction": 0.0}, "fraction must be in (0, 1], got 0.0"),
    (EnergyRule, {"fraction": 1.5}, "fraction must be in (0, 1], got 1.5"),
    (EnergyRule, {"fraction": float("nan")}, "fraction must be a number in (0, 1], got nan"),
    (EnergyRule, {"fraction": "0.9"}, "fraction must be a number in (0, 1], got '0.9'"),
    (FixedRankRule, {"rank": 0}, "rank must be a positive integer, got 0"),
    (FixedRankRule, {"rank": 2.5}, "rank must be a positive integer, got 2.5"),
    (FixedRankRule, {"rank": True}, "rank must be a positive integer, got True"),
    (FixedRatioRule, {"ratio": 0.0}, "ratio must be in (0, 1], got 0.0"),
    (FixedRatioRule, {"ratio": 2}, "ratio must be in (0, 1], got 2"),
    (MarchenkoPasturRule, {"tau": 1.0}, "tau must be in (0, 1), got 1.0"),
    (MarchenkoPasturRule, {"fit": "yes"}, "fit must be True or False, got 'yes'"),
]


@pytest.mark.parametrize("rule_class, params, message", BAD_PARAMETERS)
def test_bad_parameters_are_stored_as_given_and_rejected_at_use(rule_class, params, message):
    rule = rule_class(**params)  # scikit-learn: the constructor only stores
    assert all(rule.get_params()[key] is value for key, value in params.items())
    expected = f"{rule_class.__name__}: {message}"
    for use in (lambda: rule.select(SPIKED, 800), rule.check_params, rule.get_config, lambda: get(rule),
                lambda: get(rule_class.name, **params)):
        with pytest.raises(RankRuleError) as info:
            use()
        assert str(info.value) == expected  # one line, naming the rule and the parameter
    assert not hasattr(rule, "rank_")


def test_factory_builds_every_cli_name():
    assert list(RANK_RULES) == ["mp", "energy", "gavish-donoho", "fixed-rank", "fixed-ratio"]
    assert isinstance(get_rank_rule("mp", tau=0.4, fit=False), MarchenkoPasturRule)
    assert get_rank_rule("energy", fraction=0.8).fraction == 0.8
    assert isinstance(get_rank_rule("Gavish_Donoho"), GavishDonohoRule)
    assert get_rank_rule("fixed-rank", rank=4).rank == 4
    assert get_rank_rule("fixed-ratio", ratio=0.2).ratio == 0.2


def test_factory_errors_are_clear():
    with pytest.raises(ValueError, match="valid names: mp, energy, gavish-donoho, fixed-rank, fixed-ratio"):
        get_rank_rule("svd")
    with pytest.raises(ValueError, match="unknown parameter.*fractio"):
        get_rank_rule("energy", fractio=0.9)
    with pytest.raises(ValueError, match="fixed-rank"):
        get_rank_rule("fixed-rank")  # rank is required


# ------------------------------------------- scikit-learn conventions, get / serialize

VALID_PARAMS = {
    MarchenkoPasturRule: st.fixed_dictionaries(
        {}, optional={"tau": st.floats(0.0, 1.0, exclude_min=True, exclude_max=True), "fit": st.booleans()}
    ),
    EnergyRule: st.fixed_dictionaries({}, optional={"fraction": st.floats(0.0, 1.0, exclude_min=True)}),
    GavishDonohoRule: st.just({}),
    FixedRankRule: st.fixed_dictionaries({"rank": st.integers(1, 10**6)}),
    FixedRatioRule: st.fixed_dictionaries({"ratio": st.floats(0.0, 1.0, exclude_min=True)}),
}
RULE_CLASSES = st.sampled_from(sorted(VALID_PARAMS, key=lambda cls: cls.__name__))
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                      st.text(max_size=4), st.lists(st.integers(), max_size=2))


@st.composite
def rules_with_any_values(draw):
    rule_class = draw(RULE_CLASSES)
    names = rule_class._get_param_names()
    return rule_class, {name: draw(ANY_VALUE) for name in names}


@settings(max_examples=60, deadline=None)
@given(case=rules_with_any_values(), data=st.data())
def test_get_params_set_params_and_clone_keep_values_as_given(case, data):
    rule_class, params = case
    rule = rule_class(**params)
    assert rule.get_params(deep=False) == rule.get_params(deep=True)
    assert rule.get_params().keys() == params.keys()
    assert all(rule.get_params()[key] is value for key, value in params.items())
    rebuilt = rule_class(**rule.get_params())
    assert all(rebuilt.get_params()[key] is value for key, value in params.items())
    copy_ = clone(rule)  # scikit-learn's check: clone keeps each parameter object
    assert type(copy_) is rule_class and all(copy_.get_params()[k] == v or v != v for k, v in params.items())
    new = {name: data.draw(ANY_VALUE) for name in params if data.draw(st.booleans())}
    assert rule.set_params(**new) is rule
    assert all(rule.get_params()[key] is value for key, value in new.items())


@settings(max_examples=60, deadline=None)
@given(case=rules_with_any_values())
def test_any_parameter_value_works_or_fails_in_one_line_at_use(case):
    rule_class, params = case
    rule = rule_class(**params)
    try:
        rank = rule.select(SPIKED, 800)
    except RankRuleError as error:
        assert "\n" not in str(error) and str(error).startswith(rule_class.__name__ + ": ")
        assert not hasattr(rule, "rank_")
    else:
        assert type(rank) is int and rank == rule.rank_ and 0 <= rank <= SPIKED.size


@settings(max_examples=40, deadline=None)
@given(rule_class=RULE_CLASSES, data=st.data())
def test_get_round_trips_names_dicts_instances_and_serialize(rule_class, data):
    params = data.draw(VALID_PARAMS[rule_class])
    rule = rule_class(**params)
    spec = serialize(rule)
    assert json.loads(json.dumps(spec)) == spec
    assert spec == {"class_name": rule_class.__name__, "config": rule.get_config()}
    assert get(rule) is rule
    identifiers = [
        (rule_class.name, params),
        (rule_class.name.upper().replace("-", "_"), params),
        (rule_class.__name__, params),
        (rule_class, params),
        ({"name": rule_class.name, **params}, {}),
        (spec, {}),
        (json.loads(json.dumps(spec)), {}),
    ]
    expected_rank = clone(rule).select(SPIKED, 800)
    for identifier, kwargs in identifiers:
        resolved = get(identifier, **kwargs)
        assert type(resolved) is rule_class
        assert serialize(resolved) == spec
        assert resolved.select(SPIKED, 800) == expected_rank


def test_get_dict_parameters_are_overridden_by_keyword_parameters():
    assert get({"name": "energy", "fraction": 0.5}, fraction=0.8).fraction == 0.8
    assert get({"class_name": "EnergyRule"}).get_params() == {"fraction": 0.95}


@pytest.mark.parametrize(
    "identifier, params, message",
    [
        (None, {}, "a rank rule is a name, a dict or a RankRule, got None"),
        (3, {}, "a rank rule is a name, a dict or a RankRule, got 3"),
        (EnergyRule(), {"fraction": 0.5}, "set them on the instance"),
        ({"fraction": 0.5}, {}, "needs 'class_name' (and 'config') or 'name'"),
        ({"class_name": "EnergyRule", "fraction": 0.5}, {}, "its parameters in 'config', not as fraction"),
        ({"class_name": "EnergyRule", "config": [0.5]}, {}, "'config' is a dict of parameters"),
        ({"name": 7}, {}, "a rank rule name is a string, got 7"),
        ("energy", {"tau": 0.5}, "rank rule 'energy' got unknown parameter(s) tau; accepted: fraction"),
        ("fixed-rank", {}, "rank rule 'fixed-rank': "),
    ],
)
def test_get_errors_are_one_line(identifier, params, message):
    with pytest.raises(RankRuleError) as info:
        get(identifier, **params)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_set_params_rejects_unknown_names():
    with pytest.raises(RankRuleError, match="MarchenkoPasturRule has no parameter 'fraction'; its parameters: tau, fit"):
        MarchenkoPasturRule().set_params(fraction=0.5)


def test_fitted_state_has_trailing_underscores_and_clone_drops_it():
    for rule in ALL_RULES:
        fitted = clone(rule)
        fitted.select(SPIKED, 800)
        new = sorted(set(vars(fitted)) - set(rule.get_params()))
        assert new and all(name.endswith("_") for name in new), new
        assert not any(name.endswith("_") for name in vars(clone(fitted)))


def test_registered_rules_round_trip_and_unregistered_ones_say_so():
    class KeepOne(RankRule):
        name = "keep-one"

        def __init__(self, scale=1.0):
            self.scale = scale

        def _select(self, descending, eigenvalues, n_samples, noise, params):
            return self._store(1, float(descending[0]), descending, n_samples)

    with pytest.raises(RankRuleError, match="not a registered rank rule.*register"):
        serialize(KeepOne())
    with pytest.raises(RankRuleError, match="unknown rank rule 'keep-one'"):
        get("keep-one")
    register(KeepOne)
    try:
        assert type(get(serialize(KeepOne(scale=2.0)))) is KeepOne
        assert get("keep_one", scale=3.0).select(SPIKED, 800) == 1
        with pytest.raises(RankRuleError, match="already taken"):
            register(type("Other", (KeepOne,), {}))
    finally:
        RANK_RULES.pop("keep-one")
