"""Which code computed a trial.

Every trial records two tags: ``code_harness``, a hash of the harness's own source (its package, the
built-in methods and suites), and ``code_plugins``, a hash of the source module of each plugin the trial
used (its method, and its model and data set when those are plugins: ``method=1a2b..,model=3c4d..``;
empty when it used none). Trial keys do not contain them: the harness's changes that alter results are
versioned by ``RESULT_VERSION``, and a key that changed with every edit would strand finished trials.
Instead ``bench run`` refuses to reuse a finished trial whose plugin code has changed since it ran (one
``Error:`` line naming the methods): ``--rerun`` runs them again with the current code (the report then
uses the newest run of each key), ``--reuse-changed-code`` keeps the old results (an edit that does not
change what the plugin computes). The report lists the code versions of its trials.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from pathlib import Path
from typing import Any

DIGITS = 12


@functools.cache
def harness_hash() -> str:
    """The harness's own source files (content, not times), as one hash."""
    from pruning_bench.execution.fastpath import harness_files

    h = hashlib.sha256()
    for path in harness_files():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:DIGITS]


@functools.cache
def _harness_roots() -> tuple[Path, ...]:
    from pruning_bench.execution.fastpath import harness_roots

    return tuple(root.resolve() for root in harness_roots())


def source_hash(obj: Any) -> str | None:
    """The hash of the file that defines ``obj`` when it is a plugin's (outside the harness); None for
    the harness's own code or code without a source file."""
    path = _source_file(obj)
    if path is None or not path.is_file() or any(path.is_relative_to(root) for root in _harness_roots()):
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()[:DIGITS]


def _source_file(obj: Any) -> Path | None:
    """Where ``obj`` (a class or function) is defined; plugin files are imported without an entry in
    ``sys.modules``, so their functions' code objects are asked when ``inspect`` cannot tell."""
    try:
        return Path(inspect.getsourcefile(obj) or "").resolve()
    except TypeError:
        pass
    functions = [obj] if hasattr(obj, "__code__") else [v for v in vars(obj).values() if hasattr(v, "__code__")] \
        if inspect.isclass(obj) else []
    return Path(functions[0].__code__.co_filename).resolve() if functions else None


def plugin_code(method_cls: type, model: str, dataset: str) -> str:
    """The ``code_plugins`` tag of a trial: ``kind=hash`` for each plugin it uses, comma-separated."""
    from pruning_bench.data.sources import DATASETS
    from pruning_bench.models import MODELS

    parts = []
    method = source_hash(method_cls)
    if method:
        parts.append(f"method={method}")
    for kind, table, name in (("model", MODELS, model), ("dataset", DATASETS, dataset)):
        plugin = table.get(name) if ":" not in name else None
        code = source_hash(plugin.fn) if plugin is not None else None
        if code:
            parts.append(f"{kind}={code}")
    return ",".join(parts)
