"""What a checkpoint costs per save, on disk and uploaded to a tracking server (run: python
benchmarks/checkpoint_upload.py; starts its own `bench server` on a free port; nothing else may run).

For the default suite's 64-channel MNIST-1D CNN and for CIFAR ResNet-20, a checkpoint as the training loop
writes it (model, masks, optimizer state) is saved atomically on disk, then uploaded to a local `bench
server` as a trial's artifact (pruning_bench.tracking.remote_checkpoints), 20 times each; prints the median time per
save and its share of the default 300 s between mid-call checkpoints.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from pruning_bench.core.masks import MaskSet
from pruning_bench.core.recipe import Recipe
from pruning_bench.core.resume import atomic_save
from pruning_bench.core.training import make_optimizer
from pruning_bench.models import build_model
from pruning_bench.tracking.remote_checkpoints import RemoteCheckpoints

REPEATS = 20


def payload(name: str, shape: tuple[int, ...], classes: int, options: dict) -> dict:
    model = build_model(name, num_classes=classes, input_shape=shape, options=options)
    optimizer = make_optimizer(model, Recipe())
    model(torch.randn(2, *shape)).sum().backward()
    optimizer.step()  # momentum buffers exist, as in a real checkpoint
    return {"model": model.state_dict(), "masks": MaskSet(model).masks, "optimizer": optimizer.state_dict()}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        root = Path(tmp)
        server = subprocess.Popen([sys.executable, "-m", "pruning_bench", "server", "--port", str(port),
                                   "--workers", "1", "--results-dir", str(root / "server")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(240):
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.5)
            from mlflow.tracking import MlflowClient

            client = MlflowClient(url)
            run = client.create_run(client.create_experiment("checkpoint_upload"))
            for label, args in (("mnist1d_cnn, 64 channels", ("mnist1d_cnn", (1, 40), 10, {"channels": 64})),
                                ("CIFAR ResNet-20", ("resnet20", (3, 32, 32), 10, {}))):
                state = payload(*args)
                directory = root / "ckpt"
                path = directory / "partial.pt"
                disk, upload = [], []
                mirror = RemoteCheckpoints(client, url, run.info.experiment_id, run.info.run_id, directory)
                for _ in range(REPEATS):
                    start = time.perf_counter()
                    atomic_save(state, path)
                    disk.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    mirror.upload(path)
                    upload.append(time.perf_counter() - start)
                size = path.stat().st_size / 2**20
                d, u = statistics.median(disk), statistics.median(upload)
                print(f"{label}: {size:.2f} MB per checkpoint; on disk {1000 * d:.1f} ms, uploaded {1000 * u:.1f} ms "
                      f"more; every 300 s that is {100 * (d + u) / 300:.4f}% of training time")
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
