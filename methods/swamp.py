"""SWAMP: sparse weight averaging with multiple particles for iterative magnitude pruning.

Choi, Lee, Nam & Lee, "SWAMP: Sparse Weight Averaging with Multiple Particles for Iterative Magnitude
Pruning", ICLR 2024 (arXiv 2305.14852), §3 (method), §4.3 (SWAMP+), App. B (SWA phase at a constant
learning rate of 0.05). No official code is public (docs/methods.md §1b); the round machinery is IMP's
(:mod:`methods.imp`, OpenLTH), and the averaging + BN recalibration follow ``torch.optim.swa_utils``
and Sparse Model Soups (``ZIB-IOL/SMS``, ``average_models`` / ``recalibrate_bn``).

Algorithm (IMP in which each round's single training run is replaced by N particles):
1. Pretrain dense from step 0 to the rewind step k once; keep theta_k (the matching ticket).
2. Round r = 0..L, every particle n = 1..N_r:
   a. start from theta_k under the round's mask, fresh optimizer;
   b. train steps k .. S with the suite's schedule of an R-step run continued from k (as IMP), then
      the SWA phase S .. R at a constant SWA learning rate (``SWALR``), S = ``swa_start`` x R;
   c. collect its iterate into an ``AveragedModel`` every ``swa_interval`` steps of the SWA phase
      (default one epoch), counted back from the round's end so the last iterate is always in; the
      mask is re-applied inside the averaged copy after every collection.
3. Average the N_r SWA models uniformly (every parameter, BN affine too), then recompute BN running
   statistics on training batches (``update_bn``) before evaluating or pruning.
4. Prune from the average (global |w| among unpruned weights, ``prune_fraction`` of the remaining,
   the last step exactly to the target), rewind to theta_k (not to the average), next round.
5. Output: the BN-recalibrated average of round L (it is ``ctx.model``, masks at the target).

Choices where the paper leaves details open (each a parameter):
- Data order: a round with several particles gives particle n of round r its own data seed, mixed from
  (trial seed, r, n); a round with one particle uses the trial's data order, so it is exactly IMP's
  run (``particles=1``, ``swa_start=1`` reproduces IMP's masks).
- ``swa_lr`` 0 means 0.05 x (suite lr / 0.1) (App. B's 0.05 at lr 0.1); ``swa_anneal_steps`` 0 = the
  constant SWA rate from the first SWA step. ``swa_start`` is a fraction of the round's schedule,
  never before k; 1.0 switches SWA off (each particle contributes its last iterate).
- The dense round 0 trains N particles too (``dense_particles`` 0 = N), so the first mask already comes
  from an average, as the paper's first cycle; the cost is (L + 1) x N runs.
- SWAMP+ (§4.3, "one particle early, several late"): with ``swamp_plus``, rounds training at a
  sparsity below ``plus_sparsity`` use one particle; rounds at or above it use N.
- BN recalibration uses ``bn_fraction`` of an epoch of training batches (default 0.2, Sparse Model
  Soups' ``bn_recalibration_frac``; 1.0 = a full pass, as ``update_bn`` over a loader). It is a
  forward-only pass over training data and is charged like every other pass.
- ``particle_eval``: each particle's SWA solution is evaluated on the validation split after its own
  BN recalibration (``round_particle_val_acc``, mean and best; the paper's "average vs particles"
  comparison, Fig. 3); those recalibrations are charged too. Off saves (N x bn_fraction / 3) epochs a
  round.

Budgets (:mod:`pruning_bench.pruning.iterative`): every particle-step is charged (label ``particle-n``), and
every BN recalibration (label ``bn-recalibration``). ``native``: every round a full run of the trial's
budget (cost about (L + 1) x N runs); ``equal``: SWAMP keeps its L rounds, 20% steps and N particles,
and the round length R shrinks until pretraining plus every particle of every round fits; below the
suite's ``min_round_epochs`` the trial is ``does_not_fit`` (it needs about N times IMP's budget).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel

from pruning_bench.core.context import Context
from pruning_bench.core.masks import MaskSet, prunable_weights
from pruning_bench.core.method import Method
from pruning_bench.core.steps import PlanSetting
from pruning_bench.core.training import StepState, TrainCallback
from pruning_bench.pruning.iterative import RoundParams, finish_round, rewind, round_steps, start_or_resume
from pruning_bench.seeds import mix_seed

SWA_LR_AT_LR_01 = 0.05  # App. B: constant SWA learning rate 0.05 (at base lr 0.1)


@dataclass(frozen=True)
class SWAMPParams(RoundParams):
    """The round-planning fields (prune_fraction, rewind_iters, ...) come from ``RoundParams``."""

    particles: int = 4              # N
    swa_start: float = 0.75         # SWA phase = the last 25% of each round's schedule; 1.0 = off
    swa_lr: float = 0.0             # 0 = 0.05 x (suite lr / 0.1)
    swa_interval: int = 0           # steps between SWA collections; 0 = one epoch
    swa_anneal_steps: int = 0       # SWALR annealing to swa_lr; 0 = constant from the first SWA step
    swamp_plus: bool = False        # one particle below plus_sparsity, N at or above it
    plus_sparsity: float = 0.5
    dense_particles: int = 0        # training runs of the dense round 0; 0 = particles (the paper)
    bn_fraction: float = 0.2        # epochs of training batches per BN recalibration (SMS's 0.2)
    particle_eval: bool = True      # each particle's SWA solution: BN recalibrated, val accuracy logged

    def validate(self) -> None:
        super().validate()
        if self.particles < 1 or self.dense_particles < 0:
            raise ValueError("particles must be >= 1 and dense_particles >= 0 (0 = particles)")
        if not 0 < self.swa_start <= 1:
            raise ValueError(f"swa_start must be in (0, 1], got {self.swa_start}")
        if self.swa_lr < 0 or self.swa_interval < 0 or self.swa_anneal_steps < 0:
            raise ValueError("swa_lr, swa_interval and swa_anneal_steps must be >= 0")
        if not 0 <= self.plus_sparsity < 1:
            raise ValueError(f"plus_sparsity must be in [0, 1), got {self.plus_sparsity}")
        if not 0 < self.bn_fraction <= 1:
            raise ValueError(f"bn_fraction must be in (0, 1], got {self.bn_fraction}")


class SWACollector(TrainCallback):
    """Averages the model's parameters at the given (1-based) steps into an ``AveragedModel`` whose
    prunable weights stay masked."""

    def __init__(self, model: nn.Module, masks: MaskSet, points: set[int]) -> None:
        self.swa = AveragedModel(model, use_buffers=False)
        self.masks, self.points = masks, points
        self.swa_weights = prunable_weights(self.swa.module)

    def on_step_end(self, state: StepState) -> None:
        if state.step + 1 in self.points:
            self.swa.update_parameters(state.model)
            with torch.no_grad():
                for name, w in self.swa_weights.items():
                    w.mul_(self.masks.masks[name])

    @property
    def collected(self) -> int:
        return int(self.swa.n_averaged)

    def parameters(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.swa.module.named_parameters()}


def swa_points(start: int, end: int, interval: int) -> set[int]:
    """Collection steps end, end - interval, ... that lie after ``start`` (the first SWA step)."""
    return set(range(end, start, -interval)) if interval > 0 else set()


def particle_seed(seed: int, round_index: int, particle: int, n_particles: int) -> int | None:
    """Data seed of a particle: the trial's own order for a lone particle, else one per (round, particle)."""
    return None if n_particles == 1 else mix_seed("swamp-particle", seed, round_index, particle)


