"""Model and data-set plugins: from a ``--plugin`` file and from an entry point (a real ``*.dist-info`` on a
temporary sys.path entry), used by ``bench run`` with options, listed by ``bench list``, and every bad
option a one-line error naming the suite file and the key."""

from __future__ import annotations

import inspect
import os
import runpy
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner

from pruning_bench.cli import main
from pruning_bench.data.sources import DATASETS, SOURCES, _plugin_source, clear_cache
from pruning_bench.errors import BenchError
from pruning_bench.models import MODELS, build_model, describe_models

# A builder and a loader; the file version marks them, the entry-point version names them in entry_points.txt.
SOURCE = '''
import math
import os

import torch
from torch import nn

from pruning_bench import RawDataset, register_dataset, register_model


{mark_model}
def {model}(num_classes: int, input_shape: tuple, *, hidden: int = 8, depth: int = 1) -> nn.Module:
    """MLP with BatchNorm ({where})."""
    if os.environ.get("PBTOY_PIDS"):  # which processes built it
        with open(os.environ["PBTOY_PIDS"], "a") as f:
            f.write(f"{{os.getpid()}}\\n")
    layers, width = [nn.Flatten()], math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


{mark_dataset}
def {dataset}(*, n_train: int = 64, n_test: int = 32, length: int = 8, classes: int = 2,
              spread: float = 0.5) -> RawDataset:
    """Gaussian blobs, one centre per class ({where})."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, 1, length, generator=gen)

    def make(n):
        y = torch.arange(n) % classes
        return centres[y] + spread * torch.randn(n, 1, length, generator=gen), y

    (train_x, train_y), (test_x, test_y) = make(n_train), make(n_test)
    return RawDataset(train_x, train_y, test_x, test_y, num_classes=classes, mean=(0.0,), std=(1.0,),
                      augmentation="none")
'''
EP_MODULE = "pbtoy_plugins"
# hidden = 12, depth = 2 over length 10 and 3 classes: 10*12 + 12*12 + 12*3 prunable weights (defaults: 80)
PARAMS_WITH_OPTIONS = 300


@pytest.fixture(autouse=True)
def fresh_registries():
    """Plugins registered by one test are gone for the next (and for the other test files)."""
    yield
    MODELS.reset()
    DATASETS.reset()
    _plugin_source.cache_clear()
    clear_cache()


@pytest.fixture
def plugin_file(tmp_path: Path) -> Path:
    path = tmp_path / "toy_plugin.py"
    path.write_text(SOURCE.format(model="file_mlp", dataset="file_blobs", where="from a file",
                                  mark_model='@register_model("file_mlp")',
                                  mark_dataset='@register_dataset("file_blobs")'))
    return path


def make_site(root: Path, entry_points: str, module: str = "") -> Path:
    """A directory that, on sys.path, is an installed distribution 'pbtoy' with these entry points."""
    site = root / "site"
    info = site / "pbtoy-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pbtoy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    (site / f"{EP_MODULE}.py").write_text(module or SOURCE.format(
        model="ep_mlp", dataset="ep_blobs", where="from an entry point", mark_model="", mark_dataset=""))
    return site


@pytest.fixture
def entry_point_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = make_site(tmp_path, f"""
        [pruning_bench.models]
        ep_mlp = {EP_MODULE}:ep_mlp
        [pruning_bench.datasets]
        ep_blobs = {EP_MODULE}:ep_blobs
    """)
    monkeypatch.syspath_prepend(str(site))  # also invalidates importlib's caches
    monkeypatch.delitem(sys.modules, EP_MODULE, raising=False)
    return site


def write_suite(path: Path, dataset: str, model: str, dataset_options: str = "length = 10, classes = 3",
                model_options: str = "hidden = 12\ndepth = 2") -> Path:
    path.write_text(f'[dataset]\nname = "{dataset}"\noptions = {{ {dataset_options} }}\n'
                    f'[model]\nname = "{model}"\n{model_options}\n'
                    '[recipe]\nbatch_size = 16\n[budget]\nepochs = 1\n')
    return path


def run_bench(tmp_path: Path, suite: Path, *extra: str):
    return CliRunner().invoke(main, ["run", "--suite", str(suite), "--methods", "dense", "--epochs", "1",
                                     "--threads", "1", "--no-progress", "--results-dir", str(tmp_path / "results"),
                                     *extra])


def recorded(tmp_path: Path, suite: Path):
    from pruning_bench.report.publish import load_runs

    return load_runs(f"sqlite:///{tmp_path}/results/mlflow.db", suite.stem)


def one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    return errors[0]


# ---- a real `bench run` -----------------------------------------------------------------------------
def test_file_model_and_entry_point_dataset_run_with_their_options(tmp_path, plugin_file, entry_point_site):
    suite = write_suite(tmp_path / "file_suite.toml", "ep_blobs", "file_mlp")
    result = run_bench(tmp_path, suite, "--plugin", str(plugin_file))
    assert result.exit_code == 0, result.output
    runs = recorded(tmp_path, suite)
    assert list(runs["status"]) == ["FINISHED"]
    assert runs["metrics.total_params"].iloc[0] == PARAMS_WITH_OPTIONS  # the model's and the data's options


def test_entry_point_model_and_file_dataset_run_in_a_worker_process(tmp_path, plugin_file, entry_point_site,
                                                                    monkeypatch):
    suite = write_suite(tmp_path / "worker_suite.toml", "file_blobs", "ep_mlp")
    monkeypatch.setenv("PBTOY_PIDS", str(tmp_path / "pids"))
    result = run_bench(tmp_path, suite, "--plugin", str(plugin_file), "--executor", "processes", "--jobs", "1")
    assert result.exit_code == 0, result.output  # the spawned worker registered both again
    assert {int(pid) for pid in (tmp_path / "pids").read_text().split()} - {os.getpid()}  # built in the worker
    runs = recorded(tmp_path, suite)
    assert list(runs["status"]) == ["FINISHED"]
    assert runs["metrics.total_params"].iloc[0] == PARAMS_WITH_OPTIONS


