"""Sweeps that stop when told: SIGTERM or SIGINT sent to the `bench run` process alone (what `timeout`,
systemd, SLURM and Kubernetes send) stops every worker at its next step with a checkpoint; nothing stays
RUNNING, no process of the sweep remains, and the same command finishes every trial exactly once, the
stopped ones resumed to the numbers of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_crash_safety import all_runs, bench_cmd

from pruning_bench.tracking.claims import process_alive

pytestmark = pytest.mark.slow  # real processes stopped by signals

ARGS = ("--methods", "dense", "--seeds", "0-3", "--sparsities", "0.5", "--epochs", "150",
        "--checkpoint-every", "0.2")
METRICS = ("test_acc", "test_loss", "val_acc", "epochs_charged")


def children(pid: int) -> set[int]:
    """Every descendant process of ``pid`` (Linux /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += list(kids - found)
            found |= kids
    return found


def wait_for_partials(results: Path, proc: subprocess.Popen, count: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended early: {proc.communicate()[0]}")
        if len(list(results.glob("checkpoints/*/partial.pt"))) >= count:
            return
        time.sleep(0.1)
    pytest.fail("no two trials checkpointed in time")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    results = tmp_path_factory.mktemp("clean")
    done = subprocess.run(bench_cmd(results, *ARGS, "--jobs", "2"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return all_runs(results).set_index("tags.trial_key")


def workers(family: set[int]) -> list[int]:
    """The pool's worker processes (not multiprocessing's resource tracker)."""
    out = []
    for pid in sorted(family):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "resource_tracker" not in cmdline:
            out.append(pid)
    return out


@pytest.mark.parametrize(("target", "sig", "executor"), [
    ("sweep", signal.SIGTERM, "processes"), ("sweep", signal.SIGINT, "processes"), ("worker", signal.SIGTERM, "processes"),
    ("sweep", signal.SIGTERM, "ray")], ids=["SIGTERM", "SIGINT", "worker", "ray"])
def test_a_signal_to_the_sweep_process_alone_stops_everything_and_the_rerun_resumes(tmp_path, target, sig,
                                                                                    executor, uninterrupted):
    results = tmp_path / "stopped"
    run = ("--executor", "ray", "--cpus-per-trial", "1") if executor == "ray" else ("--jobs", "2")
    proc = subprocess.Popen(bench_cmd(results, *ARGS, *run), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    wait_for_partials(results, proc, 2)  # both workers are mid-trial
    family = children(proc.pid)
    assert len(family) >= 2
    sent = time.time()
    mid_trial = {path.parent.name for path in results.glob("checkpoints/*/partial.pt")}
    os.kill(proc.pid if target == "sweep" else workers(family)[0], sig)  # one process alone, not its group
    output = proc.communicate(timeout=30)[0]
    while time.time() - sent < 30 and any(process_alive(p) for p in family):
        time.sleep(0.1)
    assert not [p for p in family if process_alive(p)], output  # no worker left behind
    assert proc.returncode == 130, output
    runs = all_runs(results)
    assert not (runs["status"] == "RUNNING").any(), runs[["status", "tags.mlflow.runName"]]
    killed = runs[(runs["status"] == "KILLED") & runs["tags.trial_key"].notna()]
    assert len(killed) >= 1
    assert (runs.loc[runs["tags.sweep"] == "1", "status"] == "KILLED").all()
    # saved as they stopped (one that had just begun, after another ended at the signal, may hold none)
    stopped_mid_trial = set(killed["tags.trial_key"]) & mid_trial
    assert stopped_mid_trial
    assert stopped_mid_trial <= {path.parent.name for path in results.glob("checkpoints/*/partial.pt")}

    again = subprocess.run(bench_cmd(results, *ARGS, "--jobs", "2"), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    runs = all_runs(results)
    done = runs[(runs["status"] == "FINISHED") & runs["tags.trial_key"].notna()]
    assert len(done) == 4 and done["tags.trial_key"].nunique() == 4  # each trial exactly once
    resumed = done[done["metrics.resumed_calls"] > 0]
    assert stopped_mid_trial <= set(resumed["tags.trial_key"])
    for _, row in done.iterrows():  # as if never stopped
        expected = uninterrupted.loc[row["tags.trial_key"]]
        for metric in METRICS:
            assert row[f"metrics.{metric}"] == expected[f"metrics.{metric}"], (metric, row["tags.seed"])


def test_a_second_signal_ends_everything_at_once_and_the_rerun_reaps_and_finishes(tmp_path, uninterrupted):
    results = tmp_path / "twice"
    proc = subprocess.Popen(bench_cmd(results, *ARGS, "--jobs", "2"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    wait_for_partials(results, proc, 2)
    family = children(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)  # while stopping: at once
    output = proc.communicate(timeout=30)[0]
    deadline = time.time() + 30
    while time.time() < deadline and any(process_alive(p) for p in family):
        time.sleep(0.1)
    assert not [p for p in family if process_alive(p)], output
    again = subprocess.run(bench_cmd(results, *ARGS, "--jobs", "2"), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    runs = all_runs(results)
    assert not (runs["status"] == "RUNNING").any()  # whatever the second signal left RUNNING was reaped
    done = runs[(runs["status"] == "FINISHED") & runs["tags.trial_key"].notna()]
    assert len(done) == 4 and done["tags.trial_key"].nunique() == 4
    for _, row in done.iterrows():
        assert row["metrics.test_acc"] == uninterrupted.loc[row["tags.trial_key"], "metrics.test_acc"]
