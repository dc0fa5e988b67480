"""`--seeds` is a list with ranges: a bare number is that one seed; every bad value is one line, exit 2."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pruning_bench.cli import main
from pruning_bench.cli.parsing import parse_seeds
from pruning_bench.errors import BenchError
from pruning_bench.plan.suite import load_suite

FORMS = "give seeds like 0, 0,1,2 or 0-4"


@pytest.mark.parametrize("value, seeds", [
    ("0", [0]),
    ("3", [3]),                    # one seed, not a count
    ("0,1,2", [0, 1, 2]),
    ("0-4", [0, 1, 2, 3, 4]),
    ("0-2,7", [0, 1, 2, 7]),
    ("7,0-2", [7, 0, 1, 2]),       # order kept
    (" 5 , 1 - 2 ", [5, 1, 2]),    # spaces allowed
    ("4-4", [4]),
    ("0-4,2,2", [0, 1, 2, 3, 4]),  # a seed given twice runs once
])
def test_seed_forms(value, seeds):
    assert parse_seeds(value) == seeds


def test_no_value_means_the_suites_seeds():
    assert parse_seeds(None) is None


@pytest.mark.parametrize("value, message", [
    ("", f"--seeds is empty; {FORMS}"),
    ("  ", f"--seeds is empty; {FORMS}"),
    ("x", f"--seeds: 'x' is not a seed or a range of seeds; {FORMS}"),
    ("0,1.5", f"--seeds: '1.5' is not a seed or a range of seeds; {FORMS}"),
    ("0,,1", f"--seeds: '0,,1' has an empty item; {FORMS}"),
    ("0,", f"--seeds: '0,' has an empty item; {FORMS}"),
    ("-1", f"--seeds: '-1' is negative; seeds are integers >= 0; {FORMS}"),
    ("0,-3-2", f"--seeds: '-3-2' is negative; seeds are integers >= 0; {FORMS}"),
    ("4-0", "--seeds: '4-0' is a reversed range; write 0-4"),
    ("0-", f"--seeds: '0-' is not a seed or a range of seeds; {FORMS}"),
    ("0-2-4", f"--seeds: '0-2-4' is not a seed or a range of seeds; {FORMS}"),
    ("0-99999", "--seeds: '0-99999' is 100,000 seeds; at most 10,000 in one run"),
])
def test_bad_seeds_are_one_line_naming_the_value(value, message):
    with pytest.raises(BenchError) as err:
        parse_seeds(value)
    assert str(err.value) == message


@pytest.mark.parametrize("value", ["4-0", "-1", "x", ""])
def test_bad_seeds_exit_2_with_one_error_line(tmp_path, value):
    result = CliRunner().invoke(main, ["run", "--suite", "smoke", "--seeds", value, "--results-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--seeds" in errors[0], result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_the_plan_runs_exactly_the_seeds_given(tmp_path):
    def planned(value: str) -> list[str]:
        result = CliRunner().invoke(main, ["run", "--suite", "smoke", "--methods", "dense", "--seeds", value,
                                           "--results-dir", str(tmp_path), "--dry-run"])
        assert result.exit_code == 0, result.output
        return [word for line in result.output.splitlines() for word in line.split() if word.startswith("seed=")]

    assert planned("3") == ["seed=3"]
    assert planned("0-2,7") == ["seed=0", "seed=1", "seed=2", "seed=7"]


def test_suite_seeds_stay_a_toml_list(tmp_path):
    path = tmp_path / "s.toml"
    body = '[dataset]\nname = "smoke"\n[model]\nname = "smoke_cnn"\n[budget]\nepochs = 1\n'
    path.write_text('seeds = "0-4"\n' + body)
    with pytest.raises(BenchError, match=r"key 'seeds' must be a list, got '0-4'"):
        load_suite(str(path))
    path.write_text("seeds = [0, 5]\n" + body)
    assert load_suite(str(path)).seeds == [0, 5]
