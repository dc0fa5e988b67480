"""Choosing channels to remove for structured pruning (network slimming, Taylor channel importance).

A method scores every prunable channel (``pruning_bench.pruning.shrink`` finds the channel groups); the lowest
scores go first, one global ranking, except that a layer keeps at least one channel and never loses more
than ``max_layer_prune`` of its *original* channels (the per-layer cap of Liu et al. 2017, §4.5). The
harness's target is a parameter sparsity over every conv and linear weight: the fewest channels in
ranking order whose removal reaches it are removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from pruning_bench.errors import BenchError
from pruning_bench.pruning.shrink import BATCHNORMS, ChannelGroup, Structure, analyze, shrunk_weight_counts

Order = list[tuple[str, int, float]]  # (BN name, channel index, score), in the order they are removed


def channel_structure(model: nn.Module, input_shape: tuple[int, ...], method: str) -> Structure:
    """The model's prunable channel groups; a one-line BenchError when it has none."""
    if not any(isinstance(m, BATCHNORMS) for m in model.modules()):
        raise BenchError(f"{method} needs BatchNorm layers; model {type(model).__name__} has none")
    structure = analyze(model, input_shape)
    if not structure.groups:
        raise BenchError(f"{method} found no prunable conv -> BN -> conv/linear channel chain in "
                         f"{type(model).__name__} (residual streams and grouped convs are not pruned)")
    return structure


def channel_floor(original: int, max_layer_prune: float) -> int:
    """The fewest channels a layer of ``original`` channels may keep under the cap (at least one)."""
    return original - min(original - 1, int(max_layer_prune * original))


def prune_order(scores: Mapping[str, torch.Tensor], max_layer_prune: float,
                original: Mapping[str, int] | None = None) -> Order:
    """Channels (bn, index, |score|) in removal order: ascending |score| globally, skipping those a layer
    must keep (its floor under the cap, counted against its ``original`` width, default its current)."""
    entries = sorted(((float(v), bn, i) for bn, s in scores.items() for i, v in enumerate(s.abs().tolist())),
                     key=lambda e: e[0])
    original = original or {bn: len(s) for bn, s in scores.items()}
    limit = {bn: max(0, len(s) - channel_floor(original[bn], max_layer_prune)) for bn, s in scores.items()}
    pruned = dict.fromkeys(scores, 0)
    order = []
    for value, bn, i in entries:
        if pruned[bn] < limit[bn]:
            pruned[bn] += 1
            order.append((bn, i, value))
    return order


def kept_counts(groups: Sequence[ChannelGroup], order: Order, k: int) -> dict[str, int]:
    """Channels each group keeps after removing the first ``k`` of ``order``."""
    kept = {g.bn: g.channels for g in groups}
    for bn, _, _ in order[:k]:
        kept[bn] -= 1
    return kept


def fewest_to_reach(sparsity_of: Callable[[int], float], n: int, target: float) -> int:
    """Smallest k in [0, n] with sparsity_of(k) >= target (sparsity_of is non-decreasing)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if sparsity_of(mid) >= target - 1e-12:
            hi = mid
        else:
            lo = mid + 1
    return lo


def sparsity_after(model: nn.Module, groups: Sequence[ChannelGroup], total: int) -> Callable[[dict], float]:
    """Parameter sparsity (over ``total``, the unpruned model's conv/linear weights) of ``model`` shrunk
    to the given kept channel counts."""
    def sparsity(kept: dict[str, int]) -> float:
        return 1.0 - sum(shrunk_weight_counts(model, list(groups), kept).values()) / total
    return sparsity


def keep_indices(groups: Sequence[ChannelGroup], order: Order, k: int) -> dict[str, torch.Tensor]:
    """Indices each group keeps after removing the first ``k`` channels of ``order``."""
    pruned: dict[str, set[int]] = {g.bn: set() for g in groups}
    for bn, i, _ in order[:k]:
        pruned[bn].add(i)
    return {g.bn: torch.tensor([i for i in range(g.channels) if i not in pruned[g.bn]]) for g in groups}


def reachable(groups: Sequence[ChannelGroup], sparsity_of: Callable[[dict], float], max_layer_prune: float,
              original: Mapping[str, int] | None = None) -> float:
    """The highest parameter sparsity the cap allows."""
    original = original or {g.bn: g.channels for g in groups}
    return sparsity_of({g.bn: channel_floor(original[g.bn], max_layer_prune) for g in groups})


def require_reachable(method: str, model: nn.Module, groups: Sequence[ChannelGroup],
                      sparsity_of: Callable[[dict], float], max_layer_prune: float, target: float) -> None:
    """A one-line BenchError, before any training, when the cap keeps ``target`` out of reach."""
    reach = reachable(groups, sparsity_of, max_layer_prune)
    if reach < target:
        raise BenchError(f"{method} can reach at most {reach:.4f} parameter sparsity on {type(model).__name__} "
                         f"(prunable channels only, at least one kept per layer, max_layer_prune="
                         f"{max_layer_prune}); target {target:g} is out of reach")


def log_channels_kept(log: Callable[[str, float], None], kept: Mapping[str, int],
                      original: Mapping[str, int]) -> None:
    """Log each layer's kept channels, the kept share of all channels and the thinnest layer's share."""
    for bn, n in kept.items():
        log(f"channels_kept.{bn}", n)
    log("channels_kept_fraction", sum(kept.values()) / sum(original[bn] for bn in kept))
    log("min_channels_kept_fraction", min(n / original[bn] for bn, n in kept.items()))
