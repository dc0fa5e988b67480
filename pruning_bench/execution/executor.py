"""Where trials run: one :class:`Executor` interface, three implementations.

- :class:`SequentialExecutor`: one trial after another in this process (with per-epoch progress bars).
- :class:`ProcessExecutor` (``--jobs N``): N spawned worker processes, reused across trials; on a machine
  with several GPUs trial k gets GPU k mod n; on the CPU each worker gets an equal share of the cores.
- :class:`RayExecutor` (``--executor ray``): one Ray task per trial with its CPUs and a GPU share, on a
  local Ray or a cluster's (``--ray-address``); small trials pack onto one GPU.

Every executor only runs :func:`pruning_bench.execution.worker.run_job` and yields each job's outcome as it
ends; the sweep (:mod:`pruning_bench.execution.sweep`) has the one loop that prints and counts them. Trials are
claimed by the worker that runs them, so executors never need to coordinate. Ctrl-C stops every
executor, and so do SIGINT and SIGTERM sent to the sweep process alone (:mod:`pruning_bench.stopping`):
trials in flight save a checkpoint and are recorded KILLED, finished ones stay, and the same command
resumes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Protocol

from pruning_bench import stopping
from pruning_bench.errors import BenchError
from pruning_bench.execution.worker import JobOutcome, TrialJob, run_job

EXECUTORS = ("sequential", "processes", "ray")


class Executor(Protocol):
    """Runs jobs and yields ``(index into jobs, outcome)`` as each ends, in any order."""

    workers: int

    def run(self, jobs: Sequence[TrialJob]) -> Iterator[tuple[int, JobOutcome]]: ...


class SequentialExecutor:
    """Trials one after another in this process."""

    workers = 1

    def __init__(self, on_start: Callable[[int, TrialJob], None] | None = None) -> None:
        self.on_start = on_start

    def run(self, jobs: Sequence[TrialJob]) -> Iterator[tuple[int, JobOutcome]]:
        with stopping.handling(interrupt_now=False):  # this process trains: stop at the next step
            for i, job in enumerate(jobs):
                if stopping.requested():  # stopped between two trials: the sweep ends as interrupted
                    raise stopping.StopRequested("stopped between trials")
                if self.on_start is not None:
                    self.on_start(i, job)
                yield i, run_job(job)


def _die_with_parent() -> None:
    """Pool worker initializer: on Linux the kernel sends SIGTERM to this worker when the sweep process
    dies (even by ``kill -9``); SIGTERM and SIGINT stop the trial at its next step with a checkpoint
    (:mod:`pruning_bench.stopping`; recorded KILLED), so no orphan keeps training a trial nobody waits for."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    stopping.install_in_worker()


