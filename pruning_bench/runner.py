"""Running trials: build data and model, hand a Context to the method, measure, record in MLflow.

Measurements are taken here, identically for every method: test/val accuracy of the final model,
sparsity counted from the masks (after checking every masked weight is exactly zero), FLOPs, cost,
and what the budget was and how much of it was spent.

Every trial run carries an ``outcome`` tag: ``finished``; ``does_not_fit`` when the method's own
algorithm does not fit in the trial's budget (the run ends FINISHED with ``min_budget_epochs`` and no
accuracy: a result, not an error; the sweep goes on); ``failed`` when it raised (status FAILED, or
KILLED on Ctrl-C).
"""

from __future__ import annotations

import csv
import random
import resource
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import pruning_bench
from pruning_bench.budget import BudgetMeter, DoesNotFit
from pruning_bench.context import Context
from pruning_bench.data import load_dataset
from pruning_bench.errors import BenchError
from pruning_bench.latency import BATCH_SIZE as LATENCY_BATCH_SIZE
from pruning_bench.latency import measure_latency, semi_structured_latency
from pruning_bench.method import Method
from pruning_bench.models import build_model
from pruning_bench.tracking import Tracker, flatten, git_commit
from pruning_bench.trial import Trial


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


def choose_threads(requested: int | None) -> None:
    """Set torch's CPU thread count when asked (``--threads``; ``--jobs N`` gives each worker its share).

    Left alone, torch uses every core: measured on 2 idle cores, the README's mnist1d sweep took 112 s
    on 2 threads and 133 s on 1; but while another process used the cores, a small model's step ran
    12x slower on 2 threads than on 1, so parallel workers each get cores // jobs threads.
    """
    if requested:
        torch.set_num_threads(requested)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


class MaskLeak(RuntimeError):
    """A method left a non-zero value in a pruned weight: its sparsity would be a lie."""


OUTCOMES = ("finished", "does_not_fit", "failed")


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
    seconds = budget.seconds * trial.budget_multiple if trial.budget_unit == "seconds" else None
    return BudgetMeter(trial.budget_policy, trial.budget_epochs, n_train, unit=trial.budget_unit,
                       seconds_limit=seconds, max_seconds=budget.max_seconds)


def run_trial(trial: Trial, method_cls: type[Method], *, tracker: Tracker, parent_id: str | None,
              results_dir: Path, device: torch.device, save_model: bool = False,
              progress: bool = True, threads: int | None = None) -> TrialResult:
    """Run one trial end to end and record it as a child run of ``parent_id``."""
    suite = trial.suite
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # CUDA events, default streams and cuDNN all follow the current device
    seed_everything(trial.seed)
    data = load_dataset(suite.dataset.name, seed=trial.seed, val_fraction=suite.dataset.val_fraction,
                        data_dir=suite.dataset.data_dir, download=suite.dataset.download,
                        options=suite.dataset.options)
    model = build_model(suite.model.name, num_classes=data.num_classes, input_shape=data.input_shape,
                        options=suite.model.options)
    meter = make_meter(trial, data.n_train)
    tags = {
        "trial_key": trial.key, "method": trial.method, "suite": suite.name, "seed": str(trial.seed),
        "target_sparsity": f"{trial.target_sparsity:g}", "budget_policy": trial.budget_policy,
        "budget_unit": trial.budget_unit, "budget_multiple": f"{trial.budget_multiple:g}",
        "method_variant": trial.variant, "structured": "1" if method_cls.granularity_of() == "structured" else "0",
        "granularity": method_cls.granularity_of(),
        "device": device_name(device), "torch_version": torch.__version__, "git_commit": git_commit(),
        "harness_version": pruning_bench.__version__, "result_version": pruning_bench.RESULT_VERSION,
        "model": suite.model.name, "dataset": suite.dataset.name,
    }
    params = {**flatten("method", trial.config()["params"]), **flatten("suite", suite.experiment_config()),
              "method_name": trial.method, "target_sparsity": str(trial.target_sparsity),
              "seed": str(trial.seed), "budget_policy": trial.budget_policy, "budget_unit": trial.budget_unit,
              "budget_multiple": str(trial.budget_multiple)}
    with tracker.run(trial.label(), tags=tags, params=params, parent_id=parent_id) as run_id:
        try:
            result = _run_in(run_id, trial, method_cls, model, data, meter, tracker=tracker,
                             results_dir=results_dir, device=device, save_model=save_model, progress=progress,
                             threads=threads)
        except BaseException:
            tracker.set_tag(run_id, "outcome", "failed")
            raise
        tracker.set_tag(run_id, "outcome", result.outcome)
        if result.detail:
            tracker.set_tag(run_id, "outcome_detail", result.detail[:5000])
    return result


