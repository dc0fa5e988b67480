"""pruning_bench: compare neural-network pruning methods under identical compute budgets.

Plugin authors need: ``Method`` (subclass it), ``Context`` (what ``run`` receives) and ``TrainCallback``
(to hook the shared training loop) for methods; ``register_model`` for model builders; ``register_dataset``
and ``RawDataset`` (what a loader returns) for data sets.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Bump when a change alters what a trial computes (training loop, measurements, method defaults):
# it is part of every trial key, so finished trials of an older harness are not reused silently.
RESULT_VERSION = "3"

_LAZY = {"Method": "pruning_bench.core.method", "Context": "pruning_bench.core.context",
         "TrainCallback": "pruning_bench.core.training", "register_model": "pruning_bench.plugins",
         "register_dataset": "pruning_bench.plugins", "RawDataset": "pruning_bench.data.bundle"}


def __getattr__(name: str) -> Any:  # lazy, so `import pruning_bench` stays cheap
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pruning_bench' has no attribute {name!r}")
