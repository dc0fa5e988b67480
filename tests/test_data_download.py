"""CIFAR arrives by itself: a local HTTP server serves tiny archives in the real "python version" layout;
download, checksum, all-or-nothing extraction, the data cache, and a real `bench run` on the result."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import shutil
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pruning_bench.cli import main
from pruning_bench.data import cifar, load_dataset
from pruning_bench.data.download import cache_root, data_home
from pruning_bench.data.sources import clear_cache
from pruning_bench.errors import BenchError

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]

SUITE = """
methods = ["dense", "snip"]
sparsities = [0.5]
seeds = [0]
[dataset]
name = "cifar10"
val_fraction = 0.1
[model]
name = "digits_cnn"
[recipe]
lr = 0.05
batch_size = 8
eval_batch_size = 64
[budget]
epochs = 1
[method_params.snip]
score_batch_size = 8
"""


def _batch(rng: np.random.Generator, n: int, label_key: str, classes: int) -> bytes:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return pickle.dumps({b"data": data, label_key.encode(): rng.integers(0, classes, n).tolist(),
                         b"batch_label": b"tiny"})


def _tar(folder: str, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def cifar10_tarball(files: list[str] = CIFAR10_FILES) -> bytes:
    """cifar-10-batches-py/: five train batches of 4 images, a test batch of 8, batches.meta."""
    rng = np.random.default_rng(0)
    members = {f"data_batch_{i}": _batch(rng, 4, "labels", 10) for i in range(1, 6)}
    members["test_batch"] = _batch(rng, 8, "labels", 10)
    members["batches.meta"] = pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]})
    return _tar("cifar-10-batches-py", {name: members[name] for name in files})


def cifar100_tarball() -> bytes:
    rng = np.random.default_rng(1)
    return _tar("cifar-100-python", {"train": _batch(rng, 6, "fine_labels", 100),
                                     "test": _batch(rng, 3, "fine_labels", 100),
                                     "meta": pickle.dumps({b"fine_label_names": [b"x"] * 100})})


@dataclass
class Server:
    root: Path
    url: str
    requests: list[str] = field(default_factory=list)

    def publish(self, name: str, payload: bytes) -> tuple[str, str]:
        """Serve ``payload`` as ``name``; returns its URL and MD5."""
        (self.root / name).write_bytes(payload)
        return f"{self.url}/{name}", hashlib.md5(payload).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A real HTTP server on 127.0.0.1 serving a temporary directory, counting the requests it answers."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Server(root, f"http://127.0.0.1:{httpd.server_address[1]}", requests)
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$PRUNING_BENCH_DATA -> a fresh, not yet existing directory; no proxy between us and the server, and
    the results store under --results-dir."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    for var in ("URL", "MD5"):
        monkeypatch.delenv(f"PRUNING_BENCH_CIFAR10_{var}", raising=False)
        monkeypatch.delenv(f"PRUNING_BENCH_CIFAR100_{var}", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("PRUNING_BENCH_DATA", str(tmp_path / "cache"))
    clear_cache()
    yield tmp_path / "cache"
    clear_cache()


def serve_cifar10(server: Server, monkeypatch: pytest.MonkeyPatch, payload: bytes | None = None,
                  md5: str | None = None) -> str:
    url, real_md5 = server.publish("cifar-10-python.tar.gz", payload or cifar10_tarball())
    monkeypatch.setenv("PRUNING_BENCH_CIFAR10_URL", url)
    monkeypatch.setenv("PRUNING_BENCH_CIFAR10_MD5", md5 or real_md5)
    return url


def run_suite(tmp_path: Path, *extra: str):
    suite = tmp_path / "tiny_cifar10.toml"
    suite.write_text(SUITE)
    args = ["run", "--suite", str(suite), "--epochs", "1", "--threads", "1", "--no-progress",
            "--results-dir", str(tmp_path / "results"), *extra]
    return CliRunner().invoke(main, args)


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, output
    return lines[0]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_bench_run_downloads_into_the_cache_once_and_trains(tmp_path, cache, server, monkeypatch):
    serve_cifar10(server, monkeypatch)
    first = run_suite(tmp_path)  # no --data-dir, no --download
    assert first.exit_code == 0, first.output
    assert "Ran 2 trials" in first.output and server.requests == ["/cifar-10-python.tar.gz"]
    assert leftovers(cache) == ["cifar-10-batches-py"]  # no temporary directory left beside it
    assert leftovers(cache / "cifar-10-batches-py") == sorted(CIFAR10_FILES)
    clear_cache()  # as a new process would: the files come from the cache on disk
    second = run_suite(tmp_path, "--rerun")  # the trials again, so the data is loaded again
    assert second.exit_code == 0, second.output
    assert "Ran 2 trials" in second.output and len(server.requests) == 1  # not downloaded again


def test_no_progress_hides_the_download_bar_too(tmp_path, cache, server, monkeypatch):
    import tqdm.auto

    serve_cifar10(server, monkeypatch)
    shown: list[object] = []
    real = tqdm.auto.tqdm

    def spy(*args, **kwargs):
        if kwargs.get("unit") == "B":  # the download bar
            shown.append(kwargs.get("disable"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", spy)
    assert run_suite(tmp_path).exit_code == 0  # run_suite passes --no-progress
    assert shown == [True]  # off, even on a terminal
    assert "PRUNING_BENCH_NO_PROGRESS" not in os.environ  # for that command only
    clear_cache()
    for path in cache.iterdir():
        shutil.rmtree(path)
    suite = tmp_path / "tiny_cifar10.toml"
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--threads", "1", "--rerun",
                                       "--results-dir", str(tmp_path / "results")])
    assert result.exit_code == 0 and shown == [True, None]  # without it: shown on a terminal (tqdm decides)


def test_wrong_checksum_is_one_error_line_and_leaves_nothing(tmp_path, cache, server, monkeypatch):
    url = serve_cifar10(server, monkeypatch, md5="0" * 32)
    result = run_suite(tmp_path)
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert url in line and f"not the expected {'0' * 32}" in line and "nothing was kept" in line
    assert f"extract it into {cache}" in line
    assert len(server.requests) == 1
    assert not cache.exists()  # nor a temporary directory: the cache directory itself is gone again
    assert not (tmp_path / "results" / "mlflow.db").exists()


def test_offline_is_one_error_line_with_the_manual_download_hint(tmp_path, cache, monkeypatch):
    with socket.socket() as sock:  # a port nobody listens on: connection refused, as offline
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"
    monkeypatch.setenv("PRUNING_BENCH_CIFAR10_URL", url)
    result = run_suite(tmp_path)
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert str(cache / "cifar-10-batches-py") in line and "data_batch_1..5 and test_batch" in line
    assert f"fetch {url} by hand" in line and f"extract it into {cache}" in line
    assert "c58f30108f718f92721af3b95e74349a" in line  # the published md5, to check by hand
    assert not cache.exists() and not (tmp_path / "results" / "mlflow.db").exists()


def test_no_download_names_the_files_and_asks_nothing_of_the_network(tmp_path, cache, server, monkeypatch):
    url = serve_cifar10(server, monkeypatch)
    result = run_suite(tmp_path, "--no-download")
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert "downloading is off" in line and url in line and str(cache / "cifar-10-batches-py") in line
    assert server.requests == [] and not cache.exists()


def test_data_dir_wins_and_missing_http_file_is_one_line(tmp_path, cache, server, monkeypatch):
    monkeypatch.setenv("PRUNING_BENCH_CIFAR10_URL", f"{server.url}/absent.tar.gz")  # HTTP 404
    mine = tmp_path / "mine"
    result = run_suite(tmp_path, "--data-dir", str(mine), "--download")  # --download: still accepted
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert "404" in line and str(mine / "cifar-10-batches-py") in line
    assert not mine.exists() and not cache.exists()


def test_archive_without_a_file_is_refused_and_leaves_nothing(tmp_path, cache, server, monkeypatch):
    serve_cifar10(server, monkeypatch, payload=cifar10_tarball(CIFAR10_FILES[:4]))
    with pytest.raises(BenchError, match=r"has no cifar-10-batches-py/data_batch_5, test_batch"):
        load_dataset("cifar10", seed=0)
    assert not cache.exists()


def test_partial_copy_is_never_overwritten(tmp_path, cache, server, monkeypatch):
    serve_cifar10(server, monkeypatch)
    folder = cache / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(b"mine")
    with pytest.raises(BenchError, match=r"incomplete \(missing: data_batch_2, .*test_batch\): delete"):
        load_dataset("cifar10", seed=0)
    assert server.requests == [] and leftovers(folder) == ["data_batch_1"]


def test_cifar100_by_parameters(tmp_path, cache, server):
    url, md5 = server.publish("c100.tgz", cifar100_tarball())
    target = tmp_path / "c100"
    raw = cifar.load_cifar("cifar100", str(target), url=url, md5=md5)
    assert raw.num_classes == 100 and tuple(raw.train_x.shape) == (6, 3, 32, 32) and len(raw.test_y) == 3
    assert leftovers(target) == ["cifar-100-python"] and leftovers(target / "cifar-100-python") == \
        ["meta", "test", "train"]
    again = cifar.load_cifar("cifar100", str(target), url=url, md5=md5)
    assert again.train_y.tolist() == raw.train_y.tolist() and len(server.requests) == 1


def test_where_the_cache_is(tmp_path, monkeypatch):
    monkeypatch.delenv("PRUNING_BENCH_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == Path.home() / ".cache" / "pruning_bench" == data_home()
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert cache_root() == Path.home() / ".cache" / "pruning_bench"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_home() == tmp_path / "xdg" / "pruning_bench"
    monkeypatch.setenv("PRUNING_BENCH_DATA", str(tmp_path / "env"))
    assert data_home() == tmp_path / "env"
    assert data_home(str(tmp_path / "given")) == tmp_path / "given"
