"""Boolean masks over a model's prunable weights: the one definition of sparsity in the harness.

Prunable means every ``nn.Conv*`` and ``nn.Linear`` weight of the model, the first layer, the classifier
and shortcut convolutions included; biases and normalisation parameters are never masked. A method may
keep some of these tensors dense, but sparsity is always measured over all of them.

Masks are enforced the way GlobalMP and rigl-torch do it (docs/methods.md, pitfall 3): gradients of pruned
weights are zeroed before the optimizer step and the weights are multiplied by their masks after it,
in one fused ``torch._foreach_mul_`` pass, so weight decay or momentum cannot resurrect a pruned weight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every conv and linear weight of ``model``, by parameter name, in registration order."""
    return {
        f"{name}.weight" if name else "weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES) and isinstance(module.weight, nn.Parameter)
    }


@dataclass(frozen=True)
class LayerStat:
    """Sparsity of one prunable tensor, as written to ``layer_sparsity.csv``."""

    layer: str
    shape: tuple[int, ...]
    params: int
    nonzero: int
    density: float


class MaskSet:
    """One boolean keep-mask per prunable weight of a model (True = weight is kept)."""

    def __init__(self, model: nn.Module) -> None:
        self.params = prunable_weights(model)
        self.masks: dict[str, torch.Tensor] = {
            name: torch.ones_like(p, dtype=torch.bool) for name, p in self.params.items()
        }
        self._float_cache: list[torch.Tensor] | None = None
        self.version = 0  # bumped whenever a mask changes, so cached per-layer figures can be refreshed

    # ---- reading -------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self.params)

    def total(self) -> int:
        """Number of prunable weights (the sparsity denominator)."""
        return sum(m.numel() for m in self.masks.values())

    def nonzero(self) -> int:
        """Number of kept weights, counted from the masks."""
        return int(sum(int(m.sum()) for m in self.masks.values()))

    def sparsity(self) -> float:
        return 1.0 - self.nonzero() / max(self.total(), 1)

    def layer_density(self) -> dict[str, float]:
        return {n: float(m.float().mean()) for n, m in self.masks.items()}

    def layer_stats(self) -> list[LayerStat]:
        return [
            LayerStat(n, tuple(m.shape), m.numel(), int(m.sum()), float(m.float().mean()))
            for n, m in self.masks.items()
        ]

    def empty_layers(self) -> list[str]:
        """Prunable tensors with no weight left (layer collapse, docs/methods.md pitfall 8)."""
        return [n for n, m in self.masks.items() if not bool(m.any())]

    def leaked(self) -> list[str]:
        """Tensors that hold a non-zero value where the mask says pruned (should always be empty)."""
        return [n for n, p in self.params.items() if bool((p.detach()[~self.masks[n]] != 0).any())]

    # ---- enforcing -----------------------------------------------------------------------------
    def _floats(self) -> list[torch.Tensor]:
        if self._float_cache is None:
            self._float_cache = [m.to(p.dtype) for m, p in zip(self.masks.values(), self.params.values(), strict=False)]
        return self._float_cache

    @torch.no_grad()
    def apply(self) -> None:
        """Zero every pruned weight (one fused multiply over all tensors)."""
        torch._foreach_mul_([p.data for p in self.params.values()], self._floats())

    @torch.no_grad()
    def mask_grads(self) -> None:
        """Zero the gradients of pruned weights, so the optimizer sees no signal there."""
        pairs = [(p.grad, m) for p, m in zip(self.params.values(), self._floats(), strict=False) if p.grad is not None]
        if pairs:
            torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])

    # ---- changing ------------------------------------------------------------------------------
    def update(self, new_masks: Mapping[str, torch.Tensor]) -> None:
        """Replace some masks (bool tensors of the weights' shapes) and zero newly pruned weights."""
        for name, mask in new_masks.items():
            if name not in self.masks:
                raise KeyError(f"'{name}' is not a prunable weight; known: {', '.join(self.masks)}")
            if mask.shape != self.masks[name].shape:
                raise ValueError(f"mask for '{name}' has shape {tuple(mask.shape)}, "
                                 f"expected {tuple(self.masks[name].shape)}")
            self.masks[name] = mask.to(device=self.params[name].device, dtype=torch.bool).clone()
        self._float_cache = None
        self.version += 1
        self.apply()

    def prune_to_global(self, scores: Mapping[str, torch.Tensor], sparsity: float,
                        *, among_active: bool = True, layers: Iterable[str] | None = None) -> None:
        """Keep the globally highest-scoring weights so that exactly ``sparsity`` of all prunable weights
        are pruned.

        ``scores`` must cover the ranked layers (default: all). With ``among_active`` (the IMP rule,
        docs/methods.md §2b) pruned weights are never revived: they rank below every active weight. Layers not
        in ``layers`` keep their current masks and count towards the sparsity as they are.
        """
        ranked = list(self.masks) if layers is None else list(layers)
        fixed_kept = sum(int(self.masks[n].sum()) for n in self.masks if n not in ranked)
        keep_total = round((1.0 - sparsity) * self.total())
        keep = keep_total - fixed_kept
        pool = sum(self.masks[n].numel() for n in ranked)
        if not 0 <= keep <= pool:
            raise ValueError(f"cannot reach sparsity {sparsity:.4f} by ranking {len(ranked)} layers "
                             f"(would keep {keep} of {pool} weights)")
        self.update(global_topk({n: scores[n] for n in ranked}, keep,
                                active={n: self.masks[n] for n in ranked} if among_active else None))

    def prune_magnitude(self, sparsity: float, *, among_active: bool = True) -> None:
        """Global magnitude pruning to ``sparsity``: |w| ranked across every prunable layer."""
        self.prune_to_global({n: p.detach().abs() for n, p in self.params.items()}, sparsity,
                             among_active=among_active)


def global_topk(scores: Mapping[str, torch.Tensor], keep: int,
                active: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Boolean masks keeping exactly ``keep`` entries with the largest scores across all tensors.

    Where ``active`` is given, inactive entries are ranked last (never kept before an active one).
    Ties are broken by position (``torch.topk``), so the count is exact, not "about" (docs/methods.md pitfall 9).
    """
    names = list(scores)
    flat = torch.cat([scores[n].detach().float().flatten() for n in names])
    if active is not None:
        flat = flat.masked_fill(~torch.cat([active[n].flatten() for n in names]), float("-inf"))
    kept = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        kept[torch.topk(flat, keep, sorted=False).indices] = True
    masks, start = {}, 0
    for n in names:
        size = scores[n].numel()
        masks[n] = kept[start:start + size].view_as(scores[n])
        start += size
    return masks


def random_masks(masks: MaskSet, counts: Mapping[str, int], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A uniformly random mask per layer keeping exactly ``counts[name]`` weights (RigL's initial mask,
    random pruning at initialisation)."""
    out = {}
    for name, current in masks.masks.items():
        flat = torch.zeros(current.numel(), dtype=torch.bool)
        flat[torch.randperm(current.numel(), generator=generator)[:counts[name]]] = True
        out[name] = flat.view_as(current)
    return out
