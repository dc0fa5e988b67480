"""Model and data-set plugins, found like method plugins: by entry point or in a ``--plugin`` file.

* A **model** is a builder ``(num_classes, input_shape, **options) -> nn.Module`` (a function or an
  ``nn.Module`` class); a suite's ``[model]`` keys besides ``name`` are its keyword arguments.
* A **data set** is a loader ``([data_dir], [download], **options) -> RawDataset``; every option is a
  keyword parameter with a default, set by the suite's ``[dataset.options]``. ``data_dir`` and
  ``download`` are passed only when the loader names them.

In a plugin file, ``@register_model("name")`` / ``@register_dataset("name")`` mark them (the decorators
only mark; loading the file registers what it defines, as it does its Method subclasses). Installed
packages publish them in the entry-point groups ``pruning_bench.models`` / ``pruning_bench.datasets``
(``name = "package.module:function"``; the entry-point name is the registry name, no decorator needed).
Entry points are imported only when their name is looked up or everything is listed, so neither
``bench --help`` nor a built-in model pays for them. Options are checked against the signature before
the call: an unknown key, a missing one or one of the wrong type is a one-line :class:`BenchError`.

This module imports neither torch nor any plugin.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any, TypeVar

from pruning_bench.errors import BenchError

F = TypeVar("F", bound=Callable[..., Any])

REQUIRED = inspect.Parameter.empty  # an option without a default
_MARK = "__pruning_bench_plugin__"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True)
class Kind:
    """What one plugin kind passes itself (``harness``) and where its options live in a suite."""

    name: str            # "model" | "dataset"
    group: str           # the entry-point group
    harness: tuple[str, ...]
    harness_required: bool   # the callable must accept every harness argument
    section: str         # the suite table holding the options
    any_options: bool    # whether **kwargs may stand for options
    harness_note: str    # why a harness argument is no option
    #: how a registered object becomes the table's entry (default: a builder / loader read into a Plugin)
    parse: Callable[[Kind, str, Any, str], Any] | None = None


MODEL = Kind("model", "pruning_bench.models", ("num_classes", "input_shape"), True, "[model]", True,
             "set by the harness from the data set")
DATASET = Kind("dataset", "pruning_bench.datasets", ("data_dir", "download"), False, "[dataset.options]", False,
               "a [dataset] key (or --data-dir / --download), not an option")


@dataclass(frozen=True, eq=False)  # hashed by identity: a data set's in-process cache keys on it
class Plugin:
    """One registered model builder or data-set loader, with the options its signature declares."""

    kind: Kind
    name: str
    fn: Callable[..., Any]
    origin: str                                   # "entry point pkg.mod:fn (dist 1.0)" or the file's path
    options: Mapping[str, Any] = field(default_factory=dict)  # option -> default (REQUIRED: none)
    any_options: bool = False                     # it takes **kwargs: unknown keys are its business
    harness: tuple[str, ...] = ()                 # the harness arguments it accepts

    @property
    def description(self) -> str:
        lines = (inspect.getdoc(self.fn) or "").strip().splitlines()
        return lines[0] if lines else ""

    def check_options(self, given: Mapping[str, Any]) -> None:
        """Unknown, missing or mistyped options: a BenchError naming the key."""
        label = f"{self.kind.name} '{self.name}'"
        for key, value in given.items():
            if key not in self.options:
                if key in self.kind.harness:
                    raise BenchError(f"{label}: option '{key}' is {self.kind.harness_note}")
                if not self.any_options:
                    valid = ", ".join(self.options) or "(none)"
                    raise BenchError(f"{label} has no option '{key}' (a {self.kind.section} key); valid: {valid}")
                continue
            check_type(label, key, value, self.options[key])
        for key, default in self.options.items():
            if default is REQUIRED and key not in given:
                raise BenchError(f"{label} needs option '{key}' (a {self.kind.section} key)")

    def call(self, harness: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        """Call the builder / loader with the harness arguments it accepts and ``options``."""
        passed = {k: v for k, v in harness.items() if k in self.harness}
        try:
            return self.fn(**passed, **options)
        except BenchError:
            raise
        except (TypeError, ValueError) as err:
            raise BenchError(f"{self.kind.name} '{self.name}' ({self.origin}) with options {dict(options)}: "
                             f"{type(err).__name__}: {err}") from None

    def describe_options(self) -> str:
        """``hidden=64, depth (required)``, with ``**kwargs`` for a builder that takes any key."""
        parts = [f"{k} (required)" if v is REQUIRED else f"{k}={v!r}" for k, v in self.options.items()]
        return ", ".join(parts + (["**kwargs"] if self.any_options else []))


def check_type(label: str, key: str, value: Any, default: Any) -> None:
    """A value must have its default's type (an int may stand for a float); other defaults accept anything."""
    if default is REQUIRED or default is None or not isinstance(default, (bool, int, float, str)):
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            (isinstance(value, int) or isinstance(default, float))
    else:
        ok = isinstance(value, str)
    if not ok:
        raise BenchError(f"{label}: option '{key}' must be {type(default).__name__} like its default "
                         f"{default!r}, got {value!r}")


# ---- marking in a plugin file -----------------------------------------------------------------------
def register_model(name: str) -> Callable[[F], F]:
    """Mark a builder ``(num_classes, input_shape, **options) -> nn.Module`` in a plugin file as model
    ``name``; its first docstring line is its description in ``bench list models``."""
    return _mark(MODEL, name)


def register_dataset(name: str) -> Callable[[F], F]:
    """Mark a loader ``([data_dir], [download], **options) -> RawDataset`` in a plugin file as data set
    ``name``; every option needs a default; its first docstring line is its description."""
    return _mark(DATASET, name)


