"""The shared training loop's own overhead, side by side (run: python benchmarks/loop_overhead.py).

For one model, in one process, interleaved: ``ctx.train`` (the harness: budget charging, callbacks,
schedule, loss bookkeeping, checkpoint clock, progress) against a bare PyTorch loop doing the same
work on the same batch stream (forward, loss, backward, masked gradients, SGD step, masks re-applied,
learning rate set from the same schedule). Prints the median seconds per step of each and their
ratio (of the medians, and of the fastest runs, which a noisy neighbour disturbs least); the
target is at most 1.03. On the 2-core development VM repeated runs of this script moved either ratio
by up to +-0.1 with nothing else running: read several runs, and the profile (the harness's own
Python per step is about 0.1 ms).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from pruning_bench.core.budget import BudgetMeter
from pruning_bench.core.context import Context
from pruning_bench.core.recipe import Recipe
from pruning_bench.core.training import make_optimizer
from pruning_bench.data import DataBundle, load_dataset
from pruning_bench.models import build_model
from pruning_bench.plan.suite import load_suite


def random_images(n: int, num_classes: int = 10) -> DataBundle:
    """CIFAR-shaped uint8 images (the loop's speed does not depend on what they show)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return DataBundle(name="random", train_x=x, train_y=y, val_x=x[:64], val_y=y[:64], test_x=x[:64],
                      test_y=y[:64], num_classes=num_classes, input_shape=(3, 32, 32),
                      mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), augmentation="crop_flip")


def make_context(model_name: str, options: dict, data, recipe: Recipe, sparsity: float) -> Context:
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=data.num_classes, input_shape=data.input_shape, options=options)
    meter = BudgetMeter("native", 1e9, data.n_train)
    ctx = Context(model=model, data=data, recipe=recipe, meter=meter, target_sparsity=sparsity, params=None,
                  seed=0, device=torch.device("cpu"), progress=False)
    ctx.masks.prune_to_global({n: p.detach().abs() for n, p in ctx.masks.params.items()}, sparsity)
    return ctx


def harness(ctx: Context, steps: int) -> float:
    start = time.perf_counter()
    ctx.train(steps=steps)
    return (time.perf_counter() - start) / steps


def bare(ctx: Context, steps: int) -> float:
    """What any hand-written masked training loop does per step, on the harness's batch stream."""
    model, masks, stream = ctx.model, ctx.masks, ctx.trainer.stream()
    optimizer = make_optimizer(model, ctx.recipe)
    schedule = ctx.trainer.schedule(steps)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr(step)
        x, y = stream.batch(step)
        loss = F.cross_entropy(model(x), y, label_smoothing=ctx.recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        masks.mask_grads()
        optimizer.step()
        masks.apply()
    return (time.perf_counter() - start) / steps


def measure(label: str, ctx: Context, steps: int, repeats: int) -> None:
    harness(ctx, 10)
    bare(ctx, 10)  # warm-up
    h, b = [], []
    for i in range(repeats):  # interleaved, each going first half the time, so load hits both alike
        if i % 2:
            b.append(bare(ctx, steps))
        h.append(harness(ctx, steps))
        if not i % 2:
            b.append(bare(ctx, steps))
    mh, mb = statistics.median(h), statistics.median(b)
    print(f"{label:<36} harness {mh * 1e3:8.3f} ms/step   bare loop {mb * 1e3:8.3f} ms/step   "
          f"ratio {mh / mb:.3f} (medians), {min(h) / min(b):.3f} (fastest runs)  "
          f"[{steps} steps x {repeats}, {torch.get_num_threads()} threads]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resnet-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suite = load_suite("mnist1d")
    data = load_dataset("mnist1d", seed=0, val_fraction=suite.dataset.val_fraction)
    for options in ({}, suite.model.options):  # the builder's 25 channels (the paper's), the suite's 64
        ctx = make_context(suite.model.name, dict(options), data, suite.recipe, 0.9)
        measure(f"mnist1d CNN {ctx.masks.total()} weights 90%", ctx, args.steps, args.repeats)
    cifar = load_suite("cifar10")
    images = random_images(1024)
    ctx = make_context("resnet20", {}, images, cifar.recipe, 0.9)
    measure("CIFAR resnet20 90% (random images)", ctx, args.resnet_steps, args.repeats)


if __name__ == "__main__":
    main()
