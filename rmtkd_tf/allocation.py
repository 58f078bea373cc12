"""Rank allocation across layers for a budgeted, one-shot cut (pure NumPy).

The budgeted schedule analyses every candidate layer once and then decides all
ranks together, instead of cutting one layer after another. Two facts order the
directions that can be dropped:

- The Marchenko–Pastur edge says which directions of a layer are signal: the
  `max_rank` directions above it. The others are noise and go first: every
  noise direction of every layer is dropped before any signal direction.
- Within each of those two tiers, a direction `i` of layer `l` adds the
  relative activation error `λ_i / Σ_j λ_j` of that layer (the share of its
  output variance the projection discards; with a following BatchNorm folded in,
  of the normalised output) and saves `cost_l` parameters (`fan_in + units`) or
  FLOPs (that times the layer's output positions). Allocating greedily by
  *error added per unit saved* drops the smallest `λ_i / (Σ_j λ_j · cost_l)`
  first.

Both orders are one score per direction, `ratio` for noise and `tier + ratio`
for signal (`tier` above every ratio), and because a layer's eigenvalues are sorted its
scores are too. So every cut is one global threshold `tau`: a layer keeps the
directions scoring at least `tau` (and at least `min_rank`). All cuts form a
one-parameter family (`CutLadder`): `tau = 0` keeps everything, `tau = tier` is
the MP cut (every layer at its signal rank), larger `tau` cut into the signal; a
target or a validation search walks it by bisection.

A layer whose allocated rank would not save parameters (`fan_in·k + k·d + d`
at least the dense count) stays dense; a layer that is already factorized
keeps its bottleneck unless the rank goes down.

Example:
>>> import numpy as np
>>> layers = [
...     LayerBudget("a", np.array([9.0, 4.0, 1.0, 0.1]), max_rank=3, min_rank=1, fan_in=8, units=4),
...     LayerBudget("b", np.array([5.0, 5.0, 0.2, 0.1]), max_rank=2, min_rank=1, fan_in=8, units=4),
... ]
>>> ladder = CutLadder(layers, other_params=10, metric="params")
>>> ladder.at(0).ranks                      # nothing cut
{'a': None, 'b': None}
>>> ladder.at(ladder.mp_index).ranks        # the MP cut: every layer at its signal rank
{'a': None, 'b': 2}
>>> ladder.at(ladder.index_of_params(40)).ranks   # the smallest cut reaching 40 parameters
{'a': 1, 'b': 1}
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from rmtkd_tf.factorization import low_rank_parameter_count

#: What a direction costs when ranked against the error it adds: its parameters, its FLOPs, or the
#: sum of the shares of the candidate layers' parameters and of their FLOPs it holds ("balanced":
#: a Dense head full of parameters and a convolution full of FLOPs both count).
COST_METRICS = ("balanced", "params", "flops")
#: Least offset added to the score of signal directions (the ladder uses twice the largest ratio
#: if that is more), so that every noise direction scores below every signal direction.
SIGNAL_TIER = 2.0


@dataclasses.dataclass
class LayerBudget:
    """One candidate layer as the allocation sees it.

    Attributes:
        path: the layer's path in the model.
        eigenvalues: eigenvalues of its analysed covariance, any order (sorted descending here).
        max_rank: the signal rank (MP edge) clamped to `[min_rank, dim]`: never kept above.
        min_rank: the floor (`--min-rank-ratio`, at least 1).
        fan_in, units: the dense map `fan_in -> units` the layer computes at each position.
        dense_params: the layer's parameters now (default: `fan_in·units + units`).
        positions: output positions per example (conv positions, tokens); FLOPs scale with it.
        factorized: the layer is already low-rank with bottleneck `dim` (then the rank only goes down).
    """

    path: str
    eigenvalues: np.ndarray
    max_rank: int
    min_rank: int
    fan_in: int
    units: int
    dense_params: int | None = None
    positions: int = 1
    factorized: bool = False

    def __post_init__(self):
        values = np.sort(np.clip(np.asarray(self.eigenvalues, dtype=np.float64), 0.0, None))[::-1]
        if values.ndim != 1 or values.size == 0:
            raise ValueError(f"{self.path}: eigenvalues must be a non-empty 1-D array")
        self.eigenvalues = values
        self.min_rank = int(min(max(1, self.min_rank), self.dim))
        self.max_rank = int(min(max(self.min_rank, self.max_rank), self.dim))
        if self.dense_params is None:
            self.dense_params = self.fan_in * self.units + self.units

    @property
    def dim(self):
        return int(self.eigenvalues.size)

    def cost_per_direction(self, metric, totals=(1.0, 1.0)):
        """What one kept direction costs: parameters, MACs per example, or (balanced) the sum of its
        shares of `totals = (params, MACs)` of all candidate layers."""
        params = self.fan_in + self.units
        macs = params * self.positions
        if metric == "params":
            return params
        if metric == "flops":
            return macs
        return params / totals[0] + macs / totals[1]

    def ratios(self, metric, totals=(1.0, 1.0)):
        """Relative error per unit of cost of each direction, descending (zero energy: zeros)."""
        total = float(self.eigenvalues.sum())
        share = self.eigenvalues / total if total > 0 else np.zeros_like(self.eigenvalues)
        return share / self.cost_per_direction(metric, totals)

    def scores(self, metric, totals=(1.0, 1.0), signal_tier=None):
        """Drop order of each direction, descending: `ratio` for noise, `signal_tier + ratio` for signal."""
        ratios = self.ratios(metric, totals)
        tier = SIGNAL_TIER if signal_tier is None else signal_tier
        return ratios + tier * (np.arange(self.dim) < self.max_rank)

    def rank_at(self, tau, scores):
        """Directions kept at threshold `tau`: those scoring at least `tau`, and at least `min_rank`."""
        return max(self.min_rank, int(np.count_nonzero(scores >= tau)))

    def applied_rank(self, rank):
        """`rank`, or None where factorizing at `rank` would not reduce the layer (it then stays as it is)."""
        if self.factorized:
            return rank if rank < self.dim else None
        return rank if low_rank_parameter_count(self.fan_in, self.units, rank) < self.dense_params else None

    def params(self, rank):
        """Parameters of the layer after applying `rank` (None: unchanged)."""
        return self.dense_params if rank is None else low_rank_parameter_count(self.fan_in, self.units, rank)

    def macs(self, rank):
        """Multiply-adds per example after applying `rank` (None: unchanged)."""
        if rank is None:
            macs = (self.dim if self.factorized else self.units) * self.fan_in
            macs = macs + (self.dim * self.units if self.factorized else 0)
        else:
            macs = rank * (self.fan_in + self.units)
        return macs * self.positions

    def relative_error(self, rank):
        """Share of the analysed variance discarded at `rank` (None: 0)."""
        if rank is None:
            return 0.0
        total = float(self.eigenvalues.sum())
        return float(self.eigenvalues[rank:].sum() / total) if total > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class Cut:
    """One point of the ladder: its threshold, the ranks it applies (None: layer unchanged) and its totals."""

    tau: float
    ranks: dict
    params: int
    flops: int
    relative_error: float  # summed over layers

    def to_dict(self):
        return {"tau": self.tau, "ranks": dict(self.ranks), "params": self.params, "flops": self.flops,
                "relative_error": self.relative_error}


class CutLadder:
    """All budgeted cuts of a set of layers, ordered from the MP cut (`tau = 0`) to every layer at its floor.

    Args:
        layers: `LayerBudget`s.
        other_params: parameters outside the candidate layers (they do not change).
        other_flops: FLOPs (multiply-adds per example) outside the candidate layers.
        metric: "balanced" (default), "params" or "flops": what a direction's cost is counted in.
    """

    def __init__(self, layers, other_params=0, other_flops=0, metric="balanced"):
        if metric not in COST_METRICS:
            raise ValueError(f"metric must be one of {', '.join(COST_METRICS)}, got {metric!r}")
        paths = [layer.path for layer in layers]
        if len(set(paths)) != len(paths):
            raise ValueError("layer paths must be unique")
        self.layers = list(layers)
        self.other_params = int(other_params)
        self.other_flops = int(other_flops)
        self.metric = metric
        totals = (float(sum(layer.dense_params for layer in self.layers)) or 1.0,
                  float(sum(layer.macs(None) for layer in self.layers)) or 1.0)
        ratios = [layer.ratios(metric, totals) for layer in self.layers]
        # Signal scores start above every noise score, so all noise goes first.
        self.signal_tier = 2.0 * max([float(r.max()) for r in ratios if r.size] + [SIGNAL_TIER / 2.0])
        self._scores = [layer.scores(metric, totals, self.signal_tier) for layer in self.layers]
        # Every threshold at which some layer's rank changes, ascending: 0 (nothing cut), then just above
        # each direction's score (a threshold equal to a score keeps it), and SIGNAL_TIER (the MP cut).
        steps = np.concatenate([s[layer.min_rank:] for s, layer in zip(self._scores, self.layers)] or [np.zeros(0)])
        self.taus = np.unique(np.concatenate([[0.0, self.signal_tier], np.nextafter(steps, np.inf)]))
        #: Ladder index of the MP cut.
        self.mp_index = int(np.searchsorted(self.taus, self.signal_tier))

    def __len__(self):
        return int(self.taus.size)

    def ranks(self, tau):
        """`path -> rank` applied at threshold `tau` (None: the layer stays as it is)."""
        return {layer.path: layer.applied_rank(layer.rank_at(tau, scores))
                for layer, scores in zip(self.layers, self._scores)}

    def cut(self, tau):
        """The `Cut` at threshold `tau`."""
        ranks = self.ranks(tau)
        params = self.other_params + sum(layer.params(ranks[layer.path]) for layer in self.layers)
        flops = self.other_flops + 2 * sum(layer.macs(ranks[layer.path]) for layer in self.layers)
        error = sum(layer.relative_error(ranks[layer.path]) for layer in self.layers)
        return Cut(float(tau), ranks, int(params), int(flops), float(error))

    def at(self, index):
        """The cut at ladder position `index` (0: nothing cut, `mp_index`: the MP cut, -1: all at the floor)."""
        return self.cut(self.taus[index])

    def _first_index(self, reaches):
        """Smallest ladder index whose cut satisfies `reaches` (monotone), else the last index."""
        low, high = 0, len(self) - 1
        if not reaches(self.at(high)):
            return high
        while low < high:
            middle = (low + high) // 2
            if reaches(self.at(middle)):
                high = middle
            else:
                low = middle + 1
        return low


    def last_passing(self, passes, low=0, high=None):
        """Largest ladder index in `[low, high]` whose cut `passes` (assumed monotone: passing cuts come first).

        Bisection: about `log2(len)` calls of `passes(cut)`. Returns None when even `low` fails.
        """
        high = len(self) - 1 if high is None else high
        if not passes(self.at(low)):
            return None
        while low < high:
            middle = (low + high + 1) // 2
            if passes(self.at(middle)):
                low = middle
            else:
                high = middle - 1
        return low

    def index_of_params(self, params):
        """Ladder index of the smallest cut with at most `params` parameters."""
        return self._first_index(lambda cut: cut.params <= params)

    def index_of_flops(self, flops):
        """Ladder index of the smallest cut with at most `flops` FLOPs."""
        return self._first_index(lambda cut: cut.flops <= flops)

    def half_way_back(self, index):
        """Ladder index of the cut saving about half the parameters that `index` saves (None at 0)."""
        if index <= 0:
            return None
        target = 0.5 * (self.at(0).params + self.at(index).params)
        return min(self.index_of_params(math.floor(target)), index - 1)
