"""Layer-wise shuffle control: the source method's per-layer kept counts, a uniformly random mask inside
each layer, the source's initialisation, trained for the same budget.

Frankle, Dziugaite, Roy & Carbin, "Pruning Neural Networks at Initialization: Why are We Missing the
Mark?", ICLR 2021, §5 ("random shuffling": the mask permuted within each layer; SNIP, GraSP and SynFlow
lose nothing by it, so they choose layer-wise densities, not weights); Frankle & Carbin, ICLR 2019
("random sparse" / OpenLTH ``lottery/branch/randomly_prune.py`` with ``layerwise`` strategy); Liu et
al., "Rethinking the Value of Network Pruning", ICLR 2019, §5 (a random mask with a method's layer-wise
sparsities).

Algorithm:
1. Read the source trial's final masks (``ctx.source``): the kept count of every layer (from
   ``layer_sparsity.csv`` when the source recorded no masks).
2. Draw a uniformly random mask with exactly those counts in every layer (a generator seeded from the
   trial's seed and "shuffle").
3. Keep the source's initialisation: the trial's seed builds the same initial weights the source
   started from. Train with the mask fixed for the trial's whole budget.

This is ``random[distribution=csv, layers_from=...]`` with the source's table: one mechanism
(:func:`pruning_bench.core.source.layer_counts`, :func:`pruning_bench.core.masks.random_masks`).
Where this differs from the references: for a source that rewinds (IMP with ``rewind_iters`` > 0),
OpenLTH's branch starts from the rewind point's weights; here it starts from the initialisation (step 0),
as "Missing the Mark" does for pruning at initialisation. A physically shrunk source cannot be shuffled
(its layers have other shapes): use ``scratch``.
"""

from __future__ import annotations

import torch

from pruning_bench.core.context import Context
from pruning_bench.core.masks import random_masks
from pruning_bench.core.source import layer_counts
from pruning_bench.pruning.controls import Control, the_source, train_with_mask
from pruning_bench.seeds import mix_seed


class Shuffle(Control):
    """Control (Frankle et al., ICLR 2021): source=M's per-layer counts at random positions, M's init."""

    name = "shuffle"

    def run(self, ctx: Context) -> None:
        source = the_source(ctx, self.name)
        shapes = {n: tuple(w.shape) for n, w in ctx.masks.params.items()}
        counts = layer_counts(source.layers, shapes, source.kept_counts(), who=f"{self.name}[source={source.method}]")
        generator = torch.Generator().manual_seed(mix_seed(ctx.seed, self.name))
        train_with_mask(ctx, random_masks(ctx.masks, counts, generator), self.name)
