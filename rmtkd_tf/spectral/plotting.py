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
MAX_LOG_BINS = 80


# A fit whose bulk holds fewer than this share of the nonzero eigenvalues (or fewer than
# MIN_BULK_EIGENVALUES) describes no noise bulk: trained conv layers often have none (almost every
# direction is signal). Its MP density would be drawn over a handful of eigenvalues as a tall
# spike beside the histogram, so only the edge is drawn and the plot says "no MP bulk".
MIN_BULK_FRACTION = 0.1
MIN_BULK_EIGENVALUES = 3


def has_mp_bulk(noise_fit):
    """Whether `noise_fit` has a noise bulk worth drawing as a Marchenko–Pastur density.

    >>> from types import SimpleNamespace
    >>> has_mp_bulk(SimpleNamespace(n_bulk=20, n_nonzero=64)), has_mp_bulk(SimpleNamespace(n_bulk=1, n_nonzero=27))
    (True, False)
    """
    return (noise_fit.n_bulk >= MIN_BULK_EIGENVALUES
            and noise_fit.n_bulk >= MIN_BULK_FRACTION * max(noise_fit.n_nonzero, 1))


def plot_spectrum(eigenvalues, noise_fit, rank, title, path, log_x=None):
    """Write a PNG of the eigenvalue histogram with the fitted MP density.

    Draws the histogram (as a density) of the nonzero eigenvalues, the MP
    density of `noise_fit` weighted by the share of eigenvalues in its bulk
    (and rescaled by `q` when `q > 1`, so that it is the law of the nonzero
    eigenvalues like the histogram), a vertical line at `lambda_plus`, and
    markers on the `rank` leading eigenvalues (the kept spikes). On a log x
    axis both are densities per unit of `log10(eigenvalue)`, so that their
    areas still compare. A fit without a noise bulk (`has_mp_bulk`) gets its
    edge only, and the legend says "no MP bulk".

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

    figure = Figure(figsize=(7.0, 4.5))
    draw_spectrum(figure.add_subplot(), eigenvalues, noise_fit, rank, title, log_x=log_x)
    figure.tight_layout()
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def draw_spectrum(axes, eigenvalues, noise_fit, rank, title, log_x=None):
    """Draw what `plot_spectrum` writes onto matplotlib `axes`; returns whether the x axis is logarithmic."""
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
    log_x = bool(log_x) and smallest > 0
    # Resolve the bulk with about 2 sqrt(N) bins and continue with the same
    # width (in log space on a log axis) out to the largest spike: bins
    # spread evenly over the whole range would leave the bulk two bars.
    with_bulk = noise_fit is not None and has_mp_bulk(noise_fit)
    bulk_top = min(largest, noise_fit.lambda_plus) if with_bulk else largest
    n_bulk_bins = int(np.clip(2 * math.sqrt(nonzero.size), 10, 60))
    transform, inverse = (np.log10, lambda v: 10.0 ** v) if log_x else ((lambda v: v), (lambda v: v))
    low, bulk_high, high = transform(smallest), transform(bulk_top), transform(largest)
    if high <= low:
        edges = np.linspace(low - 0.5, high + 0.5, 2) if log_x else np.linspace(low * 0.9, high * 1.1 + 1e-12, 2)
    else:
        width = (bulk_high - low) / n_bulk_bins if bulk_high > low else (high - low) / n_bulk_bins
        # On a log axis the spikes spread over decades: more than about 4 sqrt(N) bins (at most
        # MAX_LOG_BINS) would leave each eigenvalue a sliver of its own.
        cap = int(np.clip(4 * math.sqrt(nonzero.size), 20, MAX_LOG_BINS)) if log_x else MAX_BINS
        n_bins = int(min(cap, max(1, math.ceil((high - low) / width))))
        edges = np.linspace(low, high, n_bins + 1)
    # Density per unit of the axis variable: eigenvalue, or log10(eigenvalue) on a log axis.
    density, _ = np.histogram(transform(nonzero), bins=edges, density=True)
    left, right = inverse(edges[:-1]), inverse(edges[1:])
    axes.bar(left, density, width=right - left, align="edge", color="tab:blue", alpha=0.5,
             label=f"{nonzero.size} nonzero eigenvalues")
    if noise_fit is not None:
        if with_bulk:
            lower = max(noise_fit.lambda_minus, smallest if log_x else 0.0, noise_fit.lambda_plus * 1e-6)
            grid = (np.geomspace if log_x else np.linspace)(lower, noise_fit.lambda_plus, 400)
            # The histogram is a law over the nonzero eigenvalues, the bulk a share n_bulk / n_nonzero of
            # them; for q > 1 the continuous MP part has mass 1/q, so scale it up to 1 first.
            scale = max(1.0, noise_fit.q) * noise_fit.n_bulk / max(noise_fit.n_nonzero, 1)
            curve = scale * marchenko_pastur_density(grid, noise_fit.sigma2, noise_fit.q)
            if log_x:
                curve = curve * grid * math.log(10.0)  # d lambda / d log10(lambda)
            axes.plot(grid, curve, color="tab:orange",
                      label=f"MP fit ({noise_fit.n_bulk} in bulk), σ² = {noise_fit.sigma2:.3g}, q = {noise_fit.q:.3g}")
            edge_label = f"λ+ = {noise_fit.lambda_plus:.3g}"
        else:
            edge_label = f"no MP bulk ({noise_fit.n_bulk} of {noise_fit.n_nonzero} below λ+): λ+ = {noise_fit.lambda_plus:.3g}"
        axes.axvline(noise_fit.lambda_plus, color="tab:red", linestyle="--", label=edge_label)
    if rank:
        kept = descending[:rank]
        axes.plot(kept, np.zeros_like(kept), linestyle="none", marker="v", markersize=9, color="tab:green",
                  clip_on=False, label=f"kept: {rank} leading")
    if log_x:
        axes.set_xscale("log")
    axes.set_xlabel("eigenvalue")
    axes.set_ylabel("density per log10 unit" if log_x else "density")
    axes.set_title(title)
    axes.set_ylim(top=1.45 * axes.get_ylim()[1])  # room for the legend above the bars
    axes.legend(loc="upper right", fontsize="small")
    return log_x
