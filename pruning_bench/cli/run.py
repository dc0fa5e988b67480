"""``bench run``: its options, and the steps from a command line to a sweep of trials (or, with
--dry-run, to the printed plan). Heavy imports (torch, MLflow) wait until a step needs them."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pruning_bench.cli.parsing import (
    parse_method_spec,
    parse_multiples,
    parse_seeds,
    parse_sparsities,
    split_items,
)
from pruning_bench.core.budget import POLICIES, UNITS
from pruning_bench.errors import BenchError
from pruning_bench.execution.executor import EXECUTORS
from pruning_bench.plan.suite import Suite, load_suite

if TYPE_CHECKING:
    from pruning_bench.core.method import Method
    from pruning_bench.execution.sweep import SweepOptions
    from pruning_bench.plan.registry import MethodRegistry
    from pruning_bench.plan.trial import MethodSpec, Trial


@click.command()
@click.option("--suite", "suite_name", default="mnist1d", show_default=True,
              help="Built-in suite name (see `bench list suites`) or path to a suite .toml file.")
@click.option("--methods", help="Comma-separated method names (default: the suite's; 'all' = every registered); "
                               "NAME[key=value,...] runs a variant with other parameters, e.g. "
                               "'imp,imp[prune_fraction=0.5]'.")
@click.option("--sparsities", help="Comma-separated target sparsities in (0,1), e.g. 0.5,0.9 (default: the suite's).")
@click.option("--seeds", help="Seeds: a list with ranges, e.g. 0, 0,1,2, 0-4 or 0-2,7; a bare number is that "
                             "one seed (default: the suite's).")
@click.option("--epochs", type=float, help="Override the suite's base budget (1x) in epochs (for quick runs).")
@click.option("--budgets", help="Budget multiples of the suite's base run to sweep, e.g. 1,4,12 "
                                "(default: the suite's budget.multiples).")
@click.option("--budget-unit", type=click.Choice(list(UNITS)),
              help="What an equal budget counts: epochs (sample passes), flops (training FLOPs) or seconds "
                   "(wall-clock on this device) (default: the suite's).")
@click.option("--budget-seconds", type=float, help="The base run (1x) in seconds for --budget-unit seconds "
                                                   "(default: the suite's budget.seconds).")
@click.option("--budget-policy", type=click.Choice(POLICIES),
              help="equal: every method gets the same budget and spends it; native: each method's own "
                   "schedule (default: the suite's).")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Where the MLflow store, checkpoints and reports go.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                                     "sqlite:///<results-dir>/mlflow.db).")
@click.option("--data-dir", help="Where downloadable data sets (CIFAR) are read from and downloaded to "
                                 "(default: the suite's data_dir, else $PRUNING_BENCH_DATA, else "
                                 "$XDG_CACHE_HOME/pruning_bench or ~/.cache/pruning_bench).")
@click.option("--download/--no-download", default=None,
              help="Download a missing data set (the default, unless the suite sets download = false); "
                   "--no-download fails instead, naming the files to fetch by hand.")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(dir_okay=False),
              help="A Python file defining extra methods (Method subclasses), models (@register_model) "
                   "or data sets (@register_dataset) (repeatable).")
@click.option("--device", help="torch device, e.g. cuda:1 or cpu (default: CUDA when present, else CPU).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes running trials in parallel (one GPU each where there are several).")
@click.option("--executor", type=click.Choice(EXECUTORS),
              help="Where trials run: sequential (this process), processes (--jobs N) or ray "
                   "(default: processes when --jobs > 1, else sequential).")
@click.option("--ray-address", help="Ray cluster to run on with --executor ray (e.g. auto, ray://head:10001; "
                                    "default: start a local Ray).")
@click.option("--cpus-per-trial", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="--executor ray: CPUs each trial reserves (and at most that many torch threads).")
@click.option("--gpus-per-trial", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="--executor ray: GPUs each trial reserves; 0.25 packs four trials onto one GPU.")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads for torch (default: the cores divided among the trials training on this "
                   "machine at the time, bench processes included; with --jobs N at most cores // N).")
@click.option("--checkpoint-every", type=click.FloatRange(min=0, min_open=True),
              help="Seconds of training between mid-trial checkpoints (default: $PRUNING_BENCH_CHECKPOINT_SECONDS "
                   "or 300); a killed trial resumes from its last one.")
@click.option("--rerun", is_flag=True, help="Run trials again even if a finished run with the same key exists.")
@click.option("--reuse-changed-code", is_flag=True,
              help="Keep finished trials whose plugin code (method, model or data-set file) changed since they "
                   "ran (by default bench run refuses: rerun them with --rerun).")
@click.option("--dry-run", is_flag=True, help="Print the trial plan with each trial's budget, the total training "
                                               "and a time estimate (a few training steps measured here), and exit.")
@click.option("--save-model", is_flag=True, help="Also log the final weights and masks as an artifact.")
@click.option("--no-progress", is_flag=True, help="No progress bars (one line per trial is still printed).")
def run(suite_name: str, methods: str | None, sparsities: str | None, seeds: str | None, epochs: float | None,
        budgets: str | None, budget_unit: str | None, budget_seconds: float | None,
        budget_policy: str | None, results_dir: Path, tracking_uri: str | None, data_dir: str | None,
        download: bool | None, plugins: tuple[str, ...], device: str | None, jobs: int, executor: str | None,
        ray_address: str | None, cpus_per_trial: float, gpus_per_trial: float, threads: int | None,
        checkpoint_every: float | None, rerun: bool, reuse_changed_code: bool, dry_run: bool, save_model: bool,
        no_progress: bool) -> None:
    """Run a grid of trials (method x target sparsity x seed) and record each in MLflow.

    Finished trials (same configuration, same key) are skipped, so repeating a command resumes an
    interrupted sweep. A method whose own algorithm does not fit a budget is recorded as such (with the
    budget it needs), never run as something else.
    Example: bench run --suite mnist1d --methods snip,imp --sparsities 0.8,0.9 --budgets 1,4 --seeds 0-2
    """
    answer_key = None
    if not (rerun or dry_run):  # a repeated command with nothing left to do: answered without torch/MLflow
        answer_key, answer = _remembered(suite_name, results_dir)
        if answer is not None:
            click.echo(answer)
            return
    if not dry_run and jobs == 1 and executor in (None, "sequential"):  # this process will train
        from pruning_bench.execution.cores import register_this_process

        register_this_process()
    if no_progress:
        _hide_download_progress()
    from pruning_bench.execution.sweep import SweepOptions
    from pruning_bench.plan.registry import default_registry
    from pruning_bench.plan.trial import build_plan

    suite = _suite_with_overrides(suite_name, epochs, budget_seconds, budget_unit, data_dir, download)
    registry = default_registry(plugins)
    specs = _method_specs(suite, registry, methods)
    plan = build_plan(suite, specs, parse_sparsities(sparsities) or suite.sparsities,
                      parse_seeds(seeds) or suite.seeds, budget_policy or suite.budget.policy,
                      multiples=parse_multiples(budgets), unit=budget_unit)
    if dry_run:
        _echo_plan(suite, plan, registry, jobs=jobs, threads=threads, device=device)
        return
    if ray_address and executor != "ray":
        raise BenchError(f"--ray-address {ray_address} needs --executor ray")
    from pruning_bench.tracking.store import check_server, default_tracking_uri

    check_server(tracking_uri or default_tracking_uri(results_dir))
    options = SweepOptions(results_dir=results_dir, tracking_uri=tracking_uri, device=device, rerun=rerun,
                           save_model=save_model, progress=not no_progress, threads=threads, jobs=jobs,
                           plugins=plugins, executor=executor, ray_address=ray_address,
                           cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                           checkpoint_seconds=checkpoint_every, answer_key=answer_key,
                           reuse_changed_code=reuse_changed_code)
    code = _sweep(suite, plan, registry, specs, options)
    if code:
        sys.exit(code)


def _remembered(suite_name: str, results_dir: Path) -> tuple[str, str | None]:
    """The fast path's fingerprint of this command, and the answer remembered under it (None if none)."""
    from pruning_bench.execution.fastpath import fingerprint, remembered_answer

    suite_file = suite_name if suite_name.endswith(".toml") or Path(suite_name).is_file() else None
    answer_key = fingerprint(click.get_current_context().params, suite_file)
    return answer_key, remembered_answer(results_dir, answer_key)


