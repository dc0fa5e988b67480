"""One ``bench run``: the plan's pending trials, run by an executor, recorded under one sweep run.

The one loop over trial outcomes lives here, whatever runs the trials (this process, worker
processes, Ray): each outcome is printed as it arrives, failures are counted and the sweep goes on,
and the leaderboard of the plan's trials is printed at the end. Before anything runs, runs left
RUNNING by a process that died are marked FAILED, and trials already finished are skipped; a trial
another worker is running right now is skipped by the worker that would have claimed it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pruning_bench.errors import BenchError
from pruning_bench.execution.worker import OUTCOMES, JobOutcome, TrialJob, share_tracker
from pruning_bench.plan.suite import Suite
from pruning_bench.plan.trial import Trial

if TYPE_CHECKING:
    from pruning_bench.tracking.tracker import Tracker


@dataclass(frozen=True)
class SweepOptions:
    """How to run a plan (the ``bench run`` options that are not the plan itself)."""

    results_dir: Path = Path("results")
    tracking_uri: str | None = None
    device: str | None = None
    rerun: bool = False
    save_model: bool = False
    progress: bool = True
    threads: int | None = None
    jobs: int = 1
    plugins: tuple[str, ...] = ()
    executor: str | None = None
    ray_address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    checkpoint_seconds: float | None = None
    answer_key: str | None = None  # remember the nothing-to-do answer under this key (pruning_bench.execution.fastpath)
    reuse_changed_code: bool = False  # keep finished trials whose plugin code changed since (code_identity)


def device_for(k: int, device: torch.device) -> str:
    """Worker k's device: with several GPUs and no index given, GPU k mod n."""
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        return f"cuda:{k % torch.cuda.device_count()}"
    return str(device)


def _validate(suite: Suite, plan: Sequence[Trial], device: str | None) -> torch.device:
    """Fail on a bad device, data or model setting before anything is recorded."""
    from pruning_bench.data import load_dataset
    from pruning_bench.data.sources import dataset_options
    from pruning_bench.execution.runner import pick_device
    from pruning_bench.models import build_model

    dev = pick_device(device)
    try:  # the name and options, so that a bad key names the suite file
        dataset_options(suite.dataset.name, suite.dataset.options)
    except BenchError as err:
        raise BenchError(f"{suite.source}: {err}") from None
    data = load_dataset(suite.dataset.name, seed=plan[0].seed, val_fraction=suite.dataset.val_fraction,
                        data_dir=suite.dataset.data_dir, download=suite.dataset.download,
                        options=suite.dataset.options)
    try:
        build_model(suite.model.name, num_classes=data.num_classes, input_shape=data.input_shape,
                    options=suite.model.options)
    except BenchError as err:
        raise BenchError(f"{suite.source}: {err}") from None
    return dev


def run_sweep(suite: Suite, plan: Sequence[Trial], method_names: Sequence[str], options: SweepOptions,
              echo: Callable[[str], None], cost: Callable[[Sequence[Trial]], str] | None = None,
              code: Callable[[Trial], str] | None = None) -> int:
    """Run the plan's pending trials and print the leaderboard; returns the exit code (1 if a trial
    failed). ``cost(trials)`` describes what the pending trials will train (printed before they run);
    ``code(trial)`` is the trial's plugin code now (:mod:`pruning_bench.execution.code_identity`): a finished trial
    computed by other plugin code is not reused silently."""
    from pruning_bench.tracking.store import default_tracking_uri

    uri = options.tracking_uri or default_tracking_uri(options.results_dir)
    tracker, runs = _open_finished(uri, suite, plan, options, echo, code)
    pending = [t for t in plan if t.key not in runs]
    failed = 0
    nothing_to_do = (f"Nothing to run: all {len(plan)} trials of this plan already have finished runs in {uri} "
                     "(use --rerun to run them again).")
    if not pending:
        echo(nothing_to_do)
    else:
        failed = _run_plan(suite, plan, pending, method_names, options, uri, tracker, echo, cost)
    leaderboard = _leaderboard_text(uri, suite, plan)
    if leaderboard:
        echo(leaderboard)
    if options.answer_key and not failed:
        from pruning_bench.execution.fastpath import remember_answer

        remember_answer(options.results_dir, options.answer_key, uri=uri, experiment=suite.name,
                        keys=[t.key for t in plan], text="\n".join(filter(None, (nothing_to_do, leaderboard))))
    return 1 if failed else 0


