"""Which lever lets the default suite resolve a one-point difference: a larger test split, more seeds, or
tests paired by seed (run: python benchmarks/statistics_levers.py [--seeds 6] [--sparsity 0.9]).

Trains dense, random, global magnitude, SNIP and RigL on the default suite's data and model (40 epochs,
one process), evaluates each final model on the package's 1,000 MNIST-1D test signals and on 20,000 more
from the same templates, and prints per method the mean and sd over seeds on each split, the pooled sd,
the mean correlation of two methods' accuracies at one seed, and the difference a Welch test (and a paired
t-test) could resolve with 3 to 10 seeds. docs/statistics.md quotes one run (6 seeds, 90%: about 4 min).
"""

from __future__ import annotations

import argparse
import itertools
import math

import numpy as np
import torch
from scipy import stats

from pruning_bench.core.budget import BudgetMeter
from pruning_bench.core.context import Context
from pruning_bench.data import load_dataset
from pruning_bench.execution.runner import seed_everything
from pruning_bench.models import build_model
from pruning_bench.plan.registry import default_registry
from pruning_bench.plan.suite import load_suite
from pruning_bench.report.stats import resolvable_difference

METHODS = ("dense", "random", "global_magnitude", "snip", "rigl")
EXTRA = 20_000


def correct_per_signal(name: str, seed: int, sparsity: float) -> np.ndarray:
    """0/1 per test signal (1,000 original, then EXTRA more) for one trial of ``name``."""
    suite = load_suite("mnist1d")
    cls = default_registry(()).get(name)
    params = cls.parse_params(suite.method_params.get(name, {}))
    seed_everything(seed)
    data = load_dataset("mnist1d", seed=seed, val_fraction=suite.dataset.val_fraction, options={"extra_test": EXTRA})
    model = build_model("mnist1d_cnn", num_classes=data.num_classes, input_shape=data.input_shape,
                        options=suite.model.options)
    ctx = Context(model=model, data=data, recipe=suite.recipe, meter=BudgetMeter("equal", suite.budget.epochs, data.n_train),
                  target_sparsity=sparsity if cls.prunes else 0.0, params=params, seed=seed,
                  device=torch.device("cpu"), progress=False, min_round_epochs=suite.budget.min_round)
    cls(params).run(ctx)
    ctx.model.eval()
    with torch.no_grad():
        predicted = ctx.model(data.test_x).argmax(1)  # MNIST-1D is already standardised (mean 0, std 1)
    return (predicted == data.test_y).numpy().astype(float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--sparsity", type=float, default=0.9)
    args = parser.parse_args()
    torch.set_num_threads(2)
    acc = {(m, s): correct_per_signal(m, s, args.sparsity) for s in range(args.seeds) for m in METHODS}
    splits = {"1,000": slice(0, 1000), f"{EXTRA:,} more": slice(1000, None)}
    for label, part in splits.items():
        table = {m: np.array([100 * acc[(m, s)][part].mean() for s in range(args.seeds)]) for m in METHODS}
        print(f"\n{label} test signals")
        for m, values in table.items():
            print(f"  {m:<18} {values.mean():6.2f} ± {values.std(ddof=1):.2f}")
        pooled = math.sqrt(np.mean([v.var(ddof=1) for v in table.values()]))
        pairs = list(itertools.combinations(METHODS, 2))
        paired_sd = math.sqrt(np.mean([np.var(table[a] - table[b], ddof=1) for a, b in pairs]))
        r = np.mean([np.corrcoef(table[a], table[b])[0, 1] for a, b in pairs])
        print(f"  pooled sd {pooled:.2f}; paired-difference sd {paired_sd:.2f} (independent: "
              f"{pooled * math.sqrt(2):.2f}); mean correlation at one seed {r:+.2f}")
        for n in (3, 4, 5, 6, 8, 10):
            paired = stats.t.ppf(0.975, n - 1) * paired_sd / math.sqrt(n)
            print(f"  {n:>2} seeds: resolvable Welch {resolvable_difference(pooled, n):.2f}, paired {paired:.2f}")


if __name__ == "__main__":
    main()
