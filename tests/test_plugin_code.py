"""Plugin files as code: what loading one refuses (a registration that clashes with a built-in or has a bad
signature, a file that registers nothing), the builder and loader signatures it accepts, and code identity:
an edited plugin is never reused silently, and ``plugin_code`` names the files by their content."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import test_plugins

from pruning_bench.data.sources import load_dataset
from pruning_bench.errors import BenchError
from pruning_bench.models import build_model
from pruning_bench.plan.registry import default_registry

# test_plugins' fixtures: registrations end with each test (autouse), and its plugin file. Bound here rather
# than imported by name, which a test's parameter of the same name would shadow.
fresh_registries = test_plugins.fresh_registries
plugin_file = test_plugins.plugin_file


# ---- registration rules -----------------------------------------------------------------------------
@pytest.mark.parametrize(("source", "expected"), [
    ('@register_model("resnet20")\ndef m(num_classes, input_shape):\n    pass\n',
     "clashes with the built-in model 'resnet20'"),
    ('@register_model("resnet18")\ndef m(num_classes, input_shape):\n    pass\n',
     "clashes with the built-in model pattern 'resnet<d>'"),
    ('@register_model("mine")\ndef m(width=3):\n    pass\n', "must take num_classes, input_shape"),
    ('@register_dataset("mine")\ndef d(*, size):\n    pass\n', "option 'size' needs a default"),
    ('@register_dataset("mine")\ndef d(**options):\n    pass\n', "no **kwargs"),
    ('@register_model("a:b")\ndef m(num_classes, input_shape):\n    pass\n', "must be a word"),
    ("x = 1\n", "defines no pruning_bench.Method subclass"),
])
def test_bad_plugins_are_refused_when_loaded(tmp_path, source, expected):
    path = tmp_path / "bad_plugin.py"
    path.write_text("from pruning_bench import register_dataset, register_model\n" + source)
    with pytest.raises(BenchError, match="bad_plugin.py") as err:
        default_registry([str(path)])
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_builders_may_be_classes_and_take_kwargs(tmp_path):
    path = tmp_path / "styles.py"
    path.write_text(textwrap.dedent('''
        from torch import nn
        from pruning_bench import register_model

        @register_model("linear_cls")
        class LinearModel(nn.Module):
            """A class as builder."""
            def __init__(self, num_classes, input_shape, *, bias: bool = True):
                super().__init__()
                self.fc = nn.Linear(input_shape[-1], num_classes, bias=bias)

        @register_model("kw_net")
        def kw_net(**kwargs):
            """Anything goes; the builder checks."""
            if set(kwargs) - {"num_classes", "input_shape", "width"}:
                raise TypeError(f"unexpected {sorted(kwargs)}")
            return nn.Linear(kwargs["input_shape"][-1], kwargs.get("width", 2))
    '''))
    default_registry([str(path)])
    assert build_model("linear_cls", num_classes=3, input_shape=(1, 5), options={"bias": False}).fc.bias is None
    assert build_model("kw_net", num_classes=3, input_shape=(1, 5), options={"width": 7}).out_features == 7
    with pytest.raises(BenchError, match=r"model 'kw_net' \(.*styles.py\) with options \{'depth': 1\}: TypeError"):
        build_model("kw_net", num_classes=3, input_shape=(1, 5), options={"depth": 1})


def test_dataset_plugin_gets_data_dir_only_when_it_asks(tmp_path):
    path = tmp_path / "dirs.py"
    path.write_text(textwrap.dedent('''
        import torch
        from pruning_bench import RawDataset, register_dataset

        @register_dataset("dir_echo")
        def dir_echo(data_dir, download, *, n: int = 8):
            """Labels say whether a data_dir came in."""
            y = torch.full((n,), int(data_dir is not None and download is False))
            x = torch.zeros(n, 1, 4)
            return RawDataset(x, y, x, y, num_classes=2, mean=(0.0,), std=(1.0,), augmentation="none")
    '''))
    default_registry([str(path)])
    bundle = load_dataset("dir_echo", seed=0, val_fraction=0.0, data_dir=str(tmp_path), download=False,
                          options={"n": 6})
    assert bundle.n_train == 6 and bundle.train_y.tolist() == [1] * 6


CHANGING = '''
from pruning_bench import Method

SCALE = {scale}


class Scaled(Method):
    """Trains the rest of the budget (a plugin whose code a test edits)."""
    name = "scaled"

    def run(self, ctx):
        ctx.train(steps=max(1, int(ctx.remaining_steps() * SCALE)))
'''


def runs_of(root: Path):
    from pruning_bench.report.publish import load_runs

    return load_runs(f"sqlite:///{root}/mlflow.db", "smoke", status=None)


def test_an_edited_plugin_is_never_reused_silently(tmp_path):
    plugin = tmp_path / "scaled.py"
    plugin.write_text(CHANGING.format(scale=1.0))
    cmd = [sys.executable, "-m", "pruning_bench", "run", "--suite", "smoke", "--plugin", str(plugin), "--methods",
           "scaled", "--sparsities", "0.5", "--epochs", "1", "--threads", "1", "--no-progress",
           "--results-dir", str(tmp_path / "r")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    runs = runs_of(tmp_path / "r")
    old = runs["tags.code_plugins"].iloc[0]
    assert old.startswith("method=") and len(runs) == 1 and runs["tags.code_harness"].iloc[0]

    plugin.write_text(CHANGING.format(scale=0.5))  # the same method name, other code
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "computed by other plugin code: scaled" in errors[0] and "--rerun" in errors[0]
    assert len(runs_of(tmp_path / "r")) == 1  # nothing recorded

    kept = subprocess.run([*cmd, "--reuse-changed-code"], capture_output=True, text=True, timeout=300)
    assert kept.returncode == 0 and "Nothing to run" in kept.stdout
    again = subprocess.run([*cmd, "--rerun"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    runs = runs_of(tmp_path / "r")
    assert len(runs) == 2 and len(set(runs["tags.code_plugins"])) == 2  # the new code, recorded as such
    report = subprocess.run([sys.executable, "-m", "pruning_bench", "report", "--suite", "smoke", "--results-dir",
                             str(tmp_path / "r"), "--no-log", "--format", "md"], capture_output=True, text=True)
    text = (tmp_path / "r" / "reports" / "smoke" / "report.md").read_text()
    assert report.returncode == 0 and "- **Code**: harness" in text
    assert [line for line in text.splitlines() if "**Code**" in line][0].count("method=") == 1  # latest only


def test_plugin_code_names_the_method_model_and_data_set_files_by_their_content(plugin_file, tmp_path):
    import hashlib

    from pruning_bench.methods.snip import Snip

    from pruning_bench.execution.code_identity import plugin_code
    from pruning_bench.plan.registry import default_registry

    default_registry((str(plugin_file),))  # registers file_mlp and file_blobs
    digest = hashlib.sha256(plugin_file.read_bytes()).hexdigest()[:12]
    assert plugin_code(Snip, "file_mlp", "file_blobs") == f"model={digest},dataset={digest}"
    assert plugin_code(Snip, "smoke_cnn", "smoke") == ""  # the harness's own code: none
    method = tmp_path / "m.py"
    method.write_text(CHANGING.format(scale=1.0))
    cls = default_registry((str(method),)).get("scaled")
    assert plugin_code(cls, "smoke_cnn", "smoke") == f"method={hashlib.sha256(method.read_bytes()).hexdigest()[:12]}"
