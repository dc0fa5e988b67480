"""Methods are the third kind of plugin table: entry points are imported only when their name is asked for
or everything is listed, and a broken one is an error when asked for by name, a warning in a listing."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import pytest

import pruning_bench.plugins as plugins
from pruning_bench.errors import BenchError
from pruning_bench.plan.registry import default_registry

BROKEN = EntryPoint("broken", "no_such_module_anywhere:Method", "pruning_bench.methods")
MISNAMED = EntryPoint("not_dense", "pruning_bench.methods.dense:Dense", "pruning_bench.methods")


@pytest.fixture
def installed(monkeypatch):
    """The real method entry points plus the ones a test adds."""
    real = list(entry_points(group="pruning_bench.methods"))
    extra: list[EntryPoint] = []

    def fake(*, group: str, name: str | None = None):
        found = [*real, *extra] if group == "pruning_bench.methods" else list(entry_points(group=group))
        return [ep for ep in found if name is None or ep.name == name]

    monkeypatch.setattr(plugins, "entry_points", fake)
    return extra


def test_a_broken_method_plugin_hides_nothing_else_and_is_one_error_when_asked_for(installed, capsys):
    installed.append(BROKEN)
    registry = default_registry()
    assert "broken" in registry.names() and "dense" in registry.names()  # listed by name, nothing imported
    assert registry.get("dense").name == "dense"
    with pytest.raises(BenchError, match=r"method plugin 'broken' \(entry point no_such_module_anywhere:Method"
                                         r"\) failed to load: ModuleNotFoundError"):
        registry.get("broken")
    fresh = default_registry()
    methods = fresh.all()  # a listing: the broken one is a warning, every other method is there
    assert "broken" not in methods and {"dense", "imp", "swamp"} <= set(methods)
    assert "warning: method plugin 'broken'" in capsys.readouterr().err


def test_an_entry_point_must_carry_its_class_name(installed):
    installed.append(MISNAMED)
    with pytest.raises(BenchError, match="'not_dense' .* is a class named 'dense'; register it as 'dense'"):
        default_registry().get("not_dense")


def test_only_the_method_asked_for_is_imported(installed):
    installed.append(BROKEN)
    registry = default_registry()
    registry.get("snip")  # would raise if the table imported every entry point up front
    assert set(registry.origins) == {"snip"}
