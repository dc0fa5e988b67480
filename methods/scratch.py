"""Training the pruned architecture from scratch: the control of "Rethinking the Value of Network
Pruning" (Liu, Sun, Zhou, Huang & Darrell, ICLR 2019, §3-§4).

For a structured source (network slimming, Taylor channel pruning) the source's shrunk architecture,
built and initialised afresh at its smaller size, trained for the trial's budget. In the ``epochs`` unit
that is the paper's Scratch-E (the same epochs); in the ``flops`` unit the smaller net's cheaper steps
buy more of them, the paper's Scratch-B (the same computation). For an unstructured source the same as
``reinit`` (the source's exact mask, a fresh initialisation; the paper's §5 unstructured experiment).
Reference: ``Eric-mingjie/rethinking-network-pruning`` (``cifar/network-slimming/main_E.py``,
``main_B.py``): the pruned ``cfg`` rebuilt with the model's standard initialisation.

Where this differs from the reference: the reference builds the model from a channel ``cfg``; here the
source's ``layer_sparsity.csv`` gives every layer's shrunk shape, the fresh dense model keeps the first k
channels of each group and every layer is then initialised afresh at its new size by the model's own
scheme (so fan-in scaled initialisations match a model built small). The reference's slimming models
start BN scales at 0.5; here a scratch model starts from the model's own BN initialisation (1.0).
"""

from __future__ import annotations

from pruning_bench.core.context import Context
from pruning_bench.pruning.controls import Control, train_fresh_init


class Scratch(Control):
    """Control (Liu et al., ICLR 2019): source=M's shrunk architecture from a fresh initialisation."""

    name = "scratch"

    def run(self, ctx: Context) -> None:
        train_fresh_init(ctx, self.name)
