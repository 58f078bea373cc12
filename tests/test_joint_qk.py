"""Joint query/key factorization maths (pure NumPy): exactness, monotonicity, optimality."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmtkd_tf.joint_qk import (
    augmented_second_moment,
    bilinear_forms,
    factor_forms,
    joint_qk_factors,
    joint_qk_parameter_count,
    joint_rank_at_equal_params,
    separate_qk_parameter_count,
    separate_rank_at_equal_params,
    separate_truncation,
    weighted_bilinear_error,
)


def problem(seed, hidden=12, heads=3, head_dim=4, n=600, anisotropy=1.0, low_rank_inputs=False):
    """Random projections and anisotropic, non-centred inputs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, hidden)) * np.exp(anisotropy * rng.normal(size=hidden)) + rng.normal(size=hidden)
    if low_rank_inputs:  # a LayerNorm-like hyperplane: the features sum to a constant
        x = x - x.mean(axis=1, keepdims=True) + 0.5
    wq, wk = rng.normal(size=(2, hidden, heads, head_dim)) / np.sqrt(hidden)
    bq, bk = rng.normal(size=(2, heads, head_dim))
    return x, wq, bq, wk, bk


def scores(x, wq, bq, wk, bk):
    """`(heads, n, n)` attention scores of every token pair (before the 1/sqrt(d) scale)."""
    q = np.einsum("ic,chd->hid", x, wq) + bq[:, None, :]
    k = np.einsum("jc,chd->hjd", x, wk) + bk[:, None, :]
    return q @ np.transpose(k, (0, 2, 1))


def centred_over_keys(z):
    return z - z.mean(axis=-1, keepdims=True)


def moments(x, key_metric):
    query = augmented_second_moment(x)
    key = np.cov(x.T, bias=True) if key_metric == "centred" else query
    return query, key


@pytest.mark.parametrize("key_metric", ["centred", "uncentred"])
@pytest.mark.parametrize("low_rank_inputs", [False, True])
def test_full_rank_is_exact(key_metric, low_rank_inputs):
    x, wq, bq, wk, bk = problem(0, low_rank_inputs=low_rank_inputs)
    query_moment, key_moment = moments(x, key_metric)
    f = joint_qk_factors(wq, bq, wk, 4, query_moment, key_moment, key_bias=bk, key_metric=key_metric)
    z, z_hat = scores(x, wq, bq, wk, bk), scores(x, f.query_kernel, f.query_bias, f.key_kernel, f.key_bias)
    if key_metric == "centred":  # equal up to a constant per query, which the softmax ignores
        z, z_hat = centred_over_keys(z), centred_over_keys(z_hat)
    np.testing.assert_allclose(z_hat, z, atol=1e-8 * np.abs(z).max())
    assert np.all(f.errors <= 1e-10 * f.singular_values[:, 0] ** 2)


@pytest.mark.parametrize("key_metric", ["centred", "uncentred"])
def test_error_is_the_tail_of_the_spectrum_and_the_mean_squared_score_error(key_metric):
    x, wq, bq, wk, bk = problem(1)
    query_moment, key_moment = moments(x, key_metric)
    forms = bilinear_forms(wq, bq, wk, bk, key_metric)
    z = scores(x, wq, bq, wk, bk)
    previous = np.inf
    for rank in range(1, 5):
        f = joint_qk_factors(wq, bq, wk, rank, query_moment, key_moment, key_bias=bk, key_metric=key_metric)
        assert f.query_kernel.shape == f.key_kernel.shape == (12, 3, rank)
        np.testing.assert_allclose(weighted_bilinear_error(forms, factor_forms(f), query_moment, key_moment),
                                   f.errors, rtol=1e-8, atol=1e-9)
        # tr(Eᵀ S E C) is the mean over all token pairs (i, j) of the squared score error
        # (centred over keys for the centred metric).
        error = scores(x, f.query_kernel, f.query_bias, f.key_kernel, f.key_bias) - z
        if key_metric == "centred":
            error = centred_over_keys(error)
        np.testing.assert_allclose((error ** 2).mean(axis=(1, 2)), f.errors, rtol=1e-8, atol=1e-9)
        assert f.errors.sum() < previous
        previous = f.errors.sum()


