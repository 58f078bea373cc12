"""Tests of `plot_spectrum`."""

import numpy as np
import pytest

from rmtkd_tf.spectral import MarchenkoPasturRule, plot_spectrum

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def spectrum(n, d, spike_scales, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d))
    x[:, : len(spike_scales)] *= spike_scales
    return np.linalg.eigvalsh(x.T @ x / n)


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_SIGNATURE)


@pytest.mark.parametrize(
    "n, d, spike_scales",
    [
        (800, 100, [3.0, 2.5]),  # linear axis
        (50, 100, [4.0]),  # q = 2: zero atom left out of the histogram
        (2000, 100, [300.0, 40.0]),  # huge spikes: automatic log x axis
    ],
)
def test_plot_spectrum_writes_png(tmp_path, n, d, spike_scales):
    eigenvalues = spectrum(n, d, spike_scales)
    rule = MarchenkoPasturRule()
    rank = rule.select(eigenvalues, n)
    out = plot_spectrum(eigenvalues, rule.noise_, rank, f"n={n} d={d}", tmp_path / "nested" / "spectrum.png")
    assert out == str(tmp_path / "nested" / "spectrum.png")
    assert_png(tmp_path / "nested" / "spectrum.png")


def test_plot_spectrum_without_noise_fit_and_forced_log(tmp_path):
    eigenvalues = spectrum(500, 50, [2.0])
    plot_spectrum(eigenvalues, None, None, "no fit", tmp_path / "a.png", log_x=True)
    plot_spectrum(eigenvalues, None, 3, "no fit", tmp_path / "b.png", log_x=False)
    assert_png(tmp_path / "a.png")
    assert_png(tmp_path / "b.png")


@pytest.mark.parametrize("rank", [-1, 51, 2.0, True])
def test_plot_spectrum_rejects_bad_rank(tmp_path, rank):
    with pytest.raises(ValueError, match="rank"):
        plot_spectrum(spectrum(500, 50, [2.0]), None, rank, "bad", tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()
