"""Where the MLflow tracking store is and how to reach it: the default URI, a tracking server's health,
MLflow's fluent API pointed at a store for a block, whether a location is local, where a new
experiment's artifacts go, and whether a store already holds an experiment (without creating either).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pruning_bench.errors import BenchError
from pruning_bench.tracking.locks import RetryingClient, store_lock


def default_tracking_uri(results_dir: str | Path) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<results>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


SERVER_PATIENCE_SECONDS = 10.0  # how long `bench run` / `bench report` wait for a tracking server to answer


def check_server(uri: str, patience: float = SERVER_PATIENCE_SECONDS) -> None:
    """For an ``http(s)://`` tracking URI, wait up to ``patience`` seconds for its ``/health`` to answer;
    one that does not is a BenchError naming the URI and how to start a server (MLflow's own client
    would retry for minutes without a word). Other URIs (a local SQLite store) are not checked."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    deadline = time.monotonic() + patience
    reason = ""
    while True:
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=min(5.0, patience)) as response:
                if response.status == 200:
                    return
                reason = f"HTTP {response.status}"
        except urllib.error.HTTPError as err:
            reason = f"HTTP {err.code}"
        except (urllib.error.URLError, OSError) as err:
            reason = str(getattr(err, "reason", err))
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    raise BenchError(f"the tracking server {uri} does not answer ({reason}) after {patience:g} s; start one "
                     "with `bench server --host 0.0.0.0 --port PORT` on the machine it names, or check "
                     "--tracking-uri / MLFLOW_TRACKING_URI")


@contextmanager
def tracking_uri_scope(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.search_runs``) at ``uri`` for a block.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the environment; that is undone
    on exit so a later default (which honours the user's variable) is not silently redirected.
    """
    import mlflow

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def quiet_mlflow() -> None:
    """Keep the INFO logging of MLflow and its database migrations, and its artifact download bars (a
    control reads its source's artifacts), off the terminal."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("alembic", "mlflow", "mlflow.store.db.utils", "mlflow.tracking"):
        logging.getLogger(name).setLevel(logging.WARNING)


def is_local_uri(uri: str) -> bool:
    """A store or artifact location on this machine's disk (``sqlite:``, ``file:``, a plain path), not a server."""
    scheme = urlparse(uri).scheme
    return scheme in ("", "file", "sqlite") or len(scheme) == 1  # len 1: a Windows drive letter


def artifact_location(tracking_uri: str, experiment: str, artifact_root: Path | None) -> str | None:
    """Where a new experiment keeps its artifacts: beside a local store; with a server, ``None`` (the
    server's root: ``bench server`` proxies them, so they never land on a client's disk)."""
    if artifact_root is None or not is_local_uri(tracking_uri):
        return None
    return (artifact_root / experiment).resolve().as_uri()


_warned: set[tuple[str, str]] = set()


def warn_local_artifacts(tracking_uri: str, experiment: Any) -> None:
    """One stderr line (once per process, not in worker processes) when an experiment on a server keeps
    its artifacts at a local path, i.e. on the disk of whichever client logs them."""
    location = experiment.artifact_location or ""
    key = (tracking_uri, experiment.experiment_id)
    if (is_local_uri(tracking_uri) or not is_local_uri(location) or key in _warned
            or multiprocessing.parent_process() is not None):
        return
    _warned.add(key)
    print(f"warning: experiment '{experiment.name}' in {tracking_uri} keeps its artifacts at {location} (it was "
          "created by a local client), so each machine writes them to its own disk; to have the server store "
          "them, start `bench server` with a new --results-dir or use a suite with another name",
          file=sys.stderr)


def store_has_experiment(uri: str, experiment: str) -> bool:
    """Whether ``uri`` holds ``experiment``, without creating the store or the experiment (a local SQLite
    file that does not exist yet holds nothing)."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return False
    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    try:
        with store_lock(uri):
            return RetryingClient(MlflowClient(tracking_uri=uri)).get_experiment_by_name(experiment) is not None
    except Exception as err:  # a wrong URI must be one clear line, not a traceback
        raise BenchError(f"cannot open the MLflow tracking store '{uri}': {err}") from None
