"""What the post-training methods share (SparseGPT, Wanda, magnitude; docs/methods.md §15): layers as 2-D
matrices, their calibration inputs unfolded, layer-by-layer (sequential) calibration, exact selection rules
and the train -> prune -> (optional) fine-tune run.

- **Matrices.** A weight is the 2-D matrix ``weight.flatten(1)``: [out, in], or [out, in/groups *
  prod(kernel)] for a convolution, columns in PyTorch's flatten order (input channel major, then kernel
  positions). A convolution's input is unfolded to match (im2col: any spatial dims, padding modes, stride,
  dilation; one matrix per group), checked on each layer's first calibration batch against its output
  (a custom forward, e.g. weight standardisation, is a one-line error).
- **N:M** groups are M consecutive columns of that matrix, as both references select them
  (``sparsegpt.py::fasterprune``, wanda ``lib/prune.py``); for a convolution this runs along the kernel
  positions of one input channel first, unlike ``methods/nm_sparsity.py`` (input channels at one kernel
  position, as NVIDIA ASP). A layer whose column count is not a multiple of M stays dense
  (``nm_dense_layers``), as in nm_sparsity.
- **Sequential calibration.** Layers are pruned in forward order (found once with a zero input, like the
  FLOP profile). For each layer the calibration samples run through the whole model, its earlier layers
  already pruned, while a forward hook sums that layer's input statistics; then it is pruned. One
  layer's statistics exist at a time. Cost: one forward pass over the calibration set per pruned layer,
  charged as drawn (``ctx.batches``, forward-only, label ``calibration``) at the partly pruned model's
  price. Eval mode throughout: BatchNorm uses (and keeps) its running statistics, as the references'
  transformers (no BatchNorm) run in eval mode. A layer the eval forward never reaches is pruned by
  magnitude (logged ``unreached_layers``).
- **Counts.** Unstructured: every layer keeps exactly ``round((1 - s) * numel)`` weights (the harness's
  rounding, ``core/masks.py``); where the selection is made in parts (SparseGPT's column blocks, Wanda's
  rows) the count is split over the parts by cumulative rounding. Ties break by position (stable sorts).
  The references threshold with ``<=`` at sorted index ``int(s * n)``, pruning one more plus ties.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pruning_bench.core.context import Context
from pruning_bench.core.masks import MaskSet
from pruning_bench.core.method import Method
from pruning_bench.errors import BenchError
from pruning_bench.pruning.one_shot import train_prune_finetune
from pruning_bench.seeds import mix_seed

CALIBRATION = "calibration"  # the budget label of calibration passes
_PIECE = 1 << 22  # unfolded elements handled at once (32 MiB in float64)


@dataclass(frozen=True)
class PostTrainingParams:
    n: int = 0                       # N:M: keep n of every m consecutive columns; n = m = 0: unstructured
    m: int = 0
    finetune_fraction: float = 0.0   # 0 = no retraining (the papers); else fine-tune, mask fixed

    def validate(self) -> None:
        if (self.n, self.m) != (0, 0) and not 0 < self.n < self.m:
            raise ValueError(f"n:m must be 0:0 (unstructured) or 0 < n < m, got {self.n}:{self.m}")
        if not 0 <= self.finetune_fraction < 1:
            raise ValueError(f"finetune_fraction must be in [0, 1), got {self.finetune_fraction}")


@dataclass(frozen=True)
class CalibratedParams(PostTrainingParams):
    calibration_samples: int = 128   # SparseGPT and Wanda: 128 sequences of 2048 tokens

    def validate(self) -> None:
        super().validate()
        if self.calibration_samples < 1:
            raise ValueError(f"calibration_samples must be >= 1, got {self.calibration_samples}")


# ---- selection rules ---------------------------------------------------------------------------------
def spread(total: int, sizes: Sequence[int]) -> list[int]:
    """``total`` split over parts in proportion to ``sizes`` by cumulative rounding (sums to ``total``)."""
    whole, cum, cuts = sum(sizes), 0, [0]
    for size in sizes:
        cum += size
        cuts.append((2 * total * cum + whole) // (2 * whole))  # round half up, in integers
    return [b - a for a, b in zip(cuts, cuts[1:])]


def prune_count(sparsity: float, numel: int) -> int:
    """Weights to prune so that exactly ``round((1 - sparsity) * numel)`` stay."""
    return numel - round((1.0 - sparsity) * numel)


def smallest_per_row(scores: torch.Tensor, counts: int | Sequence[int]) -> torch.Tensor:
    """True at the ``counts[r]`` (or ``counts``) smallest scores of row r (ties: earlier column first)."""
    order = torch.sort(scores, dim=1, stable=True).indices
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    return rank < torch.as_tensor(counts, device=scores.device).reshape(-1, 1)


def nm_pruned(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """True at the ``m - n`` smallest scores of every ``m`` consecutive columns (ties: earlier first)."""
    rows, cols = scores.shape
    groups = scores.reshape(rows * cols // m, m)
    return smallest_per_row(groups, m - n).reshape(rows, cols)


def magnitude_pruned(weight: torch.Tensor, sparsity: float, n: int = 0, m: int = 0) -> torch.Tensor:
    """The magnitude baseline on a 2-D weight: N:M by |w| within M consecutive columns, or the layer's
    ``prune_count`` smallest |w| over the whole layer (wanda ``lib/prune.py::prune_magnitude``)."""
    scores = weight.abs()
    if n:
        return nm_pruned(scores, n, m)
    return smallest_per_row(scores.reshape(1, -1), [prune_count(sparsity, scores.numel())]).reshape(scores.shape)


# ---- layers as matrices ------------------------------------------------------------------------------
def module_of(model: nn.Module, weight_name: str) -> nn.Module:
    """The module owning a prunable weight (``features.0.weight`` -> ``features.0``)."""
    return model.get_submodule(weight_name.removesuffix("weight").removesuffix("."))


def nm_layers(masks: MaskSet, m: int) -> tuple[list[str], list[str]]:
    """Layers whose matrix splits into groups of ``m`` columns, and those that stay dense."""
    fits = [name for name, w in masks.params.items() if w[0].numel() % m == 0]
    return fits, [name for name in masks.names if name not in fits]


def _padding(conv: nn.Module) -> list[int]:
    """``F.pad`` arguments (last dim first) for a convolution's padding, ``'same'`` included."""
    pads: list[int] = []
    for i in reversed(range(len(conv.kernel_size))):
        if conv.padding == "same":
            total = conv.dilation[i] * (conv.kernel_size[i] - 1)
            pads += [total // 2, total - total // 2]
        else:
            p = 0 if conv.padding == "valid" else conv.padding[i]
            pads += [p, p]
    return pads


def unfold_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer's input as rows of its matrix's columns, float64: [groups, positions, columns]."""
    x = x.double()
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1]).unsqueeze(0)
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    x = F.pad(x, _padding(module), mode=mode)
    dims = len(module.kernel_size)
    for i, (k, s, d) in enumerate(zip(module.kernel_size, module.stride, module.dilation)):
        x = x.unfold(2 + i, d * (k - 1) + 1, s)[..., ::d]  # [B, C, P1.., k1..] after all dims
    x = x.permute(0, *range(2, 2 + dims), 1, *range(2 + dims, 2 + 2 * dims))  # [B, P1.., C, k1..]
    columns = math.prod(x.shape[1 + dims:])  # C * prod(kernel), input channel major as weight.flatten(1)
    return x.reshape(-1, module.groups, columns // module.groups).transpose(0, 1)


class LayerInputs:
    """Sums over one layer's unfolded calibration inputs, per group: squared norms of each column's input
    (Wanda), and with ``hessian`` the Gram matrix X^T X (SparseGPT). ``samples`` counts batch rows."""

    def __init__(self, name: str, module: nn.Module, *, hessian: bool) -> None:
        self.name, self.module, self.with_hessian = name, module, hessian
        self.samples, self.sq, self.gram = 0, None, None

    def add(self, x: torch.Tensor) -> None:
        x = x.unsqueeze(0) if x.dim() == 1 else x
        step = max(1, _PIECE // unfold_input(self.module, x[:1]).numel())
        for piece in x.split(step):
            cols = unfold_input(self.module, piece)
            sq = cols.square().sum(1)
            self.sq = sq if self.sq is None else self.sq + sq
            if self.with_hessian:
                gram = cols.transpose(1, 2) @ cols
                self.gram = gram if self.gram is None else self.gram + gram
        self.samples += x.shape[0]

    def hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self.samples == 0:
            check_unfolding(self.name, module, inputs[0][:1], output[:1])
        self.add(inputs[0])

    def hessian(self) -> torch.Tensor:
        """H = 2 X^T X / n per group (SparseGPT ``add_batch``), [groups, columns, columns]."""
        return 2.0 * self.gram / max(self.samples, 1)

    def scaler_row(self) -> torch.Tensor:
        """Mean squared input norm of each column per sample (Wanda ``scaler_row``), [groups, columns]."""
        return self.sq / max(self.samples, 1)


def check_unfolding(name: str, module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> None:
    """Refuse a layer whose output is not its matrix times its unfolded input (plus bias)."""
    w = module.weight.detach().double().flatten(1)
    g = getattr(module, "groups", 1)
    y = unfold_input(module, x) @ w.reshape(g, -1, w.shape[1]).transpose(1, 2)  # [g, P, out/g]
    y = y.transpose(0, 1).reshape(-1, w.shape[0])
    out = (output if isinstance(module, nn.Linear) else output.movedim(1, -1)).double()
    out = out.reshape(-1, w.shape[0]) - (0 if module.bias is None else module.bias.detach().double())
    if not (y - out).norm() <= 1e-4 * out.norm() + 1e-6:
        raise BenchError(f"layer '{name}' ({type(module).__name__}) is not a linear map of its unfolded "
                         "input (custom forward?): post-training pruning cannot calibrate it")


# ---- sequential calibration --------------------------------------------------------------------------
@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for a block (BatchNorm statistics used, never updated), then as before."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def forward_order(ctx: Context, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """``names`` in the order an eval forward of a zero input first calls them; and those never called."""
    seen: dict[str, None] = {}  # first calls, in order; setdefault returns None, so outputs stay as they are
    hooks = [module_of(ctx.model, n).register_forward_hook(lambda *_, n=n: seen.setdefault(n)) for n in names]
    try:
        with eval_mode(ctx.model), torch.no_grad():
            ctx.model(torch.zeros((1, *ctx.data.input_shape), device=ctx.device, dtype=ctx.data.input_dtype))
    finally:
        for h in hooks:
            h.remove()
    return list(seen), [n for n in names if n not in seen]


def calibration_batches(ctx: Context, samples: int) -> Iterator[torch.Tensor]:
    """The same ``samples`` training samples on every call (their own data seed), each call charged as
    forward-only passes; yielded in chunks of the recipe's batch size."""
    seed = mix_seed("post-training-calibration", ctx.seed)
    for x, _ in ctx.batches(1, data_seed=seed, batch_size=samples, label=CALIBRATION, forward_only=True):
        yield from x.split(ctx.recipe.batch_size)


def set_layer(ctx: Context, name: str, weight: torch.Tensor | None, pruned: torch.Tensor) -> None:
    """Write a layer's new 2-D weight (if any) and fix its mask (pruned weights set to 0)."""
    param = ctx.masks.params[name]
    with torch.no_grad():
        if weight is not None:
            param.copy_(weight.reshape(param.shape).to(param.dtype))
        ctx.masks.update({name: ~pruned.reshape(param.shape) & ctx.masks.masks[name]})


def prune_sequentially(ctx: Context, names: Sequence[str],
                       prune_layer: Callable[[str, nn.Module, LayerInputs], tuple[torch.Tensor | None, torch.Tensor]],
                       *, samples: int, hessian: bool) -> None:
    """Calibrate and prune ``names`` one at a time, in order, each on the inputs the partly pruned model
    produces (one charged forward pass over the ``samples`` calibration samples per layer); ``prune_layer``
    gives a layer's new 2-D weight (or None) and its pruned entries."""
    with eval_mode(ctx.model), torch.no_grad():
        for name in names:
            module = module_of(ctx.model, name)
            stats = LayerInputs(name, module, hessian=hessian)
            handle = module.register_forward_hook(stats.hook)
            try:
                for chunk in calibration_batches(ctx, samples):
                    ctx.model(chunk)
            finally:
                handle.remove()
            set_layer(ctx, name, *prune_layer(name, module, stats))


class PostTrainingMethod(Method):
    """Train dense, prune every layer once after training, optionally fine-tune with the mask fixed.

    ``statistic`` is what calibration collects for :meth:`prune_layer` (``hessian``: SparseGPT, ``norms``:
    Wanda); None calibrates nothing and prunes every layer by magnitude (the magnitude baseline)."""

    Params = PostTrainingParams
    statistic: ClassVar[str | None] = None

    @classmethod
    def target_sparsities(cls, params: Any, requested: Sequence[float]) -> list[float]:
        return [1.0 - params.n / params.m] if params.n else list(requested)

    def prune_layer(self, ctx: Context, name: str, module: nn.Module,
                    stats: LayerInputs) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The layer's new 2-D weight (None: unchanged) and its pruned entries, from its statistics."""
        raise NotImplementedError

    def run(self, ctx: Context) -> None:
        p = self.params
        layers, dense = nm_layers(ctx.masks, p.m) if p.n else (ctx.masks.names, [])
        if p.n:
            ctx.log("nm_dense_layers", len(dense))
        order, by_magnitude = forward_order(ctx, layers) if self.statistic else ([], layers)
        samples = min(p.calibration_samples, ctx.data.n_train) if self.statistic else 0
        if self.statistic:
            ctx.log("unreached_layers", len(by_magnitude))

        def prune() -> None:
            prune_sequentially(ctx, order, functools.partial(self.prune_layer, ctx), samples=samples,
                               hessian=self.statistic == "hessian")
            for name in by_magnitude:
                weight = ctx.masks.params[name].detach().flatten(1)
                set_layer(ctx, name, None, magnitude_pruned(weight, ctx.target_sparsity, p.n, p.m))
            ctx.log("pruned_val_acc", ctx.evaluate("val").acc)

        train_prune_finetune(ctx, prune, finetune_fraction=p.finetune_fraction,
                             names=("dense", f"{self.name} finetune"), prune_forward_samples=len(order) * samples)
