"""Properties of the budgeted rank allocation (pure NumPy, no TensorFlow)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmtkd_tf.allocation import CutLadder, LayerBudget
from rmtkd_tf.factorization import low_rank_parameter_count


@st.composite
def layer_sets(draw):
    count = draw(st.integers(1, 4))
    layers = []
    for index in range(count):
        dim = draw(st.integers(2, 24))
        fan_in = draw(st.integers(2, 64))
        decay = draw(st.floats(0.05, 3.0))
        eigenvalues = np.exp(-decay * np.arange(dim)) * draw(st.floats(0.01, 100.0))
        min_rank = draw(st.integers(1, dim))
        max_rank = draw(st.integers(0, dim))
        positions = draw(st.sampled_from([1, 4, 64]))
        layers.append(LayerBudget(f"l{index}", eigenvalues, max_rank=max_rank, min_rank=min_rank,
                                  fan_in=fan_in, units=dim, positions=positions))
    return layers


@settings(max_examples=60, deadline=None)
@given(layer_sets(), st.sampled_from(["balanced", "params", "flops"]))
def test_ladder_is_monotone_from_nothing_cut_through_mp_to_the_floor(layers, metric):
    ladder = CutLadder(layers, other_params=7, other_flops=11, metric=metric)
    cuts = [ladder.at(i) for i in range(len(ladder))]
    # Nothing is cut at the top of the ladder.
    assert all(rank is None for rank in cuts[0].ranks.values())
    assert cuts[0].params == 7 + sum(layer.dense_params for layer in layers)
    for before, after in zip(cuts, cuts[1:]):
        assert after.params <= before.params and after.flops <= before.flops
        assert after.relative_error >= before.relative_error - 1e-12
    for layer in layers:
        ranks = [cut.ranks[layer.path] if cut.ranks[layer.path] is not None else layer.dim for cut in cuts]
        assert ranks == sorted(ranks, reverse=True)
        # The MP cut puts every layer at its signal rank (where that saves parameters) ...
        assert cuts[ladder.mp_index].ranks[layer.path] == layer.applied_rank(layer.max_rank)
        # ... and the bottom of the ladder at its floor.
        assert cuts[-1].ranks[layer.path] == layer.applied_rank(layer.min_rank)


@settings(max_examples=60, deadline=None)
@given(layer_sets(), st.floats(0.0, 1.0))
def test_noise_directions_go_before_any_signal_direction(layers, where):
    ladder = CutLadder(layers, metric="balanced")
    index = int(where * (len(ladder) - 1))
    cut = ladder.at(index)
    kept = {layer.path: layer.rank_at(ladder.taus[index], scores) for layer, scores in zip(layers, ladder._scores)}
    if index <= ladder.mp_index:  # above the MP cut no signal direction is dropped
        assert all(kept[layer.path] >= layer.max_rank for layer in layers)
    else:  # below it no noise direction is kept
        assert all(kept[layer.path] <= max(layer.max_rank, layer.min_rank) for layer in layers)
    assert cut.params == sum(layer.params(cut.ranks[layer.path]) for layer in layers)


@settings(max_examples=60, deadline=None)
@given(layer_sets(), st.floats(0.0, 1.0))
def test_target_gives_the_smallest_cut_that_reaches_it(layers, fraction):
    ladder = CutLadder(layers)
    full, floor = ladder.at(0).params, ladder.at(-1).params
    target = int(floor + fraction * (full - floor))
    index = ladder.index_of_params(target)
    assert ladder.at(index).params <= target
    if index > 0:
        assert ladder.at(index - 1).params > target


@settings(max_examples=40, deadline=None)
@given(layer_sets(), st.floats(0.0, 1.0))
def test_bisection_finds_the_last_passing_cut(layers, fraction):
    ladder = CutLadder(layers)
    boundary = int(fraction * (len(ladder) - 1))
    calls = []

    def passes(cut):
        calls.append(cut)
        return cut.tau <= ladder.taus[boundary]

    assert ladder.last_passing(passes) == boundary
    assert len(calls) <= 2 + int(np.ceil(np.log2(len(ladder) + 1)))
    assert ladder.last_passing(lambda cut: False) is None


def test_greedy_order_prefers_cheap_error():
    # Two layers with the same spectrum; dropping a direction of the wide one saves 10x the parameters
    # for the same relative error, so the wide layer is cut first.
    spectrum = np.array([4.0, 3.0, 2.0, 1.0])
    narrow = LayerBudget("narrow", spectrum, max_rank=0, min_rank=1, fan_in=4, units=4)
    wide = LayerBudget("wide", spectrum, max_rank=0, min_rank=1, fan_in=76, units=4)
    ladder = CutLadder([narrow, wide], metric="params")
    first_cut = next(ladder.at(i) for i in range(len(ladder)) if any(r is not None for r in ladder.at(i).ranks.values()))
    assert first_cut.ranks["wide"] is not None and first_cut.ranks["narrow"] is None


def test_layer_that_would_not_save_stays_dense_and_factorized_layer_only_goes_down():
    dense = LayerBudget("d", np.ones(8), max_rank=8, min_rank=1, fan_in=8, units=8)
    assert dense.applied_rank(4) is None  # 8*4 + 4*8 + 8 = 72 >= 72
    assert dense.applied_rank(3) == 3 and dense.params(3) == low_rank_parameter_count(8, 8, 3)
    factorized = LayerBudget("f", np.ones(5), max_rank=5, min_rank=1, fan_in=8, units=8,
                             dense_params=low_rank_parameter_count(8, 8, 5), factorized=True)
    assert factorized.applied_rank(5) is None and factorized.applied_rank(4) == 4


def test_bad_inputs():
    with pytest.raises(ValueError, match="metric"):
        CutLadder([], metric="latency")
    layer = LayerBudget("a", np.ones(3), max_rank=1, min_rank=1, fan_in=3, units=3)
    with pytest.raises(ValueError, match="unique"):
        CutLadder([layer, layer])
    with pytest.raises(ValueError, match="non-empty"):
        LayerBudget("e", np.zeros(0), max_rank=0, min_rank=1, fan_in=1, units=1)
