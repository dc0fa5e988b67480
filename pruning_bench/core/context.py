"""What a method may use: the model, its masks, the shared training loop, evaluation, the budget meter,
snapshots for rewinding, per-round logging and per-round checkpoints.

A method never builds loaders, optimizers, devices, timers or MLflow calls itself, and never prices its
own work: it asks the Context. Every pass over training data goes through the Context and is charged to
the budget meter in the budget's unit (``pruning_bench.core.budget``): training steps (``train``), scoring
batches (``batches``), BN recalibration (``recalibrate_bn``). Evaluation is never charged. Plans are made
in steps: ``remaining_steps``, ``steps_for_fraction``, ``run_steps`` and ``affordable_steps`` price steps
exactly as the training loop will charge them; the Context delegates them to its
:class:`~pruning_bench.core.pricing.Pricing` (one per model). What a checkpoint holds besides the loop's
state is captured and restored by :mod:`pruning_bench.core.resume`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruning_bench.core.budget import TRAIN_FLOPS_PER_FORWARD, BudgetMeter
from pruning_bench.core.flops import FlopProfile, profile_flops
from pruning_bench.core.masks import MaskSet
from pruning_bench.core.model_factory import ModelFactory
from pruning_bench.core.pricing import Pricing
from pruning_bench.core.recipe import MIN_ROUND_SHARE, Recipe
from pruning_bench.core.resume import (
    DEFAULT_EVERY_SECONDS,
    TrialCheckpoints,
    atomic_save,
    capture,
    read_checkpoint,
    restore,
)
from pruning_bench.core.source import SourceResult
from pruning_bench.core.training import (
    EvalResult,
    TrainCallback,
    Trainer,
    TrainResult,
    evaluate,
    make_optimizer,
    recalibrate_bn,
)
from pruning_bench.data import DataBundle


class Context:
    """Services a method uses during one trial."""

    def __init__(self, *, model: nn.Module, data: DataBundle, recipe: Recipe, meter: BudgetMeter,
                 target_sparsity: float, params: Any, seed: int, device: torch.device,
                 checkpoint_dir: Path | None = None, log_fn: Callable[[str, float, int | None], None] | None = None,
                 series_fn: Callable[[str, list[tuple[int, float]]], None] | None = None,
                 progress: bool = True, min_round_epochs: float | None = None,
                 checkpoint_seconds: float = DEFAULT_EVERY_SECONDS, source: SourceResult | None = None,
                 models: ModelFactory | None = None) -> None:
        self.data, self.recipe, self.budget = data, recipe, meter
        #: a control's source trial (:mod:`pruning_bench.core.source`); None for every other method
        self.source = source
        #: fresh models of this architecture (:mod:`pruning_bench.core.model_factory`), for re-initialising
        self.models = models
        self.target_sparsity, self.params, self.seed, self.device = target_sparsity, params, seed, device
        self.checkpoint_dir = checkpoint_dir
        #: mid-trial checkpoints of every training call; a rerun replays the method through them
        self.checkpoints = TrialCheckpoints(checkpoint_dir, checkpoint_seconds, lambda: capture(self),
                                            lambda state: restore(self, state))
        self._log_fn = log_fn
        self._series_fn = series_fn  # one batched write per training run (the loss curve)
        self.progress = progress
        #: the shortest round an iterative method may run (the suite's ``budget.min_round_epochs``)
        self.min_round_epochs = min_round_epochs if min_round_epochs is not None else MIN_ROUND_SHARE * meter.epochs
        self.generator = torch.Generator().manual_seed(seed)  # for a method's own randomness
        self.logged: list[tuple[str, float, int | None]] = []
        self._set_model(model)
        self.budget.bind_dense_flops(self.flop_profile.total)

    # ---- model and masks -------------------------------------------------------------------------
    def _set_model(self, model: nn.Module) -> None:
        self.model = model.to(self.device)
        self.masks = MaskSet(self.model)
        self.flop_profile: FlopProfile = profile_flops(self.model, self.data.input_shape, self.device,
                                                       self.masks.names, dtype=self.data.input_dtype)
        self.trainer = Trainer(model=self.model, masks=self.masks, data=self.data, recipe=self.recipe,
                               meter=self.budget, device=self.device, flops=self.effective_flops,
                               seed=self.seed, progress=self.progress, dense_flops=self.flop_profile.total)
        #: prices and step plans for this model (:mod:`pruning_bench.core.pricing`)
        self.pricing = Pricing(model=self.model, masks=self.masks, trainer=self.trainer,
                               flop_profile=self.flop_profile, meter=self.budget, data=self.data,
                               recipe=self.recipe, device=self.device, seed=self.seed,
                               target_sparsity=self.target_sparsity)

    def replace_model(self, model: nn.Module) -> None:
        """Swap in a physically smaller model (structured pruning); its masks start all-ones."""
        self._set_model(model)

    # ---- prices and plans in steps (core/pricing.py) --------------------------------------------------
    def effective_flops(self) -> float:
        """Per-sample inference FLOPs of the current model with its current masks."""
        return self.pricing.effective_flops()

    def forward_flops(self, sparsity: float | None = None) -> float:
        """Per-sample forward FLOPs now, or estimated at a higher ``sparsity``."""
        return self.pricing.forward_flops(sparsity)

    def train_cost_per_sample(self, sparsity: float | None = None) -> float:
        """One sample's training pass in the budget's unit."""
        return self.pricing.train_cost_per_sample(sparsity)

    def forward_cost_per_sample(self, sparsity: float | None = None) -> float:
        """One sample's forward-only pass in the budget's unit."""
        return self.pricing.forward_cost_per_sample(sparsity)

    def measure_seconds_per_sample(self) -> float:
        """Median seconds per sample of a training step here (nothing charged)."""
        return self.pricing.measure_seconds_per_sample()

    @property
    def steps_per_epoch(self) -> int:
        return self.pricing.steps_per_epoch

    @property
    def budget_epochs(self) -> float:
        """The trial's budget in dense-equivalent epochs."""
        return self.pricing.budget_epochs

    @property
    def spends_budget(self) -> bool:
        """True under ``equal`` (phases share one limit), False under ``native``."""
        return self.pricing.spends_budget

    def run_steps(self) -> int:
        """Steps of the one training run a method makes after its set-up."""
        return self.pricing.run_steps()

    @property
    def budget_steps(self) -> int:
        """Steps one whole budget pays for from step 0 at the current model's price."""
        return self.pricing.budget_steps

    def steps_for_fraction(self, fraction: float, start_step: int = 0) -> int:
        """Steps from data position ``start_step`` that ``fraction`` of the whole budget pays for."""
        return self.pricing.steps_for_fraction(fraction, start_step)

    def remaining_steps(self, start_step: int = 0,
                        callbacks_for: Callable[[int], Sequence[TrainCallback]] | None = None) -> int:
        """Steps from data position ``start_step`` that the rest of the budget pays for."""
        return self.pricing.remaining_steps(start_step, callbacks_for)

    def epochs_to_steps(self, epochs: float, start_step: int = 0) -> int:
        """Steps from ``start_step`` whose sample passes add up to at most ``epochs`` epochs."""
        return self.pricing.epochs_to_steps(epochs, start_step)

    def affordable_steps(self, amount: float | None = None, *, start_step: int = 0,
                         callbacks_for: Callable[[int], Sequence[TrainCallback]] | None = None,
                         sparsity_at: Callable[[int], Callable[[int], float]] | None = None) -> int:
        """The most steps whose charges fit in ``amount`` of the budget's unit (default: what is left)."""
        return self.pricing.affordable_steps(amount, start_step=start_step, callbacks_for=callbacks_for,
                                             sparsity_at=sparsity_at)

    # ---- training ---------------------------------------------------------------------------------
    def train(self, epochs: float | None = None, *, steps: int | None = None, start_step: int = 0,
              schedule_steps: int | None = None, data_seed: int | None = None, data_start: int | None = None,
              callbacks: Sequence[TrainCallback] = (), optimizer: torch.optim.Optimizer | None = None,
              scheduler_factory: Callable[[torch.optim.Optimizer], object] | None = None,
              label: str = "train", desc: str | None = None) -> TrainResult:
        """Train with the suite's recipe for ``epochs`` (or ``steps``); see :meth:`Trainer.train`.

        ``start_step``/``schedule_steps`` place the run inside a longer learning-rate schedule (IMP
        continues the schedule from the rewind step); ``data_start`` is the position in the data stream
        (default ``start_step``; a fine-tune with a restarted schedule continues the stream);
        ``data_seed`` picks the data order (SWAMP's particles differ only in it). Every step is charged.
        """
        if (epochs is None) == (steps is None):
            raise ValueError("give exactly one of epochs or steps")
        n = steps if steps is not None else self.epochs_to_steps(epochs)
        if self.budget.kind.clocked:
            self.pricing.measured_seconds()  # the loop's first step-time estimate
        call = self.checkpoints.begin_call({
            "steps": n, "start_step": start_step, "schedule_steps": schedule_steps, "data_seed": data_seed,
            "data_start": data_start, "label": label, "callbacks": [type(cb).__name__ for cb in callbacks]})
        done = call.completed()
        if done is not None:  # a rerun: this call finished before the interruption; its end state is loaded
            result = self._replayed(done, callbacks, optimizer)
        else:
            result = self.trainer.train(n, start_step=start_step, schedule_steps=schedule_steps,
                                        data_seed=data_seed, data_start=data_start, callbacks=callbacks,
                                        optimizer=optimizer, scheduler_factory=scheduler_factory, label=label,
                                        desc=desc or label, checkpoint=call, resume=call.partial())
        if self._series_fn is not None and result.epoch_losses:  # x = epochs charged so far in the trial
            self._series_fn("train_loss", [(round(e), loss) for e, loss in result.epoch_losses])
        return result

    def _replayed(self, loop: dict[str, Any], callbacks: Sequence[TrainCallback],
                  optimizer: torch.optim.Optimizer | None) -> TrainResult:
        """The result of a training call that finished before an interruption (its state is loaded)."""
        optimizer = optimizer or make_optimizer(self.model, self.recipe)
        optimizer.load_state_dict(loop["optimizer"])
        for cb, cb_state in zip(callbacks, loop["callbacks"]):
            cb.load_state_dict(cb_state)
        return TrainResult(optimizer=optimizer, **loop["result"])

    def lr_at(self, step: int, schedule_steps: int) -> float:
        """The learning rate the suite's schedule gives at ``step`` of a ``schedule_steps`` run."""
        return self.trainer.schedule(schedule_steps).lr(step)

    def batches(self, n: int, *, data_seed: int | None = None, start_step: int = 0,
                batch_size: int | None = None, label: str = "scoring",
                forward_only: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` training batches (augmented, normalised, on the device) for saliency scoring, each charged
        as it is drawn: as a training pass (forward + backward), or a forward-only pass."""
        stream = self.trainer.stream(data_seed, batch_size)
        for i in range(n):
            x, y = stream.batch(start_step + i)
            self.charge_passes(len(y), label=label, forward_only=forward_only)
            yield x, y

    def charge_passes(self, samples: float, *, label: str, forward_only: bool = False) -> None:
        """Charge passes a method makes outside the training loop and ``batches`` (SynFlow's data-free
        input, GraSP's Hessian-gradient product), priced at the current model and mask: a training pass
        (forward + backward) per sample, or a forward-only pass."""
        flops = samples * self.effective_flops() * (1.0 if forward_only else TRAIN_FLOPS_PER_FORWARD)
        self.budget.charge(samples, flops, label=label, forward_only=forward_only)

    def recalibration_samples(self, fraction: float = 1.0) -> int:
        """Samples :meth:`recalibrate_bn` passes for ``fraction`` of an epoch (for planning)."""
        return self.trainer.counts.recalibration_samples(fraction)

    def recalibrate_bn(self, model: nn.Module | None = None, fraction: float = 1.0,
                       data_seed: int | None = None) -> None:
        """Recompute BN running statistics on ``fraction`` of an epoch of training batches, charged as
        forward-only passes (label ``bn-recalibration``)."""
        n = self.trainer.counts.recalibration_steps(fraction)
        recalibrate_bn(model or self.model, self.batches(n, data_seed=data_seed, label="bn-recalibration",
                                                         forward_only=True))

    # ---- evaluation -------------------------------------------------------------------------------
    def evaluate(self, split: str = "val", model: nn.Module | None = None) -> EvalResult:
        """Accuracy and loss on ``val`` (for any choice a method makes) or ``test`` (reporting only).
        Never charged: the budget's clock is paused while it runs."""
        if split not in ("val", "test", "train"):
            raise ValueError(f"unknown split '{split}'; valid: val, test, train")
        x, y = {"val": (self.data.val_x, self.data.val_y), "test": (self.data.test_x, self.data.test_y),
                "train": (self.data.train_x, self.data.train_y)}[split]
        with self.budget.paused():
            return evaluate(model or self.model, x, y, self.data, device=self.device,
                            batch_size=self.recipe.eval_batch_size)

    # ---- rewinding and logging ----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """A copy of the model's weights and buffers and the masks (for rewinding)."""
        return {"model": copy.deepcopy(self.model.state_dict()),
                "masks": {n: m.clone() for n, m in self.masks.masks.items()}}

    def restore(self, snap: dict[str, Any], *, masks: bool = True) -> None:
        """Load a snapshot's weights (and, by default, its masks); current masks are re-applied."""
        self.model.load_state_dict(snap["model"])
        if masks:
            self.masks.update(snap["masks"])
        self.masks.apply()

    def log(self, key: str, value: float, step: int | None = None) -> None:
        """Record a per-round metric in the trial's MLflow run (``step`` = round)."""
        self.logged.append((key, float(value), step))
        if self._log_fn is not None:
            self._log_fn(key, float(value), step)

    # ---- checkpoints (resume an interrupted iterative method) -----------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Save what a training call's checkpoint holds (:meth:`_capture`) and ``state``, atomically."""
        if self.checkpoint_dir is None:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        payload = {**capture(self), "state": state, "barrier": self.checkpoints.barrier + 1}
        atomic_save(payload, self.checkpoint_dir / "checkpoint.pt")
        self.checkpoints.passed_barrier()
        self.checkpoints.wrote(self.checkpoint_dir / "checkpoint.pt")

    def load_checkpoint(self) -> dict[str, Any] | None:
        """Restore what :meth:`save_checkpoint` saved and return its ``state``; None if there is none."""
        if self.checkpoint_dir is None:
            return None
        # CPU: RNG states must stay CPU byte tensors; load_state_dict / masks.update move the rest
        path = self.checkpoint_dir / "checkpoint.pt"
        existed = path.is_file()
        payload = read_checkpoint(path)
        if payload is None:
            if existed:  # unreadable (warned): what came after that round cannot be replayed: start afresh
                self.checkpoints.clear()
            return None
        restore(self, payload)  # and the interrupted run's per-round metrics are logged again
        self.checkpoints.resumed_at_barrier(payload.get("barrier", 0))
        return payload["state"]
