"""What a ``bench run`` costs besides training (run: python benchmarks/fixed_costs.py; nothing else
may run meanwhile).

1. A repeated command with nothing left to do: the remembered answer (``pruning_bench.execution.fastpath``)
   against the normal path (plan, MLflow, leaderboard), same command, same store.
2. One tiny trial on a new store: the process's wall-clock against the trial's own training time.
3. Many tiny trials in one process (workers are reused the same way): the wall-clock per trial
   against the training time per trial, i.e. the fixed cost each further trial pays.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bench(results: Path, *args: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "pruning_bench", "run", "--suite", "smoke", "--methods", "dense,snip",
           "--sparsities", "0.5", "--epochs", "2", "--threads", "1", "--no-progress",
           "--results-dir", str(results), *args]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - start, out


def train_seconds(out: str) -> list[float]:
    return [float(t) for t in re.findall(r"time=([\d.]+)s", out)]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        wall, out = bench(one, "--seeds", "0", "--methods", "dense")
        print(f"one trial on a new store: {wall:.1f} s wall, {sum(train_seconds(out)):.1f} s of it training")
        wall, out = bench(many, "--seeds", "0-15")
        trials = train_seconds(out)
        first, _ = bench(one, "--seeds", "0", "--methods", "dense")  # nothing to do: normal path, then remembered
        print(f"{len(trials)} trials in one process: {wall:.1f} s wall; {wall / len(trials):.2f} s per trial, "
              f"of which {sum(trials) / len(trials):.2f} s training")
        remembered = min(bench(one, "--seeds", "0", "--methods", "dense")[0] for _ in range(3))
        normal = []
        for _ in range(3):
            shutil.rmtree(one / ".answers", ignore_errors=True)
            normal.append(bench(one, "--seeds", "0", "--methods", "dense")[0])
        print(f"nothing left to do: {remembered:.2f} s remembered answer vs {min(normal):.2f} s normal path "
              f"(ratio {min(normal) / remembered:.0f}x; best of 3 each)")


if __name__ == "__main__":
    main()
