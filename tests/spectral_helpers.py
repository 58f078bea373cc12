"""Spectra the spectral tests share: eigenvalues of sampled covariances with known spikes."""

import numpy as np


def spiked_spectrum(n, d, thetas, seed=0):
    """Eigenvalues of the sample covariance of N(0, I + sum theta_i v_i v_i^T)."""
    rng = np.random.default_rng(seed)
    directions, _ = np.linalg.qr(rng.normal(size=(d, len(thetas))))
    root = np.eye(d) + (directions * (np.sqrt(1.0 + np.asarray(thetas)) - 1.0)) @ directions.T
    x = rng.normal(size=(n, d)) @ root
    return np.linalg.eigvalsh(x.T @ x / n)
