"""Plot a covariance spectrum against its fitted Marchenko–Pastur law."""

import math
import os

import numpy as np

from rmtkd_tf.arguments import check_integer

from .marchenko_pastur import marchenko_pastur_density
from .noise import validate_eigenvalues

# Spectra whose nonzero eigenvalues span more than this ratio, or whose top
# eigenvalue is this many times the MP edge, are drawn on a log x axis: on a
# linear axis the bulk would collapse into one bar.
LOG_X_SPREAD = 1e3
LOG_X_SPIKE_TO_EDGE = 50.0
MAX_BINS = 1000


def plot_spectrum(eigenvalues, noise_fit, rank, title, path, log_x=None):
    """Write a PNG of the eigenvalue histogram with the fitted MP density.

    Draws the histogram (as a density) of the nonzero eigenvalues, the MP
    density of `noise_fit` (rescaled by `q` when `q > 1`, so that it is the
    law of the nonzero eigenvalues like the histogram), a vertical line at
    `lambda_plus`, and markers on the `rank` leading eigenvalues (the kept
    spikes).

    Args:
        eigenvalues: covariance eigenvalues, any order.
        noise_fit: a `NoiseFit`, or None for rules without a noise model (no
            curve and no edge line then).
        rank: number of kept leading eigenvalues to mark, or None.
        title: figure title.
        path: output PNG path; parent folders are created.
        log_x: force (True) or forbid (False) a log x axis; None decides
            from the spread of the eigenvalues.

    Returns:
        `path` as a string.

    Matplotlib is imported here, not at module import, and the figure is
    drawn through `matplotlib.figure.Figure` (rendered by Agg on `savefig`)
    rather than pyplot, so it works headless and never switches the
    backend of an interactive session.

    Example:
    >>> import os, tempfile
    >>> import numpy as np
    >>> from rmtkd_tf.spectral import estimate_noise_variance
    >>> eigenvalues = np.linalg.eigvalsh(np.cov(np.random.default_rng(0).normal(size=(50, 500))))
    >>> fit = estimate_noise_variance(eigenvalues, 500)
    >>> out = plot_spectrum(eigenvalues, fit, 0, "noise", os.path.join(tempfile.mkdtemp(), "s.png"))
    >>> os.path.getsize(out) > 0
    True
    """
    from matplotlib.figure import Figure

    descending = validate_eigenvalues(eigenvalues)
    rank = check_integer(rank, "rank", minimum=0, maximum=descending.size, allow_none=True)
    if noise_fit is not None:
        # The fit saw only min(d_eff, n) nonzero eigenvalues; the rest are the MP atom at 0.
        nonzero = descending[: noise_fit.n_nonzero]
    else:
        nonzero = descending[descending > descending[0] * descending.size * np.finfo(np.float64).eps]
    if nonzero.size == 0:
        raise ValueError("all eigenvalues are zero: nothing to plot")

    largest, smallest = float(nonzero[0]), float(nonzero[-1])
    if log_x is None:
        log_x = largest / smallest > LOG_X_SPREAD or (
            noise_fit is not None and largest > LOG_X_SPIKE_TO_EDGE * noise_fit.lambda_plus
        )
    # Resolve the bulk with about 2 sqrt(N) bins and continue with the same
    # width (in log space on a log axis) out to the largest spike: bins
    # spread evenly over the whole range would leave the bulk two bars.
    bulk_top = largest if noise_fit is None else min(largest, noise_fit.lambda_plus)
    n_bulk_bins = int(np.clip(2 * math.sqrt(nonzero.size), 10, 60))
    transform, inverse = (np.log, np.exp) if log_x else ((lambda v: v), (lambda v: v))
    low, bulk_high, high = transform(smallest), transform(bulk_top), transform(largest)
    if high <= low:
        bins = n_bulk_bins
    else:
        width = (bulk_high - low) / n_bulk_bins if bulk_high > low else (high - low) / n_bulk_bins
        n_bins = int(min(MAX_BINS, max(1, math.ceil((high - low) / width))))
        bins = inverse(np.linspace(low, high, n_bins + 1))

    figure = Figure(figsize=(7.0, 4.5))
    axes = figure.add_subplot()
    axes.hist(nonzero, bins=bins, density=True, color="tab:blue", alpha=0.5, label=f"{nonzero.size} nonzero eigenvalues")
    if noise_fit is not None:
        lower = max(noise_fit.lambda_minus, smallest if log_x else 0.0, noise_fit.lambda_plus * 1e-6)
        grid = (np.geomspace if log_x else np.linspace)(lower, noise_fit.lambda_plus, 400)
        # The histogram is a law over the nonzero eigenvalues; for q > 1 the
        # continuous MP part has mass 1/q, so scale it up to 1.
        scale = max(1.0, noise_fit.q)
        axes.plot(grid, scale * marchenko_pastur_density(grid, noise_fit.sigma2, noise_fit.q), color="tab:orange",
                  label=f"MP fit, σ² = {noise_fit.sigma2:.3g}, q = {noise_fit.q:.3g}")
        axes.axvline(noise_fit.lambda_plus, color="tab:red", linestyle="--",
                     label=f"λ+ = {noise_fit.lambda_plus:.3g}")
    if rank:
        kept = descending[:rank]
        axes.plot(kept, np.zeros_like(kept), linestyle="none", marker="v", markersize=9, color="tab:green",
                  clip_on=False, label=f"kept: {rank} leading")
    if log_x:
        axes.set_xscale("log")
    axes.set_xlabel("eigenvalue")
    axes.set_ylabel("density")
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()

    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path
