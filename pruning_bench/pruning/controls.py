"""What the control methods share (``reinit``, ``shuffle``, ``scratch``; docs/methods.md §13): their one
parameter, the source's result, its architecture rebuilt from a fresh initialisation, and the training run.

A control reads its source trial's final per-layer table and masks (``ctx.source``,
:mod:`pruning_bench.core.source`) and trains for the trial's whole budget, which is the source's budget
(same cell, seed and level), with the mask fixed, like ``random``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pruning_bench.core.context import Context
from pruning_bench.core.method import Method
from pruning_bench.core.source import SourceResult
from pruning_bench.errors import BenchError
from pruning_bench.pruning.channel_select import channel_structure
from pruning_bench.pruning.shrink import shrink
from pruning_bench.seeds import mix_seed

#: the tag of the seed a control's fresh initialisation is drawn from (never the trial's own seed)
FRESH_INIT = "fresh-init"


@dataclass(frozen=True)
class ControlParams:
    source: str = ""  # the method whose trial of the same cell and seed this one controls, e.g. imp

    def validate(self) -> None:
        if not self.source:
            raise ValueError("needs source=METHOD, the method it controls, e.g. reinit[source=imp]")


class Control(Method):
    """Base class of the controls: ``Params`` = :class:`ControlParams`, the source named by ``source``."""

    Params = ControlParams
    control = True

    @classmethod
    def source_of(cls, params: Any) -> str:
        return params.source


def the_source(ctx: Context, method: str) -> SourceResult:
    """The source's result; a one-line error when the control runs outside a plan that provides it."""
    if ctx.source is None:
        raise BenchError(f"{method} has no source result: a control runs in a plan, after its source's trial "
                         "(bench run --methods imp,reinit[source=imp])")
    return ctx.source


def fresh_seed(seed: int) -> int:
    """The seed of a control's fresh initialisation: derived from the trial's, never equal to it."""
    return mix_seed(seed, FRESH_INIT)


def rebuild(ctx: Context, source: SourceResult, seed: int) -> nn.Module:
    """A freshly initialised model (drawn from ``seed``) with the source's final architecture: this model
    when the source kept every layer's shape; for a physically shrunk source, the first k channels of
    each group (k = the source's count) re-initialised at their new size (Liu et al. 2019, §3: the
    pruned architecture trained from scratch). Shapes are checked against the source's table."""
    if ctx.models is None:
        raise BenchError("a control needs the trial's model factory (ctx.models)")
    model = ctx.models.fresh(seed)
    shapes = {n: tuple(p.shape) for n, p in _prunable(ctx, model).items()}
    if any(source.layers.get(n) and source.layers[n].shape != s for n, s in shapes.items()):
        structure = channel_structure(model, ctx.data.input_shape, "scratch")
        keep = {g.bn: torch.arange(_kept(source, g.producer, g.channels)) for g in structure.groups}
        model = ctx.models.reinitialized(shrink(model, structure.groups, keep), seed)
        shapes = {n: tuple(p.shape) for n, p in _prunable(ctx, model).items()}
    recorded = {n: r.shape for n, r in source.layers.items()}
    if recorded != shapes:
        differ = sorted(n for n in set(recorded) | set(shapes) if recorded.get(n) != shapes.get(n))
        raise BenchError(f"cannot rebuild {source.method}'s architecture: layers {', '.join(differ)} differ from "
                         "its layer_sparsity.csv (was the source trained on another model?)")
    return model


def _kept(source: SourceResult, producer: str, channels: int) -> int:
    """Channels the source kept in the group whose producer is ``producer`` (all when not recorded)."""
    record = source.layers.get(f"{producer}.weight")
    return record.shape[0] if record is not None else channels


def _prunable(ctx: Context, model: nn.Module) -> dict[str, torch.Tensor]:
    """The prunable weights of ``model`` by name, as the mask set names them."""
    named = dict(model.named_parameters())
    return {n: named[n] for n in ctx.masks.names}


def train_with_mask(ctx: Context, masks: dict[str, torch.Tensor], desc: str) -> None:
    """Fix ``masks`` on the current model and train for the rest of the budget."""
    ctx.masks.update(masks)
    ctx.log("pruned_sparsity", ctx.masks.sparsity())
    ctx.train(steps=ctx.remaining_steps(), desc=desc)


def train_fresh_init(ctx: Context, method: str) -> None:
    """``reinit`` and ``scratch``: the source's architecture from a fresh initialisation
    (:func:`rebuild`), its exact final mask fixed (all ones for a shrunk source), the budget trained."""
    source = the_source(ctx, method)
    ctx.replace_model(rebuild(ctx, source, fresh_seed(ctx.seed)))
    if source.masks is not None:
        masks = source.masks
    elif source.structured:  # a shrunk source keeps every weight of its smaller layers
        masks = {n: torch.ones_like(m) for n, m in ctx.masks.masks.items()}
    else:
        raise BenchError(f"{method}: source {source.method} (run {source.run_id}) recorded no masks.pt; "
                         f"run it again: bench run --rerun --methods {source.method} ...")
    train_with_mask(ctx, {n: m.to(ctx.masks.masks[n].device) for n, m in masks.items()}, method)
