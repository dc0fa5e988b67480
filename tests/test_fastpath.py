"""A repeated `bench run` with nothing left to do is answered from the store without torch or MLflow,
and only while the answer still holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from pruning_bench.cli import main

PROBE = """
import sys
from click.testing import CliRunner
from pruning_bench.cli import main
result = CliRunner().invoke(main, sys.argv[1:])
print(result.output, end="")
print("HEAVY:" + ",".join(m for m in ("torch", "mlflow", "pandas") if m in sys.modules))
"""


def args_for(results: Path, suite: str = "smoke", seeds: str = "0,1") -> list[str]:
    return ["run", "--suite", suite, "--methods", "dense", "--seeds", seeds, "--sparsities", "0.5", "--epochs",
            "1", "--threads", "1", "--no-progress", "--results-dir", str(results)]


def probe(args: list[str]) -> tuple[str, str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    text, _, heavy = out.rpartition("HEAVY:")
    return text, heavy.strip()


def test_a_repeated_command_is_answered_without_torch_and_with_the_same_text(tmp_path):
    first = CliRunner().invoke(main, args_for(tmp_path))
    assert first.exit_code == 0, first.output
    full = CliRunner().invoke(main, [*args_for(tmp_path), "--jobs", "1"])  # how-to-run options do not matter
    assert "Nothing to run: all 2 trials" in full.output
    fast, heavy = probe(args_for(tmp_path))
    assert heavy == "" and fast.strip() == full.output.strip()


def test_the_answer_is_not_reused_once_the_store_or_the_suite_changed(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text((Path(__file__).parents[1] / "suites" / "smoke.toml").read_text())
    assert CliRunner().invoke(main, args_for(tmp_path, str(suite))).exit_code == 0
    assert probe(args_for(tmp_path, str(suite)))[1] == ""
    assert CliRunner().invoke(main, args_for(tmp_path, str(suite), seeds="5")).exit_code == 0  # another run
    text, heavy = probe(args_for(tmp_path, str(suite)))
    assert "torch" in heavy and "Nothing to run: all 2 trials" in text  # the normal path, same answer
    suite.write_text(suite.read_text().replace("lr = 0.05", "lr = 0.06"))  # other trial keys
    text, heavy = probe(args_for(tmp_path, str(suite)))
    assert "torch" in heavy and "Nothing to run" not in text and "Ran 2 trials" in text