def _run_in(run_id: str, trial: Trial, method_cls: type[Method], model: torch.nn.Module, data, meter: BudgetMeter,
            *, tracker: Tracker, results_dir: Path, device: torch.device, save_model: bool, progress: bool,
            threads: int | None) -> TrialResult:
    """The trial inside its MLflow run: the method, then the measurements (or its does-not-fit record)."""
    checkpoint_dir = results_dir / "checkpoints" / trial.key
    ctx = Context(model=model, data=data, recipe=trial.suite.recipe, meter=meter,
                  target_sparsity=trial.target_sparsity, params=trial.params, seed=trial.seed,
                  device=device, checkpoint_dir=checkpoint_dir, progress=progress,
                  min_round_epochs=trial.suite.budget.min_round,
                  log_fn=lambda k, v, s: tracker.log_metric(run_id, k, v, s),
                  series_fn=lambda k, points: tracker.log_series(run_id, k, points))
    denominator = ctx.masks.total()
    flops_dense = ctx.flop_profile.total
    choose_threads(threads)
    tracker.set_tag(run_id, "device", device_name(device))  # with the thread count actually used
    if method_cls.granularity_of() == "structured":  # the unpruned model's latency, next to the shrunk one's latency_ms
        tracker.log_metrics(run_id, {"latency_dense_ms": measure_latency(ctx.model, data.input_shape, device)})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    meter.start_clock()
    try:
        method_cls(trial.params).run(ctx)
    except DoesNotFit as dnf:
        tracker.log_metrics(run_id, {"min_budget_epochs": dnf.min_budget_epochs,
                                     "budget_epochs": meter.budget_epochs})
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return TrialResult(trial, run_id, {"min_budget_epochs": dnf.min_budget_epochs,
                                           "budget_epochs": meter.budget_epochs}, "does_not_fit", str(dnf))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = meter.seconds()  # includes the time before an interruption, if resumed
    metrics = measure(ctx, denominator=denominator, flops_dense=flops_dense)
    metrics["train_seconds"] = train_seconds
    metrics["peak_memory_mb"] = peak_memory_mb(device)
    if method_cls.granularity_of() == "semi_structured":
        extra, note = semi_structured_measurement(ctx)
        metrics.update(extra)
        tracker.set_tag(run_id, "latency_note", note)
    tracker.log_metrics(run_id, metrics)
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "layer_sparsity.csv"
        write_layer_table(ctx, table)
        tracker.log_artifact(run_id, table)
        if save_model:
            weights = Path(tmp) / "model.pt"
            torch.save({"state_dict": ctx.model.state_dict(), "masks": ctx.masks.masks}, weights)
            tracker.log_artifact(run_id, weights)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return TrialResult(trial, run_id, metrics)


def measure(ctx: Context, *, denominator: int, flops_dense: float) -> dict[str, float]:
    """The measurements every trial logs, taken the same way for every method."""
    leaked = ctx.masks.leaked()  # before anything re-applies the masks: a leak must fail the trial
    if leaked:
        raise MaskLeak(f"masked weights are not zero in: {', '.join(leaked)}")
    test = ctx.evaluate("test")
    val = ctx.evaluate("val")
    nonzero = ctx.masks.nonzero()
    metrics = {
        "test_acc": test.acc, "test_loss": test.loss, "val_acc": val.acc, "val_loss": val.loss,
        "sparsity": 1.0 - nonzero / denominator, "nonzero_params": nonzero, "total_params": denominator,
        "flops_dense": flops_dense, "flops_effective": ctx.effective_flops(),
        "train_flops": ctx.budget.flops, "epochs_charged": ctx.budget.epochs_charged,
        "empty_layers": len(ctx.masks.empty_layers()), **budget_metrics(ctx.budget),
    }
    if test.top5 is not None:
        metrics["test_top5"] = test.top5
    # Masked-dense model for unstructured methods, the shrunk model for structured ones (pitfall 10).
    metrics["latency_ms"] = measure_latency(ctx.model, ctx.data.input_shape, ctx.device)
    metrics["latency_batch_size"] = LATENCY_BATCH_SIZE
    return metrics


