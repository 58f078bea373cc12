"""Spectral tools of RMT-KD, in pure NumPy/SciPy (no TensorFlow import).

- `marchenko_pastur`: edges, density, CDF and quantile of the MP law.
- `noise`: `estimate_noise_variance` fits the MP noise level of a spectrum
  (`NoiseFit`, JSON round-trip with `to_dict` / `NoiseFit.from_dict`).
- `effective_samples`: `effective_sample_size`, the number of independent
  samples that correlated rows (positions of one image, tokens of one text)
  are worth: the `n` to give the MP law.
- `rank_rules`: rules that pick how many leading eigenvectors to keep,
  resolved from a name, a dict or an instance by `rank_rules.get`
  (`get_rank_rule` here), written back by `rank_rules.serialize`.
- `plotting`: `plot_spectrum` writes a spectrum-vs-MP PNG (matplotlib is
  imported only when it is called).

Example:
>>> import numpy as np
>>> from rmtkd_tf.spectral import get_rank_rule
>>> rng = np.random.default_rng(1)
>>> x = rng.normal(size=(1000, 50))
>>> x[:, 0] *= 5.0                                # one strong direction
>>> get_rank_rule("mp").select(np.linalg.eigvalsh(x.T @ x / 1000), 1000)
1
"""

from .marchenko_pastur import (
    marchenko_pastur_cdf,
    marchenko_pastur_density,
    marchenko_pastur_edges,
    marchenko_pastur_quantile,
)
from .effective_samples import EffectiveSampleSize, effective_sample_size
from .noise import NoiseFit, estimate_noise_variance, tracy_widom_scale
from .noise import validate_eigenvalues, validate_n_samples  # noqa: F401  (helpers of the rules; not in __all__)
from .plotting import plot_spectrum
from .rank_rules import (
    RANK_RULES,
    EnergyRule,
    FixedRankRule,
    FixedRatioRule,
    GavishDonohoRule,
    MarchenkoPasturRule,
    RankRule,
    gavish_donoho_omega,
    get_rank_rule,
    serialize as serialize_rank_rule,
)

__all__ = [
    "marchenko_pastur_edges",
    "marchenko_pastur_density",
    "marchenko_pastur_cdf",
    "marchenko_pastur_quantile",
    "EffectiveSampleSize",
    "effective_sample_size",
    "NoiseFit",
    "estimate_noise_variance",
    "tracy_widom_scale",
    "RankRule",
    "MarchenkoPasturRule",
    "EnergyRule",
    "GavishDonohoRule",
    "FixedRankRule",
    "FixedRatioRule",
    "RANK_RULES",
    "gavish_donoho_omega",
    "get_rank_rule",
    "serialize_rank_rule",
    "plot_spectrum",
]
