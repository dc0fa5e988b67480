"""``bench server``: one MLflow tracking server that every machine of a sweep logs to.

The store is SQLite under the results directory and artifacts are *proxied*: clients upload and download
them through the server (``mlflow-artifacts:`` URIs), so nothing a worker logs lands on its own disk.
MLflow 3.x answers only requests whose Host header it allows (localhost and private IPs by default); when
the server binds beyond loopback, the name it tells clients to use is added to that list.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pruning_bench.errors import BenchError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::")


@dataclass(frozen=True)
class ServerConfig:
    """What ``bench server`` starts: where the store lives and where it listens."""

    results_dir: Path
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 4
    allowed_hosts: str | None = None  # extra Host names clients may use, comma-separated

    @property
    def backend_uri(self) -> str:
        return f"sqlite:///{self.results_dir.resolve() / 'mlflow.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.results_dir.resolve() / "artifacts"


def public_name(host: str) -> str:
    """The host name clients should use: the bound address, or this machine's name for a wildcard bind."""
    return socket.gethostname() if host in WILDCARD else host


def tracking_url(config: ServerConfig) -> str:
    """The ``--tracking-uri`` every client passes."""
    name = public_name(config.host)
    return f"http://[{name}]:{config.port}" if ":" in name else f"http://{name}:{config.port}"


def probe_url(config: ServerConfig) -> str:
    """Where this machine reaches the server (loopback for a wildcard bind)."""
    if config.host in WILDCARD:
        return f"http://127.0.0.1:{config.port}" if config.host == "0.0.0.0" else f"http://[::1]:{config.port}"
    return tracking_url(config)


def allowed_hosts(config: ServerConfig) -> str | None:
    """``--allowed-hosts`` for MLflow: its default (localhost, private IPs) plus the name clients are told to
    use (beyond loopback) plus the user's extra names; ``None`` (MLflow's default) when there is nothing to add."""
    extra = [h.strip() for h in (config.allowed_hosts or "").split(",") if h.strip()]
    if config.host not in LOOPBACK:
        names = {public_name(config.host)} | ({socket.getfqdn()} if config.host in WILDCARD else set())
        extra = [p for n in sorted(names) for p in (n, f"{n}:*")] + extra
    if not extra:
        return None
    from mlflow.server.security_utils import get_default_allowed_hosts

    return ",".join(dict.fromkeys([*get_default_allowed_hosts(), *extra]))


def server_command(config: ServerConfig) -> list[str]:
    """The ``python -m mlflow server`` command line for ``config``."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", config.backend_uri,
           "--serve-artifacts", "--artifacts-destination", str(config.artifacts_dir),
           "--host", config.host, "--port", str(config.port), "--workers", str(config.workers)]
    hosts = allowed_hosts(config)
    if hosts is not None:
        cmd += ["--allowed-hosts", hosts]
    if config.host not in LOOPBACK:  # the UI in a browser at the printed URL (same-origin POSTs)
        cmd += ["--cors-allowed-origins", tracking_url(config)]
    return cmd


def check_config(config: ServerConfig) -> None:
    """One-line errors for a bad port, worker count, results directory, host, or a port already in use."""
    if not 1 <= config.port <= 65535:
        raise BenchError(f"--port {config.port}: not a TCP port; give 1-65535, e.g. --port 5000")
    if config.workers < 1:
        raise BenchError(f"--workers {config.workers}: give at least 1 server process")
    if config.results_dir.exists() and not config.results_dir.is_dir():
        raise BenchError(f"--results-dir '{config.results_dir}' is a file; give a directory for the store")
    check_bindable(config.host, config.port)


def check_bindable(host: str, port: int) -> None:
    """Bind ``host:port`` once (as the server will) to turn "in use" or "no such address" into one line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror:
        raise BenchError(f"--host '{host}': unknown name or address; give an address of this machine, "
                         "e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise BenchError(f"--port {port}: already in use on {host}; stop what uses it or pick "
                                 f"another, e.g. --port {port + 1 if port < 65535 else 5000}") from None
            if err.errno == errno.EACCES:
                raise BenchError(f"--port {port}: permission denied (ports below 1024 need root); "
                                 "pick e.g. --port 5000") from None
            raise BenchError(f"--host '{host}': cannot listen there ({err.strerror}); give an address of "
                             "this machine, e.g. 127.0.0.1 or 0.0.0.0") from None


def start_server(config: ServerConfig, **popen: Any) -> subprocess.Popen:
    """Start the server in a process group of its own, so :func:`stop_server` ends its workers too."""
    try:
        config.artifacts_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BenchError(f"--results-dir '{config.results_dir}': cannot create it ({err.strerror})") from None
    env = {**os.environ, **popen.pop("env", {})}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # GenAI job runners (8 processes), unused here
    return subprocess.Popen(server_command(config), start_new_session=True, env=env, **popen)


def _group_alive(proc: subprocess.Popen) -> bool:
    proc.poll()  # reap the leader, else its zombie keeps the group alive
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_server(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the server's whole process group; SIGKILL what is left of it after ``timeout`` s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(proc):
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while _group_alive(proc) and time.monotonic() < deadline:
            time.sleep(0.1)
    proc.wait()


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll ``url/health`` until it answers 200; a server that exits or never answers is a BenchError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the MLflow server exited with code {proc.returncode} before it answered; "
                             "see its messages above")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise BenchError(f"the MLflow server did not answer {url}/health within {timeout:g} s")


def serve(config: ServerConfig, echo: Callable[[str], None]) -> int:
    """Check, start, announce once healthy, and wait; Ctrl-C or SIGTERM stops the whole server."""
    check_config(config)
    proc = start_server(config)

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, _exit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        wait_healthy(probe_url(config), proc)
        url = tracking_url(config)
        echo(f"MLflow server for {config.backend_uri} (artifacts proxied to {config.artifacts_dir}): point every "
             f"client at it with --tracking-uri {url} (or MLFLOW_TRACKING_URI={url}); Ctrl-C stops it")
        return proc.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        stop_server(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
