"""A shared tracking server: a real ``bench server`` on a free port, a sweep from one working directory and
a report from another. Artifacts go through the server and never land on a client's disk."""

from __future__ import annotations

import csv
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pruning_bench.cli import main
from pruning_bench.tracking.server import ServerConfig, server_command, tracking_url
from pruning_bench.tracking.store import is_local_uri
from pruning_bench.tracking.tracker import Tracker

pytestmark = pytest.mark.slow  # a real `bench server`

BENCH = Path(sys.executable).with_name("bench")
ALIAS = "cluster-head"  # a name a cluster node might use for the server; allowed via --allowed-hosts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench(cwd: Path, *args: str):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        return CliRunner().invoke(main, list(args), catch_exceptions=False)


def child_groups(pid: int) -> list[int]:
    """Process groups of ``pid``'s children (``bench server`` puts the MLflow server in its own)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [os.getpgid(int(c)) for c in path.read_text().split()] if path.exists() else []


def wait_for_line(proc: subprocess.Popen, log: Path, needle: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"bench server never announced '{needle}':\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``bench server`` as a subprocess; SIGTERM stops it and its MLflow server (checked: nothing is left)."""
    root = tmp_path_factory.mktemp("server")
    port, log = free_port(), root / "server.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen([str(BENCH), "server", "--port", str(port), "--workers", "1", "--results-dir",
                                 str(root / "results"), "--allowed-hosts", f"{ALIAS}:*"],
                                cwd=root, stdout=out, stderr=subprocess.STDOUT)
    groups: list[int] = []
    try:
        wait_for_line(proc, log, f"--tracking-uri {url} ")
        groups = child_groups(proc.pid)
        yield url, root / "results"
    finally:
        groups = groups or child_groups(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        left = []
        for pgid in groups:  # a safety net: nothing may outlive the fixture
            try:
                os.killpg(pgid, signal.SIGKILL)
                left.append(pgid)
            except ProcessLookupError:
                pass
        assert not left, f"bench server left its MLflow server (process groups {left}) running"


@pytest.fixture(scope="module")
def sweep(server, tmp_path_factory):
    """A tiny smoke sweep (2 trials) against the server, from its own working directory."""
    url, _ = server
    workdir = tmp_path_factory.mktemp("sweep_cwd")
    result = bench(workdir, "run", "--suite", "smoke", "--methods", "dense,snip", "--sparsities", "0.8",
                   "--epochs", "1", "--threads", "1", "--no-progress", "--tracking-uri", url)
    assert result.exit_code == 0, result.output
    return workdir


def client(url: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url)


def test_sweep_artifacts_go_through_the_server(server, sweep):
    url, store = server
    experiment = client(url).get_experiment_by_name("smoke")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    assert not (sweep / "results" / "artifacts").exists()
    assert not list(sweep.rglob("layer_sparsity.csv"))
    assert len(list((store / "artifacts").rglob("layer_sparsity.csv"))) == 2  # one per trial, on the server


def test_layer_table_downloads_through_the_server_from_another_directory(server, sweep, tmp_path, monkeypatch):
    import mlflow

    from pruning_bench.report.publish import load_runs

    url, _ = server
    monkeypatch.chdir(tmp_path)
    runs = load_runs(url, "smoke")
    snip = runs[runs["tags.method"] == "snip"].iloc[0]
    path = mlflow.artifacts.download_artifacts(run_id=snip["run_id"], artifact_path="layer_sparsity.csv",
                                               dst_path=str(tmp_path / "dl"), tracking_uri=url)
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["layer"].endswith(".weight") for r in rows)
    assert sum(int(r["params"]) for r in rows) == snip["metrics.total_params"]
    assert sum(int(r["nonzero"]) for r in rows) == snip["metrics.nonzero_params"]


def test_report_from_another_directory(server, sweep, tmp_path):
    url, _ = server
    result = bench(tmp_path, "report", "--suite", "smoke", "--tracking-uri", url)
    assert result.exit_code == 0, result.output
    out = tmp_path / "results" / "reports" / "smoke"
    assert {"report.md", "report.html", "leaderboard.csv"} <= {p.name for p in out.iterdir()}
    assert "snip" in (out / "leaderboard.csv").read_text()
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["reports"]  # no store, no artifacts
    mlflow = client(url)
    experiment_id = mlflow.get_experiment_by_name("smoke").experiment_id
    [report_run] = mlflow.search_runs([experiment_id], "tags.report = '1'")
    assert "report/report.md" in {a.path for a in mlflow.list_artifacts(report_run.info.run_id, "report")}


def test_experiment_with_a_local_artifact_path_warns_once(server, tmp_path, capsys):
    url, _ = server
    client(url).create_experiment("made_locally", artifact_location=(tmp_path / "local").as_uri())
    Tracker(url, "made_locally", artifact_root=tmp_path / "artifacts")
    Tracker(url, "made_locally", artifact_root=tmp_path / "artifacts")
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and "'made_locally'" in warnings[0] and "own disk" in warnings[0]
    fresh = Tracker(url, "made_by_server", artifact_root=tmp_path / "artifacts")
    assert client(url).get_experiment(fresh.experiment_id).artifact_location.startswith("mlflow-artifacts:")
    assert not capsys.readouterr().err and not (tmp_path / "artifacts").exists()


def test_local_store_keeps_its_artifacts_beside_it(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "local", artifact_root=tmp_path / "artifacts")
    location = tracker.client.get_experiment(tracker.experiment_id).artifact_location
    assert location == (tmp_path / "artifacts" / "local").as_uri()


