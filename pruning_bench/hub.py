"""Loading from the Hugging Face hub (models and tokenizers) with one-line errors when it cannot be reached.

``from_hub(what, name, load)`` calls ``load(local_files_only=True)`` first (a local directory, or the hub
cache under ``$HF_HOME``: no network, no waiting), then, unless ``$HF_HUB_OFFLINE`` is set, checks that the
hub (``$HF_ENDPOINT``, default https://huggingface.co) answers a TCP connection within a few seconds and
only then downloads: ``huggingface_hub`` retries an unreachable host for about half a minute, logging
each retry. Every failure is a BenchError (exit code 2) naming the model and what to do.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

from pruning_bench.errors import BenchError

T = TypeVar("T")
PROBE_TIMEOUT_S = 5.0
_PROXIES = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def _reason(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def hub_unreachable() -> str | None:
    """Why the hub cannot be reached now (``$HF_HUB_OFFLINE``, no route); None when it answers (or a
    proxy is configured: then the download itself tells)."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in _PROXIES):
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{url.hostname} unreachable: {_reason(exc)}"


def what_to_do(name: str) -> str:
    return (f"pre-download it where there is network (`hf download {name}`, formerly `huggingface-cli "
            "download`) and set HF_HOME to that cache, or give a local directory instead")


def from_hub(what: str, name: str, load: Callable[..., T]) -> T:
    """``load(local_files_only=...)`` from the cache, else from the hub; a BenchError line on failure."""
    try:
        return load(local_files_only=True)
    except (OSError, ValueError) as exc:
        if os.path.isdir(os.path.expanduser(name)):  # a local directory that does not load: say why
            raise BenchError(f"{what} '{name}': cannot load the local directory ({_reason(exc)})") from None
    offline = hub_unreachable()
    if offline:
        raise BenchError(f"{what} '{name}' is not in the local Hugging Face cache and the hub cannot be "
                         f"reached ({offline}): {what_to_do(name)}")
    try:
        return _quietly(load)
    except (OSError, ValueError) as exc:  # unknown id, gated model, network error mid-way
        raise BenchError(f"{what} '{name}' could not be loaded from the Hugging Face hub ({_reason(exc)}): "
                         f"{what_to_do(name)}") from None


def _quietly(load: Callable[..., Any]) -> Any:
    """``load(local_files_only=False)`` with huggingface_hub's retry warnings off."""
    import huggingface_hub.utils.logging as hub_logging

    level = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()
    try:
        return load(local_files_only=False)
    finally:
        hub_logging.set_verbosity(level)
