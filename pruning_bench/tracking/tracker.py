"""MLflow: one experiment per suite, a parent run per ``bench run`` (the sweep), a child run per trial.

The default store is embedded SQLite under the results directory (nothing to start by hand), with
artifacts beside it. Everything is written through ``MlflowClient`` with explicit run ids, so nothing
depends on MLflow's global "active run" state. Finding and opening the store:
:mod:`pruning_bench.tracking.store`; several processes writing one SQLite store:
:mod:`pruning_bench.tracking.locks`.
"""

from __future__ import annotations

import functools
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruning_bench.errors import BenchError
from pruning_bench.tracking.locks import RetryingClient, store_lock
from pruning_bench.tracking.store import artifact_location, quiet_mlflow, warn_local_artifacts

if TYPE_CHECKING:
    from pruning_bench.tracking.claims import Claim, ClaimView

PARENT_TAG = "mlflow.parentRunId"


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"prefix.a.b": "1"}`` (MLflow params are flat strings)."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: str(value)[:6000]}


@functools.cache
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


class Tracker:
    """Writes sweeps and trials of one suite into an MLflow tracking store."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        quiet_mlflow()
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri
        with store_lock(tracking_uri):  # two processes must not create one store or experiment at once
            self.client = RetryingClient(MlflowClient(tracking_uri=tracking_uri))
            try:
                found = self.client.get_experiment_by_name(experiment)
            except Exception as err:  # a wrong URI must be one clear line, not a traceback
                raise BenchError(f"cannot open the MLflow tracking store '{tracking_uri}': {err}") from None
            if found is None:
                location = artifact_location(tracking_uri, experiment, artifact_root)
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        if found is not None:
            warn_local_artifacts(tracking_uri, found)
            self.experiment_id = found.experiment_id

    def finished_keys(self) -> set[str]:
        """Trial keys that already have a FINISHED run in this experiment."""
        return set(self.finished_runs())

    def finished_runs(self) -> dict[str, list[tuple[str, dict[str, str]]]]:
        """Per trial key with FINISHED runs: (run id, tags) of each."""
        runs: dict[str, list[tuple[str, dict[str, str]]]] = {}
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], "attributes.status = 'FINISHED'",
                                           max_results=1000, page_token=token)
            for r in page:
                if "trial_key" in r.data.tags:
                    runs.setdefault(r.data.tags["trial_key"], []).append((r.info.run_id, dict(r.data.tags)))
            token = page.token
            if not token:
                return runs

    def add_levels(self, finished: dict[str, list[tuple[str, dict[str, str]]]],
                   wanted: dict[str, tuple[str, ...]]) -> int:
        """Tag finished runs with the budget levels a new plan reuses them for (a 2x trial that is also
        this plan's ``fit``); returns how many runs were re-tagged. Older runs without the tag stand for
        their multiple (the report's reading), so it is kept."""
        changed = 0
        for key, levels in wanted.items():
            for run_id, tags in finished.get(key, ()):
                have = [t for t in tags.get("budget_level", "").split(",") if t]
                union = sorted({*have, *levels})
                if union != sorted(have) and have:
                    self.client.set_tag(run_id, "budget_level", ",".join(union))
                    changed += 1
        return changed

    @contextmanager
    def run(self, name: str, *, tags: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None,
            parent_id: str | None = None) -> Iterator[str]:
        """A run that ends FINISHED, FAILED on an error, or KILLED on Ctrl-C. It carries its owner's
        identity and heartbeat tags, so a crash leaves a run that the next sweep sees is stale."""
        from pruning_bench.tracking.claims import owner_tags

        all_tags = {"mlflow.runName": name, **(tags or {}), **owner_tags()}
        if parent_id:
            all_tags[PARENT_TAG] = parent_id
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags).info.run_id
        if params:
            self.log_params(run_id, params)
        with self.running(run_id):
            yield run_id

    @contextmanager
    def running(self, run_id: str) -> Iterator[str]:
        """End ``run_id`` FINISHED when the block ends, FAILED on an error, KILLED on Ctrl-C."""
        try:
            yield run_id
        except KeyboardInterrupt:
            self.client.set_terminated(run_id, "KILLED")
            raise
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")

    # ---- claims (pruning_bench.tracking.claims) ------------------------------------------------------------------
    def runs_with_key(self, key: str) -> list[ClaimView]:
        """The active (not deleted) runs of a trial key in this experiment."""
        from pruning_bench.tracking.claims import ClaimView

        return [ClaimView.of(r) for r in self.client.search_runs(
            [self.experiment_id], f"tags.trial_key = '{key}'", max_results=1000)]

    def latest_finished(self, key: str) -> Any | None:
        """The newest FINISHED run of a trial key (an MLflow ``Run``), or None."""
        runs = self.client.search_runs([self.experiment_id],
                                       f"tags.trial_key = '{key}' and attributes.status = 'FINISHED'",
                                       max_results=1, order_by=["attributes.start_time DESC"])
        return runs[0] if runs else None

    def download(self, run_id: str, artifact: str, into: Path) -> Path | None:
        """Download one artifact of a run into ``into``; None when the run has no such artifact."""
        names = {Path(f.path).name for f in self.client.list_artifacts(run_id)}
        if artifact not in names:
            return None
        return Path(self.client.download_artifacts(run_id, artifact, str(into)))

    def claim_run(self, name: str, key: str, *, tags: Mapping[str, str], parent_id: str | None,
                  rerun: bool = False) -> Claim:
        """Claim ``key`` with a RUNNING run named ``name`` (see :mod:`pruning_bench.tracking.claims`)."""
        from pruning_bench.tracking.claims import claim, owner_tags

        def create() -> str:
            all_tags = {"mlflow.runName": name, **tags, "trial_key": key, **owner_tags()}
            if parent_id:
                all_tags[PARENT_TAG] = parent_id
            return self.client.create_run(self.experiment_id, run_name=name, tags=all_tags).info.run_id

        return claim(lambda: self.runs_with_key(key), create, self.client.delete_run, self.mark_stale,
                     rerun=rerun)

    def mark_stale(self, view: ClaimView, reason: str) -> None:
        """End a dead owner's RUNNING run FAILED, saying why."""
        self.client.set_tag(view.run_id, "outcome", "failed")
        self.client.set_tag(view.run_id, "outcome_detail", f"stale claim: {reason}")
        self.client.set_terminated(view.run_id, "FAILED")

    def reap_stale(self) -> list[tuple[str, str]]:
        """Mark every RUNNING run of this experiment whose owner is gone FAILED (trials and sweeps);
        returns (run name, reason) of each."""
        from pruning_bench.tracking.claims import ClaimView, stale_reason

        reaped = []
        for run in self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'",
                                           max_results=10_000):
            view = ClaimView.of(run)
            reason = stale_reason(view)
            if reason is not None:
                self.mark_stale(view, reason)
                reaped.append((view.tags.get("mlflow.runName", view.run_id), reason))
        return reaped

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
