"""Mid-trial checkpoints for every method, through the shared training loop.

A method is ordinary Python that calls ``ctx.train`` a number of times, with pruning, scoring and
evaluation in between; its local variables (IMP's rewind point, SWAMP's particle averages, a
callback's running sums) cannot be saved from outside. So a trial resumes by *replaying* its method
from the start, deterministically, while the training calls it already finished are not run again:

- at the end of each ``ctx.train`` call (a phase boundary) the full state is saved: weights, masks,
  optimizer, budget meter, RNG states, the call's callbacks' state and its result;
- inside a call, the same plus the loop's position is saved every ``every_seconds`` of wall-clock;
- on a rerun, call *k* that has an end state is skipped: its end state is loaded and its result
  returned, so the code after it runs on exactly the state it saw the first time; the call with a
  mid-call checkpoint continues from it; the rest runs as usual.

Everything between calls (pruning, scoring batches, BN recalibration, evaluation) runs again; it is
cheap next to training and deterministic, and its charges are replaced by the restored meter. A
method's own round checkpoint (``ctx.save_checkpoint``, IMP and SWAMP) is a *barrier*: replay starts
there, and end states before it are deleted. Every file is written to a temporary name and renamed,
so a kill during a write leaves the previous checkpoint intact. A rerun whose calls do not match the
recorded ones (a changed method) raises :class:`CheckpointMismatch` and the trial starts afresh.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from pruning_bench.core.context import Context

DEFAULT_EVERY_SECONDS = float(os.environ.get("PRUNING_BENCH_CHECKPOINT_SECONDS", "300"))


class CheckpointMismatch(RuntimeError):
    """The rerun's training calls differ from the checkpointed ones: resuming would mix two runs."""


