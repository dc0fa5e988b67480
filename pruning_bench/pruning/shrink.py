"""Physically smaller networks from kept channels (structured pruning), by hand-written slicing.

A *channel group* is a ``conv -> BN -> channel-wise ops -> consumer`` chain in the traced graph
(``torch.fx``): a conv (or linear) with ``groups == 1`` whose only user is a BatchNorm, followed by
channel-wise ops whose f(0) = 0 (ReLU family, GELU, SiLU, tanh, dropout, identity, max/avg pooling,
``mean``/``sum``/``amax`` over spatial dimensions) and optionally a flatten, ending in exactly one conv
(``groups == 1``) or linear layer. Every node on the chain must have exactly one user besides shape
queries (``x.size(0)``, ``x.shape``). Removing channel c of such a group slices the producer's output c,
the BN's parameters and running statistics, and the consumer's input c (for a linear after a flatten:
the ``per_channel`` features of channel c).

A flatten is recognised in every common spelling: ``torch.flatten(x, 1)``, ``nn.Flatten()``,
``x.flatten(1)``, ``x.view(x.size(0), -1)``, ``x.reshape(x.shape[0], -1)``, ``torch.reshape``, squeezes.
Shapes are propagated with a batch of two, and a reshape counts when it keeps the batch dimension and
writes no size into the graph. A flatten that hard-codes a size (``x.view(-1, 64)``, which would be wrong
once channels are removed) or loses the batch dimension is refused with a one-line :class:`BenchError`
naming the model, the BN and the call, rather than silently leaving that BN out of pruning.

Anything else is left alone: a BN whose output feeds a residual addition, a concatenation, a transpose,
or two layers is never narrowed. So in residual networks only the channels *inside* blocks are pruned (the
registry's ``conv1 -> bn1 -> relu -> conv2`` of a basic block) and the residual stream keeps its width, as
network slimming's channel-selection layer does (Liu et al. 2017, §3; ``models/channel_selection.py``).

Torch-Pruning is not a dependency: the dependency analysis is the graph walk above.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from pruning_bench.errors import BenchError

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh,
                        nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)
_ELEMENTWISE_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish,
                          torch.tanh, F.dropout}
_ELEMENTWISE_METHODS = {"relu", "relu_", "tanh", "contiguous"}
# pooling over the trailing dimensions, by spatial rank (the input must be batched: rank + 2 dimensions)
_POOL_MODULES = {cls: rank for rank, classes in enumerate((
    (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d),
    (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d),
    (nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)), start=1) for cls in classes}
_POOL_FUNCTIONS = {F.max_pool1d: 1, F.avg_pool1d: 1, F.adaptive_avg_pool1d: 1, F.max_pool2d: 2, F.avg_pool2d: 2,
                   F.adaptive_avg_pool2d: 2, F.max_pool3d: 3, F.avg_pool3d: 3, F.adaptive_avg_pool3d: 3}
_REDUCTIONS = {"mean", "sum", "amax"}  # f(0) = 0
_REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_SIZED = {"view", "reshape"}  # reshapes whose arguments are sizes (the others take dimensions)
_SHAPE_QUERIES = {"size", "dim", "numel", "nelement"}
_ADDS = {operator.add, operator.iadd, torch.add}
_PROBE_BATCH = 2  # shapes are propagated with two samples, so a hard-coded batch of one shows


@dataclass(frozen=True)
class ChannelGroup:
    """Prunable channels: ``producer`` output == ``bn`` features == ``consumer`` input (x ``per_channel``)."""

    bn: str
    producer: str
    consumer: str
    channels: int
    per_channel: int = 1


@dataclass(frozen=True)
class Structure:
    """What :func:`analyze` found: prunable channel groups, all BN layers, and whether there are additions."""

    groups: list[ChannelGroup]
    batchnorms: list[str]
    residual: bool


def analyze(model: nn.Module, input_shape: tuple[int, ...]) -> Structure:
    """Trace ``model`` and find its prunable channel groups (BenchError if it cannot be traced, or flattens
    a BN's channels in a way a shrunk model could not repeat)."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # fx raises many types for untraceable control flow
        raise BenchError(f"cannot trace {type(model).__name__} with torch.fx for channel pruning: "
                         f"{type(err).__name__}: {_first_line(err)}") from None
    _propagate_shapes(model, gm, input_shape)
    modules = dict(gm.named_modules())
    owner = type(model).__name__
    groups = [g for node in gm.graph.nodes if (g := _group_at(node, modules, owner)) is not None]
    residual = any((n.op == "call_function" and n.target in _ADDS) or (n.op == "call_method" and n.target in
                   ("add", "add_")) for n in gm.graph.nodes)
    batchnorms = [n for n, m in model.named_modules() if isinstance(m, BATCHNORMS)]
    return Structure(groups=groups, batchnorms=batchnorms, residual=residual)


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else ""


@torch.no_grad()
def _propagate_shapes(model: nn.Module, gm: fx.GraphModule, input_shape: tuple[int, ...]) -> None:
    was_training = model.training
    model.eval()  # never touch BN running statistics
    try:
        device = next(model.parameters()).device
        ShapeProp(gm).propagate(torch.zeros((_PROBE_BATCH, *input_shape), device=device))
    except Exception as err:
        raise BenchError(f"cannot run {type(model).__name__} on a batch of {_PROBE_BATCH} samples of shape "
                         f"{tuple(input_shape)} for channel pruning: {type(err).__name__}: {_first_line(err)}") \
            from None
    finally:
        model.train(was_training)


def _module(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    return modules.get(node.target) if node.op == "call_module" else None


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


def _value_users(node: fx.Node) -> list[fx.Node]:
    """The users of ``node`` that read its values (not ``x.size(0)``, ``x.shape``, ``x.dim()``)."""
    def is_query(user: fx.Node) -> bool:
        return (user.op == "call_method" and user.target in _SHAPE_QUERIES) or \
            (user.op == "call_function" and user.target is getattr and user.args[1:] == ("shape",))
    return [u for u in node.users if not is_query(u)]


def _is_elementwise(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], _ELEMENTWISE_MODULES)
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS
    return node.op == "call_method" and node.target in _ELEMENTWISE_METHODS


def _is_channelwise(node: fx.Node, modules: dict[str, nn.Module], shape: tuple[int, ...]) -> bool:
    """Pooling of a batched input, or a reduction over dimensions >= 2: each channel stays its own."""
    if node.op == "call_module" and type(modules[node.target]) in _POOL_MODULES:
        return len(shape) == _POOL_MODULES[type(modules[node.target])] + 2
    if node.op == "call_function" and node.target in _POOL_FUNCTIONS:
        return len(shape) == _POOL_FUNCTIONS[node.target] + 2
    if not ((node.op == "call_method" and node.target in _REDUCTIONS) or
            (node.op == "call_function" and node.target in _REDUCE_FUNCTIONS)):
        return False
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = [dims] if isinstance(dims, int) else dims
    return isinstance(dims, (list, tuple)) and len(dims) > 0 and \
        all(isinstance(d, int) and d % len(shape) >= 2 for d in dims)


def _reshape_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """``view``, ``reshape``, ``flatten``, ... for a reshape in any spelling, else None."""
    if node.op == "call_module":
        return "flatten" if isinstance(modules[node.target], nn.Flatten) else None
    if node.op == "call_method" and node.target in _RESHAPE_METHODS:
        return node.target
    if node.op == "call_function" and node.target in _RESHAPE_FUNCTIONS:
        return node.target.__name__
    return None


def _hard_coded(node: fx.Node, kind: str) -> list[int]:
    """The sizes a reshape writes into the graph (``view(-1, 64)`` -> [64]); -1 and 1 are harmless."""
    if kind not in _SIZED:
        return []
    flat = []
    for arg in list(node.args[1:]) + list(node.kwargs.values()):
        flat += list(arg) if isinstance(arg, (list, tuple)) else [arg]
    return [a for a in flat if isinstance(a, int) and a not in (-1, 1)]


def _spelling(node: fx.Node, kind: str) -> str:
    """How the forward wrote it, roughly: ``x.view(-1, 64)``, ``torch.flatten(x, 1)``, ``self.flat(x)``."""
    args = ", ".join(a.name if isinstance(a, fx.Node) else repr(a) for a in node.args[1:])
    if node.op == "call_module":
        return f"self.{node.target}(x)"
    return f"x.{kind}({args})" if node.op == "call_method" else f"torch.{kind}(x{', ' + args if args else ''})"


def _group_at(bn_node: fx.Node, modules: dict[str, nn.Module], owner: str = "model") -> ChannelGroup | None:
    """The channel group whose BN is ``bn_node``, or None where the chain is not a plain one."""
    bn = _module(bn_node, modules)
    if not isinstance(bn, BATCHNORMS) or not bn.affine or not bn.track_running_stats:
        return None
    src = bn_node.args[0] if bn_node.args else None
    producer = _module(src, modules) if isinstance(src, fx.Node) else None
    if not (isinstance(producer, nn.Linear) or (isinstance(producer, CONVS) and producer.groups == 1)):
        return None
    if len(_value_users(src)) != 1:
        return None
    channels, node = bn.num_features, bn_node
    while len(users := _value_users(node)) == 1:
        nxt, shape = users[0], _shape(node)  # invariant: shape[1] is a multiple of channels, channel-major
        if not nxt.args or nxt.args[0] is not node:
            return None
        consumer = _module(nxt, modules)
        if isinstance(consumer, CONVS) and consumer.groups == 1:
            if len(shape) != consumer.weight.dim():  # an unbatched conv input mixes the batch
                return None
            return ChannelGroup(bn_node.target, src.target, nxt.target, channels, shape[1] // channels)
        if isinstance(consumer, nn.Linear):
            if len(shape) != 2:  # a linear on (N, C, L) mixes L, not channels
                return None
            return ChannelGroup(bn_node.target, src.target, nxt.target, channels, shape[1] // channels)
        if kind := _reshape_kind(nxt, modules):
            if not _follow_reshape(nxt, kind, shape, channels, f"{owner}: BN '{bn_node.target}'"):
                return None
        elif not (_is_elementwise(nxt, modules) or _is_channelwise(nxt, modules, shape)):
            return None
        node = nxt
    return None


def _follow_reshape(node: fx.Node, kind: str, before: tuple[int, ...], channels: int, where: str) -> bool:
    """Whether the chain goes on through a reshape; a flatten a shrunk model could not repeat is refused."""
    after = _shape(node)
    sizes = _hard_coded(node, kind)
    keeps = len(after) >= 2 and after[0] == before[0] and after[1] % channels == 0
    if keeps and not sizes:
        return True
    if len(after) != 2:  # not a flatten: some other reshape, left alone
        return False
    reason = (f"hard-codes the size{'s' if len(sizes) > 1 else ''} {', '.join(map(str, sizes))}, wrong once "
              "channels are removed") if sizes else \
        f"does not keep the batch dimension ({before} -> {after} for a batch of {before[0]})"
    raise BenchError(f"cannot prune the channels of {where} is flattened by {_spelling(node, kind)}, which "
                     f"{reason}; flatten with torch.flatten(x, 1) or x.view(x.size(0), -1)")


# ---- slicing ---------------------------------------------------------------------------------------
def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone())


def _slice_out(layer: nn.Module, idx: torch.Tensor) -> None:
    layer.weight = _param(layer.weight[idx])
    if layer.bias is not None:
        layer.bias = _param(layer.bias[idx])
    if isinstance(layer, nn.Linear):
        layer.out_features = len(idx)
    else:
        layer.out_channels = len(idx)


def _slice_in(layer: nn.Module, idx: torch.Tensor, per_channel: int) -> None:
    cols = (idx[:, None] * per_channel + torch.arange(per_channel, device=idx.device)).flatten()
    layer.weight = _param(layer.weight[:, cols])
    if isinstance(layer, nn.Linear):
        layer.in_features = len(cols)
    else:
        layer.in_channels = len(cols)


def _slice_bn(bn: nn.Module, idx: torch.Tensor) -> None:
    bn.weight, bn.bias = _param(bn.weight[idx]), _param(bn.bias[idx])
    bn.running_mean = bn.running_mean[idx].clone()
    bn.running_var = bn.running_var[idx].clone()
    bn.num_features = len(idx)


def shrink(model: nn.Module, groups: list[ChannelGroup], keep: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` in which every group keeps only the channels ``keep[group.bn]`` (indices)."""
    small = copy.deepcopy(model)
    for g in groups:
        if g.bn not in keep:
            continue
        idx = torch.as_tensor(keep[g.bn], dtype=torch.long).sort().values
        if len(idx) == 0:
            raise ValueError(f"channel group '{g.bn}' would be emptied")
        idx = idx.to(small.get_submodule(g.bn).weight.device)
        _slice_out(small.get_submodule(g.producer), idx)
        _slice_bn(small.get_submodule(g.bn), idx)
        _slice_in(small.get_submodule(g.consumer), idx, g.per_channel)
    return small


def shrunk_weight_counts(model: nn.Module, groups: list[ChannelGroup],
                         kept: Mapping[str, int]) -> dict[str, int]:
    """Elements of every conv/linear weight after keeping ``kept[bn]`` channels per group (no copy)."""
    out_kept = {g.producer: kept.get(g.bn, g.channels) for g in groups}
    in_removed = {g.consumer: (g.channels - kept.get(g.bn, g.channels)) * g.per_channel for g in groups}
    counts = {}
    for name, m in model.named_modules():
        if isinstance(m, (*CONVS, nn.Linear)):
            shape = m.weight.shape
            n_out = out_kept.get(name, shape[0])
            n_in = shape[1] - in_removed.get(name, 0)
            counts[f"{name}.weight"] = n_out * n_in * math.prod(shape[2:])
    return counts
