"""Measured inference latency of a model: the wall-clock side of structured vs unstructured pruning.

Masked (unstructured) models run dense kernels, so their latency equals the dense model's; only a
physically smaller network (structured pruning) is faster (docs/methods.md, pitfall 10). One protocol for every
trial: eval mode, no autograd, a fixed batch of zeros, ``warmup`` untimed forward passes, then the median
of ``repeats`` timed ones. CUDA: CUDA events around each pass; CPU: ``time.perf_counter``.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from pruning_bench.core.training import uses_channels_last

BATCH_SIZE = 64
WARMUP = 3
REPEATS = 10


@torch.inference_mode()
def measure_latency(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str, *,
                    batch_size: int = BATCH_SIZE, warmup: int = WARMUP, repeats: int = REPEATS,
                    dtype: torch.dtype = torch.float32) -> float:
    """Median milliseconds of one forward pass of a ``batch_size`` batch on ``device``."""
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError("batch_size and repeats must be >= 1, warmup >= 0")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    x = torch.zeros((batch_size, *input_shape), device=device, dtype=dtype)
    if uses_channels_last(device, tuple(input_shape)):
        x = x.to(memory_format=torch.channels_last)  # as the training loop and evaluation use
    try:
        for _ in range(warmup):
            model(x)
        times = [_time_cuda(model, x) if device.type == "cuda" else _time_cpu(model, x) for _ in range(repeats)]
    finally:
        model.train(was_training)
    return statistics.median(times)


def _time_cpu(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return (time.perf_counter() - start) * 1e3


def _time_cuda(model: nn.Module, x: torch.Tensor) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    model(x)
    end.record()
    torch.cuda.synchronize(x.device)
    return start.elapsed_time(end)


def semi_structured_latency(model: nn.Module, input_shape: tuple[int, ...],
                            device: torch.device) -> tuple[float | None, str]:
    """Latency of a float16 copy whose 2:4 linear weights are ``torch.sparse`` semi-structured tensors
    (sparse tensor-core kernels), or (None, why it cannot be measured here). torch.sparse accelerates
    linear layers only, with row and column counts its kernels accept; everything else stays dense."""
    if device.type != "cuda":
        return None, (f"semi-structured (2:4) kernels need a CUDA GPU; on {device.type} latency_ms is the "
                      "masked dense model's")
    if torch.cuda.get_device_capability(device) < (8, 0):
        return None, f"semi-structured kernels need compute capability 8.0+, {torch.cuda.get_device_name(device)} has less"
    try:
        from torch.sparse import to_sparse_semi_structured

        sparse = copy.deepcopy(model).half().eval()
        converted = 0
        for module in sparse.modules():
            rows, cols = (module.weight.shape if isinstance(module, nn.Linear) else (0, 0))
            if rows and rows % 32 == 0 and cols % 64 == 0:
                module.weight = nn.Parameter(to_sparse_semi_structured(module.weight.detach()), requires_grad=False)
                converted += 1
        if not converted:
            return None, ("no linear layer has the shapes semi-structured kernels accept (rows % 32, columns % 64);"
                          " convolutions are not accelerated by torch.sparse")
        return measure_latency(sparse, input_shape, device, dtype=torch.float16), f"{converted} linear layer(s) sparse"
    except (RuntimeError, ValueError, TypeError) as err:
        return None, f"semi-structured conversion failed: {type(err).__name__}: {str(err).splitlines()[0]}"