def _open_finished(uri: str, suite: Suite, plan: Sequence[Trial], options: SweepOptions,
                   echo: Callable[[str], None], code: Callable[[Trial], str] | None,
                   ) -> tuple[Tracker | None, dict[str, list[tuple[str, dict[str, str]]]]]:
    """The suite's tracker when its experiment exists (runs left RUNNING by a dead process marked
    FAILED first), and the finished runs of its trial keys that this plan reuses (none with
    ``--rerun``); those are tagged with the budget levels this plan reuses them for."""
    from pruning_bench.tracking.store import store_has_experiment
    from pruning_bench.tracking.tracker import Tracker

    tracker = None
    if store_has_experiment(uri, suite.name):  # nothing is created before the settings are checked
        tracker = Tracker(uri, suite.name, artifact_root=options.results_dir / "artifacts")
        for name, reason in tracker.reap_stale():
            echo(f"Marked FAILED: run '{name}' was left RUNNING ({reason}).")
    runs = tracker.finished_runs() if tracker is not None and not options.rerun else {}
    if runs and code is not None and not options.reuse_changed_code:
        _refuse_changed_code(plan, runs, code)
    if runs:  # a finished trial this plan reuses as another level (fit = 2x) joins that level's report
        tracker.add_levels(runs, {t.key: t.budget_levels for t in plan if t.key in runs})
    return tracker, runs


def _run_plan(suite: Suite, plan: Sequence[Trial], pending: Sequence[Trial], method_names: Sequence[str],
              options: SweepOptions, uri: str, tracker: Tracker | None, echo: Callable[[str], None],
              cost: Callable[[Sequence[Trial]], str] | None) -> int:
    """Check the settings, then run the pending trials under one sweep run and print the tally; returns
    how many failed."""
    from pruning_bench.tracking.claims import Heartbeat
    from pruning_bench.tracking.tracker import Tracker, git_commit

    dev = _validate(suite, pending, options.device)
    options.results_dir.mkdir(parents=True, exist_ok=True)
    tracker = tracker or Tracker(uri, suite.name, artifact_root=options.results_dir / "artifacts")
    share_tracker(tracker, suite.name)  # trials run in this process reuse it
    _announce(suite, plan, pending, dev, uri, echo, cost)
    start = time.perf_counter()
    with tracker.run(f"sweep {time.strftime('%Y-%m-%d %H:%M:%S')}",
                     tags={"sweep": "1", "suite": suite.name, "git_commit": git_commit()},
                     params={"methods": ",".join(method_names), "n_trials": str(len(pending))}) as parent_id, \
            Heartbeat(tracker.set_tag, [parent_id]):
        try:
            counts = _run_pending(pending, options, dev, uri, parent_id, echo)
        except KeyboardInterrupt:
            echo("\nInterrupted: finished trials are kept; run the same command again to resume.")
            raise
    echo(_tally(counts, time.perf_counter() - start))
    return counts["failed"]


def _announce(suite: Suite, plan: Sequence[Trial], pending: Sequence[Trial], dev: torch.device, uri: str,
              echo: Callable[[str], None], cost: Callable[[Sequence[Trial]], str] | None) -> None:
    """What is about to run: trials skipped as finished, the suite and its budgets, and the cost."""
    if len(plan) > len(pending):
        echo(f"Skipping {len(plan) - len(pending)} finished trials; running {len(pending)} of {len(plan)}.")
    levels = ", ".join(sorted({("fit=" if "fit" in t.budget_levels else "") + f"{t.budget_multiple:g}x"
                               for t in pending}))
    echo(f"Suite '{suite.name}' ({suite.dataset.name}, {suite.model.name}, base {suite.budget.epochs:g} "
         f"epochs, budgets {levels} in {plan[0].budget_unit}, policy {plan[0].budget_policy}) on {dev}; "
         f"tracking {uri}")
    if cost is not None:
        echo(f"To run: {cost(pending)}.")


def _tally(counts: dict[str, int], seconds: float) -> str:
    """The line that ends a sweep: trials run, and those that did not fit, were skipped or failed."""
    failed = counts["failed"]
    ran = counts["finished"]
    return (f"Ran {ran} trials in {seconds:.1f} s"
            + (f"; {counts['does_not_fit']} did not fit their budget (recorded with the budget they need)"
               if counts["does_not_fit"] else "")
            + (f"; {counts['skipped']} skipped (finished or running elsewhere)" if counts["skipped"] else "")
            + (f"; {counts['no_source']} controls not run (no finished source; the same command runs them "
               "once it has one)" if counts["no_source"] else "")
            + (f"; {failed} FAILED" if failed else "") + ".")


def _refuse_changed_code(plan: Sequence[Trial], runs: dict[str, list[tuple[str, dict[str, str]]]],
                         code: Callable[[Trial], str]) -> None:
    """A BenchError naming the methods whose finished trials were computed by other plugin code."""
    changed: dict[str, tuple[str, str]] = {}
    for trial in plan:
        recorded = {tags["code_plugins"] for _, tags in runs.get(trial.key, ()) if "code_plugins" in tags}
        now = code(trial)
        if recorded and now not in recorded:
            changed.setdefault(trial.method, (sorted(recorded)[0] or "(none)", now or "(none)"))
    if changed:
        items = "; ".join(f"{m} ({old} -> {new})" for m, (old, new) in sorted(changed.items()))
        raise BenchError(f"finished trials of this plan were computed by other plugin code: {items}; run them "
                         "again with --rerun, or keep their results with --reuse-changed-code")


