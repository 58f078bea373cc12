"""Tests of the Marchenko-Pastur law functions (edges, density, CDF, quantile)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from rmtkd_tf.spectral import (
    marchenko_pastur_cdf,
    marchenko_pastur_density,
    marchenko_pastur_edges,
    marchenko_pastur_quantile,
)

aspect_ratios = st.floats(min_value=0.01, max_value=10.0)
noise_variances = st.floats(min_value=1e-3, max_value=1e3)
FAST = settings(max_examples=40, deadline=None)


def continuous_mass(sigma2, q):
    return 1.0 if q <= 1.0 else 1.0 / q


def integrate_density(sigma2, q, upper):
    """Numerical integral of the density from lambda_minus to `upper`.

    Substituting x = lambda_minus + width * s**2 removes the square-root
    singularity of the integrand at lambda_minus (and the x**-1/2 one at 0
    when q = 1), so quad is accurate for every q.
    """
    lambda_minus, lambda_plus = marchenko_pastur_edges(sigma2, q)
    width = lambda_plus - lambda_minus
    upper = min(max(upper, lambda_minus), lambda_plus)

    def integrand(s):
        return marchenko_pastur_density(lambda_minus + width * s * s, sigma2, q) * 2.0 * width * s

    value, _ = integrate.quad(integrand, 0.0, math.sqrt((upper - lambda_minus) / width), limit=200)
    return value


@FAST
@given(sigma2=noise_variances, q=aspect_ratios)
def test_edges_formula(sigma2, q):
    lambda_minus, lambda_plus = marchenko_pastur_edges(sigma2, q)
    assert lambda_minus == pytest.approx(sigma2 * (1 - math.sqrt(q)) ** 2)
    assert lambda_plus == pytest.approx(sigma2 * (1 + math.sqrt(q)) ** 2)


def test_edges_known_values():
    assert marchenko_pastur_edges(1.0, 0.25) == (0.25, 2.25)
    assert marchenko_pastur_edges(3.0, 1.0) == (0.0, 12.0)
    assert marchenko_pastur_edges(1.0, 4.0) == (1.0, 9.0)


@FAST
@given(sigma2=noise_variances, q=st.sampled_from([0.01, 0.1, 0.5, 0.9, 1.0, 1.1, 2.0, 5.0, 10.0]) | aspect_ratios)
def test_density_integrates_to_one_or_one_over_q(sigma2, q):
    mass = integrate_density(sigma2, q, marchenko_pastur_edges(sigma2, q)[1])
    # As q -> 1 the density gets a 1/sqrt(x) singularity at 0 and the test's own quadrature loses
    # digits (5e-6 seen at q = 0.99999); the closed-form CDF is checked exactly elsewhere.
    assert mass == pytest.approx(continuous_mass(sigma2, q), rel=1e-6 if abs(q - 1.0) > 1e-3 else 5e-5)


def test_density_zero_outside_support_and_vectorised():
    lambda_minus, lambda_plus = marchenko_pastur_edges(2.0, 0.3)
    x = np.array([[-1.0, 0.0, lambda_minus * 0.99], [lambda_plus * 1.01, 100.0, 1.5]])
    density = marchenko_pastur_density(x, 2.0, 0.3)
    assert density.shape == x.shape
    np.testing.assert_array_equal(density[0], 0.0)
    assert density[1, 0] == 0.0 and density[1, 1] == 0.0
    assert density[1, 2] > 0.0
    assert isinstance(marchenko_pastur_density(1.5, 2.0, 0.3), float)


def test_density_matches_closed_form_at_a_point():
    # q = 1/4, sigma2 = 1, x = 1: sqrt((2.25 - 1)(1 - 0.25)) / (2 pi * 0.25 * 1)
    expected = math.sqrt(1.25 * 0.75) / (2 * math.pi * 0.25)
    assert marchenko_pastur_density(1.0, 1.0, 0.25) == pytest.approx(expected)


@FAST
@given(sigma2=noise_variances, q=aspect_ratios, fraction=st.floats(min_value=0.0, max_value=1.0))
def test_cdf_equals_integrated_density(sigma2, q, fraction):
    lambda_minus, lambda_plus = marchenko_pastur_edges(sigma2, q)
    x = lambda_minus + fraction * (lambda_plus - lambda_minus)
    integral = integrate_density(sigma2, q, x)
    atom = max(0.0, 1.0 - 1.0 / q)
    # Near q = 1 the test's own quadrature of the 1/sqrt(x) singularity loses digits (5e-6 at q = 0.99999,
    # as in test_density_integrates_to_one_or_one_over_q); the closed-form CDF is exact there.
    tolerance = 1e-8 if abs(q - 1.0) > 1e-3 else 5e-5
    assert marchenko_pastur_cdf(x, sigma2, q) == pytest.approx(atom + integral, abs=tolerance)


@pytest.mark.parametrize("q", [0.05, 0.5, 1.0, 2.0, 8.0])
def test_cdf_shape_atom_and_limits(q):
    sigma2 = 1.7
    lambda_minus, lambda_plus = marchenko_pastur_edges(sigma2, q)
    x = np.linspace(-1.0, lambda_plus * 1.2, 501)
    cdf = marchenko_pastur_cdf(x, sigma2, q)
    assert np.all(np.diff(cdf) >= -1e-15)
    assert marchenko_pastur_cdf(-1e-9, sigma2, q) == 0.0
    atom = max(0.0, 1.0 - 1.0 / q)
    assert marchenko_pastur_cdf(0.0, sigma2, q) == pytest.approx(atom)
    assert marchenko_pastur_cdf(lambda_plus, sigma2, q) == pytest.approx(1.0)
    assert marchenko_pastur_cdf(lambda_plus * 5, sigma2, q) == 1.0
    if q < 1:
        assert marchenko_pastur_cdf(lambda_minus * 0.999, sigma2, q) == 0.0


@FAST
@given(q=aspect_ratios, p=st.floats(min_value=0.0, max_value=1.0))
def test_cdf_of_quantile_is_identity(q, p):
    atom = max(0.0, 1.0 - 1.0 / q)
    x = marchenko_pastur_quantile(p, q)
    if atom > 0.0 and p <= atom:
        assert x == 0.0
    elif p == 0.0:
        assert x == pytest.approx(marchenko_pastur_edges(1.0, q)[0])
    else:
        assert marchenko_pastur_cdf(x, 1.0, q) == pytest.approx(p, abs=1e-9)


@FAST
@given(q=aspect_ratios, fraction=st.floats(min_value=0.001, max_value=0.999))
def test_quantile_of_cdf_is_identity(q, fraction):
    lambda_minus, lambda_plus = marchenko_pastur_edges(1.0, q)
    x = lambda_minus + fraction * (lambda_plus - lambda_minus)
    assert marchenko_pastur_quantile(marchenko_pastur_cdf(x, 1.0, q), q) == pytest.approx(x, rel=1e-7, abs=1e-9)


def test_quantile_vectorised_scaled_and_known_values():
    p = np.array([[0.0, 0.5], [0.9, 1.0]])
    quantiles = marchenko_pastur_quantile(p, 0.25)
    assert quantiles.shape == (2, 2)
    assert quantiles[0, 0] == pytest.approx(0.25) and quantiles[1, 1] == pytest.approx(2.25)
    assert marchenko_pastur_quantile(0.5, 0.25, sigma2=3.0) == pytest.approx(3.0 * quantiles[0, 1])
    # q = 1: median of the quarter-circle-like law, checked against quad + brentq.
    assert marchenko_pastur_cdf(marchenko_pastur_quantile(0.5, 1.0), 1.0, 1.0) == pytest.approx(0.5)
    assert marchenko_pastur_quantile(0.75, 4.0) == 0.0  # the atom holds 3/4 of the mass


def test_law_matches_simulated_wishart_spectrum():
    # The law itself, not only its self-consistency: KS distance to a simulated spectrum.
    rng = np.random.default_rng(0)
    n, d = 1200, 600
    x = rng.normal(scale=math.sqrt(0.7), size=(n, d))
    eigenvalues = np.sort(np.linalg.eigvalsh(x.T @ x / n))
    empirical = (np.arange(d) + 0.5) / d
    assert np.max(np.abs(marchenko_pastur_cdf(eigenvalues, 0.7, d / n) - empirical)) < 0.02


@pytest.mark.parametrize(
    "call",
    [
        lambda: marchenko_pastur_edges(0.0, 0.5),
        lambda: marchenko_pastur_edges(1.0, -0.5),
        lambda: marchenko_pastur_edges(float("nan"), 0.5),
        lambda: marchenko_pastur_density(1.0, 1.0, float("inf")),
        lambda: marchenko_pastur_cdf(1.0, -1.0, 0.5),
        lambda: marchenko_pastur_cdf(float("nan"), 1.0, 0.5),
        lambda: marchenko_pastur_quantile(1.5, 0.5),
        lambda: marchenko_pastur_quantile(float("nan"), 0.5),
        lambda: marchenko_pastur_quantile(0.5, 0.0),
        lambda: marchenko_pastur_edges("big", 0.5),
    ],
)
def test_bad_inputs_raise_value_error(call):
    with pytest.raises(ValueError):
        call()
