"""Running trials: build data and model, hand a Context to the method, measure, record in MLflow.

The measurements (:mod:`pruning_bench.execution.measurements`) are taken identically for every method:
test/val accuracy of the final model, sparsity counted from the masks (after checking every masked
weight is exactly zero), FLOPs, cost, and what the budget was and how much of it was spent.

Every trial run carries an ``outcome`` tag: ``finished``; ``does_not_fit`` when the method's own
algorithm does not fit in the trial's budget (the run ends FINISHED with ``min_budget_epochs`` and no
accuracy: a result, not an error; the sweep goes on); ``failed`` when it raised (status FAILED, or
KILLED on Ctrl-C).
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import pruning_bench
from pruning_bench.core.budget import BudgetMeter, DoesNotFit
from pruning_bench.core.context import Context
from pruning_bench.core.latency import measure_latency
from pruning_bench.core.method import Method
from pruning_bench.core.model_factory import ModelFactory
from pruning_bench.core.resume import DEFAULT_EVERY_SECONDS, CheckpointMismatch, TrialCheckpoints
from pruning_bench.core.source import MASKS_ARTIFACT, SourceResult, save_masks
from pruning_bench.core.units import UNITS
from pruning_bench.data import load_dataset
from pruning_bench.errors import BenchError
from pruning_bench.execution.code_identity import harness_hash, plugin_code
from pruning_bench.execution.cores import register_this_process, threads_for, training_here
from pruning_bench.execution.measurements import (
    measure,
    peak_memory_mb,
    semi_structured_measurement,
    write_layer_table,
)
from pruning_bench.models import build_model, initialize
from pruning_bench.plan.trial import Trial
from pruning_bench.tracking.claims import Heartbeat
from pruning_bench.tracking.remote_checkpoints import RemoteCheckpoints, remote_checkpoints
from pruning_bench.tracking.sources import load_source
from pruning_bench.tracking.tracker import Tracker, flatten, git_commit


def pick_device(name: str | None = None) -> torch.device:
    """``name`` if given, else CUDA when present, else CPU."""
    if name:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise BenchError(f"--device '{name}' is not a torch device; e.g. cpu, cuda, cuda:1") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BenchError(f"--device '{name}': CUDA is not available on this machine; use cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


@dataclass
class TrialResult:
    trial: Trial
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    outcome: str = "finished"
    detail: str = ""


def make_meter(trial: Trial, n_train: int) -> BudgetMeter:
    """The trial's budget meter: its policy and unit, the suite's base run times the trial's multiple."""
    budget = trial.suite.budget
    seconds = budget.seconds * trial.budget_multiple if UNITS[trial.budget_unit].clocked else None
    return BudgetMeter(trial.budget_policy, trial.budget_epochs, n_train, unit=trial.budget_unit,
                       seconds_limit=seconds, max_seconds=budget.max_seconds)


def run_trial(trial: Trial, method_cls: type[Method], *, tracker: Tracker, parent_id: str | None,
              results_dir: Path, device: torch.device, save_model: bool = False,
              progress: bool = True, threads: int | None = None, thread_share: int | None = None,
              rerun: bool = False, checkpoint_seconds: float = DEFAULT_EVERY_SECONDS) -> TrialResult:
    """Claim one trial, run it end to end and record it as a child run of ``parent_id``.

    Returns outcome ``skipped`` (and runs nothing) when the key already has a finished run (unless
    ``rerun``) or another live worker holds it. ``threads`` (``--threads``) or the cores divided among
    the trials training on this machine (at most ``thread_share``); a resumed trial keeps the count it
    started with, so it ends with the same numbers as an uninterrupted run.
    """
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # CUDA events, default streams and cuDNN all follow the current device
    tags = trial_tags(trial, method_cls, device)
    source = None
    if trial.source_key:  # a control: its source's result, or why there is none (nothing is recorded)
        source = load_source(tracker, method_cls.source_of(trial.params), trial.source_key)
        if isinstance(source, str):
            return TrialResult(trial, "", {}, "no_source", source)
        tags["source_run_id"] = source.run_id
    claim = tracker.claim_run(trial.label(), trial.key, tags=tags, parent_id=parent_id, rerun=rerun)
    if claim.run_id is None:
        return TrialResult(trial, "", {}, "skipped", claim.reason)
    run_id = claim.run_id
    params = trial_params(trial)
    checkpoints = results_dir / "checkpoints" / trial.key
    register_this_process()
    with tracker.running(run_id), Heartbeat(tracker.set_tag, [run_id]):
        try:
            tracker.log_params(run_id, params)
            mirror = remote_checkpoints(tracker, run_id, checkpoints)  # None with a local store
            if mirror is not None and (source := mirror.fetch(trial.key)) is not None:
                print(f"{trial.label()}: resuming from the checkpoints of run {source} on {tracker.uri}",
                      file=sys.stderr)
            n_threads = TrialCheckpoints(checkpoints).meta().get("threads") or \
                threads_for(threads, thread_share, training_here())
            torch.set_num_threads(n_threads)
            try:
                result = _run_in(run_id, trial, method_cls, tracker=tracker, checkpoint_dir=checkpoints,
                                 device=device, save_model=save_model, progress=progress,
                                 checkpoint_seconds=checkpoint_seconds, mirror=mirror, source=source)
            except CheckpointMismatch as err:  # the method changed since its checkpoints: start afresh
                print(f"warning: {trial.label()}: checkpoints do not match this run ({err}); starting afresh",
                      file=sys.stderr)
                shutil.rmtree(checkpoints, ignore_errors=True)
                result = _run_in(run_id, trial, method_cls, tracker=tracker, checkpoint_dir=checkpoints,
                                 device=device, save_model=save_model, progress=progress,
                                 checkpoint_seconds=checkpoint_seconds, mirror=mirror, source=source)
        except BaseException:
            tracker.set_tag(run_id, "outcome", "failed")
            raise
        tracker.set_tag(run_id, "outcome", result.outcome)
        if result.detail:
            tracker.set_tag(run_id, "outcome_detail", result.detail[:5000])
    return result


