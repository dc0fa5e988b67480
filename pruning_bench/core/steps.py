"""How training steps map to sample passes: ``n_train`` samples in batches of ``batch_size``, the last
batch of every epoch the smaller remainder. Pure arithmetic, so a plan can be priced before any data or
model is built (the ``fit`` budget level, ``--dry-run``) exactly as the training loop will charge it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepCounts:
    """Steps and sample passes of a training set of ``n_train`` samples at ``batch_size``."""

    n_train: int
    batch_size: int

    def __post_init__(self) -> None:
        if self.n_train < 1 or self.batch_size < 1:
            raise ValueError(f"need n_train >= 1 and batch_size >= 1, got {self.n_train}, {self.batch_size}")

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n_train // self.batch_size)

    def batch_size_at(self, step: int) -> int:
        """Samples in the batch of ``step`` (the last batch of an epoch is smaller)."""
        spe = self.steps_per_epoch
        return self.n_train - (spe - 1) * self.batch_size if step % spe == spe - 1 else self.batch_size

    def samples_between(self, start: int, stop: int) -> int:
        """Sample passes of global steps ``start .. stop - 1``."""
        spe, n, bs = self.steps_per_epoch, self.n_train, self.batch_size

        def before(step: int) -> int:  # samples in all steps before ``step``
            return (step // spe) * n + (step % spe) * bs
        return before(stop) - before(start)

    def steps_for_samples(self, samples: int, start_step: int = 0) -> int:
        """The most steps from ``start_step`` whose batches add up to at most ``samples``."""
        spe, n = self.steps_per_epoch, self.n_train
        step = start_step
        while step % spe and samples >= self.batch_size_at(step):  # finish the current epoch
            samples -= self.batch_size_at(step)
            step += 1
        if step % spe == 0:
            full, samples = divmod(samples, n)
            step += full * spe
            step += min(samples // self.batch_size, spe - 1)
        return step - start_step

    def recalibration_samples(self, fraction: float = 1.0) -> int:
        """Samples a BN recalibration over ``fraction`` of an epoch passes (whole batches, at least one)."""
        return self.samples_between(0, self.recalibration_steps(fraction))

    def recalibration_steps(self, fraction: float = 1.0) -> int:
        return max(1, round(fraction * self.steps_per_epoch))


@dataclass(frozen=True)
class PlanSetting:
    """What a method needs to price its own schedule before training: the column's target sparsity, the
    steps and sample passes of the training set, and the suite's shortest round."""

    target_sparsity: float
    counts: StepCounts
    min_round_epochs: float