def _hide_download_progress() -> None:
    """No download bars either, in this process and its workers (for this command only)."""
    from pruning_bench.data.download import NO_PROGRESS_ENV

    if NO_PROGRESS_ENV not in os.environ:
        os.environ[NO_PROGRESS_ENV] = "1"
        click.get_current_context().call_on_close(lambda: os.environ.pop(NO_PROGRESS_ENV, None))


def _suite_with_overrides(suite_name: str, epochs: float | None, budget_seconds: float | None,
                          budget_unit: str | None, data_dir: str | None, download: bool | None) -> Suite:
    """The suite, with the budget and data-set settings given on the command line."""
    suite = load_suite(suite_name)
    overrides: dict[str, Any] = {}
    if epochs is not None:
        if epochs <= 0:
            raise BenchError(f"--epochs must be > 0, got {epochs:g}")
        overrides["budget.epochs"] = epochs
    if budget_seconds is not None:
        if budget_seconds <= 0:
            raise BenchError(f"--budget-seconds must be > 0, got {budget_seconds:g}")
        overrides["budget.seconds"] = budget_seconds
    if budget_unit and UNITS[budget_unit].clocked and suite.budget.seconds is None and budget_seconds is None:
        raise BenchError(f"--budget-unit {budget_unit} needs the base run in seconds: give --budget-seconds S or "
                         f"'seconds' under [budget] in {suite.source}")
    if data_dir is not None:
        overrides["dataset.data_dir"] = data_dir
    if download is not None:
        overrides["dataset.download"] = download
    return suite.with_overrides(**overrides)


