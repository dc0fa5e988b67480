"""Physically smaller networks from kept channels (structured pruning), by hand-written slicing.

A *channel group* is a ``conv -> BN -> channel-wise ops -> consumer`` chain in the traced graph
(``torch.fx``): a conv (or linear) with ``groups == 1`` whose only user is a BatchNorm, followed by
shape-preserving, channel-wise ops whose f(0) = 0 (ReLU family, GELU, SiLU, tanh, dropout, identity,
max/avg pooling) and optionally a flatten, ending in exactly one conv (``groups == 1``) or linear layer.
Every node on the chain must have exactly one user. Removing channel c of such a group slices the
producer's output c, the BN's parameters and running statistics, and the consumer's input c (for a
linear after a flatten: the ``per_channel`` features of channel c).

Anything else is left alone: a BN whose output feeds a residual addition, a concatenation, or two layers
is never narrowed. So in residual networks only the channels *inside* blocks are pruned (the registry's
``conv1 -> bn1 -> relu -> conv2`` of a basic block) and the residual stream keeps its width, as network
slimming's channel-selection layer does (Liu et al. 2017, §3; ``models/channel_selection.py``).

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
_PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh,
                 nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity,
                 nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                 nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_PASS_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish, torch.tanh,
                   F.dropout, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                   F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d}
_PASS_METHODS = {"relu", "relu_", "tanh", "contiguous"}
_ADDS = {operator.add, operator.iadd, torch.add}


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
    """Trace ``model`` and find its prunable channel groups (BenchError if it cannot be traced)."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # fx raises many types for untraceable control flow
        raise BenchError(f"cannot trace {type(model).__name__} with torch.fx for channel pruning: "
                         f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    _propagate_shapes(model, gm, input_shape)
    modules = dict(gm.named_modules())
    groups = [g for node in gm.graph.nodes if (g := _group_at(node, modules)) is not None]
    residual = any((n.op == "call_function" and n.target in _ADDS) or (n.op == "call_method" and n.target in
                   ("add", "add_")) for n in gm.graph.nodes)
    batchnorms = [n for n, m in model.named_modules() if isinstance(m, BATCHNORMS)]
    return Structure(groups=groups, batchnorms=batchnorms, residual=residual)


@torch.no_grad()
def _propagate_shapes(model: nn.Module, gm: fx.GraphModule, input_shape: tuple[int, ...]) -> None:
    was_training = model.training
    model.eval()  # never touch BN running statistics
    try:
        device = next(model.parameters()).device
        ShapeProp(gm).propagate(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)


def _module(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    return modules.get(node.target) if node.op == "call_module" else None


def _is_pass(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], _PASS_MODULES)
    if node.op == "call_function":
        return node.target in _PASS_FUNCTIONS
    return node.op == "call_method" and node.target in _PASS_METHODS


def _is_flatten(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """``flatten(x, 1)`` in any spelling (channel-major, so channel c owns a contiguous run of features)."""
    if node.op == "call_module":
        m = modules[node.target]
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    if (node.op == "call_function" and node.target is torch.flatten) or \
            (node.op == "call_method" and node.target == "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    return False


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


def _group_at(bn_node: fx.Node, modules: dict[str, nn.Module]) -> ChannelGroup | None:
    """The channel group whose BN is ``bn_node``, or None where the chain is not a plain one."""
    bn = _module(bn_node, modules)
    if not isinstance(bn, BATCHNORMS) or not bn.affine or not bn.track_running_stats:
        return None
    src = bn_node.args[0] if bn_node.args else None
    producer = _module(src, modules) if isinstance(src, fx.Node) else None
    if not (isinstance(producer, nn.Linear) or (isinstance(producer, CONVS) and producer.groups == 1)):
        return None
    if len(src.users) != 1:
        return None
    node, per_channel, flattened = bn_node, 1, False
    while len(node.users) == 1:
        nxt = next(iter(node.users))
        if not nxt.args or nxt.args[0] is not node:
            return None
        consumer = _module(nxt, modules)
        if isinstance(consumer, CONVS) and consumer.groups == 1 and not flattened:
            return ChannelGroup(bn_node.target, src.target, nxt.target, bn.num_features, 1)
        if isinstance(consumer, nn.Linear):
            if len(_shape(node)) != 2:  # a linear on (N, C, L) mixes L, not channels
                return None
            return ChannelGroup(bn_node.target, src.target, nxt.target, bn.num_features, per_channel)
        if _is_flatten(nxt, modules) and not flattened:
            per_channel, flattened = math.prod(_shape(node)[2:]), True
        elif not _is_pass(nxt, modules):
            return None
        node = nxt
    return None


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
