"""Random pruning at initialisation with the layer-wise densities of a named distribution: the sanity
baseline every pruning comparison needs.

Liu, Sun, Zhou, Huang & Darrell, "Rethinking the Value of Network Pruning", ICLR 2019 (§5: a random
mask with a method's layer-wise sparsities, trained from scratch); Frankle, Dziugaite, Roy & Carbin,
"Pruning Neural Networks at Initialization: Why are We Missing the Mark?", ICLR 2021 (§5: random masks
with the same per-layer sparsities match pruning-at-initialisation methods); Evci et al., RigL, ICML
2020, §4 ("Static": a random ERK mask trained without updates). Reference: ``Pruners/pruners.py::Rand``
(``ganguli-lab/Synaptic-Flow``), which draws a global random score instead of per-layer densities.

Algorithm:
1. Per-layer kept counts from ``distribution``: ``erk`` (Erdos-Renyi-Kernel, RigL §3; the default: the
   strong random baseline), ``uniform`` (every layer at the target; no layer kept dense), or ``csv``:
   exactly the kept counts of another trial's ``layer_sparsity.csv`` artifact (``layers_from``), i.e.
   that method's layer-wise densities with the weights inside each layer chosen at random (the
   mechanism of the ``shuffle[source=M]`` control, which reads M's table from the same plan).
2. A uniformly random mask per layer with exactly those counts (``ctx.generator``), fixed for training.
3. Train the sparse network for the whole budget (in the ``flops`` unit its cheaper steps buy more of
   them, like SNIP and RigL).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pruning_bench.core.context import Context
from pruning_bench.core.masks import random_masks
from pruning_bench.core.method import Method
from pruning_bench.core.source import layer_counts, read_layer_table
from pruning_bench.pruning.layer_densities import keep_counts, layer_densities

DISTRIBUTIONS = ("erk", "uniform", "csv")


@dataclass(frozen=True)
class RandomParams:
    distribution: str = "erk"   # erk | uniform | csv
    layers_from: str = ""       # csv: a layer_sparsity.csv artifact of another trial (same model)

    def validate(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution '{self.distribution}' is not one of: {', '.join(DISTRIBUTIONS)}")
        if (self.distribution == "csv") != bool(self.layers_from):
            raise ValueError("distribution 'csv' needs layers_from (a layer_sparsity.csv path), and only it")


class RandomPruning(Method):
    """Random pruning at init with ERK, uniform or copied layer-wise densities (the sanity baseline)."""

    name = "random"
    Params = RandomParams

    def run(self, ctx: Context) -> None:
        p: RandomParams = self.params
        shapes = {n: tuple(w.shape) for n, w in ctx.masks.params.items()}
        if p.distribution == "csv":
            counts = layer_counts(read_layer_table(p.layers_from, who="random"), shapes, who="random")
        else:
            densities = layer_densities(p.distribution, shapes, ctx.target_sparsity)
            total_keep = round((1 - ctx.target_sparsity) * sum(math.prod(s) for s in shapes.values()))
            counts = keep_counts(shapes, densities, total_keep)
        ctx.masks.update(random_masks(ctx.masks, counts, ctx.generator))
        ctx.log("pruned_sparsity", ctx.masks.sparsity())
        ctx.train(steps=ctx.remaining_steps(), desc="random")