def test_bad_arguments_are_refused():
    x, wq, bq, wk, _ = problem(2)
    query_moment, key_moment = moments(x, "centred")
    with pytest.raises(ValueError, match="rank must be in"):
        joint_qk_factors(wq, bq, wk, 5, query_moment, key_moment)
    with pytest.raises(ValueError, match="key_moment"):
        joint_qk_factors(wq, bq, wk, 2, query_moment, query_moment)
    with pytest.raises(ValueError, match="key_metric"):
        joint_qk_factors(wq, bq, wk, 2, query_moment, key_moment, key_metric="global")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), rank=st.integers(1, 3), anisotropy=st.floats(0.0, 2.0))
def test_joint_factors_beat_any_factorization_of_the_same_head_rank(seed, rank, anisotropy):
    """Eckart–Young: no rank-r pair does better, separate per-projection truncation at k = r included."""
    x, wq, bq, wk, bk = problem(seed, anisotropy=anisotropy)
    query_moment, key_moment = moments(x, "centred")
    forms = bilinear_forms(wq, bq, wk)
    f = joint_qk_factors(wq, bq, wk, rank, query_moment, key_moment)
    best = f.errors
    q, q_bias = separate_truncation(wq, bq, rank, query_moment)  # rank <= r overall, so per head too
    k, _ = separate_truncation(wk, bk, rank, query_moment)
    separate = weighted_bilinear_error(forms, bilinear_forms(q, q_bias, k), query_moment, key_moment)
    assert np.all(best <= separate * (1 + 1e-9) + 1e-12)
    rng = np.random.default_rng(seed)
    for _ in range(3):  # random perturbations of the optimum are worse
        noise = 1e-2 * np.abs(f.query_kernel).mean()
        perturbed = bilinear_forms(f.query_kernel + noise * rng.normal(size=f.query_kernel.shape),
                                   f.query_bias, f.key_kernel + noise * rng.normal(size=f.key_kernel.shape))
        assert np.all(best <= weighted_bilinear_error(forms, perturbed, query_moment, key_moment) * (1 + 1e-9))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), rank=st.integers(1, 3), anisotropy=st.floats(0.5, 2.0))
def test_joint_factors_beat_separate_truncation_at_equal_parameters_on_random_layers(seed, rank, anisotropy):
    """Not a theorem (separate rank-k products may reach head rank min(k, d) > r): an empirical property
    of random projections with anisotropic inputs, which the MiniLM measurement checks on real layers."""
    hidden, heads, head_dim = 12, 3, 4
    x, wq, bq, wk, bk = problem(seed, hidden, heads, head_dim, anisotropy=anisotropy)
    query_moment, key_moment = moments(x, "centred")
    forms = bilinear_forms(wq, bq, wk)
    k = separate_rank_at_equal_params(hidden, heads, head_dim, rank)
    assert separate_qk_parameter_count(hidden, heads, head_dim, k) <= joint_qk_parameter_count(hidden, heads, rank)
    assert k >= rank
    q, q_bias = separate_truncation(wq, bq, k, query_moment)
    kk, _ = separate_truncation(wk, bk, k, query_moment)
    separate = weighted_bilinear_error(forms, bilinear_forms(q, q_bias, kk), query_moment, key_moment).sum()
    joint = joint_qk_factors(wq, bq, wk, rank, query_moment, key_moment).errors.sum()
    assert joint <= separate


def test_parameter_counts_and_rank_conversions():
    # MiniLM-L6: hidden 384, 12 heads of 32.
    assert joint_qk_parameter_count(384, 12, 32) == 2 * 12 * 32 * 385
    assert separate_qk_parameter_count(384, 12, 32, 384) == 2 * (384 * 384 * 2 + 384)
    for rank in (1, 4, 8, 16):
        k = separate_rank_at_equal_params(384, 12, 32, rank)
        assert separate_qk_parameter_count(384, 12, 32, k) <= joint_qk_parameter_count(384, 12, rank)
        assert separate_qk_parameter_count(384, 12, 32, k + 1) > joint_qk_parameter_count(384, 12, rank)
        assert joint_rank_at_equal_params(384, 12, 32, joint_qk_parameter_count(384, 12, rank)) == rank
    assert joint_rank_at_equal_params(384, 12, 32, 10) == 1
    assert joint_rank_at_equal_params(384, 12, 32, 10**9) == 32
