"""The ``bench`` command line: it parses, checks and calls; the work happens in the core modules."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import click

from pruning_bench.core.budget import POLICIES, UNITS
from pruning_bench.errors import BenchError, unknown_choice
from pruning_bench.execution.executor import EXECUTORS
from pruning_bench.plan.fit import parse_level
from pruning_bench.plan.suite import check_sparsity, load_suite


class BenchGroup(click.Group):
    """Turns a :class:`BenchError` into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BenchError as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:  # Ctrl-C, SIGINT or SIGTERM (pruning_bench.stopping): 128 + SIGINT
            click.echo("Stopped.", err=True)
            ctx.exit(130)


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pruning_bench")
def main() -> None:
    """pruning_bench: compare pruning methods fairly, under identical compute budgets.

    \b
    Quick start (embedded data, embedded MLflow store under results/):
      bench run --suite mnist1d          run the suite's default grid
      bench report --suite mnist1d       leaderboard from the recorded runs
      bench list methods                 what can be compared
    """


def _split(value: str | None) -> list[str]:
    """Comma-separated items; commas inside brackets (``imp[a=1,b=2]``) do not split."""
    if not value:
        return []
    items, depth, current = [], 0, ""
    for ch in value:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    return [v.strip() for v in items if v.strip()]


def parse_method_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``imp`` -> ("imp", {}); ``imp[prune_fraction=0.5, rewind_iters=10]`` -> ("imp", {...}). Values are
    read as TOML (numbers, true/false, "strings"); a bare word is a string."""
    name, bracket, rest = spec.partition("[")
    if not bracket:
        return spec.strip(), {}
    if not rest.endswith("]") or not name.strip():
        raise BenchError(f"--methods: '{spec}' is not NAME or NAME[key=value,...], e.g. imp[prune_fraction=0.5]")
    overrides: dict[str, Any] = {}
    for item in _split(rest[:-1]):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise BenchError(f"--methods: '{item}' in '{spec}' is not key=value, e.g. imp[prune_fraction=0.5]")
        try:
            overrides[key.strip()] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key.strip()] = raw.strip()
    return name.strip(), overrides


def parse_multiples(value: str | None) -> list[float | str] | None:
    """``--budgets``: multiples of the suite's base run and ``fit``, e.g. ``1,4,fit``; duplicates run once."""
    if value is None:
        return None
    out = [parse_level(item, "--budgets") for item in _split(value)]
    if not out:
        raise BenchError("--budgets is empty; give multiples of the suite's base budget or fit, e.g. 1,4,fit")
    return list(dict.fromkeys(out))


def parse_sparsities(value: str | None) -> list[float] | None:
    if value is None:
        return None
    out = []
    for item in _split(value):
        try:
            s = float(item)
        except ValueError:
            raise BenchError(f"--sparsities: '{item}' is not a number; give fractions in (0, 1), "
                             "e.g. 0.5,0.9") from None
        out.append(check_sparsity(s, "--sparsities"))
    if not out:
        raise BenchError("--sparsities is empty; give fractions in (0, 1), e.g. 0.5,0.9")
    return out


SEED_FORMS = "give seeds like 0, 0,1,2 or 0-4"
MAX_SEEDS = 10_000  # in one --seeds value: a typo like 0-100000 fails fast instead of planning for minutes


def parse_seeds(value: str | None) -> list[int] | None:
    """``0`` is seed 0, ``0,1,2`` those seeds, ``0-4`` seeds 0 to 4, ``0-2,7`` both forms; a seed given
    twice runs once (first position kept). None when not given."""
    if value is None:
        return None
    if not value.strip():
        raise BenchError(f"--seeds is empty; {SEED_FORMS}")
    seeds = [seed for item in value.split(",") for seed in _seed_item(item.strip(), value)]
    if len(seeds) > MAX_SEEDS:
        raise BenchError(f"--seeds: '{value}' is {len(seeds):,} seeds; at most {MAX_SEEDS:,} in one run")
    return list(dict.fromkeys(seeds))


