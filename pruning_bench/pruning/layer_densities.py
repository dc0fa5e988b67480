"""Per-layer densities for a global sparsity target: Erdos-Renyi-Kernel (ERK) and uniform.

Evci et al., "Rigging the Lottery", ICML 2020, §3 ("Sparsity distribution"); reference code
``google-research/rigl`` (``rigl/sparse_utils.py::get_sparsities_erdos_renyi`` and ``get_mask_random``).
Pure functions of the weight shapes, reusable by any method that allocates sparsity per layer.

- ERK: the density of layer l is eps * (sum of its dims) / (product of its dims) (conv: n_in + n_out + k;
  linear: n_in + n_out over n_in * n_out), eps solved so the total number of kept weights equals
  (1 - S) * N. A layer whose density would exceed 1 is made dense and eps re-solved; as in the reference
  only the layer(s) with the largest raw density are made dense per iteration, in a loop.
- Uniform: every layer at the same sparsity, except the ``dense`` layers (RigL: the first layer).

Difference from the reference code (harness convention, docs/methods.md pitfall 1): layers forced dense (``dense=...``)
count towards the total here (the harness measures sparsity over every conv/linear weight), whereas
``get_sparsities_erdos_renyi`` leaves "custom" layers out of the equation. With ``dense=()`` (the default)
both agree. :func:`keep_counts` turns densities into integer counts whose sum is exactly the target.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Shapes = Mapping[str, Sequence[int]]


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _check(shapes: Shapes, sparsity: float, dense: Iterable[str]) -> set[str]:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    dense = set(dense)
    unknown = dense - set(shapes)
    if unknown:
        raise ValueError(f"dense layers {sorted(unknown)} are not among the layers {list(shapes)}")
    return dense


def erk_raw(shape: Sequence[int], power_scale: float = 1.0) -> float:
    """ERK's unscaled density of a weight: (sum of dims / product of dims) ** power_scale."""
    return (sum(shape) / _numel(shape)) ** power_scale


def erk_densities(shapes: Shapes, sparsity: float, *, dense: Iterable[str] = (),
                  power_scale: float = 1.0) -> dict[str, float]:
    """ERK density per layer such that the kept weights total (1 - sparsity) * N (``dense`` kept dense)."""
    dense_set = _check(shapes, sparsity, dense)
    total = sum(_numel(s) for s in shapes.values())
    target_keep = (1.0 - sparsity) * total
    while True:
        pool = [n for n in shapes if n not in dense_set]
        if not pool:
            break
        rhs = target_keep - sum(_numel(shapes[n]) for n in dense_set)
        if rhs < 0:
            raise ValueError(f"sparsity {sparsity} cannot be reached with layers {sorted(dense_set)} dense")
        raw = {n: erk_raw(shapes[n], power_scale) for n in pool}
        eps = rhs / sum(raw[n] * _numel(shapes[n]) for n in pool)
        max_raw = max(raw.values())
        if max_raw * eps <= 1.0:
            return {n: 1.0 if n in dense_set else eps * raw[n] for n in shapes}
        dense_set |= {n for n in pool if raw[n] == max_raw}
    return {n: 1.0 for n in shapes}


def uniform_densities(shapes: Shapes, sparsity: float, *, dense: Iterable[str] = (),
                      match_total: bool = True) -> dict[str, float]:
    """The same density for every layer not in ``dense``.

    ``match_total=False``: every other layer at exactly 1 - sparsity (the reference code; the total then
    keeps more than the target). ``match_total=True``: the other layers' common density is lowered so
    that the total equals (1 - sparsity) * N.
    """
    dense_set = _check(shapes, sparsity, dense)
    density = 1.0 - sparsity
    pool = sum(_numel(s) for n, s in shapes.items() if n not in dense_set)
    if match_total and pool:
        total = sum(_numel(s) for s in shapes.values())
        density = (density * total - (total - pool)) / pool
        if density < 0:
            raise ValueError(f"sparsity {sparsity} cannot be reached with layers {sorted(dense_set)} dense")
    return {n: 1.0 if n in dense_set else density for n in shapes}


def keep_counts(shapes: Shapes, densities: Mapping[str, float], total_keep: int | None = None) -> dict[str, int]:
    """Integer kept-weight counts per layer from densities.

    Each layer keeps floor(density * n) (the reference's n_zeros = floor(sparsity * n) rounds the other
    way; both are within one weight). With ``total_keep`` the remaining weights are handed out one per
    layer, largest fractional part first (never above a layer's size), so the counts sum exactly to it.
    """
    exact = {n: min(max(densities[n], 0.0), 1.0) * _numel(s) for n, s in shapes.items()}
    counts = {n: math.floor(v + 1e-9) for n, v in exact.items()}
    if total_keep is None:
        return counts
    short = total_keep - sum(counts.values())
    if short < 0 or short > sum(_numel(s) - counts[n] for n, s in shapes.items()):
        raise ValueError(f"cannot keep exactly {total_keep} weights with densities {dict(densities)}")
    order = sorted(shapes, key=lambda n: (exact[n] - counts[n], _numel(shapes[n])), reverse=True)
    while short > 0:
        for n in order:
            if short and counts[n] < _numel(shapes[n]):
                counts[n] += 1
                short -= 1
    return counts


def layer_densities(kind: str, shapes: Shapes, sparsity: float, *, dense: Iterable[str] = (),
                    match_total: bool = True) -> dict[str, float]:
    """Dispatch on ``kind``: ``erk`` or ``uniform``."""
    if kind == "erk":
        return erk_densities(shapes, sparsity, dense=dense)
    if kind == "uniform":
        return uniform_densities(shapes, sparsity, dense=dense, match_total=match_total)
    raise ValueError(f"unknown layer-density distribution '{kind}'; valid: erk, uniform")