# ---- bad options: one line, exit 2, the file and the key, nothing recorded --------------------------
@pytest.mark.parametrize(("dataset_options", "model_options", "expected"), [
    ("length = 10", "hiden = 12", "model 'file_mlp' has no option 'hiden' (a [model] key); valid: hidden, depth"),
    ("length = 10", 'hidden = "wide"', "model 'file_mlp': option 'hidden' must be int like its default 8"),
    ("length = 10", "num_classes = 3", "option 'num_classes' is set by the harness"),
    ("lenght = 10", "", "dataset 'file_blobs' has no option 'lenght' (a [dataset.options] key)"),
    ("spread = true", "", "dataset 'file_blobs': option 'spread' must be float like its default 0.5, got True"),
])
def test_bad_options_are_one_line_errors_naming_file_and_key(tmp_path, plugin_file, dataset_options,
                                                             model_options, expected):
    suite = write_suite(tmp_path / "bad.toml", "file_blobs", "file_mlp", dataset_options, model_options)
    result = run_bench(tmp_path, suite, "--plugin", str(plugin_file))
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert line.startswith(f"Error: {suite}: ") and expected in line
    assert not (tmp_path / "results" / "mlflow.db").exists()


def test_entry_point_bad_option_names_the_suite_file(tmp_path, entry_point_site):
    suite = write_suite(tmp_path / "ep_bad.toml", "ep_blobs", "ep_mlp", model_options="width = 3")
    result = run_bench(tmp_path, suite)
    assert result.exit_code == 2
    assert f"{suite}: model 'ep_mlp' has no option 'width'" in one_error_line(result.output)


# ---- listing and lazy loading -----------------------------------------------------------------------
def listed_lines(output: str) -> dict[str, str]:
    """``bench list`` lines by their first word, in the printed order."""
    return {line.split()[0]: line for line in output.splitlines() if line.strip()}


def plugin_entry(fn, origin: str) -> str:
    """What a plugin's listing line carries, read off the function itself: its first docstring line, its
    keyword options with their defaults, and where it came from."""
    options = ", ".join(f"{name}={p.default!r}" for name, p in inspect.signature(fn).parameters.items()
                        if p.kind is p.KEYWORD_ONLY)
    description = inspect.getdoc(fn).splitlines()[0] + (f" (options: {options})" if options else "")
    return f"{description}  [plugin: {origin}]"


def test_list_shows_plugins_with_their_origin(plugin_file, entry_point_site):
    from_file = runpy.run_path(str(plugin_file))  # the file's functions, loaded by hand
    installed = {ep.name: ep for group in ("pruning_bench.models", "pruning_bench.datasets")
                 for ep in entry_points(group=group)}  # the toy distribution's metadata

    def ep_origin(name: str) -> str:
        ep = installed[name]
        return f"entry point {ep.value} ({ep.dist.name} {ep.dist.version})"

    expected = {
        "models": (list(describe_models()), {
            "file_mlp": plugin_entry(from_file["file_mlp"], str(plugin_file.resolve())),
            "ep_mlp": plugin_entry(installed["ep_mlp"].load(), ep_origin("ep_mlp"))}),
        "datasets": (list(SOURCES), {
            "file_blobs": plugin_entry(from_file["file_blobs"], str(plugin_file.resolve())),
            "ep_blobs": plugin_entry(installed["ep_blobs"].load(), ep_origin("ep_blobs"))}),
    }
    for what, (builtin, plugins) in expected.items():
        result = CliRunner().invoke(main, ["list", what, "--plugin", str(plugin_file)])
        assert result.exit_code == 0, result.output
        lines = listed_lines(result.output)
        assert list(lines)[:len(builtin)] == builtin  # the built-ins first, as registered
        assert set(lines) == {*builtin, *plugins}
        for name, entry in plugins.items():
            assert lines[name].split(maxsplit=1)[1] == entry, name
        assert not any("[plugin:" in lines[name] for name in builtin)


def test_help_imports_neither_torch_nor_plugins(tmp_path):
    site = make_site(tmp_path, f"[pruning_bench.models]\nep_mlp = {EP_MODULE}:ep_mlp\n")
    probe = ("import sys\nfrom click.testing import CliRunner\nfrom pruning_bench.cli import main\n"
             "assert CliRunner().invoke(main, ['--help']).exit_code == 0\n"
             f"print(sorted(m for m in ('torch', '{EP_MODULE}') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_entry_points_load_only_when_their_name_is_used(tmp_path, monkeypatch):
    site = make_site(tmp_path, f"""
        [pruning_bench.models]
        ep_mlp = {EP_MODULE}:ep_mlp
        broken = no_such_module:builder
    """)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, EP_MODULE, raising=False)
    build_model("smoke_cnn", num_classes=2, input_shape=(1, 8))  # a built-in: no entry point imported
    assert EP_MODULE not in sys.modules
    model = build_model("ep_mlp", num_classes=2, input_shape=(1, 8), options={"hidden": 4})
    assert model[1].out_features == 4 and EP_MODULE in sys.modules
    with pytest.raises(BenchError, match=r"model plugin 'broken' \(entry point no_such_module:builder .*\) "
                                         "failed to load: ModuleNotFoundError"):
        build_model("broken", num_classes=2, input_shape=(1, 8))