def trial_tags(trial: Trial, method_cls: type[Method], device: torch.device) -> dict[str, str]:
    """The tags of a trial's run: what it is (key, method, sparsity, budget), where and by which code it ran."""
    suite = trial.suite
    return {
        "trial_key": trial.key, "method": trial.method, "suite": suite.name, "seed": str(trial.seed),
        "target_sparsity": f"{trial.target_sparsity:g}", "budget_policy": trial.budget_policy,
        "budget_unit": trial.budget_unit, "budget_multiple": f"{trial.budget_multiple:g}",
        "budget_level": trial.level_tag, "method_variant": trial.variant, "structured": "1" if method_cls.granularity_for(trial.params) == "structured" else "0",
        "granularity": method_cls.granularity_for(trial.params),
        "device": device_name(device), "torch_version": torch.__version__, "git_commit": git_commit(),
        "harness_version": pruning_bench.__version__, "result_version": pruning_bench.RESULT_VERSION,
        "model": suite.model.name, "dataset": suite.dataset.name,
        "code_harness": harness_hash(), "code_plugins": plugin_code(method_cls, suite.model.name, suite.dataset.name),
    } | ({"control_source": method_cls.source_of(trial.params), "source_key": trial.source_key}
         if trial.source_key else {})


def trial_params(trial: Trial) -> dict[str, str]:
    """The params of a trial's run: the method's parameters and the suite's settings, flattened."""
    return {**flatten("method", trial.config()["params"]), **flatten("suite", trial.suite.experiment_config()),
            "method_name": trial.method, "target_sparsity": str(trial.target_sparsity),
            "seed": str(trial.seed), "budget_policy": trial.budget_policy, "budget_unit": trial.budget_unit,
            "budget_multiple": str(trial.budget_multiple)}


