"""``bench ui`` and ``bench server``: the MLflow web UI on the local store, and a shared tracking server."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--tracking-uri")
@click.option("--port", default=5000, show_default=True)
def ui(results_dir: Path, tracking_uri: str | None, port: int) -> None:
    """Open the MLflow UI on 127.0.0.1 for the results store."""
    import subprocess

    from pruning_bench.tracking.store import default_tracking_uri

    uri = tracking_uri or default_tracking_uri(results_dir)
    click.echo(f"MLflow UI for {uri} at http://127.0.0.1:{port} (Ctrl-C to stop)")
    raise SystemExit(subprocess.call([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                                      "--host", "127.0.0.1", "--port", str(port)]))


@click.command()
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