def atomic_save(payload: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _warn_unreadable(path: Path, err: BaseException) -> None:
    print(f"warning: checkpoint {path} is unreadable ({type(err).__name__}: {str(err)[:120]}); ignored, the "
          "trial goes on from the last good one (or from the start)", file=sys.stderr)


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """A checkpoint file's contents; None when it is missing, or truncated or corrupt (one warning line,
    and the file is removed so it is not read again): a bad file is never fatal."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(payload, dict):
            raise ValueError(f"holds a {type(payload).__name__}, not a checkpoint")
        return payload
    except Exception as err:  # truncated (EOFError, RuntimeError), garbage (UnpicklingError), ...
        _warn_unreadable(path, err)
        path.unlink(missing_ok=True)
        return None


class TrialCheckpoints:
    """The checkpoints of one trial in ``directory`` (None: checkpointing off)."""

    def __init__(self, directory: Path | None, every_seconds: float = DEFAULT_EVERY_SECONDS,
                 capture: Callable[[], dict[str, Any]] | None = None,
                 restore: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.directory, self.every = directory, every_seconds
        self.capture, self.restore = capture or dict, restore or (lambda state: None)
        self.barrier = 0    # method checkpoints (rounds) passed
        self.call = 0       # training calls made since the last barrier
        self.skipped = 0    # calls replayed from their end state in this process
        self.resumed = 0    # calls continued from a mid-call checkpoint in this process
        self._partial_state: dict[str, Any] | None = None
        self._partial_read = directory is None  # read on first use (``meta`` alone does not need it)
        #: called with each file just written (pruning_bench.tracking.remote_checkpoints uploads it to the server)
        self.on_write: Callable[[Path], None] | None = None

    def wrote(self, path: Path) -> None:
        """A checkpoint file was just written (atomically) at ``path``."""
        if self.on_write is not None:
            self.on_write(path)

    @property
    def _partial(self) -> dict[str, Any] | None:
        if not self._partial_read:
            self._partial_state, self._partial_read = self._read(self._partial_path), True
        return self._partial_state

    @_partial.setter
    def _partial(self, value: dict[str, Any] | None) -> None:
        self._partial_state, self._partial_read = value, True

    # ---- files -------------------------------------------------------------------------------------------
    @property
    def _partial_path(self) -> Path:
        return self.directory / "partial.pt"

    def _end_path(self, barrier: int, call: int) -> Path:
        return self.directory / "calls" / f"b{barrier}-c{call}.pt"

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        return read_checkpoint(path)

    def meta(self) -> dict[str, Any]:
        """What the trial recorded about itself when it first checkpointed (e.g. its thread count)."""
        if self.directory is None or not (self.directory / "meta.json").is_file():
            return {}
        try:
            return json.loads((self.directory / "meta.json").read_text())
        except (OSError, ValueError) as err:
            _warn_unreadable(self.directory / "meta.json", err)
            return {}

    def write_meta(self, meta: dict[str, Any]) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / "meta.json.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.directory / "meta.json")
        self.wrote(self.directory / "meta.json")

    def clear(self) -> None:
        """Forget every checkpoint (the trial ended, or its checkpoints do not match it)."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
        self._partial, self.barrier, self.call = None, 0, 0

    # ---- barriers (a method's round checkpoint) -----------------------------------------------------------
    def passed_barrier(self) -> int:
        """A method checkpoint was just saved: replay will start there. Returns the new barrier id."""
        self.barrier += 1
        self.call = 0
        if self.directory is not None:
            shutil.rmtree(self.directory / "calls", ignore_errors=True)
            if self._partial_path.is_file():
                self._partial_path.unlink()
        self._partial = None
        return self.barrier

    def resumed_at_barrier(self, barrier: int) -> None:
        """A method checkpoint was just loaded: count calls from there."""
        self.barrier, self.call = barrier, 0

    # ---- training calls -----------------------------------------------------------------------------------
    def begin_call(self, signature: dict[str, Any]) -> CallCheckpoint:
        handle = CallCheckpoint(self, self.barrier, self.call, signature)
        self.call += 1
        return handle


class CallCheckpoint:
    """Checkpoints of one ``ctx.train`` call."""

    def __init__(self, owner: TrialCheckpoints, barrier: int, index: int, signature: dict[str, Any]) -> None:
        self.owner, self.barrier, self.index, self.signature = owner, barrier, index, signature
        self._last_save = time.monotonic()

    def _check(self, payload: dict[str, Any]) -> dict[str, Any]:
        if payload["signature"] != self.signature:
            raise CheckpointMismatch(f"training call {self.index} after checkpoint {self.barrier} was "
                                     f"{payload['signature']}, now {self.signature}")
        self.owner.restore(payload["common"])
        return payload["loop"]

    def completed(self) -> dict[str, Any] | None:
        """The end state of this call if an earlier run finished it (restored; its loop record returned)."""
        if self.owner.directory is None:
            return None
        payload = self.owner._read(self.owner._end_path(self.barrier, self.index))
        if payload is None:
            return None
        self.owner.skipped += 1
        return self._check(payload)

    def partial(self) -> dict[str, Any] | None:
        """The mid-call checkpoint of this call, if any (restored; its loop position returned)."""
        payload = self.owner._partial
        if payload is None or (payload["barrier"], payload["call"]) != (self.barrier, self.index):
            return None
        self.owner._partial = None
        self.owner.resumed += 1
        return self._check(payload)

    def due(self) -> bool:
        """Whether a mid-call checkpoint is due (``every_seconds`` since the last one)."""
        return self.owner.directory is not None and time.monotonic() - self._last_save >= self.owner.every

    def save(self, loop: dict[str, Any], *, final: bool) -> None:
        """Save the state now: inside the call (``final=False``) or at its end."""
        owner = self.owner
        if owner.directory is None:
            return
        payload = {"barrier": self.barrier, "call": self.index, "signature": self.signature,
                   "common": owner.capture(), "loop": loop}
        path = owner._end_path(self.barrier, self.index) if final else owner._partial_path
        atomic_save(payload, path)
        if final and owner._partial_path.is_file():
            owner._partial_path.unlink()
        owner.wrote(path)
        self._last_save = time.monotonic()


# ---- what a checkpoint holds besides the training loop's own state ---------------------------------------
def rng_states(generator: torch.Generator) -> dict[str, Any]:
    """Every random number generator a trial draws from (torch, CUDA, numpy, Python, the method's)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "generator": generator.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_states(rng: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    generator.set_state(rng["generator"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def capture(ctx: Context) -> dict[str, Any]:
    """Everything outside the training loop that a checkpoint holds: weights, masks, meter, every RNG,
    the per-round log and the measured step time."""
    return {"model": ctx.model.state_dict(), "masks": ctx.masks.masks, "meter": ctx.budget.state_dict(),
            "rng": rng_states(ctx.generator), "logged": list(ctx.logged),
            "seconds_per_sample": ctx.pricing.seconds_per_sample}


def restore(ctx: Context, state: dict[str, Any]) -> None:
    """Put back what :func:`capture` saved; metrics logged inside calls not run again are logged again."""
    ctx.model.load_state_dict(state["model"])
    ctx.masks.update(state["masks"])
    ctx.masks.apply()
    ctx.budget.load_state_dict(state["meter"])
    set_rng_states(state["rng"], ctx.generator)
    if state.get("seconds_per_sample") is not None:  # absent from round checkpoints of older versions
        ctx.pricing.set_measured_seconds(state["seconds_per_sample"])
    for key, value, step in state["logged"][len(ctx.logged):]:
        ctx.log(key, value, step)
