"""Trials claimed once: a worker claims a trial key in the tracking store before running it.

A claim is the trial's own MLflow run, created RUNNING with the owner's identity (``claim_host``,
``claim_pid``, ``claim_pid_start``) and a ``claim_heartbeat`` tag that a background thread refreshes while
the trial runs. MLflow has no compare-and-swap, so a claim is made in two reads around one write: look
for the key's runs; if none is FINISHED (unless re-running) and none is a live claim, create the claim;
read again; if another live claim exists now, withdraw (delete) the own claim, back off at random and
start over. Two workers can never both win: the later writer's second read sees the earlier claim,
which its owner keeps. No clock comparison decides the winner, so clock skew between machines is
harmless; clocks matter only for the stale timeout (minutes).

A claim is stale, and its run is marked FAILED, when its heartbeat is older than the stale timeout, or
at once when it was made on this host by a process that no longer exists (``kill -9``, a crash).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

HEARTBEAT_SECONDS = float(os.environ.get("PRUNING_BENCH_HEARTBEAT_SECONDS", "20"))
STALE_SECONDS = float(os.environ.get("PRUNING_BENCH_STALE_SECONDS", "300"))
CLAIM_ATTEMPTS = 20

HOST, PID, PID_START, HEARTBEAT = "claim_host", "claim_pid", "claim_pid_start", "claim_heartbeat"


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (None without /proc or the process)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()
    except OSError:
        return None


def process_start(pid: int) -> str:
    """The kernel's start time of process ``pid`` (clock ticks since boot; "" where /proc is absent):
    with the pid it names one process, even after the pid is reused."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else ""


def process_alive(pid: int, start: str = "") -> bool:
    """Whether process ``pid`` (started at ``start``, when known) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat(pid)
    if fields is None:
        return True  # no /proc: os.kill said it exists
    if fields and fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return False
    return not start or (len(fields) > 19 and fields[19] == start)


def owner_tags() -> dict[str, str]:
    """This process's identity and a fresh heartbeat, as run tags."""
    return {HOST: socket.gethostname(), PID: str(os.getpid()), PID_START: process_start(os.getpid()),
            HEARTBEAT: f"{time.time():.3f}"}


@dataclass(frozen=True)
class ClaimView:
    """What a claim check needs of one run."""

    run_id: str
    status: str
    tags: dict[str, str]
    start_time_ms: int

    @classmethod
    def of(cls, run: Any) -> ClaimView:
        return cls(run.info.run_id, run.info.status, dict(run.data.tags), int(run.info.start_time or 0))


def stale_reason(view: ClaimView, now: float | None = None, host: str | None = None) -> str | None:
    """Why a RUNNING run's owner is gone, or None while it is alive."""
    now = time.time() if now is None else now
    host = host or socket.gethostname()
    tags = view.tags
    if tags.get(HOST) == host and tags.get(PID, "").isdigit() and \
            not process_alive(int(tags[PID]), tags.get(PID_START, "")):
        return f"its process {host}:{tags[PID]} no longer exists"
    try:
        beat = float(tags[HEARTBEAT])
    except (KeyError, ValueError):
        beat = view.start_time_ms / 1000.0  # a run from before claims: only its start time tells
    if now - beat > STALE_SECONDS:
        return f"no heartbeat from {tags.get(HOST, '?')}:{tags.get(PID, '?')} for {now - beat:.0f} s"
    return None


class Heartbeat:
    """Refreshes the ``claim_heartbeat`` tag of runs every ``HEARTBEAT_SECONDS`` in a daemon thread."""

    def __init__(self, set_tag: Callable[[str, str, str], None], run_ids: Iterable[str] = (),
                 every: float = HEARTBEAT_SECONDS) -> None:
        self._set_tag, self._every = set_tag, every
        self._run_ids = set(run_ids)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)

    def add(self, run_id: str) -> None:
        with self._lock:
            self._run_ids.add(run_id)

    def discard(self, run_id: str) -> None:
        with self._lock:
            self._run_ids.discard(run_id)

    def _beat(self) -> None:
        while not self._stop.wait(self._every):
            with self._lock:
                ids = list(self._run_ids)
            for run_id in ids:
                with contextlib.suppress(Exception):  # a store hiccup must not kill the trial
                    self._set_tag(run_id, HEARTBEAT, f"{time.time():.3f}")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a key: the own run id, or why not (``finished`` / ``claimed``)."""

    run_id: str | None
    reason: str = ""


def claim(find: Callable[[], list[ClaimView]], create: Callable[[], str], withdraw: Callable[[str], None],
          mark_stale: Callable[[ClaimView, str], None], *, rerun: bool = False,
          attempts: int = CLAIM_ATTEMPTS, backoff: float = 0.2) -> Claim:
    """Claim a trial key (see the module docstring). ``find`` lists the key's active runs, ``create``
    makes the claim run and returns its id, ``withdraw`` deletes a lost claim, ``mark_stale`` ends a
    dead owner's run FAILED."""
    for attempt in range(attempts):
        verdict = _verdict(find(), None, mark_stale, rerun)
        if verdict is not None:
            return verdict
        own = create()
        verdict = _verdict(find(), own, mark_stale, rerun)
        if verdict is None:
            return Claim(own)
        withdraw(own)
        if verdict.reason.startswith("finished"):
            return verdict
        time.sleep(random.uniform(0.5, 1.5) * backoff * (attempt + 1))
    return Claim(None, f"claimed: still contended after {attempts} attempts")


def _verdict(views: list[ClaimView], own: str | None, mark_stale: Callable[[ClaimView, str], None],
             rerun: bool) -> Claim | None:
    """None when nothing but ``own`` stands in the way; else why the key is not ours."""
    for view in views:
        if view.status == "FINISHED" and not rerun and view.tags.get("outcome") != "failed":
            return Claim(None, f"finished: run {view.run_id}")
    for view in views:
        if view.run_id == own or view.status != "RUNNING":
            continue
        reason = stale_reason(view)
        if reason is not None:
            mark_stale(view, reason)
            continue
        return Claim(None, f"claimed: run {view.run_id} by {view.tags.get(HOST, '?')}:{view.tags.get(PID, '?')}")
    return None