def _run_pending(pending: Sequence[Trial], options: SweepOptions, dev: torch.device, uri: str,
                 parent_id: str, echo: Callable[[str], None]) -> dict[str, int]:
    """The one loop: build the jobs, hand them to the executor, print each outcome as it arrives."""
    from tqdm.auto import tqdm

    from pruning_bench.execution.cores import available_cores
    from pruning_bench.execution.executor import make_executor
    from pruning_bench.execution.runner import summary_line

    pending = sorted(pending, key=lambda t: bool(t.source_key))  # controls after every source
    keys = {t.key for t in pending}
    n = len(pending)
    bar = tqdm(total=n, desc="trials", unit="trial", position=0, disable=None if options.progress else True)
    say = tqdm.write if not bar.disable else echo

    def on_start(i: int, job: TrialJob) -> None:
        bar.set_postfix_str(job.trial.label())
        say(f"[{i + 1}/{n}] {job.trial.label()} (key {job.trial.key}) ...")

    executor = make_executor(options.executor or "sequential", jobs=options.jobs,
                             ray_address=options.ray_address, cpus_per_trial=options.cpus_per_trial,
                             gpus_per_trial=options.gpus_per_trial, on_start=on_start)
    parallel = executor.workers > 1 or options.executor == "ray"
    ray_device = None  # on Ray every task sees the GPUs it was given as "cuda"
    if options.executor == "ray":
        share = max(1, int(options.cpus_per_trial))
        ray_device = "cuda" if options.gpus_per_trial > 0 else "cpu"
        echo(f"Running on Ray: {options.cpus_per_trial:g} CPUs and {options.gpus_per_trial:g} GPUs per trial.")
    elif parallel:
        share = max(1, available_cores() // min(options.jobs, n)) if dev.type == "cpu" else None
        echo(f"Running on {min(options.jobs, n)} worker processes.")
    else:
        share = None
    results_dir = options.results_dir.resolve()
    jobs = [TrialJob(trial=t, params=asdict(t.params), plugin_files=tuple(str(Path(p).resolve()) for p in options.plugins),
                     tracking_uri=uri, artifact_root=str(results_dir / "artifacts"),
                     parent_id=parent_id, results_dir=str(results_dir), device=ray_device or device_for(k, dev),
                     save_model=options.save_model, threads=options.threads, thread_share=share,
                     rerun=options.rerun, progress=options.progress and not parallel,
                     checkpoint_seconds=options.checkpoint_seconds,
                     after=(t.source_key,) if t.source_key in keys else ())
            for k, t in enumerate(pending)]
    counts = dict.fromkeys(OUTCOMES, 0)
    done = 0
    try:
        for i, outcome in executor.run(jobs):
            done += 1
            counts[outcome.outcome] += 1
            say(f"[{done}/{n}] {_describe(pending[i], outcome, summary_line)}")
            bar.update()
    finally:
        bar.close()
    return counts


def _describe(trial: Trial, outcome: JobOutcome, summary_line) -> str:
    if outcome.outcome == "failed":
        return f"{trial.label()} FAILED: {outcome.detail}"
    if outcome.outcome == "skipped":
        return f"{trial.label()}: skipped, {outcome.detail}"
    if outcome.outcome == "no_source":
        return f"{trial.label()}: not run, {outcome.detail}"
    return summary_line(trial, outcome.metrics, outcome.outcome)


def _leaderboard_text(uri: str, suite: Suite, plan: Sequence[Trial]) -> str:
    """The leaderboard of the plan's trials and its findings ("" when none has a run)."""
    from pruning_bench.report.publish import leaderboard_markdown, load_runs
    from pruning_bench.report.stats import higher_is_better

    runs = load_runs(uri, suite.name)
    if not runs.empty and "tags.trial_key" in runs:
        levels = {t.key: t.level_tag for t in plan}  # this plan's levels, whatever other plans reused a trial as
        runs = runs[runs["tags.trial_key"].isin(levels)].copy()
        runs["tags.budget_level"] = runs["tags.trial_key"].map(levels)
    if runs.empty or "tags.trial_key" not in runs:
        return ""
    metric = suite.report.metric  # [report] metric; test_acc by default
    what = "Test accuracy (%)" if metric == "test_acc" else \
        f"{metric} ({'higher' if higher_is_better(metric) else 'lower'} is better)"
    return (f"\n{what} of this plan's trials, mean ± std (n seeds), per budget level:\n"
            + leaderboard_markdown(runs, metric=metric, compare=[tuple(p) for p in suite.report.compare]))
