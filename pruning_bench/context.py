"""What a method may use: the model, its masks, the shared training loop, evaluation, the budget meter,
snapshots for rewinding, per-round logging and per-round checkpoints.

A method never builds loaders, optimizers, devices, timers or MLflow calls itself; it asks the Context.
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pruning_bench.budget import BudgetMeter
from pruning_bench.data import DataBundle
from pruning_bench.flops import FlopProfile, profile_flops
from pruning_bench.masks import MaskSet
from pruning_bench.suite import Recipe
from pruning_bench.training import EvalResult, TrainCallback, Trainer, TrainResult, evaluate, recalibrate_bn


class Context:
    """Services a method uses during one trial."""

    def __init__(self, *, model: nn.Module, data: DataBundle, recipe: Recipe, meter: BudgetMeter,
                 target_sparsity: float, params: Any, seed: int, device: torch.device,
                 checkpoint_dir: Path | None = None, log_fn: Callable[[str, float, int | None], None] | None = None,
                 series_fn: Callable[[str, list[tuple[int, float]]], None] | None = None,
                 progress: bool = True) -> None:
        self.data, self.recipe, self.budget = data, recipe, meter
        self.target_sparsity, self.params, self.seed, self.device = target_sparsity, params, seed, device
        self.checkpoint_dir = checkpoint_dir
        self._log_fn = log_fn
        self._series_fn = series_fn  # one batched write per training run (the loss curve)
        self.progress = progress
        self.generator = torch.Generator().manual_seed(seed)  # for a method's own randomness
        self.logged: list[tuple[str, float, int | None]] = []
        self._set_model(model)

    # ---- model and masks -------------------------------------------------------------------------
    def _set_model(self, model: nn.Module) -> None:
        self.model = model.to(self.device)
        self.masks = MaskSet(self.model)
        self.flop_profile: FlopProfile = profile_flops(self.model, self.data.input_shape, self.device,
                                                       self.masks.names)
        self.trainer = Trainer(model=self.model, masks=self.masks, data=self.data, recipe=self.recipe,
                               meter=self.budget, device=self.device, flops=self.effective_flops,
                               seed=self.seed, progress=self.progress)

    def replace_model(self, model: nn.Module) -> None:
        """Swap in a physically smaller model (structured pruning); its masks start all-ones."""
        self._set_model(model)

    def effective_flops(self) -> float:
        """Per-sample inference FLOPs of the current model with its current masks."""
        return self.flop_profile.effective(self.masks.layer_density())

    # ---- training ---------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return self.trainer.steps_per_epoch

    @property
    def budget_epochs(self) -> float:
        """The suite's budget in epochs (one dense training run)."""
        return self.budget.epochs

    @property
    def budget_steps(self) -> int:
        """The suite's budget in steps (one dense training run)."""
        return self.epochs_to_steps(self.budget.epochs)

    def epochs_to_steps(self, epochs: float, start_step: int = 0) -> int:
        """Steps from ``start_step`` that cost at most ``epochs`` epochs of sample passes."""
        return self.trainer.steps_for_samples(round(epochs * self.data.n_train), start_step)

    def remaining_steps(self, start_step: int = 0) -> int:
        """Steps from ``start_step`` that the rest of the budget pays for (what ``equal`` allows)."""
        return self.trainer.steps_for_samples(self.budget.remaining_samples, start_step)

    def train(self, epochs: float | None = None, *, steps: int | None = None, start_step: int = 0,
              schedule_steps: int | None = None, data_seed: int | None = None,
              callbacks: Sequence[TrainCallback] = (), optimizer: torch.optim.Optimizer | None = None,
              scheduler_factory: Callable[[torch.optim.Optimizer], object] | None = None,
              label: str = "train", desc: str | None = None) -> TrainResult:
        """Train with the suite's recipe for ``epochs`` (or ``steps``); see :meth:`Trainer.train`.

        ``start_step``/``schedule_steps`` place the run inside a longer learning-rate schedule (IMP
        continues the schedule from the rewind step); ``data_seed`` picks the data order (SWAMP's
        particles differ only in it). Every sample pass is charged to ``ctx.budget``.
        """
        if (epochs is None) == (steps is None):
            raise ValueError("give exactly one of epochs or steps")
        n = steps if steps is not None else self.epochs_to_steps(epochs)
        result = self.trainer.train(n, start_step=start_step, schedule_steps=schedule_steps,
                                    data_seed=data_seed, callbacks=callbacks, optimizer=optimizer,
                                    scheduler_factory=scheduler_factory, label=label, desc=desc or label)
        if self._series_fn is not None and result.epoch_losses:  # x = epochs charged so far in the trial
            self._series_fn("train_loss", [(round(e), loss) for e, loss in result.epoch_losses])
        return result

    def lr_at(self, step: int, schedule_steps: int) -> float:
        """The learning rate the suite's schedule gives at ``step`` of a ``schedule_steps`` run."""
        return self.trainer.schedule(schedule_steps).lr(step)

    def batches(self, n: int, *, data_seed: int | None = None, start_step: int = 0,
                batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` training batches (augmented, normalised, on the device) for saliency scoring or BN
        recalibration. They are not training passes: not charged as samples, their forward FLOPs are
        recorded as extra FLOPs by the caller via ``ctx.budget.charge_flops``."""
        stream = self.trainer.stream(data_seed, batch_size)
        for i in range(n):
            yield stream.batch(start_step + i)

    def recalibrate_bn(self, model: nn.Module | None = None, fraction: float = 1.0,
                       data_seed: int | None = None) -> None:
        """Recompute BN running statistics on ``fraction`` of an epoch of training batches."""
        n = max(1, round(fraction * self.steps_per_epoch))
        recalibrate_bn(model or self.model, self.batches(n, data_seed=data_seed))
        self.budget.charge_flops(n * self.recipe.batch_size * self.effective_flops())

    # ---- evaluation -------------------------------------------------------------------------------
    def evaluate(self, split: str = "val", model: nn.Module | None = None) -> EvalResult:
        """Accuracy and loss on ``val`` (for any choice a method makes) or ``test`` (reporting only)."""
        if split not in ("val", "test", "train"):
            raise ValueError(f"unknown split '{split}'; valid: val, test, train")
        x, y = {"val": (self.data.val_x, self.data.val_y), "test": (self.data.test_x, self.data.test_y),
                "train": (self.data.train_x, self.data.train_y)}[split]
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
        """Save the model, masks, meter, RNG states and ``state`` (atomically) for resuming."""
        if self.checkpoint_dir is None:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": self.model.state_dict(),
            "masks": self.masks.masks,
            "meter": self.budget.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "python": random.getstate(), "generator": self.generator.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "state": state,
            "logged": self.logged,
        }
        path = self.checkpoint_dir / "checkpoint.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """Restore what :meth:`save_checkpoint` saved and return its ``state``; None if there is none."""
        if self.checkpoint_dir is None or not (self.checkpoint_dir / "checkpoint.pt").is_file():
            return None
        # CPU: RNG states must stay CPU byte tensors; load_state_dict / masks.update move the rest
        payload = torch.load(self.checkpoint_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
        self.model.load_state_dict(payload["model"])
        self.masks.update(payload["masks"])
        self.budget.load_state_dict(payload["meter"])
        rng = payload["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self.generator.set_state(rng["generator"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        for key, value, step in payload["logged"]:  # the interrupted run's per-round metrics
            self.log(key, value, step)
        return payload["state"]
