"""Two ``bench run`` processes on one machine: torch's thread default against the harness's
(run: python benchmarks/concurrent_runs.py; nothing else may run meanwhile).

One mnist1d SNIP trial per process, each process with its own store: first alone (default threads),
then two started together with ``--threads <all cores>`` (what every process took before the harness
divided the cores), then two started together with the default (the cores divided among the processes
training here). Prints each trial's training time (the ``time=`` of its summary line) and the
processes' wall-clock.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pruning_bench.execution.cores import available_cores


def start(results: Path, extra: list[str], epochs: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pruning_bench", "run", "--suite", "mnist1d", "--methods", "snip",
           "--sparsities", "0.8", "--seeds", "0", "--budgets", "1", "--epochs", epochs, "--no-progress",
           "--results-dir", str(results), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(procs: list[subprocess.Popen], started: float) -> str:
    times = []
    for proc in procs:
        out = proc.communicate()[0]
        found = re.search(r"time=([\d.]+)s", out)
        if proc.returncode or not found:
            raise SystemExit(f"bench run failed:\n{out}")
        times.append(float(found.group(1)))
    wall = time.perf_counter() - started
    return f"trial time {', '.join(f'{t:.1f} s' for t in times)}; wall {wall:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", default="10")
    args = parser.parse_args()
    cores = available_cores()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PRUNING_BENCH_RUNTIME_DIR"] = str(Path(tmp) / "training")
        for case, (label, extra, n) in enumerate((("alone, default threads", [], 1),
                                (f"two at once, --threads {cores} each (torch's default)", ["--threads", str(cores)], 2),
                                ("two at once, default (cores divided)", [], 2))):
            started = time.perf_counter()
            procs = [start(Path(tmp) / f"case{case}-{k}", extra, args.epochs) for k in range(n)]
            print(f"{label:<48} {finish(procs, started)}", flush=True)


if __name__ == "__main__":
    main()
