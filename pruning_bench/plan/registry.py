"""Finding method plugins: the ``pruning_bench.methods`` entry-point group and ``--plugin FILE.py``.

A plugin file may also define models and data sets (``@register_model`` / ``@register_dataset``); loading
it registers those in their process-wide registries (:mod:`pruning_bench.plugins`). Every process that
runs trials (a ``--jobs`` worker, a Ray task) loads the same files through :func:`default_registry`, so
the plan only carries names.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

from pruning_bench.core.method import Method
from pruning_bench.data.sources import DATASETS
from pruning_bench.errors import BenchError, unknown_choice
from pruning_bench.models import MODELS
from pruning_bench.plugins import DATASET, MODEL, Kind, PluginTable, register_module


def _method_entry(kind: Kind, name: str, cls: Any, origin: str) -> type[Method]:
    """A registered method: a ``Method`` subclass whose ``name`` is the name it is registered under."""
    if not (inspect.isclass(cls) and issubclass(cls, Method)) or not cls.name:
        raise BenchError(f"method plugin '{name}' ({origin}) must subclass pruning_bench.Method and set `name`")
    if cls.name != name:
        raise BenchError(f"method plugin '{name}' ({origin}) is a class named '{cls.name}'; register it as "
                         f"'{cls.name}' or set name = '{name}'")
    return cls


#: Methods are the third kind of plugin, found like models and data sets (entry points, lazily, and files)
METHOD = Kind("method", "pruning_bench.methods", (), False, "[method_params]", False, "", parse=_method_entry)


class MethodRegistry:
    """Method classes by name: a plugin table of kind ``method`` (entry points imported when their name is
    looked up or everything is listed; a broken one is an error when asked for, a warning when listing)."""

    def __init__(self) -> None:
        self._table = PluginTable(METHOD, lambda name: None)  # no method is built in: ours are entry points
        self.origins = self._table.origins

    def register(self, cls: type[Method], origin: str = "") -> type[Method]:
        if not (inspect.isclass(cls) and issubclass(cls, Method)) or not cls.name:
            raise BenchError(f"{origin or cls!r}: a method must subclass pruning_bench.Method and set `name`")
        return self._table.add(cls.name, cls, origin or repr(cls))

    def names(self) -> list[str]:
        """Every method's name (no entry point imported)."""
        return self._table.names()

    def get(self, name: str) -> type[Method]:
        cls = self._table.get(name)
        if cls is None:
            raise unknown_choice("method", name, self.names())
        return cls

    def all(self) -> dict[str, type[Method]]:
        """Every method, entry points imported (a broken one is a warning on stderr)."""
        return self._table.all()

    def load_file(self, path: str | Path) -> list[str]:
        """Import a Python file and register every Method subclass defined in it (and its models and data
        sets); the method names."""
        path = Path(path)
        module = import_plugin_file(path)
        origin = str(path.resolve())
        found = [obj for obj in vars(module).values()
                 if inspect.isclass(obj) and issubclass(obj, Method) and obj is not Method
                 and obj.__module__ == module.__name__]
        others = register_module(module, origin, {MODEL.name: MODELS, DATASET.name: DATASETS})
        if not found and not others:
            raise BenchError(f"plugin file '{path}' defines no pruning_bench.Method subclass with a `name`, "
                             "no @register_model builder and no @register_dataset loader")
        for cls in found:
            self.register(cls, origin=origin)
        return [cls.name for cls in found]


def import_plugin_file(path: Path) -> ModuleType:
    """Execute a plugin file as a fresh module (not added to ``sys.modules``)."""
    if not path.is_file():
        raise BenchError(f"plugin file '{path}' does not exist")
    spec = importlib.util.spec_from_file_location(f"pruning_bench_plugin_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise BenchError(f"plugin file '{path}' is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except BenchError as err:
        raise BenchError(f"plugin file '{path}': {err}") from None
    except Exception as err:
        raise BenchError(f"plugin file '{path}' failed to import: {type(err).__name__}: {err}") from None
    return module


def default_registry(plugin_files: tuple[str, ...] | list[str] = ()) -> MethodRegistry:
    """The installed methods (entry points, imported on demand) and those of ``plugin_files``."""
    registry = MethodRegistry()
    for path in plugin_files:
        registry.load_file(path)
    return registry