def _signal_workers(pool: ProcessPoolExecutor, signum: int) -> None:
    """Send ``signum`` to the pool's live worker processes (a worker that already stopped is skipped)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(ProcessLookupError, ValueError, AttributeError):
            if process.is_alive():
                os.kill(process.pid, signum)


class _Gate:
    """Hands out jobs whose ``after`` keys (a control's source trial) have all ended, in job order."""

    def __init__(self, jobs: Sequence[TrialJob]) -> None:
        self.jobs, self.waiting, self.done = jobs, list(range(len(jobs))), set()

    def ready(self) -> list[int]:
        out = [i for i in self.waiting if all(k in self.done for k in self.jobs[i].after)]
        self.waiting = [i for i in self.waiting if i not in out]
        return out

    def ended(self, job: TrialJob) -> None:
        self.done.add(job.trial.key)

    def stranded(self) -> Iterator[tuple[int, JobOutcome]]:
        """Jobs left waiting for a key no job of the run had (never expected: the sweep only names keys it runs)."""
        for i in self.waiting:
            yield i, JobOutcome("failed", detail=f"waited for trials that never ran: {', '.join(self.jobs[i].after)}")


class ProcessExecutor:
    """``workers`` spawned processes (CUDA-safe; each imports the package once and keeps it)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, jobs: Sequence[TrialJob]) -> Iterator[tuple[int, JobOutcome]]:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(self.workers, len(jobs)), mp_context=context,
                                 initializer=_die_with_parent) as pool, \
                stopping.handling(interrupt_now=True, on_signal=lambda _: _signal_workers(pool, signal.SIGTERM),
                                  on_second=lambda _: _signal_workers(pool, signal.SIGKILL)):
            gate = _Gate(jobs)
            running: dict[Future, int] = {}
            try:
                while True:
                    running.update({pool.submit(run_job, jobs[i]): i for i in gate.ready()})
                    if not running:
                        break
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        i = running.pop(future)
                        gate.ended(jobs[i])
                        try:
                            yield i, future.result()
                        except KeyboardInterrupt:
                            raise
                        except Exception as err:  # the worker process itself died
                            yield i, JobOutcome("failed", detail=f"worker died: {type(err).__name__}: {err}")
                yield from gate.stranded()
            except BaseException:  # every worker stops at its next step, with a checkpoint, then exits
                _signal_workers(pool, signal.SIGTERM)
                pool.shutdown(wait=True, cancel_futures=True)
                raise


def _run_job_in_ray_task(job: TrialJob, *_after: JobOutcome) -> JobOutcome:
    """A Ray task: ``ray.cancel`` raises SIGINT's Python handler in the task's process, so with
    :mod:`pruning_bench.stopping`'s handler installed a cancelled trial stops at its next training step
    with a checkpoint, as a ``--jobs`` worker does, instead of wherever the interrupt lands. ``_after``
    are the outcomes of the trials it waits for (Ray starts it once those tasks have ended)."""
    with stopping.handling(interrupt_now=False):
        return run_job(job)


class RayExecutor:
    """One Ray task per trial, ``cpus`` CPUs and ``gpus`` GPUs (a fraction packs trials onto one GPU).

    Without ``address`` a local Ray starts (or the one this process already started is used); with
    one (``auto``, ``ray://host:10001``) the cluster's. Ray reuses its worker processes across tasks,
    so a worker's imports, registry and tracking client are paid once.
    """

    def __init__(self, address: str | None, cpus: float, gpus: float) -> None:
        try:
            import ray
        except ImportError:
            raise BenchError("--executor ray needs Ray: pip install 'pruning_bench[ray]'") from None
        self.ray, self.cpus, self.gpus = ray, cpus, gpus
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, configure_logging=False,
                         log_to_driver=True, runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore"}})
            except Exception as err:
                raise BenchError(f"--ray-address {address or '(local)'}: cannot start or reach Ray: {err}") from None
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus, 1e-9)))

    def run(self, jobs: Sequence[TrialJob]) -> Iterator[tuple[int, JobOutcome]]:
        ray = self.ray
        # max_calls=0: keep worker processes (and what they loaded) across tasks, GPU tasks too
        task = ray.remote(max_calls=0)(_run_job_in_ray_task).options(num_cpus=self.cpus, num_gpus=self.gpus,
                                                                     max_retries=0)
        refs: dict[str, object] = {}  # trial key -> its task, for the controls that wait for it
        pending = {}
        for i, job in enumerate(jobs):  # the sweep orders a control after its source
            ref = task.remote(job, *(refs[k] for k in job.after if k in refs))
            refs[job.trial.key], pending[ref] = ref, i
        with stopping.handling(interrupt_now=True):  # then the tasks are cancelled: recorded KILLED
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        i = pending.pop(ref)
                        try:
                            yield i, ray.get(ref)
                        except (ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError) as err:
                            yield i, JobOutcome("failed", detail=f"Ray task ended: {type(err).__name__}")
                        except ray.exceptions.RayTaskError as err:
                            yield i, JobOutcome("failed", detail=str(err).splitlines()[-1][:500])
            except BaseException:
                for ref in pending:  # each running trial stops at its next step, with a checkpoint: KILLED
                    ray.cancel(ref)
                with contextlib.suppress(Exception):
                    ray.wait(list(pending), num_returns=len(pending), timeout=30)
                raise


def make_executor(kind: str, *, jobs: int, ray_address: str | None, cpus_per_trial: float,
                  gpus_per_trial: float, on_start: Callable[[int, TrialJob], None] | None = None) -> Executor:
    """The executor for ``--executor`` (default: ``processes`` when ``--jobs`` > 1, else ``sequential``)."""
    if kind == "ray":
        return RayExecutor(ray_address, cpus_per_trial, gpus_per_trial)
    if kind == "processes" or jobs > 1:
        return ProcessExecutor(jobs)
    return SequentialExecutor(on_start)
