"""MLflow: one experiment per suite, a parent run per ``bench run`` (the sweep), a child run per trial.

The default store is embedded SQLite under the results directory (nothing to start by hand), with
artifacts beside it. Everything is written through ``MlflowClient`` with explicit run ids, so nothing
depends on MLflow's global "active run" state.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pruning_bench.errors import BenchError

PARENT_TAG = "mlflow.parentRunId"


def default_tracking_uri(results_dir: str | Path) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<results>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


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


def _quiet_mlflow() -> None:
    for name in ("alembic", "mlflow", "mlflow.store.db.utils", "mlflow.tracking"):
        logging.getLogger(name).setLevel(logging.WARNING)


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"prefix.a.b": "1"}`` (MLflow params are flat strings)."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: str(value)[:6000]}


def git_commit() -> str:
    """The harness's git commit (with ``-dirty`` when the checkout has changes), or ``unknown``."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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


class Tracker:
    """Writes sweeps and trials of one suite into an MLflow tracking store."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        _quiet_mlflow()
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        try:
            found = self.client.get_experiment_by_name(experiment)
        except Exception as err:  # a wrong URI must be one clear line, not a traceback
            raise BenchError(f"cannot open the MLflow tracking store '{tracking_uri}': {err}") from None
        if found is None:
            location = artifact_location(tracking_uri, experiment, artifact_root)
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            warn_local_artifacts(tracking_uri, found)
            self.experiment_id = found.experiment_id

    def finished_keys(self) -> set[str]:
        """Trial keys that already have a FINISHED run in this experiment."""
        keys: set[str] = set()
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], "attributes.status = 'FINISHED'",
                                           max_results=1000, page_token=token)
            keys.update(r.data.tags["trial_key"] for r in page if "trial_key" in r.data.tags)
            token = page.token
            if not token:
                return keys

    @contextmanager
    def run(self, name: str, *, tags: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None,
            parent_id: str | None = None) -> Iterator[str]:
        """A run that ends FINISHED, FAILED on an error, or KILLED on Ctrl-C."""
        all_tags = {"mlflow.runName": name, **(tags or {})}
        if parent_id:
            all_tags[PARENT_TAG] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        run_id = run.info.run_id
        if params:
            self.log_params(run_id, params)
        try:
            yield run_id
        except KeyboardInterrupt:
            self.client.set_terminated(run_id, "KILLED")
            raise
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i:i + 500])

    def log_series(self, run_id: str, key: str, points: list[tuple[int, float]]) -> None:
        """Many (step, value) points of one metric in one write (e.g. a loss curve)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(v), now, int(s)) for s, v in points]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i:i + 500])

    def log_metric(self, run_id: str, key: str, value: float, step: int | None = None) -> None:
        self.client.log_metric(run_id, key, value, step=step or 0)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def log_artifact(self, run_id: str, path: Path) -> None:
        self.client.log_artifact(run_id, str(path))
