"""Tests of the MP noise-variance estimator."""

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmtkd_tf.spectral import NoiseFit, estimate_noise_variance, validate_eigenvalues

from spectral_helpers import spiked_spectrum

TRUE_SIGMA2 = 2.5


def noise_spectrum(q, d=200, sigma2=TRUE_SIGMA2, seed=0, dtype=np.float64):
    """Eigenvalues of X^T X / n for an n x d Gaussian X with variance sigma2, n = d / q."""
    n = int(round(d / q))
    x = np.random.default_rng(seed).normal(scale=math.sqrt(sigma2), size=(n, d)).astype(dtype)
    return np.linalg.eigvalsh(x.T @ x / dtype(n)), n


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("q", [0.05, 0.2, 0.5, 1.0, 2.0])
def test_pure_noise_sigma2_within_a_few_percent(q, seed):
    eigenvalues, n = noise_spectrum(q, seed=seed)
    fit = estimate_noise_variance(eigenvalues, n)
    # Measured over 30 seeds: worst error 2.4% (q = 2), 0.3% (q = 0.05).
    assert fit.sigma2 == pytest.approx(TRUE_SIGMA2, rel=0.04)
    assert fit.sigma2_init == pytest.approx(TRUE_SIGMA2, rel=0.05)
    assert fit.converged and fit.method == "quantile+bulk-regression" and fit.fallback is None
    assert fit.q == pytest.approx(200 / n)
    assert fit.n_nonzero == min(200, n)
    assert np.count_nonzero(eigenvalues > fit.lambda_plus) <= 2
    assert fit.n_nonzero - fit.n_bulk <= 2


def test_q_above_one_ignores_the_zero_atom_even_in_float32():
    # float32 leaves the d - n "zero" eigenvalues at ~1e-7 relative, not 0:
    # they must still be treated as the atom, not as a bulk of tiny values.
    eigenvalues, n = noise_spectrum(2.0, dtype=np.float32, seed=3)
    assert eigenvalues.dtype == np.float32
    fit = estimate_noise_variance(eigenvalues, n)
    assert fit.n_nonzero == n and fit.n_effective == 200
    assert fit.sigma2 == pytest.approx(TRUE_SIGMA2, rel=0.04)


def test_dead_features_shrink_the_effective_dimension():
    n, d_alive, d_dead = 1000, 150, 50
    x = np.random.default_rng(4).normal(scale=math.sqrt(TRUE_SIGMA2), size=(n, d_alive))
    x = np.hstack([x, np.zeros((n, d_dead))])  # e.g. dead ReLU units
    fit = estimate_noise_variance(np.linalg.eigvalsh(x.T @ x / n), n)
    assert fit.n_eigenvalues == 200 and fit.n_effective == d_alive
    assert fit.q == pytest.approx(d_alive / n)
    assert fit.sigma2 == pytest.approx(TRUE_SIGMA2, rel=0.03)


def test_fit_corrects_the_spike_bias_of_the_initialisation():
    # 30 strong spikes push the median up; the bulk fit must land closer to 1.
    eigenvalues = spiked_spectrum(800, 200, np.linspace(3.0, 20.0, 30), seed=5)
    fitted = estimate_noise_variance(eigenvalues, 800)
    initial_only = estimate_noise_variance(eigenvalues, 800, fit=False)
    assert abs(fitted.sigma2 - 1.0) < abs(initial_only.sigma2 - 1.0)
    assert fitted.sigma2 == pytest.approx(1.0, rel=0.06)
    assert fitted.n_nonzero - fitted.n_bulk == 30


def test_fit_false_returns_the_quantile_initialisation():
    eigenvalues, n = noise_spectrum(0.5)
    fit = estimate_noise_variance(eigenvalues, n, fit=False)
    assert fit.sigma2 == fit.sigma2_init
    assert fit.method == "quantile" and fit.n_iterations == 0
    assert fit.lambda_plus == pytest.approx(fit.sigma2 * (1 + math.sqrt(fit.q)) ** 2)


@pytest.mark.parametrize("tau", [0.25, 0.5, 0.75])
def test_other_quantile_levels_are_consistent(tau):
    eigenvalues, n = noise_spectrum(2.0, seed=6)
    fit = estimate_noise_variance(eigenvalues, n, tau=tau, fit=False)
    assert fit.sigma2 == pytest.approx(TRUE_SIGMA2, rel=0.06)


SPIKED = spiked_spectrum(800, 200, [3.0, 6.0, 12.0], seed=7)


@settings(max_examples=30, deadline=None)
@given(scale=st.floats(min_value=1e-6, max_value=1e6))
def test_sigma2_is_scale_equivariant(scale):
    reference = estimate_noise_variance(SPIKED, 800)
    scaled = estimate_noise_variance(SPIKED * scale, 800)
    assert scaled.sigma2_init == pytest.approx(scale * reference.sigma2_init, rel=1e-12)
    assert scaled.sigma2 == pytest.approx(scale * reference.sigma2, rel=1e-7)
    assert scaled.n_bulk == reference.n_bulk and scaled.n_iterations == reference.n_iterations


def test_eigenvalue_order_does_not_matter():
    shuffled = np.random.default_rng(8).permutation(SPIKED)
    assert estimate_noise_variance(shuffled, 800) == estimate_noise_variance(SPIKED, 800)


def test_roundoff_negatives_are_clipped():
    eigenvalues, n = noise_spectrum(2.0, seed=9)  # eigvalsh leaves the atom at +-1e-15
    with_negatives = eigenvalues.copy()
    with_negatives[:5] = -1e-12
    assert estimate_noise_variance(with_negatives, n).sigma2 == pytest.approx(
        estimate_noise_variance(eigenvalues, n).sigma2
    )
    np.testing.assert_array_equal(validate_eigenvalues([1.0, -1e-9, 3.0]), [3.0, 1.0, 0.0])


def test_noise_fit_is_frozen_and_json_serialisable():
    eigenvalues, n = noise_spectrum(0.5)
    fit = estimate_noise_variance(eigenvalues, n)
    assert isinstance(fit, NoiseFit)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.sigma2 = 1.0
    report = json.loads(json.dumps(fit.to_dict()))
    assert report["sigma2"] == fit.sigma2 and report["n_samples"] == n


@pytest.mark.parametrize(
    "eigenvalues, n_samples, kwargs, message",
    [
        ([1.0, float("nan"), 2.0], 10, {}, "NaN"),
        ([1.0, float("inf"), 2.0], 10, {}, "NaN or inf"),
        ([0.0, 0.0, 0.0], 10, {}, "all eigenvalues are zero"),
        ([2.0], 10, {}, "d = 1"),
        ([], 10, {}, "empty"),
        ([[1.0, 2.0], [3.0, 4.0]], 10, {}, "1-D"),
        ([1.0, 2.0, -0.5], 10, {}, "too negative"),
        ([3.0, 0.0, 0.0], 10, {}, "nonzero eigenvalue"),
        (["a", "b"], 10, {}, "real numbers"),
        ([1.0, 2.0], 0, {}, "n_samples"),
        ([1.0, 2.0], 10.5, {}, "n_samples"),
        ([1.0, 2.0], True, {}, "n_samples"),
        ([1.0, 2.0], 10, {"tau": 1.0}, "tau"),
        ([1.0, 2.0], 10, {"tau": float("nan")}, "tau"),
    ],
)
def test_bad_inputs_raise_value_error(eigenvalues, n_samples, kwargs, message):
    with pytest.raises(ValueError, match=message):
        estimate_noise_variance(eigenvalues, n_samples, **kwargs)
