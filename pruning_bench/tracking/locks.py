"""Concurrent writers of one embedded SQLite store: an exclusive lock around the store's creation, and an
``MlflowClient`` wrapper that retries while another process holds the database lock (several workers
writing one store)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_RETRY_SECONDS = 120.0  # how long a write waits for another process's SQLite lock


def is_lock_error(err: BaseException) -> bool:
    """SQLite's "database is locked" / "busy", however MLflow and SQLAlchemy wrap it."""
    text = str(err).lower()
    return "database is locked" in text or "database table is locked" in text or "sqlite_busy" in text


class RetryingClient:
    """An ``MlflowClient`` whose calls retry with backoff while another process holds the SQLite lock
    (several workers writing one embedded store); any other error passes through at once."""

    def __init__(self, client: Any, patience: float = LOCK_RETRY_SECONDS) -> None:
        self._client, self._patience = client, patience

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            delay, deadline = 0.05, time.monotonic() + self._patience
            while True:
                try:
                    return attr(*args, **kwargs)
                except Exception as err:
                    if not is_lock_error(err) or time.monotonic() > deadline:
                        raise
                    time.sleep(delay * random.uniform(0.5, 1.5))
                    delay = min(delay * 2, 2.0)
        return call


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock on a local SQLite store's creation (MLflow migrates a new database's schema on
    first open; two processes doing it at once fail); other stores need none."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
