"""How methods hook the shared training loop: :class:`TrainCallback` and the :class:`StepState` it sees.

A callback adds a loss term (slimming's L1), edits gradients (RigL's regrowth), vetoes an optimizer step or
declares a dense-gradient step (charged as such), and saves its own state for a resumed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pruning_bench.core.masks import MaskSet


@dataclass
class StepState:
    """What callbacks see at each step."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    masks: MaskSet
    step: int                 # position in the learning-rate schedule (global step)
    inputs: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    outputs: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    epoch: int = 0


class TrainCallback:
    """Hooks into the shared training loop. Override what you need."""

    def on_train_start(self, state: StepState) -> None: ...

    def extra_loss(self, state: StepState) -> torch.Tensor | None:
        return None

    def after_backward(self, state: StepState) -> None:
        """Gradients are dense here (before pruned weights' gradients are zeroed)."""

    def skip_optimizer_step(self, state: StepState) -> bool:
        return False

    def dense_gradient(self, step: int) -> bool:
        """Whether step ``step`` uses the dense gradient of every prunable weight (RigL's grow step).
        The loop then charges it 2 x masked + 1 x dense forward FLOPs per sample instead of 3 x masked."""
        return False

    def on_step_end(self, state: StepState) -> None: ...

    def on_epoch_end(self, state: StepState) -> None:
        """Called after each completed pass over the training data (``state.epoch`` just finished)."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs of this callback (:mod:`pruning_bench.core.resume`). By default its data
        attributes: numbers, strings, tensors (not parameters: the model's own are restored with it),
        modules' state, and lists, sets and dicts of these. Override when that is not enough."""
        return {k: v for k, v in ((k, _state_of(v)) for k, v in vars(self).items()) if v is not _SKIP}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned; tensors are copied in place, so aliases hold."""
        for key, value in state.items():
            setattr(self, key, _load_into(getattr(self, key, None), value))


_SKIP = object()
_PLAIN = (bool, int, float, str, bytes, type(None))


def _state_of(value: Any) -> Any:
    """The saveable state of a callback attribute, or ``_SKIP`` (a reference to the model, masks,
    optimizer, context or a function: restored elsewhere or not state)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, nn.Parameter):
        return _SKIP
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, nn.Module):
        return {"__module_state__": value.state_dict()}
    if isinstance(value, (list, tuple, set)):
        items = [_state_of(v) for v in value]
        return _SKIP if any(v is _SKIP for v in items) else type(value)(items)
    if isinstance(value, dict):
        items = {k: _state_of(v) for k, v in value.items()}
        return _SKIP if any(v is _SKIP for v in items.values()) else items
    return _SKIP


def _load_into(current: Any, saved: Any) -> Any:
    """``saved`` put into ``current`` in place where both are tensors, modules or containers of them."""
    if isinstance(saved, dict) and "__module_state__" in saved and isinstance(current, nn.Module):
        current.load_state_dict(saved["__module_state__"])
        return current
    if isinstance(current, torch.Tensor) and isinstance(saved, torch.Tensor) and current.shape == saved.shape:
        with torch.no_grad():
            current.copy_(saved)
        return current
    if isinstance(current, dict) and isinstance(saved, dict) and current.keys() == saved.keys():
        for k in saved:
            current[k] = _load_into(current[k], saved[k])
        return current
    if isinstance(current, list) and isinstance(saved, list) and len(current) == len(saved):
        current[:] = [_load_into(c, v) for c, v in zip(current, saved)]
        return current
    return saved
