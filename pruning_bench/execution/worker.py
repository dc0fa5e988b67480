"""One trial in any worker: this process, a pool process or a Ray task.

A :class:`TrialJob` is plain data (picklable: plugin methods, models and data sets are found again by
name from the plugin files and entry points). Each worker process keeps its method registry (loading the
plugin files also registers their models and data sets) and tracking clients across trials, so imports,
plugin loading and store set-up are paid once per worker, not once per trial; data sets are cached by
:func:`pruning_bench.data.load_dataset` the same way.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pruning_bench.plan.trial import Trial

OUTCOMES = ("finished", "does_not_fit", "failed", "skipped", "no_source")


@dataclass(frozen=True)
class TrialJob:
    """Everything a worker needs to claim, run and record one trial."""

    trial: Trial
    params: dict[str, Any]
    plugin_files: tuple[str, ...]
    tracking_uri: str
    artifact_root: str | None
    parent_id: str
    results_dir: str
    device: str
    save_model: bool = False
    threads: int | None = None         # --threads
    thread_share: int | None = None    # at most this many (a --jobs worker's share, Ray's CPUs per trial)
    rerun: bool = False
    progress: bool = False
    checkpoint_seconds: float | None = None
    after: tuple[str, ...] = ()        # trial keys of this sweep that must end first (a control's source)


@dataclass
class JobOutcome:
    """What the driver learns of a job: ``finished``, ``does_not_fit``, ``failed``, ``skipped`` or
    ``no_source`` (a control whose source trial has no finished result; nothing recorded)."""

    outcome: str
    metrics: dict[str, float] = field(default_factory=dict)
    detail: str = ""
    run_id: str = ""


@functools.cache
def _registry(plugin_files: tuple[str, ...]):
    from pruning_bench.plan.registry import default_registry

    return default_registry(plugin_files)


_TRACKERS: dict[tuple[str, str], Any] = {}


def share_tracker(tracker: Any, experiment: str) -> None:
    """Let jobs run in this process use ``tracker`` (the sweep's own, when trials run in the driver)."""
    _TRACKERS[(tracker.uri, experiment)] = tracker


def _tracker(uri: str, experiment: str, artifact_root: str | None):
    if (uri, experiment) not in _TRACKERS:
        from pruning_bench.tracking.tracker import Tracker

        _TRACKERS[(uri, experiment)] = Tracker(uri, experiment,
                                               artifact_root=Path(artifact_root) if artifact_root else None)
    return _TRACKERS[(uri, experiment)]


def run_job(job: TrialJob) -> JobOutcome:
    """Claim and run ``job``'s trial; an error is recorded (run FAILED) and returned, not raised. Ctrl-C
    (or a cancelled Ray task) propagates after the run is recorded KILLED."""
    import torch

    from pruning_bench import stopping
    from pruning_bench.core.resume import DEFAULT_EVERY_SECONDS
    from pruning_bench.execution.runner import run_trial

    if stopping.requested():  # told to stop: claim nothing new (the sweep is cancelling what is queued)
        return JobOutcome("skipped", detail="stopping: not started")
    try:
        cls = _registry(job.plugin_files).get(job.trial.method)
        trial = dataclasses.replace(job.trial, params=cls.Params(**job.params))
        tracker = _tracker(job.tracking_uri, trial.suite.name, job.artifact_root)
        result = run_trial(trial, cls, tracker=tracker, parent_id=job.parent_id,
                           results_dir=Path(job.results_dir), device=torch.device(job.device),
                           save_model=job.save_model, progress=job.progress, threads=job.threads,
                           thread_share=job.thread_share, rerun=job.rerun,
                           checkpoint_seconds=job.checkpoint_seconds or DEFAULT_EVERY_SECONDS)
    except Exception as err:  # recorded as a FAILED run (a method's BenchError too); the sweep goes on
        return JobOutcome("failed", detail=f"{type(err).__name__}: {err}")
    except KeyboardInterrupt:  # recorded KILLED; a stop asked for by a signal has now happened
        if stopping.requested():
            stopping.stopped()
        raise
    return JobOutcome(result.outcome, result.metrics, result.detail, result.run_id)
