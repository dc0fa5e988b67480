"""The ``bench`` command line: it parses, checks and calls; the work happens in the core modules.

This module holds the command group and its error handling; each command lives in its own module
(:mod:`.run`, :mod:`.report`, :mod:`.listing`, :mod:`.server`) and option values are parsed in
:mod:`.parsing`.
"""

from __future__ import annotations

from typing import Any

import click

from pruning_bench.cli import listing, report, run, server
from pruning_bench.errors import BenchError, unknown_choice


class BenchGroup(click.Group):
    """Turns a :class:`BenchError` into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
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


main.add_command(run.run)
main.add_command(report.report)
main.add_command(listing.list_)
main.add_command(server.ui)
main.add_command(server.server)

__all__ = ["main", "unknown_choice"]
