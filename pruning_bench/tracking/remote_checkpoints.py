"""Checkpoints that follow a trial to another machine.

With a tracking server (an ``http(s)://`` tracking URI, as with ``bench server``) every checkpoint file a
trial writes (:mod:`pruning_bench.core.resume`) is also uploaded, right after the local write, as an artifact of
the trial's run under ``checkpoints/``; the server stores it with the run's other artifacts. A trial that
starts with no local checkpoints (another machine, another ``--results-dir``) first downloads those of
the latest interrupted run of its key, so it resumes where that run stopped. With a local store the
files stay under ``--results-dir`` and nothing is uploaded. The finished trial's checkpoint artifacts are
deleted with its local ones (where the artifact store allows it).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ARTIFACT_DIR = "checkpoints"


class RemoteCheckpoints:
    """Mirrors one trial's checkpoint directory into its run's artifacts on a tracking server."""

    def __init__(self, client: Any, tracking_uri: str, experiment_id: str, run_id: str, directory: Path) -> None:
        self.client, self.uri, self.run_id, self.directory = client, tracking_uri, run_id, directory
        self.experiment_id = experiment_id
        self.uploads, self.seconds, self._warned = 0, 0.0, False

    def upload(self, path: Path) -> None:
        """Upload one checkpoint file just written locally (a failure is one warning; training goes on)."""
        relative = path.relative_to(self.directory).parent
        where = ARTIFACT_DIR if str(relative) == "." else f"{ARTIFACT_DIR}/{relative.as_posix()}"
        start = time.perf_counter()
        try:
            self.client.log_artifact(self.run_id, str(path), artifact_path=where)
        except Exception as err:
            if not self._warned:
                print(f"warning: could not upload checkpoint {path.name} to {self.uri} ({type(err).__name__}: "
                      f"{str(err)[:120]}); it is kept locally only", file=sys.stderr)
                self._warned = True
            return
        self.uploads += 1
        self.seconds += time.perf_counter() - start

    def fetch(self, key: str) -> str | None:
        """If the local directory holds no checkpoint, download those of the latest interrupted (KILLED or
        FAILED) run of trial ``key`` that has any; returns that run's id (None when nothing was fetched)."""
        if self.directory.is_dir() and any(self.directory.rglob("*.pt")):
            return None
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.trial_key = '{key}' and attributes.status != 'RUNNING' and attributes.status != 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=20)
        for run in runs:
            if not self.client.list_artifacts(run.info.run_id, ARTIFACT_DIR):
                continue
            with tempfile.TemporaryDirectory() as tmp:
                got = Path(self.client.download_artifacts(run.info.run_id, ARTIFACT_DIR, tmp))
                self.directory.mkdir(parents=True, exist_ok=True)
                for item in got.iterdir():
                    target = self.directory / item.name
                    if target.is_dir():
                        shutil.rmtree(target)
                    shutil.move(str(item), target)
            return run.info.run_id
        return None

    def discard(self, run_id: str | None = None) -> None:
        """Delete the checkpoint artifacts of ``run_id`` (default: this trial's run) once it finished;
        best effort (not every artifact store deletes)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        from pruning_bench.tracking.store import tracking_uri_scope

        try:
            with tracking_uri_scope(self.uri):
                uri = self.client.get_run(run_id or self.run_id).info.artifact_uri
                get_artifact_repository(uri).delete_artifacts(ARTIFACT_DIR)
        except Exception:  # noqa: BLE001 - a leftover checkpoint costs storage, never a result
            pass


def remote_checkpoints(tracker: Any, run_id: str, directory: Path) -> RemoteCheckpoints | None:
    """The mirror for a trial's checkpoints when its store is a tracking server; None for a local store."""
    from pruning_bench.tracking.store import is_local_uri

    if is_local_uri(tracker.uri):
        return None
    return RemoteCheckpoints(tracker.client, tracker.uri, tracker.experiment_id, run_id, directory)
