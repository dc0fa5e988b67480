"""The training recipe every method of a suite shares, and the shortest round an iterative method may run."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Recipe:
    """The training recipe shared by every method of a suite."""

    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    batch_size: int = 128
    schedule: str = "cosine"          # cosine | step | constant
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of training (step)
    gamma: float = 0.1                # step schedule decay factor
    warmup_epochs: float = 0.0        # linear warm-up from 0
    label_smoothing: float = 0.0
    eval_batch_size: int = 1024
    optimizer: str = "sgd"            # sgd | adamw (AdamW: betas (momentum, 0.99), as nanoGPT's shakespeare_char)


#: The shortest IMP/SWAMP round, as a share of the base run, when a suite does not set ``min_round_epochs``.
#: Measured on mnist1d (64-channel CNN, 40-epoch base, 3 seeds): IMP at 80% reached 55.0 / 80.3 / 92.5 /
#: 94.8 / 95.6% with rounds of 2 / 4 / 8 / 16 / 40 epochs; 8 epochs (1/5 of the base run) is the shortest
#: round within 3 points of IMP's own 40-epoch rounds.
MIN_ROUND_SHARE = 0.2
