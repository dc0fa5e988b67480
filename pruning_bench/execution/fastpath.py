"""A ``bench run`` with nothing left to do, answered in a fraction of a second.

Building the plan needs the method classes (their parameter defaults are part of every trial key), and
those import torch; asking MLflow which keys are finished imports MLflow: about 5 s together on a
2-core machine, paid by every repeated command and every resumed sweep. So the first time a command
has nothing left to run, its answer is remembered in the results directory: the plan's trial keys and
the text it printed, under a fingerprint of everything that decides the plan (the command's options,
the suite and plugin files' contents, the harness's files and version, the installed method, model
and data-set plugins).

The next identical command reads the local SQLite store with :mod:`sqlite3` (read-only, no MLflow):
when every key still has a FINISHED run, nothing is RUNNING, and the experiment's runs are exactly as
they were when the answer was remembered, it prints the remembered answer. Anything else (another
store kind, a changed file, a new run, an unreadable schema) takes the normal path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pruning_bench

CACHE_DIR = ".answers"
#: ``bench run`` options that change how trials run, not which trials there are
HOW_NOT_WHAT = ("jobs", "threads", "executor", "ray_address", "cpus_per_trial", "gpus_per_trial",
                "checkpoint_every", "no_progress", "save_model", "device")


def harness_roots() -> list[Path]:
    """The folders of the harness's own code: the package, the built-in methods and suites."""
    roots = [Path(pruning_bench.__file__).parent]
    for sub in ("pruning_bench.methods", "pruning_bench.suites"):
        spec = importlib.util.find_spec(sub)
        roots += [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    return roots


def harness_files() -> list[Path]:
    return sorted(p for root in harness_roots() for p in root.rglob("*") if p.suffix in (".py", ".toml"))


def _content(path: str | Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "missing"


def fingerprint(params: Mapping[str, Any], suite_file: str | None) -> str:
    """What decides a ``bench run``'s plan and store, as one hash."""
    h = hashlib.sha256()
    what = {k: v for k, v in params.items() if k not in HOW_NOT_WHAT}
    h.update(json.dumps(what, sort_keys=True, default=str).encode())
    h.update(f"{pruning_bench.__version__} {pruning_bench.RESULT_VERSION} "
             f"{os.environ.get('MLFLOW_TRACKING_URI', '')} {os.getcwd()}".encode())
    for path in harness_files():
        stat = path.stat()
        h.update(f"{path} {stat.st_mtime_ns} {stat.st_size}".encode())
    if suite_file:
        h.update(_content(suite_file).encode())
    for plugin in params.get("plugins") or ():
        h.update(_content(plugin).encode())
    for group in ("pruning_bench.methods", "pruning_bench.models", "pruning_bench.datasets"):
        for ep in entry_points(group=group):
            h.update(f"{group}:{ep.name}={ep.value} {ep.dist.version if ep.dist else ''}".encode())
    return h.hexdigest()[:32]


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def store_state(uri: str, experiment: str) -> dict[str, Any] | None:
    """The experiment's finished trial keys, RUNNING count and a summary that changes with any run;
    None when the store is not a local SQLite file or cannot be read this way."""
    db = _sqlite_path(uri)
    if db is None or not db.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT experiment_id FROM experiments WHERE name = ? AND "
                              "lifecycle_stage = 'active'", (experiment,)).fetchone()
            if row is None:
                return None
            finished = {v for (v,) in con.execute(
                "SELECT DISTINCT t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE r.experiment_id = ? AND r.status = 'FINISHED' AND r.lifecycle_stage = 'active' "
                "AND t.key = 'trial_key'", row)}
            running, count, started, ended = con.execute(
                "SELECT SUM(status = 'RUNNING'), COUNT(*), MAX(start_time), MAX(end_time) FROM runs "
                "WHERE experiment_id = ?", row).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return {"finished": finished, "running": int(running or 0), "summary": [count, started, ended]}


def _answer_file(results_dir: Path, key: str) -> Path:
    return results_dir / CACHE_DIR / f"{key}.json"


def remembered_answer(results_dir: Path, key: str) -> str | None:
    """The remembered output of this exact command, if it still holds; else None."""
    path = _answer_file(results_dir, key)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    state = store_state(saved["uri"], saved["experiment"])
    if state is None or state["running"] or state["summary"] != saved["summary"] or \
            not set(saved["keys"]) <= state["finished"]:
        return None
    return saved["text"]


def remember_answer(results_dir: Path, key: str, *, uri: str, experiment: str, keys: Sequence[str],
                    text: str) -> None:
    """Remember a nothing-to-do answer (only for a local SQLite store whose runs all finished)."""
    state = store_state(uri, experiment)
    if state is None or state["running"] or not set(keys) <= state["finished"]:
        return
    path = _answer_file(results_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"uri": uri, "experiment": experiment, "keys": list(keys),
                               "summary": state["summary"], "text": text}))
    os.replace(tmp, path)
