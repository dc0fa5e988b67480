"""The measurements every trial logs, taken the same way for every method: accuracy of the final model,
sparsity counted from the masks (after checking every masked weight is exactly zero), FLOPs, latency,
the budget given and spent, peak memory, and the per-layer sparsity table.
"""

from __future__ import annotations

import csv
import resource
import sys
from pathlib import Path

import torch

from pruning_bench.core.budget import BudgetMeter
from pruning_bench.core.context import Context
from pruning_bench.core.latency import BATCH_SIZE as LATENCY_BATCH_SIZE
from pruning_bench.core.latency import measure_latency, semi_structured_latency


class MaskLeak(RuntimeError):
    """A method left a non-zero value in a pruned weight: its sparsity would be a lie."""


def measure(ctx: Context, *, denominator: int, flops_dense: float) -> dict[str, float]:
    """The measurements every trial logs, taken the same way for every method."""
    leaked = ctx.masks.leaked()  # before anything re-applies the masks: a leak must fail the trial
    if leaked:
        raise MaskLeak(f"masked weights are not zero in: {', '.join(leaked)}")
    test = ctx.evaluate("test")
    val = ctx.evaluate("val")
    nonzero = ctx.masks.nonzero()
    metrics = {
        "test_acc": test.acc, "test_loss": test.loss, "val_acc": val.acc, "val_loss": val.loss,
        "sparsity": 1.0 - nonzero / denominator, "nonzero_params": nonzero, "total_params": denominator,
        "flops_dense": flops_dense, "flops_effective": ctx.effective_flops(),
        "train_flops": ctx.budget.flops, "epochs_charged": ctx.budget.epochs_charged,
        "empty_layers": len(ctx.masks.empty_layers()), **budget_metrics(ctx.budget),
    }
    if test.top5 is not None:
        metrics["test_top5"] = test.top5
    if test.ppl is not None and val.ppl is not None:  # language models: per-token perplexity
        metrics |= {"test_ppl": test.ppl, "val_ppl": val.ppl}
    if ctx.data.tokens:  # a sample is one sequence: FLOPs per token at the suite's sequence length too
        length = ctx.data.input_shape[0]
        metrics |= {"flops_per_token_dense": flops_dense / length,
                    "flops_per_token_effective": metrics["flops_effective"] / length}
    # Masked-dense model for unstructured methods, the shrunk model for structured ones (docs/methods.md pitfall 10).
    metrics["latency_ms"] = measure_latency(ctx.model, ctx.data.input_shape, ctx.device, dtype=ctx.data.input_dtype)
    metrics["latency_batch_size"] = LATENCY_BATCH_SIZE
    return metrics


def semi_structured_measurement(ctx: Context) -> tuple[dict[str, float], str]:
    """N:M methods: the latency with sparse tensor-core kernels where the device has them, else a note."""
    ms, note = semi_structured_latency(ctx.model, ctx.data.input_shape, ctx.device)
    return ({"latency_semi_structured_ms": ms} if ms is not None else {}), note


def budget_metrics(meter: BudgetMeter) -> dict[str, float]:
    """What the trial was given and what it spent, in the budget's unit and in epochs."""
    metrics = {"budget_epochs": meter.budget_epochs, "budget_limit": meter.limit, "budget_used": meter.used,
               "stopped_at_limit": float(meter.stops > 0)}
    if meter.enforced:
        metrics["budget_unspent"] = max(0.0, meter.remaining)
        metrics["budget_unspent_fraction"] = max(0.0, meter.remaining) / meter.limit if meter.limit else 0.0
    for label, charge in meter.charges.items():  # e.g. charged_epochs.bn-recalibration
        if label not in ("train",) and not label.startswith("particle-"):
            metrics[f"charged_epochs.{label}"] = charge.samples / meter.samples_per_epoch
    return metrics


def write_layer_table(ctx: Context, path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["layer", "shape", "params", "nonzero", "density"])
        for stat in ctx.masks.layer_stats():
            writer.writerow([stat.layer, "x".join(map(str, stat.shape)), stat.params, stat.nonzero,
                             f"{stat.density:.6f}"])


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory of the trial on CUDA; on the CPU the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20
