"""`bench list` checked against what it lists (the entry points declared in pyproject.toml, the shipped
suite files, the built-in models), and a method from a ``--plugin`` file: listed with the file as its
origin, and run by `bench run` into MLflow."""

from __future__ import annotations

import importlib
import inspect
import runpy
import textwrap
import tomllib
from pathlib import Path

from test_cli import bench, runs_of

import pruning_bench
from pruning_bench.core.method import Method

ROOT = Path(__file__).resolve().parents[1]


PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass
    import torch
    from pruning_bench import Method

    @dataclass(frozen=True)
    class RandomParams:
        warm_epochs: float = 0.0

    class RandomPruning(Method):
        """Random unstructured pruning at init (a plugin from a file)."""
        name = "random_prune"
        Params = RandomParams

        def run(self, ctx):
            scores = {n: torch.rand(p.shape, generator=ctx.generator) for n, p in ctx.masks.params.items()}
            ctx.masks.prune_to_global(scores, ctx.target_sparsity)
            ctx.train(steps=ctx.budget_steps)
''')


def test_plugin_file_runs_and_lands_in_mlflow(tmp_path):
    plugin = tmp_path / "my_method.py"
    plugin.write_text(PLUGIN)
    result = bench("run", "--suite", "smoke", "--plugin", str(plugin), "--methods", "random_prune",
                   "--sparsities", "0.7", "--epochs", "1", "--results-dir", str(tmp_path), "--no-progress")
    assert result.exit_code == 0, result.output
    runs = runs_of(tmp_path)
    assert list(runs["tags.method"]) == ["random_prune"]
    assert runs["status"].iloc[0] == "FINISHED"
    assert abs(runs["metrics.sparsity"].iloc[0] - 0.7) < 1e-3
    # its listing is checked by test_list_methods_adds_a_plugin_files_method_with_the_file_as_origin


def declared_methods() -> dict[str, str]:
    """The methods the package declares: its ``pruning_bench.methods`` entry points in pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["entry-points"]["pruning_bench.methods"]


def listing(output: str) -> dict[str, str]:
    """``bench list`` lines as name -> the rest of the line, in the printed order."""
    rows = (line.partition(" ") for line in output.splitlines() if line.strip())
    return {name: rest.strip() for name, _, rest in rows}


def first_doc_line(obj) -> str:
    return (inspect.getdoc(obj) or "").splitlines()[0]


def test_list_methods_is_the_entry_points_declared_in_pyproject():
    from pruning_bench.plan.registry import default_registry

    declared = declared_methods()
    listed = listing(bench("list", "methods").output)
    registry = default_registry()
    assert list(listed) == sorted(declared) == registry.names()
    for name, target in declared.items():
        module, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module), attr)  # what the entry point names, imported by hand
        assert registry.get(name) is cls and cls.name == name
        assert registry.origins[name] == f"entry point {target} (pruning_bench {pruning_bench.__version__})"
        assert listed[name] == first_doc_line(cls)


def test_list_methods_adds_a_plugin_files_method_with_the_file_as_origin(tmp_path):
    from pruning_bench.plan.registry import default_registry

    plugin = tmp_path / "my_method.py"
    plugin.write_text(PLUGIN)
    defined = [obj for obj in runpy.run_path(str(plugin)).values()  # the file's own Method subclasses
               if inspect.isclass(obj) and issubclass(obj, Method) and obj is not Method]
    assert len(defined) == 1
    name, doc = defined[0].name, first_doc_line(defined[0])
    registry = default_registry([str(plugin)])
    assert registry.names() == sorted([*declared_methods(), name])
    assert registry.origins[name] == str(plugin.resolve())
    listed = listing(bench("list", "methods", "--plugin", str(plugin)).output)
    assert list(listed) == registry.names() and listed[name] == f"{doc}  [plugin: {plugin.resolve()}]"


def test_list_suites_is_the_shipped_suite_files():
    listed = listing(bench("list", "suites").output)
    files = sorted((ROOT / "suites").glob("*.toml"))
    assert list(listed) == [f.stem for f in files]
    for path in files:
        with open(path, "rb") as fh:
            suite = tomllib.load(fh)
        dataset, model, epochs = listed[path.stem].split()[:3]
        assert (dataset, model) == (suite["dataset"]["name"], suite["model"]["name"])
        assert float(epochs) == suite["budget"]["epochs"]


def test_list_models_is_every_builtin_model_name_and_pattern():
    from pruning_bench.models import available_models, builtin_model, describe_models

    listed = listing(bench("list", "models").output)
    assert listed == {name: description.strip() for name, description in describe_models().items()}
    concrete = [name for name in listed if "<" not in name]
    assert concrete == available_models()
    assert all(builtin_model(name) == f"model '{name}'" for name in concrete)
