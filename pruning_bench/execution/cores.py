"""CPU threads shared sanely between every ``bench`` process on one machine.

Measured on 2 cores (one mnist1d SNIP trial, 3.5 s alone on 2 threads): two ``bench run`` processes side
by side at torch's default thread count took 21.7 s each (6x); at one thread each, 5.6 and 6.4 s. Cores
are therefore divided among the processes that are training at the same moment: each trial, at its
start, registers its process in a per-machine directory and takes ``cores // trials running here``
threads (at least 1). ``--threads`` overrides it; ``--jobs N`` gives each worker at most ``cores // N``.
A trial keeps its count to the end (the count changes results in the last digits), and records it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from pathlib import Path

from pruning_bench.tracking.claims import process_alive, process_start


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's or Ray's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def registry_dir() -> Path:
    """Where training processes of this machine register (``PRUNING_BENCH_RUNTIME_DIR`` overrides)."""
    root = os.environ.get("PRUNING_BENCH_RUNTIME_DIR")
    path = Path(root) if root else Path(tempfile.gettempdir()) / f"pruning_bench-{os.getuid()}" / "training"
    path.mkdir(parents=True, exist_ok=True)
    return path


def training_here(directory: Path | None = None) -> int:
    """Live processes registered as training on this machine (dead entries are removed)."""
    directory = directory or registry_dir()
    live = 0
    for entry in directory.glob("*-*"):
        pid, _, start = entry.name.partition("-")
        if pid.isdigit() and process_alive(int(pid), start):
            live += 1
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    return live


_REGISTERED: list[Path] = []


def register_this_process(directory: Path | None = None) -> None:
    """Count this process as training on this machine until it exits (idempotent). A ``bench run`` that
    trains in its own process registers as it starts, before its imports, so that two started together
    both see each other when their first trials pick a thread count; a worker registers at its first
    trial. A killed process's entry is dropped by the next count."""
    if _REGISTERED:
        return
    entry = (directory or registry_dir()) / f"{os.getpid()}-{process_start(os.getpid())}"
    entry.touch()
    _REGISTERED.append(entry)
    atexit.register(lambda: entry.unlink(missing_ok=True))


def threads_for(requested: int | None, share: int | None, training: int) -> int:
    """Threads for one trial: ``requested`` (``--threads``) if given; else the cores divided among the
    processes training here, at most ``share`` (a worker's share under ``--jobs`` or Ray's CPUs)."""
    if requested:
        return requested
    fair = max(1, available_cores() // max(training, 1))
    return min(fair, share) if share else fair
