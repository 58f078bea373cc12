"""The paired accuracy-drop interval behind `--max-drop`: coverage, monotonicity, symmetry, edges, sizes."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from rmtkd_tf.acceptance import (
    accept_drop,
    describe,
    drop_from_counts,
    examples_needed,
    paired_accuracy_drop,
    tango_interval,
    too_few_warning,
)
from rmtkd_tf.errors import RMTKDError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
Z95 = norm.ppf(0.975)


def _simulated_intervals(n, p_teacher_only, p_student_only, simulations, seed):
    """Intervals (in proportions) for `simulations` draws of n paired examples; counts repeat, so cache them."""
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, [p_teacher_only, p_student_only, 1 - p_teacher_only - p_student_only], size=simulations)
    cache = {}
    for b, c, _ in draws:
        if (b, c) not in cache:
            cache[b, c] = tango_interval(int(b), int(c), n, Z95)
    return np.array([cache[b, c] for b, c, _ in draws])


def _score_statistic(b, c, n, delta):
    """Tango's statistic written out independently of the module (for the grid-inversion check)."""
    a, w = 2 * n, -b - c + (2 * n - b + c) * delta
    q = (np.sqrt(w**2 + 4 * a * c * delta * (1 - delta)) - w) / (2 * a)
    return (b - c - n * delta) / np.sqrt(n * (2 * q + delta * (1 - delta)))


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(30, 400),
    p_teacher_only=st.floats(0.0, 0.3),
    p_student_only=st.floats(0.0, 0.3),
    seed=st.integers(0, 2**16),
)
def test_interval_covers_the_true_drop_near_the_nominal_rate(n, p_teacher_only, p_student_only, seed):
    intervals = _simulated_intervals(n, p_teacher_only, p_student_only, 800, seed)
    true_drop = p_teacher_only - p_student_only
    coverage = np.mean((intervals[:, 0] <= true_drop + 1e-12) & (true_drop - 1e-12 <= intervals[:, 1]))
    # Score intervals oscillate around the nominal 95%; exact enumeration over n <= 120 finds no point below
    # 93%, and 800 draws add about 2.5 points of noise at 3 standard errors.
    assert coverage >= 0.90, (coverage, n, p_teacher_only, p_student_only)


def test_average_coverage_is_nominal_not_merely_conservative():
    settings_grid = [(300, 0.05, 0.02), (500, 0.1, 0.1), (800, 0.03, 0.03), (400, 0.15, 0.05)]
    coverages = []
    for i, (n, p12, p21) in enumerate(settings_grid):
        intervals = _simulated_intervals(n, p12, p21, 1500, seed=i)
        coverages.append(np.mean((intervals[:, 0] <= p12 - p21) & (p12 - p21 <= intervals[:, 1])))
    assert 0.935 <= np.mean(coverages) <= 0.965, coverages


def test_interval_matches_a_brute_force_inversion_of_the_score_test():
    for b, c, n in [(1, 7, 21), (12, 3, 200), (40, 20, 160), (0, 5, 50)]:
        lower, upper = tango_interval(b, c, n, Z95)
        grid = np.linspace(-0.999999, 0.999999, 400001)
        inside = grid[np.abs(_score_statistic(b, c, n, grid)) <= Z95]
        assert lower == pytest.approx(inside.min(), abs=1e-5) and upper == pytest.approx(inside.max(), abs=1e-5)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_interval_contains_the_estimate_and_stays_in_range(n, data):
    b = data.draw(st.integers(0, n))
    c = data.draw(st.integers(0, n - b))
    estimate = drop_from_counts(b, c, n)
    assert -100 <= estimate.lower <= estimate.drop <= estimate.upper <= 100
    assert estimate.drop == pytest.approx(100 * (b - c) / n)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), data=st.data(), confidence=st.floats(0.5, 0.999))
def test_swapping_teacher_and_student_mirrors_the_interval(n, data, confidence):
    b = data.draw(st.integers(0, n))
    c = data.draw(st.integers(0, n - b))
    forward, backward = drop_from_counts(b, c, n, confidence), drop_from_counts(c, b, n, confidence)
    assert backward.drop == -forward.drop
    assert backward.lower == pytest.approx(-forward.upper, abs=1e-7)
    assert backward.upper == pytest.approx(-forward.lower, abs=1e-7)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 100), data=st.data(), factor=st.integers(2, 20))
