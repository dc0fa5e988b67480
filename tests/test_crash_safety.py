"""Sweeps that survive kill -9 and each other: real `bench run` processes on one SQLite store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pruning_bench.tracking.claims import ClaimView, claim, process_alive, process_start, stale_reason

pytestmark = pytest.mark.slow  # real processes killed with -9

BENCH = [sys.executable, "-m", "pruning_bench"]


def bench_cmd(results: Path, *args: str) -> list[str]:
    return [*BENCH, "run", "--suite", "smoke", "--results-dir", str(results), "--no-progress", "--threads", "1",
            *args]


def finished_keys(db: Path) -> set[str]:
    """Read-only, without MLflow: the store is being written by the sweep under test."""
    from pruning_bench.execution.fastpath import store_state

    state = store_state(f"sqlite:///{db}", "smoke")
    return state["finished"] if state else set()


def all_runs(results: Path):
    import mlflow

    from pruning_bench.tracking.store import tracking_uri_scope

    with tracking_uri_scope(f"sqlite:///{results}/mlflow.db"):  # not left in the environment of later tests
        return mlflow.search_runs(experiment_names=["smoke"], output_format="pandas")


def test_kill_9_mid_trial_then_the_same_command_resumes_from_the_checkpoint(tmp_path):
    args = ("--methods", "dense", "--seeds", "0,1", "--sparsities", "0.5", "--epochs", "100",
            "--checkpoint-every", "0.2")
    killed = tmp_path / "killed"
    proc = subprocess.Popen(bench_cmd(killed, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    partial = None
    while time.time() < deadline and partial is None:  # the second trial is training and has checkpointed
        time.sleep(0.1)
        finished = killed / "mlflow.db"
        found = list((killed / "checkpoints").glob("*/partial.pt")) if (killed / "checkpoints").exists() else []
        if found and finished.exists() and len(finished_keys(finished)) == 1:
            partial = found[0]
    assert partial is not None, proc.communicate(timeout=5)[0] if proc.poll() is not None else "no checkpoint"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = all_runs(killed)
    assert (before["status"] == "RUNNING").sum() == 2  # the killed trial and its sweep, left RUNNING

    again = subprocess.run(bench_cmd(killed, *args), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Skipping 1 finished trials; running 1 of 2" in again.stdout
    assert again.stdout.count("Marked FAILED") == 2 and "no longer exists" in again.stdout
    runs = all_runs(killed)
    assert not (runs["status"] == "RUNNING").any()
    trials = runs[runs["tags.trial_key"].notna()]
    done = trials[trials["status"] == "FINISHED"]
    assert len(done) == 2 and done["tags.trial_key"].nunique() == 2  # none lost, none run twice
    resumed = done[done["metrics.resumed_calls"] > 0]
    assert len(resumed) == 1 and not list((killed / "checkpoints").glob("*/*"))

    clean = tmp_path / "clean"  # the killed trial (seed 1) uninterrupted
    uninterrupted = [a if a != "0,1" else "1" for a in args]  # seed 1 alone
    ref = subprocess.run(bench_cmd(clean, *uninterrupted), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    expected = all_runs(clean).set_index("tags.trial_key")
    row = resumed.iloc[0]
    assert row["tags.seed"] == "1" and row["tags.trial_key"] in expected.index
    for metric in ("test_acc", "test_loss", "val_acc", "sparsity", "epochs_charged"):  # as if never killed
        assert row[f"metrics.{metric}"] == expected.loc[row["tags.trial_key"], f"metrics.{metric}"], metric


def test_two_sweeps_of_one_plan_at_once_run_every_trial_exactly_once(tmp_path):
    args = ("--methods", "dense,snip,global_magnitude", "--seeds", "0,1", "--sparsities", "0.5", "--epochs", "3")
    env = {**os.environ, "PRUNING_BENCH_RUNTIME_DIR": str(tmp_path / "slots")}
    procs = [subprocess.Popen(bench_cmd(tmp_path, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    runs = all_runs(tmp_path)
    trials = runs[runs["tags.trial_key"].notna()]
    assert set(trials["status"]) == {"FINISHED"} and len(trials) == 6
    assert trials["tags.trial_key"].nunique() == 6  # six trials, each run once


# ---- the claim protocol, step by step -------------------------------------------------------------------
class Store:
    """An in-memory run store with the two reads and one write a claim makes."""

    def __init__(self) -> None:
        self.runs: dict[str, ClaimView] = {}
        self.hook = None  # runs between a claimant's write and its second read

    def find(self) -> list[ClaimView]:
        return list(self.runs.values())

    def create(self, tags: dict[str, str]) -> str:
        run_id = f"r{len(self.runs)}"
        self.runs[run_id] = ClaimView(run_id, "RUNNING", tags, int(time.time() * 1000))
        if self.hook:
            hook, self.hook = self.hook, None
            hook()
        return run_id

    def withdraw(self, run_id: str) -> None:
        del self.runs[run_id]

    def mark(self, view: ClaimView, reason: str) -> None:
        self.runs[view.run_id] = ClaimView(view.run_id, "FAILED", {**view.tags, "why": reason}, view.start_time_ms)


def me() -> dict[str, str]:
    import socket

    return {"claim_host": socket.gethostname(), "claim_pid": str(os.getpid()),
            "claim_pid_start": process_start(os.getpid()), "claim_heartbeat": f"{time.time():.3f}"}


def test_a_live_claim_makes_others_skip_and_a_finished_run_too():
    store = Store()
    first = claim(store.find, lambda: store.create(me()), store.withdraw, store.mark)
    assert first.run_id == "r0"
    second = claim(store.find, lambda: store.create(me()), store.withdraw, store.mark)
    assert second.run_id is None and second.reason.startswith("claimed")
    store.runs["r0"] = ClaimView("r0", "FINISHED", {}, 0)
    assert claim(store.find, lambda: store.create(me()), store.withdraw, store.mark).reason.startswith("finished")
    assert claim(store.find, lambda: store.create(me()), store.withdraw, store.mark, rerun=True).run_id


def test_of_two_claims_written_before_either_reads_neither_runs_twice():
    store = Store()
    rival: dict[str, str] = {}
    store.hook = lambda: rival.setdefault("id", store.create(me()))  # B writes between A's write and read
    first = claim(store.find, lambda: store.create(me()), store.withdraw, store.mark, attempts=1)
    assert first.run_id is None and "r0" not in store.runs  # A saw B and withdrew
    assert list(store.runs) == [rival["id"]]


def test_a_claim_of_a_dead_process_is_stale_at_once_and_an_old_heartbeat_after_the_timeout():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tags = {**me(), "claim_pid": str(dead.pid), "claim_pid_start": ""}
    assert "no longer exists" in stale_reason(ClaimView("x", "RUNNING", tags, 0))
    assert stale_reason(ClaimView("x", "RUNNING", me(), 0)) is None  # this process: alive
    old = {**me(), "claim_host": "elsewhere", "claim_heartbeat": f"{time.time() - 3600:.3f}"}
    assert "no heartbeat" in stale_reason(ClaimView("x", "RUNNING", old, 0))
    store = Store()
    store.runs["r9"] = ClaimView("r9", "RUNNING", tags, 0)
    won = claim(store.find, lambda: store.create(me()), store.withdraw, store.mark)
    assert won.run_id and store.runs["r9"].status == "FAILED"


def test_process_identity_survives_pid_reuse():
    assert process_alive(os.getpid(), process_start(os.getpid()))
    assert not process_alive(os.getpid(), "1")  # same pid, another start time: another process


@pytest.mark.parametrize("message", ["(sqlite3.OperationalError) database is locked", "SQLITE_BUSY"])
def test_store_writes_retry_while_another_process_holds_the_lock(message):
    from pruning_bench.tracking.locks import RetryingClient

    calls = {"n": 0}

    class Flaky:
        def set_tag(self, *args):
            calls["n"] += 1
            if calls["n"] < 3:
                raise RuntimeError(message)
            return "ok"

        def get(self):
            raise ValueError("no such run")

    client = RetryingClient(Flaky(), patience=5)
    assert client.set_tag("r", "k", "v") == "ok" and calls["n"] == 3
    with pytest.raises(ValueError):  # any other error at once
        client.get()
