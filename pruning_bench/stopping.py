"""Stopping when told: SIGINT or SIGTERM (what Ctrl-C, ``timeout``, systemd, SLURM's ``scancel`` and
Kubernetes send) asks every trial of the sweep to stop at its next training step, after saving a
checkpoint there. The trial then ends as if interrupted (recorded KILLED) and the same command resumes
it from that checkpoint. A process that has not stopped within :data:`GRACE_SECONDS` (a long evaluation,
a method's own computation between training calls) is interrupted where it is, keeping its last
checkpoint; a second signal interrupts at once.

The sweep process forwards the signal to its worker processes (``--jobs``) and waits for them; each
worker runs the same handler, so a signal sent to a worker alone stops it, and with it the sweep.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

GRACE_SECONDS = float(os.environ.get("PRUNING_BENCH_STOP_GRACE_SECONDS", "10"))
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested = threading.Event()
_timers: list[threading.Timer] = []  # the grace period's pending interrupts


class StopRequested(KeyboardInterrupt):
    """Raised by the training loop at a step boundary, after its checkpoint, once a stop was asked for."""


def requested() -> bool:
    """Whether this process was told to stop (checked by the training loop before every step)."""
    return _requested.is_set()


def _handler(interrupt_now: bool, on_signal: Callable[[int], None] | None,
             on_second: Callable[[int], None] | None) -> Callable[[int, object], None]:
    def handler(signum: int, frame: object) -> None:
        if _requested.is_set():
            if on_second is not None:
                on_second(signum)
            raise KeyboardInterrupt(f"signal {signum} again: stopping at once")
        _requested.set()
        if on_signal is not None:
            on_signal(signum)
        timer = threading.Timer(GRACE_SECONDS, _thread.interrupt_main)  # the second "signal", if still here
        timer.daemon = True
        timer.start()
        _timers.append(timer)
        if interrupt_now:
            raise KeyboardInterrupt(f"signal {signum}")
    return handler


@contextlib.contextmanager
def handling(*, interrupt_now: bool, on_signal: Callable[[int], None] | None = None,
             on_second: Callable[[int], None] | None = None) -> Iterator[None]:
    """Handle SIGINT and SIGTERM in this process for a block (the previous handlers come back after it).

    ``interrupt_now``: raise KeyboardInterrupt at the first signal (a process that only waits for its
    workers); otherwise the training loop stops at its next step. ``on_signal`` / ``on_second`` run at the
    first / a second signal (forward it to the workers; kill them). Outside the main thread nothing is
    installed (signals are delivered to the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    handler = _handler(interrupt_now, on_signal, on_second)
    for sig in SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        stopped()
        for sig, old in previous.items():
            signal.signal(sig, old)


def stopped() -> None:
    """The work that was told to stop has stopped: the grace period's interrupt is no longer needed."""
    while _timers:
        _timers.pop().cancel()


def install_in_worker() -> None:
    """For the life of a worker process: stop at the next training step on SIGINT or SIGTERM."""
    _requested.clear()
    handler = _handler(False, None, None)
    for sig in SIGNALS:
        signal.signal(sig, handler)
