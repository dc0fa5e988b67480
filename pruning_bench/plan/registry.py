"""Finding method plugins: the ``pruning_bench.methods`` entry-point group and ``--plugin FILE.py``.

A plugin file may also define models and data sets (``@register_model`` / ``@register_dataset``); loading
it registers those in their process-wide registries (:mod:`pruning_bench.plugins`). Every process that
runs trials (a ``--jobs`` worker, a Ray task) loads the same files through :func:`default_registry`, so
the plan only carries names.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from pruning_bench.core.method import Method
from pruning_bench.data.sources import DATASETS
from pruning_bench.errors import BenchError, unknown_choice
from pruning_bench.models import MODELS
from pruning_bench.plugins import DATASET, MODEL, register_module

ENTRY_POINT_GROUP = "pruning_bench.methods"


class MethodRegistry:
    """Method classes by name."""

    def __init__(self) -> None:
        self._methods: dict[str, type[Method]] = {}
        self.origins: dict[str, str] = {}

    def register(self, cls: type[Method], origin: str = "") -> type[Method]:
        if not (inspect.isclass(cls) and issubclass(cls, Method)) or not cls.name:
            raise BenchError(f"{origin or cls!r}: a method must subclass pruning_bench.Method and set `name`")
        self._methods[cls.name] = cls
        self.origins[cls.name] = origin
        return cls

    def names(self) -> list[str]:
        return sorted(self._methods)

    def get(self, name: str) -> type[Method]:
        if name not in self._methods:
            raise unknown_choice("method", name, self._methods)
        return self._methods[name]

    def load_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                cls = ep.load()
            except Exception as err:  # a broken third-party plugin must not hide the others
                print(f"warning: method plugin '{ep.name}' ({ep.value}) failed to load: {err}", file=sys.stderr)
                continue
            self.register(cls, origin=f"entry point {ep.value}")

    def load_file(self, path: str | Path) -> list[str]:
        """Import a Python file and register every Method subclass defined in it (and its models and data
        sets); the method names."""
        path = Path(path)
        module = import_plugin_file(path)
        found = [obj for obj in vars(module).values()
                 if inspect.isclass(obj) and issubclass(obj, Method) and obj is not Method
                 and obj.__module__ == module.__name__]
        others = register_module(module, str(path.resolve()), {MODEL.name: MODELS, DATASET.name: DATASETS})
        if not found and not others:
            raise BenchError(f"plugin file '{path}' defines no pruning_bench.Method subclass with a `name`, "
                             "no @register_model builder and no @register_dataset loader")
        for cls in found:
            self.register(cls, origin=str(path))
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
    registry = MethodRegistry()
    registry.load_entry_points()
    for path in plugin_files:
        registry.load_file(path)
    return registry