def _mark(kind: Kind, name: str) -> Callable[[F], F]:
    _check_name(kind, name, "@register_" + kind.name)

    def decorate(fn: F) -> F:
        setattr(fn, _MARK, (kind.name, name))
        return fn

    return decorate


def _check_name(kind: Kind, name: Any, origin: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BenchError(f"{origin}: {kind.name} plugin name {name!r} must be a word (letters, digits, _ . -), "
                         "e.g. 'my_net'")


def register_module(module: ModuleType, origin: str, tables: Mapping[str, PluginTable]) -> list[str]:
    """Register the builders and loaders ``module`` marks (defined in it, not imported) in ``tables`` (by
    kind name: the model table of :mod:`pruning_bench.models`, the data-set table of
    :mod:`pruning_bench.data.sources`); their names."""
    found = []
    for obj in vars(module).values():
        mark = getattr(obj, "__dict__", {}).get(_MARK)  # own mark only: a subclass is not its parent's plugin
        if isinstance(mark, tuple) and getattr(obj, "__module__", None) == module.__name__:
            kind, name = mark
            tables[kind].add(name, obj, origin)
            found.append(f"{kind} {name}")
    return found


# ---- the registries ---------------------------------------------------------------------------------
def _parse(kind: Kind, name: str, fn: Any, origin: str) -> Plugin:
    """Read a builder's / loader's signature into a Plugin (BenchError when it cannot be called so)."""
    where = f"{kind.name} plugin '{name}' ({origin})"
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        raise BenchError(f"{where} is not a function or class with a signature: {fn!r}") from None
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    keyword = {n: p for n, p in params.items() if p.kind in _KEYWORD}
    blocked = [n for n, p in params.items() if p.kind is p.POSITIONAL_ONLY and p.default is REQUIRED]
    missing = [a for a in kind.harness if a not in keyword and not var_kw] if kind.harness_required else []
    if blocked or missing:
        raise BenchError(f"{where} must take {', '.join(kind.harness)} as keyword arguments, then its options; "
                         f"its signature is {inspect.signature(fn)}")
    options = {n: p.default for n, p in keyword.items() if n not in kind.harness}
    if not kind.any_options:
        if var_kw:
            raise BenchError(f"{where}: name every option as a keyword parameter with a default (no **kwargs)")
        if bad := [n for n, d in options.items() if d is REQUIRED]:
            raise BenchError(f"{where}: option '{bad[0]}' needs a default")
    harness = tuple(a for a in kind.harness if a in keyword or var_kw)
    return Plugin(kind, name, fn, origin, options, var_kw and kind.any_options, harness)


class PluginTable:
    """The registered plugins of one kind, by name; entry points join lazily, a file's entries win. Each
    kind's table is built where its built-ins live (``is_builtin`` names the built-in a name would clash
    with), so this module knows no model and no data set."""

    def __init__(self, kind: Kind, is_builtin: Callable[[str], str | None]) -> None:
        self.kind = kind
        self._is_builtin = is_builtin  # name -> why it is taken (None: free)
        self._items: dict[str, Plugin] = {}
        self.origins: dict[str, str] = {}  # name -> "entry point pkg.mod:obj (dist 1.0)" or a file's path
        self._tried: set[str] = set()  # entry-point names already looked at
        self._scanned = False

    def add(self, name: str, fn: Any, origin: str) -> Plugin:
        _check_name(self.kind, name, origin)
        if taken := self._is_builtin(name):
            raise BenchError(f"{self.kind.name} plugin '{name}' ({origin}) clashes with the built-in {taken}; "
                             "choose another name")
        plugin = (self.kind.parse or _parse)(self.kind, name, fn, origin)
        self._items[name] = plugin
        self.origins[name] = origin
        return plugin

    def get(self, name: str) -> Plugin | None:
        """The plugin ``name`` (its entry point imported now if needed), or None."""
        if name not in self._items and name not in self._tried:
            self._tried.add(name)
            for ep in entry_points(group=self.kind.group, name=name):
                self._load(ep, strict=True)
                break
        return self._items.get(name)

    def names(self) -> list[str]:
        """Every registered and installed name, without importing any entry point."""
        return sorted({*self._items, *(ep.name for ep in entry_points(group=self.kind.group))})

    def all(self) -> dict[str, Plugin]:
        """Every plugin, entry points imported (a broken one is a warning on stderr)."""
        if not self._scanned:
            self._scanned = True
            for ep in entry_points(group=self.kind.group):
                if ep.name not in self._items and ep.name not in self._tried:
                    self._tried.add(ep.name)
                    self._load(ep, strict=False)
        return dict(sorted(self._items.items()))

    def reset(self) -> None:
        """Forget every plugin (tests)."""
        self._items.clear()
        self._tried.clear()
        self._scanned = False

    def _load(self, ep: EntryPoint, *, strict: bool) -> None:
        dist = getattr(ep, "dist", None)
        origin = f"entry point {ep.value}" + (f" ({dist.name} {dist.version})" if dist else "")
        try:
            fn = ep.load()
        except Exception as err:  # a broken third-party plugin must not hide the others
            problem = BenchError(f"{self.kind.name} plugin '{ep.name}' ({origin}) failed to load: "
                                 f"{type(err).__name__}: {err}")
        else:
            try:
                self.add(ep.name, fn, origin)
                return
            except BenchError as err:
                problem = err
        if strict:
            raise problem
        print(f"warning: {problem}", file=sys.stderr)
