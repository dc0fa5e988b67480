"""Load figures: 1,000 tiny trials through one store (run: python benchmarks/load.py [--trials 1000]; nothing
else may run meanwhile; about 15 minutes on 2 cores).

1. One sweep of N smoke trials (dense, 1 epoch, seeds 0..N-1) with ``--jobs 2``.
2. Two sweeps of another N trials (the same plan, seeds N..2N-1), started at once on the same store, each
   with ``--jobs 2``: every trial must be claimed and recorded exactly once.

Prints each sweep's wall-clock, the per-trial overhead (wall-clock per trial, less its training time), and
the store's checks: FINISHED runs per trial key, RUNNING runs left, SQLite's integrity check.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep(results: Path, first: int, count: int) -> list[str]:
    return [sys.executable, "-m", "pruning_bench", "run", "--suite", "smoke", "--methods", "dense", "--epochs", "1",
            "--seeds", f"{first}-{first + count - 1}", "--jobs", "2", "--no-progress", "--results-dir", str(results)]


def check(db: Path, first: int, count: int) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute(
            "select t.value, r.status, m.value from runs r join tags t on t.run_uuid = r.run_uuid and t.key = "
            "'trial_key' join tags s on s.run_uuid = r.run_uuid and s.key = 'seed' left join latest_metrics m on "
            "m.run_uuid = r.run_uuid and m.key = 'train_seconds' where r.lifecycle_stage = 'active' and "
            "cast(s.value as integer) between ? and ?",
            (first, first + count - 1)).fetchall()
        running = con.execute("select count(*) from runs where status = 'RUNNING' and lifecycle_stage = 'active'"
                              ).fetchone()[0]
        withdrawn = con.execute("select count(*) from runs where lifecycle_stage = 'deleted'").fetchone()[0]
        integrity = con.execute("pragma integrity_check").fetchone()[0]
    finished: dict[str, int] = {}
    train = 0.0
    for key, status, seconds in rows:
        if status == "FINISHED":
            finished[key] = finished.get(key, 0) + 1
            train += seconds or 0.0
    once = sum(1 for n in finished.values() if n == 1)
    return (f"{len(finished)} trial keys FINISHED ({once} exactly once, {len(finished) - once} more than once), "
            f"{len(rows)} trial runs in all, {running} RUNNING, {withdrawn} claims withdrawn (deleted runs of the "
            f"claim protocol), integrity {integrity}; training itself "
            f"{train:.1f} s in all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    n = parser.parse_args().trials
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        start = time.perf_counter()
        one = subprocess.run(sweep(results, 0, n), capture_output=True, text=True)
        took = time.perf_counter() - start
        assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]
        print(f"one sweep, {n} trials, --jobs 2: {took:.0f} s, {took / n * 2:.2f} s per trial per worker")
        print("  " + check(results / "mlflow.db", 0, n))
        start = time.perf_counter()
        procs = [subprocess.Popen(sweep(results, n, n), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate() for p in procs]
        took = time.perf_counter() - start
        assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
        print(f"two sweeps of the same {n} new trials at once, --jobs 2 each: {took:.0f} s, "
              f"{took / n * 2:.2f} s per trial per core")
        print("  " + check(results / "mlflow.db", n, n))


if __name__ == "__main__":
    main()
