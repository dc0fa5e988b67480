"""Side-by-side speed measurements behind the harness's design choices (run: python benchmarks/speed.py).

Each block times the harness's way and the alternative in the same process and prints the ratio:
1. mask enforcement: one fused ``_foreach_mul_`` pass (MaskSet.apply) vs a Python loop over tensors vs
   ``torch.nn.utils.prune`` (forward pre-hooks recomputing weight = orig * mask on every forward);
2. data: whole-batch tensor augmentation on the device (BatchStream) vs a per-sample DataLoader;
3. CPU threads for a small model: 1 thread vs torch's default.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from pruning_bench.core.masks import MaskSet
from pruning_bench.data import BatchStream
from pruning_bench.data.augment import random_crop_flip
from pruning_bench.models import build_model


def timed(fn: Callable[[], None], repeats: int) -> float:
    return compare([fn], repeats)[0]


def compare(fns: list[Callable[[], None]], repeats: int) -> list[float]:
    """Median seconds per call of each function, calls interleaved so that load hits all alike."""
    for fn in fns:
        fn()  # warm-up
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, samples):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [sorted(s)[len(s) // 2] for s in samples]


def mask_enforcement(repeats: int) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))

    def make() -> tuple[nn.Module, torch.optim.Optimizer, MaskSet]:
        model = build_model("resnet20", num_classes=10, input_shape=(3, 32, 32))
        masks = MaskSet(model)
        masks.prune_to_global({n: p.detach().abs() for n, p in masks.params.items()}, 0.9)
        return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), masks

    model, opt, masks = make()

    def fused_step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        masks.mask_grads()
        opt.step()
        masks.apply()

    model2, opt2, masks2 = make()
    pairs = [(masks2.params[n], masks2.masks[n]) for n in masks2.names]

    def loop_step() -> None:
        opt2.zero_grad()
        F.cross_entropy(model2(x), y).backward()
        with torch.no_grad():
            for p, m in pairs:
                p.grad.mul_(m)
        opt2.step()
        with torch.no_grad():
            for p, m in pairs:
                p.mul_(m)

    model3, _, masks3 = make()
    for name, mask in masks3.masks.items():
        module = model3.get_submodule(name.removesuffix(".weight"))
        prune.custom_from_mask(module, "weight", mask)
    opt3 = torch.optim.SGD(model3.parameters(), lr=0.01, momentum=0.9)

    def hook_step() -> None:
        opt3.zero_grad()
        F.cross_entropy(model3(x), y).backward()
        opt3.step()

    t_fused, t_loop, t_hook = compare([fused_step, loop_step, hook_step], repeats)
    print(f"mask enforcement, ResNet-20 train step (batch 64, 90% sparse): fused {t_fused * 1e3:.1f} ms, "
          f"per-tensor loop {t_loop * 1e3:.1f} ms ({t_loop / t_fused:.2f}x), "
          f"torch.nn.utils.prune hooks {t_hook * 1e3:.1f} ms ({t_hook / t_fused:.2f}x)")
    # the enforcement itself, without the train step around it
    t_apply, t_loop_apply = compare([masks.apply, lambda: [p.data.mul_(m) for p, m in pairs]], repeats * 20)
    print(f"  mask apply alone: fused {t_apply * 1e6:.0f} us vs loop {t_loop_apply * 1e6:.0f} us "
          f"({t_loop_apply / t_apply:.2f}x)")


def augmentation(repeats: int) -> None:
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    n = 2048
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,))
    stream = BatchStream(images, labels, batch_size=128, data_seed=0, augmentation="crop_flip",
                         mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), device=torch.device("cpu"))

    def whole_batch() -> None:
        for step in range(stream.steps_per_epoch):
            stream.batch(step)

    transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.25] * 3)])

    class PerSample(Dataset):
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int):
            return transform(images[i]), labels[i]

    loader = DataLoader(PerSample(), batch_size=128, shuffle=True, num_workers=0)

    def per_sample() -> None:
        for _ in loader:
            pass

    t_batch, t_sample = compare([whole_batch, per_sample], repeats)
    print(f"augmentation, one epoch of {n} CIFAR-sized images: whole-batch tensors {t_batch * 1e3:.0f} ms, "
          f"per-sample DataLoader {t_sample * 1e3:.0f} ms ({t_sample / t_batch:.1f}x slower)")
    _ = random_crop_flip  # the kernel BatchStream uses


def threads(repeats: int) -> None:
    model = build_model("mnist1d_cnn", num_classes=10, input_shape=(1, 40))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(128, 1, 40), torch.randint(0, 10, (128,))

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    default = torch.get_num_threads()
    results = {}
    for n in sorted({1, default}):
        torch.set_num_threads(n)
        results[n] = timed(step, repeats * 20)
    torch.set_num_threads(default)
    line = ", ".join(f"{n} thread(s) {t * 1e3:.2f} ms" for n, t in results.items())
    ratio = results[default] / results[1]
    print(f"MNIST-1D CNN train step (batch 128): {line} (default/1-thread = {ratio:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    mask_enforcement(args.repeats)
    augmentation(args.repeats)
    threads(args.repeats)


if __name__ == "__main__":
    main()
