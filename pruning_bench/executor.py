"""Running a plan on several worker processes (``bench run --jobs N``).

Trials are independent and idempotent, so they can run in any order on any worker: each worker rebuilds
the method registry (entry points and ``--plugin`` files), opens the same tracking store and records its
trial as a child of the sweep run. On a machine with several GPUs, trial k gets GPU k mod n. On the CPU
each worker gets an equal share of the cores. Ctrl-C reaches the workers too: the trials in flight are
recorded KILLED, finished ones stay, and the same command resumes.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pruning_bench.trial import Trial


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs to rebuild and run one trial (picklable: no classes from plugin files)."""

    trial: Trial
    params: dict[str, Any]
    plugin_files: tuple[str, ...]
    tracking_uri: str
    artifact_root: str
    parent_id: str
    results_dir: str
    device: str
    save_model: bool
    threads: int | None


def _run_job(job: WorkerJob) -> tuple[dict[str, float], str]:
    from pruning_bench.registry import default_registry
    from pruning_bench.runner import run_trial
    from pruning_bench.tracking import Tracker

    cls = default_registry(job.plugin_files).get(job.trial.method)
    trial = dataclasses.replace(job.trial, params=cls.Params(**job.params))
    tracker = Tracker(job.tracking_uri, trial.suite.name, artifact_root=Path(job.artifact_root))
    result = run_trial(trial, cls, tracker=tracker, parent_id=job.parent_id, results_dir=Path(job.results_dir),
                       device=torch.device(job.device), save_model=job.save_model, progress=False,
                       threads=job.threads)
    return result.metrics, result.outcome


def _device_for(k: int, device: torch.device) -> str:
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        return f"cuda:{k % torch.cuda.device_count()}"
    return str(device)


def run_plan_parallel(trials: Sequence[Trial], *, jobs: int, plugin_files: Sequence[str], tracking_uri: str,
                      artifact_root: Path, parent_id: str, results_dir: Path, device: torch.device,
                      save_model: bool, threads: int | None,
                      echo: Callable[[str], None]) -> tuple[int, list[tuple[Trial, str]]]:
    """Run ``trials`` on ``jobs`` processes; returns how many did not fit their budget, and the failed
    ones with their error."""
    from pruning_bench.runner import summary_line

    if threads is None and device.type == "cpu":
        threads = max(1, (os.cpu_count() or 1) // jobs)
    n = len(trials)
    failed: list[tuple[Trial, str]] = []
    not_fitting = 0
    context = multiprocessing.get_context("spawn")  # CUDA-safe; workers import the package afresh
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        running: dict[Future, tuple[int, Trial]] = {}
        for k, trial in enumerate(trials, 1):
            job = WorkerJob(trial=trial, params=dataclasses.asdict(trial.params), plugin_files=tuple(plugin_files),
                            tracking_uri=tracking_uri, artifact_root=str(artifact_root), parent_id=parent_id,
                            results_dir=str(results_dir), device=_device_for(k - 1, device),
                            save_model=save_model, threads=threads)
            running[pool.submit(_run_job, job)] = (k, trial)
        done_count = 0
        try:
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    k, trial = running.pop(future)
                    done_count += 1
                    try:
                        metrics, outcome = future.result()
                    except Exception as err:  # the worker recorded the run FAILED
                        failed.append((trial, f"{type(err).__name__}: {err}"))
                        echo(f"[{done_count}/{n}] {trial.label()} FAILED: {type(err).__name__}: {err}")
                        continue
                    not_fitting += outcome == "does_not_fit"
                    echo(f"[{done_count}/{n}] {summary_line(trial, metrics, outcome)}")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return not_fitting, failed
