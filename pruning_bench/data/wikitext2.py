"""WikiText-2 (raw) for language modelling with a Hugging Face model's own tokenizer: the SparseGPT / Wanda
perplexity protocol.

Merity, Xiong, Bradbury & Socher, "Pointer Sentinel Mixture Models", 2016 (the corpus); the parquet files of
the Hugging Face hub's ``Salesforce/wikitext`` (``wikitext-2-raw-v1/{train,validation,test}-00000-of-00001
.parquet``, one ``text`` column of lines), downloaded into the data cache (``data/download.py``), each
checked against :data:`SHA256` where pinned (empty = not yet pinned: the files' own hashes still go into
the fingerprint). The base URL can be replaced (a mirror, a test server) by ``$PRUNING_BENCH_WIKITEXT2_URL``.

Protocol (``IST-DASLab/sparsegpt`` ``datautils.py::get_wikitext2``, ``opt.py::opt_eval``; the same in
``locuslab/wanda`` ``lib/data.py``, ``lib/eval.py``):

- **Tokens.** ``AutoTokenizer`` of the option ``tokenizer`` (the model's, e.g. ``facebook/opt-125m``);
  test and validation are ``"\\n\\n".join`` of their lines, train ``" ".join`` (as the references); special
  tokens as the tokenizer adds them (OPT: one leading ``</s>``).
- **Test perplexity** over non-overlapping windows: here windows of ``seqlen + 1`` tokens every ``seqlen``
  (x = window[:-1], y = window[1:]), so every token after the first is predicted once with up to ``seqlen``
  tokens of context; the references score windows of ``seqlen`` tokens on their ``seqlen - 1`` inner
  targets (the first token of each window is never a target), a difference of one target in 2048.
- **Calibration** (SparseGPT, Wanda): ``calibration_samples`` (128) random training windows, drawn by the
  harness from the training windows (aligned, every ``train_stride``), not at random offsets. The papers
  calibrate on C4; WikiText-2's training split is the accepted substitute (SparseGPT's ``opt.py`` takes
  ``wikitext2`` as calibration data too).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from pruning_bench.data.bundle import RawDataset
from pruning_bench.data.download import Archive, data_home, fetch_file, source_override
from pruning_bench.data.shakespeare import windows
from pruning_bench.errors import BenchError
from pruning_bench.hub import from_hub

URL = "https://huggingface.co/datasets/Salesforce/wikitext/resolve/main/wikitext-2-raw-v1"
FOLDER = "wikitext-2-raw-v1"
SPLITS = ("train", "validation", "test")
SHA256: dict[str, str] = dict.fromkeys(SPLITS, "")  # not pinned yet: fetched nowhere with network so far
OPTIONS: dict[str, Any] = {"tokenizer": "facebook/opt-125m", "seqlen": 2048, "train_stride": 0,
                           "eval_windows": 0}


def file_name(split: str) -> str:
    return f"{split}-00000-of-00001.parquet"


def archive(split: str) -> Archive:
    """One split's parquet file, from ``$PRUNING_BENCH_WIKITEXT2_URL`` (a base URL) or the hub."""
    base = source_override("wikitext2", "url", URL).rstrip("/")
    return Archive(title=f"WikiText-2 raw ({split})", url=f"{base}/{file_name(split)}", md5="",
                   sha256=SHA256.get(split, ""), folder=FOLDER, files=(file_name(split),),
                   expected=file_name(split))


def parquet_files(root: Path, download: bool) -> dict[str, Path]:
    """The three splits' parquet files under ``root/wikitext-2-raw-v1``, downloading missing ones."""
    paths = {}
    for split in SPLITS:
        source = archive(split)
        path = root / FOLDER / file_name(split)
        if not path.is_file():
            if not download:
                raise BenchError(f"{source.title} not found: expected {path} and downloading is off (--no-download, "
                                 f"or download = false in the suite): fetch {source.url} by hand into "
                                 f"{root / FOLDER}, or pass --data-dir DIR")
            fetch_file(source, root)
        paths[split] = path
    return paths


def read_lines(path: Path) -> list[str]:
    """The ``text`` column of a WikiText parquet file (BenchError when unreadable)."""
    import pandas as pd

    try:
        return [str(t) for t in pd.read_parquet(path, columns=["text"])["text"].tolist()]
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"cannot read {path} as WikiText parquet ({type(exc).__name__}: {exc}): delete it "
                         "to download it again") from None


def load_tokenizer(name: str) -> Any:
    """``AutoTokenizer.from_pretrained(name)`` from the local cache or the hub (one-line errors)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise BenchError("dataset 'wikitext2' needs transformers for its tokenizer: pip install "
                         "'pruning_bench[hf]'") from None
    return from_hub("tokenizer", name, lambda **kw: AutoTokenizer.from_pretrained(name, **kw))


def encode(tokenizer: Any, text: str) -> torch.Tensor:
    """Token ids (int64) of one long text, without the tokenizer's model-length warning."""
    return torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.int64)


def _thin(x: torch.Tensor, y: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    if 0 < limit < len(x):
        keep = torch.linspace(0, len(x) - 1, limit).round().long()
        return x[keep], y[keep]
    return x, y


def fingerprint(paths: dict[str, Path], tokenizer: str, tokens: dict[str, torch.Tensor]) -> str:
    """sha256 (16 hex digits) of each parquet file's sha256, the tokenizer's name and every token id."""
    h = hashlib.sha256(f"wikitext-2-raw-v1 tokenizer {tokenizer}\n".encode())
    for split in SPLITS:
        h.update(f"{split} {hashlib.sha256(paths[split].read_bytes()).hexdigest()} {len(tokens[split])}\n".encode())
        h.update(tokens[split].numpy().tobytes())
    return h.hexdigest()[:16]


def load_wikitext2(data_dir: str | None, download: bool, options: dict[str, Any]) -> RawDataset:
    """Train / validation / test windows of ``seqlen`` tokens (``train_stride`` 0 = seqlen; ``eval_windows``
    0 = every validation / test window)."""
    name = str(options["tokenizer"])
    seqlen, stride, limit = (int(options[k]) for k in ("seqlen", "train_stride", "eval_windows"))
    if seqlen < 1 or stride < 0 or limit < 0:
        raise BenchError(f"dataset 'wikitext2': seqlen must be >= 1 and train_stride, eval_windows >= 0; got "
                         f"{seqlen}, {stride}, {limit}")
    tokenizer = load_tokenizer(os.path.expanduser(name) if os.path.isdir(os.path.expanduser(name)) else name)
    paths = parquet_files(data_home(data_dir), download)
    lines = {split: read_lines(path) for split, path in paths.items()}
    tokens = {split: encode(tokenizer, (" " if split == "train" else "\n\n").join(lines[split])) for split in SPLITS}
    train_x, train_y = windows(tokens["train"], seqlen, stride or seqlen)
    val_x, val_y = _thin(*windows(tokens["validation"], seqlen, seqlen), limit)
    test_x, test_y = _thin(*windows(tokens["test"], seqlen, seqlen), limit)
    if not (len(train_x) and len(val_x) and len(test_x)):
        raise BenchError(f"dataset 'wikitext2': seqlen {seqlen} leaves a split without windows")
    vocab = max(len(tokenizer), *(int(t.max()) + 1 for t in tokens.values()))
    return RawDataset(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, num_classes=vocab,
                      mean=(), std=(), augmentation="none", val_x=val_x, val_y=val_y, tokens=True,
                      fingerprint=fingerprint(paths, name, tokens))