@pytest.mark.parametrize("uri, local", [("sqlite:////r/mlflow.db", True), ("file:///r/mlruns", True),
                                        ("results/mlruns", True), ("/abs/mlruns", True),
                                        ("http://head:5000", False), ("https://mlflow.example", False),
                                        ("postgresql://u@db/mlflow", False), ("mlflow-artifacts:/1", False)])
def test_is_local_uri(uri, local):
    assert is_local_uri(uri) is local


@pytest.mark.parametrize("host, status", [(ALIAS, 200), ("elsewhere.example", 403)])
def test_server_answers_only_allowed_host_names(server, host, status):
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": f"{host}:{port}"})
        assert conn.getresponse().status == status
    finally:
        conn.close()


def test_bad_server_input_is_one_line_exit_2(server, tmp_path):
    url, _ = server
    busy = url.rsplit(":", 1)[1]
    (tmp_path / "a_file").write_text("")
    cases = {("--port", "70000"): "not a TCP port", ("--port", busy): "already in use",
             ("--workers", "0"): "--workers 0", ("--host", "no-such-host.invalid"): "unknown name",
             ("--results-dir", str(tmp_path / "a_file")): "is a file"}
    for args, message in cases.items():
        result = bench(tmp_path, "server", *args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], (args, lines)


def test_server_command_beyond_loopback():
    config = ServerConfig(Path("res"), host="0.0.0.0", port=5001, workers=2)
    cmd = server_command(config)
    name = socket.gethostname()
    assert cmd[1:4] == ["-m", "mlflow", "server"] and "--serve-artifacts" in cmd
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{Path('res').resolve() / 'mlflow.db'}"
    assert cmd[cmd.index("--artifacts-destination") + 1] == str(Path("res").resolve() / "artifacts")
    allowed = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert {name, f"{name}:*", "localhost:*", "10.*"} <= set(allowed)
    assert tracking_url(config) == f"http://{name}:5001"
    assert cmd[cmd.index("--cors-allowed-origins") + 1] == f"http://{name}:5001"
    local = server_command(ServerConfig(Path("res")))
    assert "--allowed-hosts" not in local and local[local.index("--host") + 1] == "127.0.0.1"
    extra = server_command(ServerConfig(Path("res"), allowed_hosts="lab.example, 203.0.113.7:*"))
    assert {"lab.example", "203.0.113.7:*", "localhost:*", "10.*"} <= set(
        extra[extra.index("--allowed-hosts") + 1].split(","))  # added to MLflow's default, not replacing it


@pytest.mark.parametrize("command", [["run", "--suite", "smoke", "--methods", "snip"], ["report", "--suite", "smoke"]])
def test_a_tracking_server_that_does_not_answer_is_one_line_within_seconds(tmp_path, command):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    result = CliRunner().invoke(main, [*command, "--tracking-uri", uri, "--results-dir", str(tmp_path)])
    elapsed = time.monotonic() - start
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"the tracking server {uri} does not answer" in errors[0]
    assert "bench server" in errors[0] and elapsed < 20
    assert not (tmp_path / "mlflow.db").exists()


def test_a_trial_killed_on_one_machine_resumes_on_another_from_the_servers_checkpoint(server, tmp_path):
    url, _ = server
    args = ["run", "--suite", "smoke", "--methods", "dense", "--seeds", "5", "--sparsities", "0.5", "--epochs",
            "150", "--checkpoint-every", "0.2", "--threads", "1", "--no-progress"]
    machine_a, machine_b = tmp_path / "a", tmp_path / "b"
    proc = subprocess.Popen([str(BENCH), *args, "--tracking-uri", url, "--results-dir", str(machine_a)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    mlflow = client(url)
    deadline, uploaded = time.monotonic() + 120, False
    while not uploaded and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        experiment = mlflow.get_experiment_by_name("smoke")
        running = mlflow.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING' and "
                                     "tags.trial_key != ''") if experiment else []
        uploaded = any(f.path.endswith("partial.pt") for r in running
                       for f in mlflow.list_artifacts(r.info.run_id, "checkpoints"))
    assert uploaded, proc.communicate(timeout=5)[0] if proc.poll() is not None else "no checkpoint uploaded"
    proc.kill()  # machine A is preempted ...
    proc.wait()
    shutil.rmtree(machine_a)  # ... and its disk is gone
    again = subprocess.run([str(BENCH), *args, "--tracking-uri", url, "--results-dir", str(machine_b)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming from the checkpoints of run" in again.stderr
    experiment = mlflow.get_experiment_by_name("smoke")
    key_runs = [r for r in mlflow.search_runs([experiment.experiment_id], "tags.seed = '5'")
                if r.data.tags.get("trial_key")]
    done = [r for r in key_runs if r.info.status == "FINISHED"]
    assert len(done) == 1 and done[0].data.metrics["resumed_calls"] >= 1
    assert done[0].data.metrics["checkpoint_uploads"] >= 1
    assert not mlflow.list_artifacts(done[0].info.run_id, "checkpoints")  # discarded once it finished

    local = subprocess.run([str(BENCH), *args, "--results-dir", str(tmp_path / "c")], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)  # the same trial, never interrupted
    assert local.returncode == 0, local.stdout + local.stderr
    reference = Tracker(f"sqlite:///{tmp_path / 'c' / 'mlflow.db'}", "smoke").client.search_runs(
        [Tracker(f"sqlite:///{tmp_path / 'c' / 'mlflow.db'}", "smoke").experiment_id], "tags.seed = '5'")
    reference = [r for r in reference if r.data.tags.get("trial_key")][0]
    for metric in ("test_acc", "test_loss", "val_acc", "epochs_charged"):
        assert done[0].data.metrics[metric] == reference.data.metrics[metric], metric
