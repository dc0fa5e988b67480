"""An installed wheel (not only a checkout) carries the built-in methods, suites and entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds and installs the wheel

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out)], check=True, capture_output=True)
    (path,) = out.glob("pruning_bench-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_contains_methods_and_suites(wheel):
    names = set(wheel.namelist())
    for method in ("dense", "global_magnitude", "snip"):
        assert f"pruning_bench/methods/{method}.py" in names
    for suite in ("mnist1d", "digits", "cifar10", "cifar100", "smoke"):
        assert f"pruning_bench/suites/{suite}.toml" in names
    assert not any(n.startswith(("tests/", "results/", "methods/")) for n in names)


def test_wheel_registers_builtin_methods_as_entry_points(wheel):
    (ep_file,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    text = wheel.read(ep_file).decode()
    assert "[pruning_bench.methods]" in text
    assert "dense = pruning_bench.methods.dense:Dense" in text
    assert "bench = pruning_bench.cli:main" in text
