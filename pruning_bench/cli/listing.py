"""``bench list``: what can be compared (methods, built-in suites, models, data sets), plugins included."""

from __future__ import annotations

from typing import Any

import click

from pruning_bench.plan.suite import load_suite


@click.command(name="list")
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
        for name, cls in registry.all().items():  # a broken installed plugin is a warning here
            doc = (cls.__doc__ or "").strip().splitlines()
            ours = cls.__module__.startswith("pruning_bench.methods.")
            origin = "" if ours else f"  [plugin: {registry.origins[name]}]"
            click.echo(f"{name:<20} {doc[0] if doc else ''}{origin}")
    elif what == "models":
        from pruning_bench.models import describe_models, plugin_models

        _echo_listing(describe_models(), plugin_models())
    else:
        from pruning_bench.data.sources import DATASETS, DESCRIPTIONS, SOURCES

        builtin = {name: DESCRIPTIONS.get(name, "") + _options_note(SOURCES[name].options) for name in SOURCES}
        _echo_listing(builtin, DATASETS.all())


def _options_note(options: dict[str, Any]) -> str:
    """A data set's options as " (options: k=v, ...)"; empty when it has none."""
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
