"""Cores divided among the processes training on one machine."""

from __future__ import annotations

import subprocess
import sys

from pruning_bench.execution import cores


def test_threads_are_the_cores_divided_among_training_processes(monkeypatch):
    monkeypatch.setattr(cores, "available_cores", lambda: 8)
    assert cores.threads_for(None, None, 1) == 8
    assert cores.threads_for(None, None, 3) == 2
    assert cores.threads_for(None, None, 16) == 1            # never 0
    assert cores.threads_for(None, 2, 1) == 2                # a --jobs / Ray share caps it
    assert cores.threads_for(5, 2, 4) == 5                   # --threads wins


def test_the_registry_counts_live_processes_and_drops_dead_ones(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"{dead.pid}-").touch()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / f"{live.pid}-{cores.process_start(live.pid)}").touch()
        assert cores.training_here(tmp_path) == 1
        assert not (tmp_path / f"{dead.pid}-").exists()
    finally:
        live.kill()
        live.wait()
    assert cores.training_here(tmp_path) == 0