def _seed_item(item: str, value: str) -> range:
    """One item of a --seeds list: ``N`` or ``A-B`` (inclusive, A <= B)."""
    match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", item)
    if match is None:
        if not item:
            raise BenchError(f"--seeds: '{value}' has an empty item; {SEED_FORMS}")
        if re.fullmatch(r"-\s*\d.*", item):
            raise BenchError(f"--seeds: '{item}' is negative; seeds are integers >= 0; {SEED_FORMS}")
        raise BenchError(f"--seeds: '{item}' is not a seed or a range of seeds; {SEED_FORMS}")
    first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
    if last < first:
        raise BenchError(f"--seeds: '{item}' is a reversed range; write {last}-{first}")
    if last - first >= MAX_SEEDS:
        raise BenchError(f"--seeds: '{item}' is {last - first + 1:,} seeds; at most {MAX_SEEDS:,} in one run")
    return range(first, last + 1)


@main.command()
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
@click.option("--budget-unit", type=click.Choice(UNITS),
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
        from pruning_bench.execution.fastpath import fingerprint, remembered_answer

        suite_file = suite_name if suite_name.endswith(".toml") or Path(suite_name).is_file() else None
        answer_key = fingerprint(click.get_current_context().params, suite_file)
        answer = remembered_answer(results_dir, answer_key)
        if answer is not None:
            click.echo(answer)
            return
    if not dry_run and jobs == 1 and executor in (None, "sequential"):  # this process will train
        from pruning_bench.execution.cores import register_this_process

        register_this_process()
    if no_progress:  # download bars too, in this process and its workers (for this command only)
        import os

        from pruning_bench.data.download import NO_PROGRESS_ENV

        if NO_PROGRESS_ENV not in os.environ:
            os.environ[NO_PROGRESS_ENV] = "1"
            click.get_current_context().call_on_close(lambda: os.environ.pop(NO_PROGRESS_ENV, None))
    from pruning_bench.execution.sweep import SweepOptions, run_sweep
    from pruning_bench.plan.registry import default_registry
    from pruning_bench.plan.trial import MethodSpec, build_plan

    suite = load_suite(suite_name)
    overrides = {}
    if epochs is not None:
        if epochs <= 0:
            raise BenchError(f"--epochs must be > 0, got {epochs:g}")
        overrides["budget.epochs"] = epochs
    if budget_seconds is not None:
        if budget_seconds <= 0:
            raise BenchError(f"--budget-seconds must be > 0, got {budget_seconds:g}")
        overrides["budget.seconds"] = budget_seconds
    if budget_unit == "seconds" and suite.budget.seconds is None and budget_seconds is None:
        raise BenchError(f"--budget-unit seconds needs the base run in seconds: give --budget-seconds S or "
                         f"'seconds' under [budget] in {suite.source}")
    if data_dir is not None:
        overrides["dataset.data_dir"] = data_dir
    if download is not None:
        overrides["dataset.download"] = download
    suite = suite.with_overrides(**overrides)
    registry = default_registry(plugins)
    for name in suite.method_params:
        if name not in registry.names():
            raise BenchError(f"{suite.source}: [method_params.{name}] names no registered method; "
                             f"known: {', '.join(registry.names())}")
    names = _split(methods) if methods else list(suite.methods)
    if names == ["all"]:
        names = registry.names()
    if not names:
        raise BenchError(f"no methods given and suite '{suite.name}' names none; known: {', '.join(registry.names())}")
    specs = [MethodSpec(registry.get(name), overrides)
             for name, overrides in (parse_method_spec(n) for n in dict.fromkeys(names))]
    classes = [spec.cls for spec in specs]
    policy = budget_policy or suite.budget.policy
    plan = build_plan(suite, specs, parse_sparsities(sparsities) or suite.sparsities,
                      parse_seeds(seeds) or suite.seeds, policy, multiples=parse_multiples(budgets),
                      unit=budget_unit)
    if dry_run:
        from pruning_bench.execution.estimate import describe_plan

        for line in describe_plan(suite, plan, lambda t: registry.get(t.method)(t.params), jobs=jobs,
                                  threads=threads, device=device):
            click.echo(line)
        return
    if ray_address and executor != "ray":
        raise BenchError(f"--ray-address {ray_address} needs --executor ray")
    from pruning_bench.tracking.tracker import check_server, default_tracking_uri

    check_server(tracking_uri or default_tracking_uri(results_dir))
    options = SweepOptions(results_dir=results_dir, tracking_uri=tracking_uri, device=device, rerun=rerun,
                           save_model=save_model, progress=not no_progress, threads=threads, jobs=jobs,
                           plugins=plugins, executor=executor, ray_address=ray_address,
                           cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                           checkpoint_seconds=checkpoint_every, answer_key=answer_key,
                           reuse_changed_code=reuse_changed_code)
    from pruning_bench.execution.estimate import price_plan, total_line

    def method_for(trial):
        return registry.get(trial.method)(trial.params)

    from pruning_bench.execution.code_identity import plugin_code

    code = run_sweep(suite, plan, [c.name for c in classes], options, echo=click.echo,
                     cost=lambda trials: total_line(price_plan(suite, trials, method_for)),
                     code=lambda trial: plugin_code(registry.get(trial.method), suite.model.name,
                                                    suite.dataset.name))
    if code:
        sys.exit(code)


@main.command()
@click.option("--suite", "suite_names", required=True, multiple=True,
              help="Suite (experiment) to report on; several: comma-separated or the option repeated.")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Where the default MLflow store is and reports go.")
@click.option("--tracking-uri", help="MLflow tracking URI (default as for `bench run`).")
@click.option("--metric", default="test_acc", show_default=True,
              help="Metric to tabulate (any metric the trials logged, e.g. test_acc, val_acc, test_loss).")
@click.option("--budget-policy", type=click.Choice(POLICIES),
              help="Only runs of this budget policy (default: all; mixed policies are split and warned about).")
@click.option("--format", "formats", default="md,html,csv", show_default=True,
              help="Comma-separated outputs: md (report.md + PNG plots), html (one self-contained file), "
                   "csv (tidy leaderboard.csv).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for report files (default: <results-dir>/reports/<suite>; with several suites "
                   "<out>/<suite>).")
@click.option("--no-log", is_flag=True, help="Do not store the report as artifacts of a 'report' run in MLflow.")
def report(suite_names: tuple[str, ...], results_dir: Path, tracking_uri: str | None, metric: str,
           budget_policy: str | None, formats: str, out: Path | None, no_log: bool) -> None:
    """Build the comparison report of a suite from its MLflow runs: leaderboard (mean ± std over seeds,
    best and statistically tied cells marked), cost and sanity tables, plots; as Markdown, HTML and CSV.

    Example: bench report --suite mnist1d --budget-policy equal
    """
    from pruning_bench.report.publish import (
        build_report,
        leaderboards_markdown,
        load_runs,
        log_report_run,
        parse_formats,
        write_report,
    )
    from pruning_bench.tracking.tracker import check_server, default_tracking_uri

    uri = tracking_uri or default_tracking_uri(results_dir)
    kinds = parse_formats(formats)
    check_server(uri)
    names = [n for value in suite_names for n in _split(value)]
    if not names:
        raise BenchError("--suite is empty; give a suite name, e.g. --suite mnist1d")
    names = list(dict.fromkeys(names))
    from pruning_bench.plan.suite import builtin_suites

    for raw in names:
        suite = load_suite(raw) if raw.endswith(".toml") or raw in builtin_suites() else None
        name = suite.name if suite else raw
        compare = [tuple(p) for p in suite.report.compare] if suite else None
        built = build_report(load_runs(uri, name, status=None), name, metric=metric, budget_policy=budget_policy,
                             tracking_uri=uri, compare=compare)
        target = (out / name if len(names) > 1 else out) if out else results_dir / "reports" / name
        files = write_report(built, target, kinds)
        click.echo(f"\n{name}: {built.metric_label}\n{leaderboards_markdown(built)}")
        for line in built.warnings:
            click.echo(f"warning: {line}", err=True)
        if not no_log:
            run_id = log_report_run(uri, built, files)
            click.echo(f"logged as artifacts of report run {run_id}", err=True)
        click.echo("written: " + ", ".join(str(f) for f in files), err=True)


@main.command(name="list")
@click.argument("what", type=click.Choice(["methods", "suites", "models", "datasets"]))
@click.option("--plugin", "plugins", multiple=True, type=click.Path(dir_okay=False),
              help="A plugin file whose methods, models and data sets to list too (repeatable).")
def list_(what: str, plugins: tuple[str, ...]) -> None:
    """List registered methods, built-in suites, models or data sets (plugins with where they come from)."""
    if what == "suites":
        from pruning_bench.plan.suite import builtin_suites

        for name, path in sorted(builtin_suites().items()):
            suite = load_suite(str(path))
            click.echo(f"{name:<10} {suite.dataset.name:<9} {suite.model.name:<12} "
                       f"{suite.budget.epochs:g} epochs  {suite.description}")
        return
    from pruning_bench.plan.registry import default_registry

    registry = default_registry(plugins)  # also registers the files' models and data sets
    if what == "methods":
        for name in registry.names():
            cls = registry.get(name)
            doc = (cls.__doc__ or "").strip().splitlines()
            click.echo(f"{name:<20} {doc[0] if doc else ''}")
    elif what == "models":
        from pruning_bench.models import describe_models, plugin_models

        _echo_listing(describe_models(), plugin_models())
    else:
        from pruning_bench.data.sources import DATASETS, DESCRIPTIONS, SOURCES

        builtin = {name: DESCRIPTIONS.get(name, "") + _options_note(SOURCES[name].options) for name in SOURCES}
        _echo_listing(builtin, DATASETS.all())


def _options_note(options: dict[str, Any]) -> str:
    return f" (options: {', '.join(f'{k}={v!r}' for k, v in options.items())})" if options else ""


def _echo_listing(builtin: dict[str, str], plugins: dict[str, Any]) -> None:
    """Built-in names with descriptions, then plugins with their options and origin."""
    width = max(map(len, [*builtin, *plugins]), default=0) + 2
    for name, description in builtin.items():
        click.echo(f"{name:<{width}}{description}")
    for name, plugin in plugins.items():
        options = plugin.describe_options()
        click.echo(f"{name:<{width}}{plugin.description}{f' (options: {options})' if options else ''}  "
                   f"[plugin: {plugin.origin}]")


@main.command()
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--tracking-uri")
@click.option("--port", default=5000, show_default=True)
def ui(results_dir: Path, tracking_uri: str | None, port: int) -> None:
    """Open the MLflow UI on 127.0.0.1 for the results store."""
    import subprocess

    from pruning_bench.tracking.tracker import default_tracking_uri

    uri = tracking_uri or default_tracking_uri(results_dir)
    click.echo(f"MLflow UI for {uri} at http://127.0.0.1:{port} (Ctrl-C to stop)")
    raise SystemExit(subprocess.call([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                                      "--host", "127.0.0.1", "--port", str(port)]))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on: 127.0.0.1 for this machine only, 0.0.0.0 for every machine that can "
                   "reach this one (a cluster).")
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--results-dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True, help="Holds the store (mlflow.db) and every client's artifacts (artifacts/).")
@click.option("--workers", type=int, default=4, show_default=True, help="Server processes answering requests.")
@click.option("--allowed-hosts", help="More host names/IPs clients may use in the URL (comma-separated, * "
                                      "wildcards), besides localhost, private IPs and, beyond 127.0.0.1, this "
                                      "machine's name.")
def server(host: str, port: int, results_dir: Path, workers: int, allowed_hosts: str | None) -> None:
    """Run a shared MLflow tracking server: every `bench run` / `bench report` on any machine given its
    --tracking-uri records into one store, and artifacts go through the server, never to a worker's disk.

    Example: bench server --host 0.0.0.0 --port 5000
    """
    from pruning_bench.tracking.server import ServerConfig, serve

    config = ServerConfig(results_dir=results_dir, host=host, port=port, workers=workers,
                          allowed_hosts=allowed_hosts)
    raise SystemExit(serve(config, click.echo))


__all__ = ["main", "unknown_choice"]