def _run_in(run_id: str, trial: Trial, method_cls: type[Method], *, tracker: Tracker, checkpoint_dir: Path,
            device: torch.device, save_model: bool, progress: bool, checkpoint_seconds: float,
            mirror: RemoteCheckpoints | None = None, source: SourceResult | None = None) -> TrialResult:
    """The trial inside its MLflow run: data, model, the method, then the measurements (or its
    does-not-fit record)."""
    seed_everything(trial.seed)
    ctx = build_context(run_id, trial, tracker=tracker, checkpoint_dir=checkpoint_dir, device=device,
                        progress=progress, checkpoint_seconds=checkpoint_seconds, source=source)
    meter = ctx.budget
    if mirror is not None:  # every checkpoint file also goes to the tracking server
        ctx.checkpoints.on_write = mirror.upload
    ctx.checkpoints.write_meta({"threads": torch.get_num_threads(), "trial_key": trial.key})
    denominator = ctx.masks.total()
    flops_dense = ctx.flop_profile.total
    tracker.set_tag(run_id, "device", device_name(device))  # with the thread count actually used
    tracker.set_tag(run_id, "threads", str(torch.get_num_threads()))
    if ctx.data.fingerprint:  # the exact data (e.g. the corpus and its split), where the source gives one
        tracker.set_tag(run_id, "data_fingerprint", ctx.data.fingerprint)
    if method_cls.granularity_for(trial.params) == "structured":  # the unpruned model's latency, next to the shrunk one's latency_ms
        dense_ms = measure_latency(ctx.model, ctx.data.input_shape, device, dtype=ctx.data.input_dtype)
        tracker.log_metrics(run_id, {"latency_dense_ms": dense_ms})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    meter.start_clock()
    try:
        method_cls(trial.params).run(ctx)
    except DoesNotFit as dnf:
        tracker.log_metrics(run_id, {"min_budget_epochs": dnf.min_budget_epochs,
                                     "budget_epochs": meter.budget_epochs})
        ctx.checkpoints.clear()
        return TrialResult(trial, run_id, {"min_budget_epochs": dnf.min_budget_epochs,
                                           "budget_epochs": meter.budget_epochs}, "does_not_fit", str(dnf))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = meter.seconds()  # includes the time before an interruption, if resumed
    metrics = measure(ctx, denominator=denominator, flops_dense=flops_dense)
    metrics["train_seconds"] = train_seconds
    metrics["peak_memory_mb"] = peak_memory_mb(device)
    metrics["threads"] = torch.get_num_threads()
    metrics["resumed_calls"] = ctx.checkpoints.skipped + ctx.checkpoints.resumed
    if method_cls.granularity_for(trial.params) == "semi_structured":
        extra, note = semi_structured_measurement(ctx)
        metrics.update(extra)
        tracker.set_tag(run_id, "latency_note", note)
    tracker.log_metrics(run_id, metrics)
    log_outputs(ctx, tracker, run_id, save_model=save_model)
    ctx.checkpoints.clear()
    if mirror is not None:
        tracker.log_metrics(run_id, {"checkpoint_uploads": mirror.uploads,
                                     "checkpoint_upload_seconds": mirror.seconds})
        mirror.discard()
    return TrialResult(trial, run_id, metrics)


def build_context(run_id: str, trial: Trial, *, tracker: Tracker, checkpoint_dir: Path, device: torch.device,
                  progress: bool, checkpoint_seconds: float, source: SourceResult | None = None) -> Context:
    """The trial's data, model and budget meter in the Context its method runs in (with a control's
    ``source``); what the method logs goes to ``run_id``."""
    suite = trial.suite
    data = load_dataset(suite.dataset.name, seed=trial.seed, val_fraction=suite.dataset.val_fraction,
                        data_dir=suite.dataset.data_dir, download=suite.dataset.download,
                        options=suite.dataset.options)
    models = ModelFactory(build=lambda: build_model(suite.model.name, num_classes=data.num_classes,
                                                    input_shape=data.input_shape, options=suite.model.options),
                          initialize=initialize)
    model = models.build()
    meter = make_meter(trial, data.n_train)
    return Context(model=model, data=data, recipe=trial.suite.recipe, meter=meter,
                   target_sparsity=trial.target_sparsity, params=trial.params, seed=trial.seed,
                   device=device, checkpoint_dir=checkpoint_dir, progress=progress,
                   min_round_epochs=trial.suite.budget.min_round, checkpoint_seconds=checkpoint_seconds,
                   source=source, models=models,
                   log_fn=lambda k, v, s: tracker.log_metric(run_id, k, v, s),
                   series_fn=lambda k, points: tracker.log_series(run_id, k, points))


def log_outputs(ctx: Context, tracker: Tracker, run_id: str, *, save_model: bool) -> None:
    """The per-layer sparsity table, and with ``save_model`` the weights and masks, as artifacts of ``run_id``."""
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "layer_sparsity.csv"
        write_layer_table(ctx, table)
        tracker.log_artifact(run_id, table)
        save_masks(ctx.masks.masks, Path(tmp) / MASKS_ARTIFACT)  # what a reinit/shuffle control reads back
        tracker.log_artifact(run_id, Path(tmp) / MASKS_ARTIFACT)
        if save_model:
            weights = Path(tmp) / "model.pt"
            torch.save({"state_dict": ctx.model.state_dict(), "masks": ctx.masks.masks}, weights)
            tracker.log_artifact(run_id, weights)


def summary_line(trial: Trial, m: dict[str, float], outcome: str = "finished") -> str:
    """The one line printed when a trial ends."""
    if outcome == "does_not_fit":
        need = m["min_budget_epochs"] / trial.suite.budget.epochs
        return (f"{trial.label()}: does not fit its budget ({m['budget_epochs']:.4g} epochs); needs >= "
                f"{m['min_budget_epochs']:.4g} epochs ({need:.3g}x): recorded, not run")
    return (f"{trial.label()}: test_acc={m['test_acc']:.4f} sparsity={m['sparsity']:.4f} "
            f"epochs={m['epochs_charged']:.2f} flops_eff={m['flops_effective']:.3g} "
            f"time={m['train_seconds']:.1f}s")