def _method_specs(suite: Suite, registry: MethodRegistry, methods: str | None) -> list[MethodSpec]:
    """The methods to compare (--methods, else the suite's; 'all' = every registered), each with the
    parameters its NAME[key=value,...] overrides."""
    from pruning_bench.plan.trial import MethodSpec

    for name in suite.method_params:
        if name not in registry.names():
            raise BenchError(f"{suite.source}: [method_params.{name}] names no registered method; "
                             f"known: {', '.join(registry.names())}")
    names = split_items(methods) if methods else list(suite.methods)
    if names == ["all"]:  # every method that stands alone (a control needs source=M)
        names = [n for n in registry.names() if not registry.get(n).control]
    if not names:
        raise BenchError(f"no methods given and suite '{suite.name}' names none; known: {', '.join(registry.names())}")
    specs = [MethodSpec(registry.get(name), overrides)
             for name, overrides in (parse_method_spec(n) for n in dict.fromkeys(names))]
    return specs + _missing_sources(suite, registry, specs)


def _missing_sources(suite: Suite, registry: MethodRegistry, specs: Sequence[MethodSpec]) -> list[MethodSpec]:
    """The sources of the plan's controls that ``--methods`` does not name (``reinit[source=imp]`` alone
    runs ``imp`` too): each added with the suite's parameters, and said on stderr."""
    from pruning_bench.plan.trial import MethodSpec

    have = {spec.cls.name for spec in specs if not spec.overrides}
    added = []
    for spec in specs:
        name = spec.cls.source_of(spec.params(suite))
        if name and name not in have:
            have.add(name)
            added.append(MethodSpec(registry.get(name)))
            click.echo(f"Adding {name}: the source of {spec.cls.name}[source={name}].", err=True)
    return added


def _method_maker(registry: MethodRegistry) -> Callable[[Trial], Method]:
    """A trial's method instance, with the trial's parameters."""
    def method_for(trial: Trial) -> Method:
        return registry.get(trial.method)(trial.params)

    return method_for


def _echo_plan(suite: Suite, plan: Sequence[Trial], registry: MethodRegistry, *, jobs: int,
               threads: int | None, device: str | None) -> None:
    """--dry-run: the plan, each trial's budget, the total and a time estimate measured here."""
    from pruning_bench.execution.estimate import describe_plan

    for line in describe_plan(suite, plan, _method_maker(registry), jobs=jobs, threads=threads, device=device):
        click.echo(line)


def _sweep(suite: Suite, plan: Sequence[Trial], registry: MethodRegistry, specs: Sequence[MethodSpec],
           options: SweepOptions) -> int:
    """Runs the plan's unfinished trials; the sweep's exit code."""
    from pruning_bench.execution.code_identity import plugin_code
    from pruning_bench.execution.estimate import price_plan, total_line
    from pruning_bench.execution.sweep import run_sweep

    method_for = _method_maker(registry)
    return run_sweep(suite, plan, [spec.cls.name for spec in specs], options, echo=click.echo,
                     cost=lambda trials: total_line(price_plan(suite, trials, method_for)),
                     code=lambda trial: plugin_code(registry.get(trial.method), suite.model.name,
                                                    suite.dataset.name))
