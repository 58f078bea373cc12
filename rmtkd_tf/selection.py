"""From collected statistics to per-layer rank decisions.

For every collected layer: eigen-decompose its covariance, let a rank rule
(`rmtkd_tf.spectral`) pick `k`, clamp it to the user's minimum `k/d`, and keep
the factorization only if it saves parameters. Every layer gets a
`LayerDecision`, skipped ones with the reason, so reports explain everything.

The covariance analysed is the one of the error that matters
(`rmtkd_tf.output_weighting`): for a layer whose output goes straight into a
BatchNormalization, `D Σ D` with `D` the BN's per-channel scale (metric
`"post-batchnorm"`; the eigenvalues, the rank rule and the dropped energy are
then post-BN variances), else `Σ` (`"pre-activation"`), or, for a factorized
layer reduced again, the covariance of its bottleneck (`"bottleneck"`).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np

from rmtkd_tf.factorization import leading_eigenvectors, low_rank_parameter_count, weighted_covariance
from rmtkd_tf.model_walk import dense_matrix_shape
from rmtkd_tf.output_weighting import PRE_ACTIVATION, output_weighting
from rmtkd_tf.surgery import LayerFactors, unsupported_reason


@dataclasses.dataclass
class LayerDecision:
    """The rank chosen for one layer and what it does to the parameter count."""

    path: str
    layer_type: str
    dim: int  # width of the analysed representation (d, or k of a factorized layer)
    units: int  # output width of the layer
    fan_in: int
    n_samples: int
    n_effective: int | None  # the independent samples the rank rule was told (correlated positions/tokens)
    rule_rank: int | None  # what the rank rule said
    rank: int | None  # the rank applied (None: layer left as it is)
    params_before: int
    params_after: int
    skipped: str | None = None
    rule: dict | None = None
    noise: dict | None = None  # the rank rule's noise fit, if it has one (reused when the layer is analysed again)
    metric: str = PRE_ACTIVATION  # the covariance analysed (see the module docstring)
    metric_note: str | None = None  # which BatchNormalization was folded, or why none was
    eigenvalues: np.ndarray | None = dataclasses.field(default=None, repr=False)
    # Per-channel scale of the "post-batchnorm" metric (None: unweighted); `layer_factors` uses it.
    output_scale: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def to_dict(self, with_eigenvalues=False):
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("eigenvalues", "output_scale")}
        if with_eigenvalues and self.eigenvalues is not None:
            out["eigenvalues"] = [float(v) for v in self.eigenvalues]
        return out


def layer_geometry(layer):
    """`(fan_in, units, params)` of a Dense/Conv/factorized layer.

    `params` counts the factorized matrix (or its two factors) and the bias only: a SeparableConv2D's
    depthwise kernel is neither factorized nor removed, so it is left out of before and after alike.
    """
    if hasattr(layer, "bottleneck"):
        down_shape = tuple(layer.down_kernel.shape)
        fan_in = int(np.prod(down_shape[:-1]))
        units = int(getattr(layer, "units", None) or layer.filters)
    else:
        fan_in, units = dense_matrix_shape(layer)
    params = int(layer.count_params())
    depthwise = getattr(layer, "depthwise_kernel", None)
    if depthwise is not None:
        params -= int(np.prod(tuple(depthwise.shape)))
    return fan_in, units, params


def decide_ranks(layers, statistics, rule, min_rank_ratio=0.0, min_rank=1, noise_priors=None, fold_batchnorm=True):
    """Rank decisions and factors for the layers with statistics.

    Args:
        layers: dict path -> Keras layer (of the model the statistics came from).
        statistics: dict path -> `LayerStatistics`.
        rule: a rank rule from `rmtkd_tf.spectral` (copied per layer so its
            fitted state can be reported).
        min_rank_ratio: never go below `ceil(min_rank_ratio * d)` with d the
            layer's output width.
        min_rank: never go below this rank.
        noise_priors: optional dict path -> `NoiseFit` (or its dict) of an
            earlier analysis of the layer, passed to `rule.select(noise=...)`
            so that re-analysing a factorized layer keeps its noise level.
        fold_batchnorm: weigh a layer followed by a BatchNormalization by the
            BN's channel scale (see the module docstring); False analyses
            every layer on its plain pre-activation covariance.

    Returns:
        `(decisions, factors)`: a list of `LayerDecision` and a dict
        path -> `LayerFactors` for the layers worth factorizing.
    """
    decisions, factors = [], {}
    for path, stats in statistics.items():
        layer = layers[path]
        fan_in, units, params = layer_geometry(layer)
        decision = LayerDecision(
            path=path,
            layer_type=type(layer).__name__,
            dim=stats.dim,
            units=units,
            fan_in=fan_in,
            n_samples=stats.n_samples,
            n_effective=stats.n_effective,
            rule_rank=None,
            rank=None,
            params_before=params,
            params_after=params,
        )
        decisions.append(decision)
        reason = unsupported_reason(layer)
        if reason:
            decision.skipped = reason
            continue
        weighting = output_weighting(layer, fold_batchnorm)
        decision.metric, decision.metric_note = weighting.metric, weighting.note
        decision.output_scale = weighting.scale
        eigenvalues, _ = leading_eigenvectors(analysed_covariance(stats, decision), 0)
        decision.eigenvalues = eigenvalues
        layer_rule = copy.deepcopy(rule)
        try:
            rule_rank = int(layer_rule.select(np.clip(eigenvalues, 0.0, None), max(stats.n_effective, 1),
                                              noise=(noise_priors or {}).get(path)))
        except ValueError as exc:  # degenerate spectrum (all zeros, too few samples)
            decision.skipped = f"rank rule failed: {exc}"
            continue
        decision.rule_rank = rule_rank
        decision.rule = layer_rule.to_dict()
        fitted_noise = getattr(layer_rule, "noise_", None)
        decision.noise = None if fitted_noise is None else fitted_noise.to_dict()
        floor = max(int(min_rank), math.ceil(min_rank_ratio * units))
        rank = min(max(rule_rank, floor), stats.dim)
        after = low_rank_parameter_count(fan_in, units, rank)
        if rank >= stats.dim and hasattr(layer, "bottleneck"):
            decision.skipped = f"rank {rank} keeps the whole bottleneck (k={stats.dim})"
            continue
        if after >= params:
            decision.skipped = (
                f"rank {rank} of {units} would not save parameters ({after} >= {params})"
            )
            continue
        decision.rank = rank
        decision.params_after = after
        factors[path] = layer_factors(stats, decision, rank)
    return decisions, factors


def analysed_covariance(stats, decision):
    """The covariance `decision` analyses: `D Σ D` for the "post-batchnorm" metric, else `Σ`."""
    if decision.output_scale is None:
        return stats.covariance
    return weighted_covariance(stats.covariance, decision.output_scale)


def layer_factors(stats, decision, rank):
    """The `LayerFactors` that keep the `rank` leading directions of a layer's analysed covariance.

    With a "post-batchnorm" decision the directions are those of `D Σ D` and the
    factors carry `D`, so surgery builds the oblique projection (`rmtkd_tf.factorization`).
    """
    _, basis = leading_eigenvectors(analysed_covariance(stats, decision), rank)
    return LayerFactors(basis=basis, mean=stats.mean, output_scale=decision.output_scale)
