"""Effective sample size of correlated samples, checked against exact answers on synthetic data."""

import numpy as np
import pytest

from rmtkd_tf.spectral import MarchenkoPasturRule, effective_sample_size


def ar1_groups(n_examples, positions, d, coefficient, rng):
    """`(examples, positions, d)` white noise, AR(1)-correlated along the positions of each example."""
    innovations = rng.normal(size=(n_examples, positions, d))
    samples = np.empty_like(innovations)
    samples[:, 0] = innovations[:, 0]
    for t in range(1, positions):
        samples[:, t] = coefficient * samples[:, t - 1] + np.sqrt(1.0 - coefficient**2) * innovations[:, t]
    return samples


def exact_n_effective(n_examples, positions, coefficient):
    """`n² / tr(A²)` for block-diagonal A with AR(1) blocks `A_st = coefficient^|s - t|`."""
    lags = np.abs(np.subtract.outer(np.arange(positions), np.arange(positions)))
    block_trace = np.sum(coefficient ** (2 * lags))
    n = n_examples * positions
    return n * n / (n_examples * block_trace)


@pytest.mark.parametrize("coefficient", [0.0, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("n_examples, positions, d", [(200, 16, 40), (60, 64, 32)])
def test_matches_the_exact_n_effective_of_ar1_groups(coefficient, n_examples, positions, d):
    samples = ar1_groups(n_examples, positions, d, coefficient, np.random.default_rng(0))
    ess = effective_sample_size(samples)
    exact = exact_n_effective(n_examples, positions, coefficient)
    # Measured: within 3% for these sizes (the median over d pairs averages the noise).
    assert ess.n_effective == pytest.approx(exact, rel=0.1)
    assert n_examples <= ess.n_effective <= n_examples * positions
    assert (ess.n_samples, ess.n_examples, ess.n_pairs) == (n_examples * positions, n_examples, d)


def test_one_row_per_example_is_worth_n():
    assert effective_sample_size(np.random.default_rng(1).normal(size=(700, 12))).n_effective == 700


def test_identical_positions_are_worth_one_sample_per_example():
    one = np.random.default_rng(2).normal(size=(300, 1, 10))
    ess = effective_sample_size(np.repeat(one, 8, axis=1))
    assert 300 <= ess.n_effective <= 330  # the floor is n_examples; the estimate itself is noisy
    assert ess.design_effect == pytest.approx(8.0, rel=0.1)


def test_heavy_tails_alone_do_not_lower_n_effective():
    # Independent Student-t(5) entries: kurtosis 9, but the MP bulk is that of n samples (universality).
    samples = np.random.default_rng(3).standard_t(5, size=(400, 16, 30))
    assert effective_sample_size(samples).n_effective >= 0.9 * 400 * 16


def test_padding_rows_are_no_samples():
    rng = np.random.default_rng(4)
    samples = ar1_groups(150, 12, 20, 0.8, rng)
    padded = np.concatenate([samples, rng.normal(scale=100.0, size=(150, 5, 20))], axis=1)
    weights = np.concatenate([np.ones((150, 12)), np.zeros((150, 5))], axis=1)
    with_padding, without = effective_sample_size(padded, weights), effective_sample_size(samples)
    assert (with_padding.n_samples, with_padding.n_examples) == (150 * 12, 150)
    assert with_padding.design_effect == pytest.approx(without.design_effect, rel=1e-9)
    assert with_padding.n_effective == without.n_effective


def test_bad_shape_raises():
    with pytest.raises(ValueError, match="examples"):
        effective_sample_size(np.ones(5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_white_noise_in_correlated_rows_is_noise_only_with_n_effective(seed):
    # 400 examples x 16 positions, AR(1) 0.8 along positions, d = 100: n = 6400, n_eff ~ 1600.
    samples = ar1_groups(400, 16, 100, 0.8, np.random.default_rng(seed))
    ess = effective_sample_size(samples)
    eigenvalues = np.linalg.eigvalsh(np.cov(samples.reshape(-1, 100).T, bias=True))
    with_n_effective = MarchenkoPasturRule().select(eigenvalues, ess.n_effective)
    with_nominal_n = MarchenkoPasturRule().select(eigenvalues, ess.n_samples)
    # Measured over 40 draws: 0-1 with n_eff, 33-40 with the nominal n.
    assert with_n_effective <= max(1, int(0.02 * 100))
    assert with_nominal_n >= 20