def test_more_examples_with_the_same_proportions_narrow_the_interval(n, data, factor):
    b = data.draw(st.integers(0, n))
    c = data.draw(st.integers(0, n - b))
    small, large = drop_from_counts(b, c, n), drop_from_counts(b * factor, c * factor, n * factor)
    assert large.upper <= small.upper + 1e-9 and large.lower >= small.lower - 1e-9


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 200), data=st.data())
def test_one_more_lost_example_raises_the_bounds(n, data):
    b = data.draw(st.integers(0, n - 1))
    c = data.draw(st.integers(0, n - 1 - b))
    before, after = drop_from_counts(b, c, n), drop_from_counts(b + 1, c, n)
    assert after.upper >= before.upper and after.lower >= before.lower


@pytest.mark.parametrize("n", [1, 2, 10, 750])
def test_edges_are_exact(n):
    z2 = Z95**2
    agree = drop_from_counts(0, 0, n)  # no discordant pair: centred on 0, the score limit z²/(n + z²)
    assert agree.drop == 0 and agree.upper == pytest.approx(100 * z2 / (n + z2)) and agree.lower == -agree.upper
    all_lost = drop_from_counts(n, 0, n)  # the teacher right and the student wrong on every example
    assert all_lost.drop == 100 and all_lost.upper == 100
    assert all_lost.lower == pytest.approx(100 * (n - z2) / (n + z2))
    all_gained = drop_from_counts(0, n, n)
    assert all_gained.drop == -100 and all_gained.lower == -100


def test_zero_discordant_pairs_on_a_large_set_accept_and_on_a_small_set_do_not():
    assert accept_drop(drop_from_counts(0, 0, 1000), 1.0)
    assert not accept_drop(drop_from_counts(0, 0, 125), 1.0)  # one example is 0.8 points: too few to know


def test_acceptance_uses_the_upper_bound_not_the_point_estimate():
    teacher = np.ones(750, bool)
    student = teacher.copy()
    student[:6] = False  # 6 lost, 0 gained: a point drop of 0.8 points
    estimate = paired_accuracy_drop(teacher, student)
    assert estimate.drop == pytest.approx(0.8) and estimate.n_discordant == 6
    assert estimate.upper > 1.0 and not accept_drop(estimate, 1.0)
    assert accept_drop(estimate, estimate.upper)


def test_paired_counts_come_from_the_boolean_vectors():
    teacher = np.array([1, 1, 0, 0, 1, 0], bool)
    student = np.array([1, 0, 1, 0, 0, 0], bool)
    estimate = paired_accuracy_drop(teacher, student, confidence=0.9)
    assert (estimate.teacher_only, estimate.student_only, estimate.n) == (2, 1, 6)
    assert estimate.to_dict()["confidence"] == 0.9 and "Tango" in estimate.method
    assert paired_accuracy_drop([1, 0], [0, 0]).teacher_only == 1  # 0/1 integers are booleans too


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: paired_accuracy_drop([True], [True, False]), "same examples"),
        (lambda: paired_accuracy_drop([], []), "0 validation examples"),
        (lambda: paired_accuracy_drop([2, 1], [1, 1]), "booleans"),
        (lambda: paired_accuracy_drop([[True]], [[True]]), "1-D"),
        (lambda: drop_from_counts(3, 3, 5), "exceed"),
        (lambda: drop_from_counts(1, 0, 5, confidence=1.0), "confidence"),
        (lambda: accept_drop(drop_from_counts(1, 0, 5), -1), "max_drop"),
        (lambda: examples_needed(0.0), "max_drop"),
        (lambda: examples_needed(1.0, discordance=0), "discordance"),
    ],
)
def test_bad_arguments_are_one_line_errors(call, message):
    with pytest.raises(RMTKDError, match=message):
        call()