def average_parameters(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform average of parameter dicts (every parameter, BN affine included)."""
    return {n: torch.stack([s[n] for s in states]).mean(0) for n in states[0]}


class SWAMP(Method):
    """SWAMP (Choi et al., ICLR 2024): IMP whose rounds train N SWA particles and prune their average."""

    name = "swamp"
    Params = SWAMPParams

    def __init__(self, params: Any | None = None) -> None:
        super().__init__(params)
        self.particle_states: list[dict[str, torch.Tensor]] = []  # the last round's SWA solutions

    def particles_for(self, r: int, sparsity: float) -> int:
        p: SWAMPParams = self.params
        if p.swamp_plus and sparsity < p.plus_sparsity:
            return 1
        if r == 0:
            return p.dense_particles or p.particles
        return p.particles

    def recalibrations_for(self, particles: int) -> int:
        """BN recalibrations a round of ``particles`` runs makes: the average's, plus one per particle
        when their SWA solutions are evaluated (a lone particle is its own average)."""
        return 1 + (particles if self.params.particle_eval and particles > 1 else 0)

    def min_budget_epochs(self, setting: PlanSetting) -> float:
        """Pretraining to k, then every particle of L + 1 rounds of at least ``min_round_epochs``, and
        the BN recalibrations (iterative.py); about N times IMP's minimum."""
        p: SWAMPParams = self.params
        recal = setting.counts.recalibration_samples(p.bn_fraction)
        return p.min_budget_epochs(setting, self.particles_for, lambda r, n: self.recalibrations_for(n) * recal)

    def run(self, ctx: Context) -> None:
        p: SWAMPParams = self.params
        recal = ctx.recalibration_samples(p.bn_fraction)
        plan, theta_k, first = start_or_resume(
            ctx, lambda: p.plan(ctx, self.particles_for, lambda r, n: self.recalibrations_for(n) * recal))
        k = plan.rewind_step
        for r in range(first, plan.rounds + 1):
            n = plan.particles[r]
            R = round_steps(ctx, plan, r)
            states, accs = [], []
            for i in range(n):
                rewind(ctx, theta_k)
                states.append(self.train_particle(ctx, k, R, f"swamp round {r}/{plan.rounds} particle {i}",
                                                  i, particle_seed(ctx.seed, r, i, n)))
                if self.recalibrations_for(n) > 1:  # this particle's SWA solution, on its own BN statistics
                    self.load_average(ctx, states[-1:])
                    accs.append(ctx.evaluate("val").acc)
            self.particle_states = states
            self.load_average(ctx, states)
            ctx.log("round_particles", n, step=r)
            if accs:
                ctx.log("round_particle_val_acc", sum(accs) / n, step=r)
                ctx.log("round_particle_val_acc_best", max(accs), step=r)
            finish_round(ctx, plan, theta_k, r)

    def train_particle(self, ctx: Context, k: int, R: int, desc: str, i: int,
                       data_seed: int | None) -> dict[str, torch.Tensor]:
        """Train one particle from theta_k (already loaded) over steps k .. R of an R-step schedule and
        return its SWA parameters (its last iterate when no SWA step was collected)."""
        p: SWAMPParams = self.params
        swa_from = max(k, min(R, round(p.swa_start * R)))
        collector = SWACollector(ctx.model, ctx.masks,
                                 swa_points(swa_from, R, p.swa_interval or ctx.steps_per_epoch))
        label = f"particle-{i}"
        optimizer = None
        if swa_from > k:
            optimizer = ctx.train(steps=swa_from - k, start_step=k, schedule_steps=R, data_seed=data_seed,
                                  label=label, desc=desc).optimizer
        if swa_from < R:
            swa_lr = p.swa_lr or SWA_LR_AT_LR_01 * ctx.recipe.lr / 0.1
            ctx.train(steps=R - swa_from, start_step=swa_from, schedule_steps=R, data_seed=data_seed,
                      optimizer=optimizer, callbacks=[collector], label=label, desc=desc + " (SWA)",
                      scheduler_factory=lambda opt: SWALR(opt, swa_lr, anneal_epochs=p.swa_anneal_steps,
                                                          anneal_strategy="cos"))
        if collector.collected:
            return collector.parameters()
        return {n: q.detach().clone() for n, q in ctx.model.named_parameters()}

    def load_average(self, ctx: Context, states: list[dict[str, torch.Tensor]]) -> None:
        """Put the particles' average into ``ctx.model``, re-mask, recompute BN statistics (charged)."""
        average = average_parameters(states)
        with torch.no_grad():
            for name, q in ctx.model.named_parameters():
                q.copy_(average[name])
        ctx.masks.apply()
        ctx.recalibrate_bn(fraction=self.params.bn_fraction)
