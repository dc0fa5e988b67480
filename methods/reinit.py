"""Random re-initialisation control: the source method's final mask (and architecture), a fresh
initialisation, trained for the same budget.

Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019, §2-§3 ("random reinitialization": the
winning ticket's mask with weights drawn anew from the initial distribution); Frankle, Dziugaite, Roy &
Carbin, "Pruning Neural Networks at Initialization: Why are We Missing the Mark?", ICLR 2021, §5
(SNIP, GraSP and SynFlow keep their accuracy when re-initialised: only their layer-wise densities
matter). Reference: OpenLTH ``lottery/branch/randomly_reinitialize.py``: the level's mask on a model
built from another seed, then trained as the level was.

Algorithm:
1. Read the source trial's final masks and per-layer shapes (``ctx.source``: the trial of ``source`` in
   the same cell, seed and budget level; it runs first).
2. Build the model afresh from a seed derived from the trial's (``mix_seed(seed, "fresh-init")``), never
   the source's own initialisation. A physically shrunk source (network slimming, Taylor) is rebuilt at
   its shrunk size and initialised at that size: then this is the ``scratch`` control.
3. Apply the source's exact mask, fixed, and train for the trial's whole budget (as ``random``; in the
   ``flops`` unit a sparser net's cheaper steps buy more of them).

Where this differs from OpenLTH: OpenLTH trains the re-initialised ticket for one IMP round's length;
here every control gets the trial's whole budget, the same as its source and every other row of the
cell, so the comparison is at equal compute. A source recorded before masks were saved (no
``masks.pt`` artifact) cannot be re-initialised: the trial fails with that message.
"""

from __future__ import annotations

from pruning_bench.core.context import Context
from pruning_bench.pruning.controls import Control, train_fresh_init


class Reinit(Control):
    """Control (Frankle & Carbin, ICLR 2019): source=M's final mask on freshly drawn weights."""

    name = "reinit"

    def run(self, ctx: Context) -> None:
        train_fresh_init(ctx, self.name)