def test_examples_needed_scales_as_discordance_over_max_drop_squared():
    needed = examples_needed(1.0, discordance=0.1)
    assert needed == pytest.approx(Z95**2 * 0.1 / 0.01**2, rel=0.02)
    assert examples_needed(2.0) == pytest.approx(needed / 4, rel=0.05)
    assert examples_needed(1.0, discordance=0.05) == pytest.approx(needed / 2, rel=0.05)
    assert examples_needed(1.0, confidence=0.99) > needed
    # With the expected counts (5% lost, 5% gained), the bound is just within 1 point there, one example fewer not.
    assert tango_interval(0.05 * needed, 0.05 * needed, needed, Z95)[1] <= 0.01
    assert tango_interval(0.05 * (needed - 1), 0.05 * (needed - 1), needed - 1, Z95)[1] > 0.01


@pytest.mark.parametrize("power", [0.5, 0.8])
def test_examples_needed_gives_the_promised_acceptance_rate(power):
    n = examples_needed(1.0, discordance=0.1, power=power)
    rng = np.random.default_rng(int(power * 10))
    accepted = [
        accept_drop(drop_from_counts(int(b), int(c), n), 1.0)
        for b, c, _ in rng.multinomial(n, [0.05, 0.05, 0.9], size=1000)
    ]
    assert np.mean(accepted) == pytest.approx(power, abs=0.05)


def test_too_few_warning_is_one_line_and_names_the_size_needed():
    warning = too_few_warning(750, 1.0)
    assert warning.startswith("warning: ") and "\n" not in warning
    assert str(examples_needed(1.0)) in warning and "10%" in warning
    assert too_few_warning(examples_needed(1.0), 1.0) is None
    assert too_few_warning(10**6, 0.0).startswith("warning: ")


def test_describe_states_the_decision():
    text = describe(drop_from_counts(0, 0, 5000), max_drop=1.0)
    assert "accepted" in text and "n=5000" in text and "\n" not in text
    assert "rejected" in describe(drop_from_counts(30, 0, 500), max_drop=1.0)
    assert "accepted" not in describe(drop_from_counts(30, 0, 500))


def test_acceptance_module_does_not_import_tensorflow():
    code = f"""
import sys, types
package = types.ModuleType("rmtkd_tf")
package.__path__ = [{str(REPO_ROOT / "rmtkd_tf")!r}]
sys.modules["rmtkd_tf"] = package
import rmtkd_tf.acceptance
print("HEAVY:" + ",".join(sorted(m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "HEAVY:\n" in result.stdout, result.stdout


def test_upper_bound_rule_rarely_accepts_a_student_that_really_loses_two_points():
    # The failure this module answers: on 750 validation examples a point estimate within --max-drop 1
    # often hides a true drop of 2 points; the upper-bound rule accepts it at most (1 - 0.95) / 2 of the time.
    n, p_lost, p_gained = 750, 0.06, 0.04
    rng = np.random.default_rng(7)
    draws = rng.multinomial(n, [p_lost, p_gained, 1 - p_lost - p_gained], size=2000)
    estimates = [drop_from_counts(int(b), int(c), n) for b, c, _ in draws]
    by_point = np.mean([e.drop <= 1.0 for e in estimates])
    by_bound = np.mean([accept_drop(e, 1.0) for e in estimates])
    assert by_point > 0.1 and by_bound <= 0.025, (by_point, by_bound)


@settings(max_examples=5, deadline=None)
@given(n=st.integers(10, 60), p_gained=st.floats(0.0, 0.2), extra_lost=st.floats(0.0, 0.2))
def test_upper_bound_holds_one_sided_when_the_student_is_not_better(n, p_gained, extra_lost):
    # Exact enumeration of every (lost, gained) outcome: the probability that the true drop is within the
    # upper bound, which is what an accept decision relies on, is near its one-sided 97.5%.
    from scipy.stats import multinomial

    p_lost = p_gained + extra_lost
    probabilities = [p_lost, p_gained, 1 - p_lost - p_gained]
    covered = sum(
        multinomial.pmf([b, c, n - b - c], n, probabilities)
        for b in range(n + 1)
        for c in range(n + 1 - b)
        if p_lost - p_gained <= tango_interval(b, c, n, Z95)[1] + 1e-12
    )
    assert covered >= 0.96, (covered, n, p_lost, p_gained)