def semi_structured_measurement(ctx: Context) -> tuple[dict[str, float], str]:
    """N:M methods: the latency with sparse tensor-core kernels where the device has them, else a note."""
    ms, note = semi_structured_latency(ctx.model, ctx.data.input_shape, ctx.device)
    return ({"latency_semi_structured_ms": ms} if ms is not None else {}), note


def budget_metrics(meter: BudgetMeter) -> dict[str, float]:
    """What the trial was given and what it spent, in the budget's unit and in epochs."""
    metrics = {"budget_epochs": meter.budget_epochs, "budget_limit": meter.limit, "budget_used": meter.used,
               "stopped_at_limit": float(meter.stops > 0)}
    if meter.enforced:
        metrics["budget_unspent"] = max(0.0, meter.remaining)
        metrics["budget_unspent_fraction"] = max(0.0, meter.remaining) / meter.limit if meter.limit else 0.0
    for label, charge in meter.charges.items():  # e.g. charged_epochs.bn-recalibration
        if label not in ("train",) and not label.startswith("particle-"):
            metrics[f"charged_epochs.{label}"] = charge.samples / meter.samples_per_epoch
    return metrics


def write_layer_table(ctx: Context, path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["layer", "shape", "params", "nonzero", "density"])
        for stat in ctx.masks.layer_stats():
            writer.writerow([stat.layer, "x".join(map(str, stat.shape)), stat.params, stat.nonzero,
                             f"{stat.density:.6f}"])


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory of the trial on CUDA; on the CPU the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def summary_line(trial: Trial, m: dict[str, float], outcome: str = "finished") -> str:
    """The one line printed when a trial ends."""
    if outcome == "does_not_fit":
        need = m["min_budget_epochs"] / trial.suite.budget.epochs
        return (f"{trial.label()}: does not fit its budget ({m['budget_epochs']:.4g} epochs); needs >= "
                f"{m['min_budget_epochs']:.4g} epochs ({need:.3g}x): recorded, not run")
    return (f"{trial.label()}: test_acc={m['test_acc']:.4f} sparsity={m['sparsity']:.4f} "
            f"epochs={m['epochs_charged']:.2f} flops_eff={m['flops_effective']:.3g} "
            f"time={m['train_seconds']:.1f}s")


def run_plan(trials: Sequence[Trial], methods: dict[str, type[Method]], *, tracker: Tracker,
             parent_id: str, results_dir: Path, device: torch.device, save_model: bool,
             progress: bool, echo: Callable[[str], None], threads: int | None = None) -> tuple[list[TrialResult], list[tuple[Trial, str]]]:
    """Run trials one after another; a failing trial is recorded FAILED and the others still run.
    Ctrl-C stops at once (the trial in flight is recorded KILLED; finished ones are kept)."""
    done: list[TrialResult] = []
    failed: list[tuple[Trial, str]] = []
    n = len(trials)
    bar = tqdm(total=n, desc="trials", unit="trial", disable=None if progress else True, position=0)  # None: off without a terminal
    say = tqdm.write if progress else echo
    for k, trial in enumerate(trials, 1):
        bar.set_postfix_str(trial.label())
        say(f"[{k}/{n}] {trial.label()} (key {trial.key}) ...")
        try:
            result = run_trial(trial, methods[trial.method], tracker=tracker, parent_id=parent_id,
                               results_dir=results_dir, device=device, save_model=save_model,
                               progress=progress, threads=threads)
        except KeyboardInterrupt:
            bar.close()
            raise
        except Exception as err:  # recorded as a FAILED run (a method's BenchError too); the sweep goes on
            failed.append((trial, f"{type(err).__name__}: {err}"))
            say(f"[{k}/{n}] {trial.label()} FAILED: {type(err).__name__}: {err}")
            bar.update()
            continue
        say(f"[{k}/{n}] {summary_line(trial, result.metrics, result.outcome)}")
        done.append(result)
        bar.update()
    bar.close()
    return done, failed
