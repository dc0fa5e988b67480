"""ERK and uniform per-layer densities (RigL §3; google-research/rigl sparse_utils), checked by hand."""

from __future__ import annotations

import math

import pytest

from pruning_bench.pruning.layer_densities import (
    erk_densities,
    keep_counts,
    layer_densities,
    uniform_densities,
)

# conv(1->4, 3x3): 36 weights, raw 11/36; conv(4->8, 3x3): 288, raw 18/288; linear(8->2): 16, raw 10/16
SHAPES = {"c1": (4, 1, 3, 3), "c2": (8, 4, 3, 3), "fc": (2, 8)}
N = 36 + 288 + 16


def test_erk_hand_computation_with_dense_layer_capping():
    # S = 0.5 -> keep 170. eps = 170/39: fc's 10/16 * eps = 2.7 > 1 -> fc dense. eps = 154/29: c1's
    # 11/36 * eps = 1.6 > 1 -> c1 dense. eps = (170 - 16 - 36)/18: c2 density 18/288 * 118/18 = 118/288.
    d = erk_densities(SHAPES, 0.5)
    assert d["fc"] == 1.0 and d["c1"] == 1.0
    assert d["c2"] == pytest.approx(118 / 288)
    counts = keep_counts(SHAPES, d, 170)
    assert counts == {"c1": 36, "c2": 118, "fc": 16}


def test_erk_without_capping_is_proportional_to_the_raw_density():
    shapes = {"a": (64, 32, 3, 3), "b": (64, 64, 3, 3), "c": (128, 64, 1, 1)}
    d = erk_densities(shapes, 0.9)
    raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    eps = 0.1 * sum(math.prod(s) for s in shapes.values()) / sum(raw[n] * math.prod(s) for n, s in shapes.items())
    assert all(v < 1 for v in d.values())
    for n in shapes:
        assert d[n] == pytest.approx(eps * raw[n])


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95, 0.99])
def test_erk_total_nonzeros_equal_the_target(sparsity):
    shapes = {"stem": (16, 3, 3, 3), "l1": (16, 16, 3, 3), "l2": (32, 16, 3, 3), "l3": (64, 32, 3, 3),
              "sc": (64, 32, 1, 1), "fc": (10, 64)}
    total = sum(math.prod(s) for s in shapes.values())
    target = round((1 - sparsity) * total)
    d = erk_densities(shapes, sparsity)
    assert sum(d[n] * math.prod(s) for n, s in shapes.items()) == pytest.approx(target, abs=0.5)
    assert all(0 < v <= 1 for v in d.values())
    counts = keep_counts(shapes, d, target)
    assert sum(counts.values()) == target
    assert all(0 < counts[n] <= math.prod(s) for n, s in shapes.items())


def test_uniform_keeps_first_layer_dense_and_matches_total():
    d = uniform_densities(SHAPES, 0.5, dense=["c1"])
    assert d["c1"] == 1.0
    assert d["c2"] == d["fc"] == pytest.approx((170 - 36) / (288 + 16))
    assert sum(keep_counts(SHAPES, d, 170).values()) == 170
    ref = uniform_densities(SHAPES, 0.5, dense=["c1"], match_total=False)  # the reference code's rule
    assert ref["c2"] == ref["fc"] == 0.5


def test_bad_inputs():
    with pytest.raises(ValueError, match="distribution"):
        layer_densities("random", SHAPES, 0.5)
    with pytest.raises(ValueError, match="cannot be reached"):
        erk_densities(SHAPES, 0.95, dense=["c2"])
    with pytest.raises(ValueError, match="sparsity"):
        erk_densities(SHAPES, 1.0)
