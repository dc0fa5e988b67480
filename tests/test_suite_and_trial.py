"""Suites load and validate; trial keys are stable and distinct; the plan covers the grid."""

from __future__ import annotations

import dataclasses

import pytest
from pruning_bench.methods.dense import Dense
from pruning_bench.methods.snip import Snip, SnipParams

from pruning_bench.errors import BenchError
from pruning_bench.plan.suite import builtin_suites, load_suite
from pruning_bench.plan.trial import build_plan


def test_every_builtin_suite_loads():
    assert {"mnist1d", "digits", "cifar10", "cifar100", "smoke"} <= set(builtin_suites())
    for name in builtin_suites():
        suite = load_suite(name)
        # epochs = 0 only for a pretrained model pruned as loaded (wikitext2), which needs policy native
        assert suite.name == name and (suite.budget.epochs > 0 or suite.budget.policy == "native")


@pytest.mark.parametrize("text, message", [
    ('[dataset]\nname = "smoke"\n[model]\nname = "smoke_cnn"\n[budget]\nepochs = 1\n[recipe]\nlrr = 0.1\n',
     "unknown key 'recipe.lrr'"),
    ('[dataset]\nname = "smoke"\n[model]\nname = "smoke_cnn"\n[budget]\nepochs = "ten"\n',
     "key 'budget.epochs' must be float"),
    ('sparsities = [0.5, 1.5]\n[dataset]\nname = "smoke"\n[model]\nname = "smoke_cnn"\n[budget]\nepochs = 1\n',
     "sparsity 1.5 is out of range"),
    ('[dataset]\nname = "smoke"\n[model]\nname = "smoke_cnn"\n', "missing required key 'budget'"),
    ('[dataset\nname = "smoke"\n', "not valid TOML"),
    ('seeds = [0, -1]\n[dataset]\nname = "smoke"\n[model]\nname = "smoke_cnn"\n[budget]\nepochs = 1\n',
     "key 'seeds': seed -1 is negative"),
    ('[report]\ncompare = [["swamp"]]\n[dataset]\nname = "smoke"\n[model]\nname = "smoke_cnn"\n[budget]\nepochs = 1\n',
     "key 'report.compare' holds pairs of two method names"),
])
def test_malformed_suite_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(BenchError, match=message) as err:
        load_suite(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_unknown_suite_name_suggests():
    with pytest.raises(BenchError, match="Did you mean 'mnist1d'"):
        load_suite("mnist1")


def test_trial_keys_stable_and_distinct():
    suite = load_suite("smoke")
    plan = build_plan(suite, [Dense, Snip], [0.5, 0.8], [0, 1], "equal")
    again = build_plan(load_suite("smoke"), [Dense, Snip], [0.5, 0.8], [0, 1], "equal")
    assert [t.key for t in plan] == [t.key for t in again]
    assert len({t.key for t in plan}) == len(plan) == 2 + 4  # dense: one trial per seed
    other_policy = build_plan(suite, [Snip], [0.5], [0], "native")[0]
    other_epochs = build_plan(suite.with_overrides(**{"budget.epochs": 7}), [Snip], [0.5], [0], "equal")[0]
    other_params = build_plan(suite, [Snip], [0.5], [0], "equal",
                              params={"snip": SnipParams(score_batch_size=7)})[0]
    base = plan[2]
    assert base.method == "snip" and base.target_sparsity == 0.5 and base.seed == 0
    assert len({base.key, other_policy.key, other_epochs.key, other_params.key}) == 4
    # the description of a suite does not change what a trial computes
    described = dataclasses.replace(suite, description="another text")
    assert build_plan(described, [Snip], [0.5], [0], "equal")[0].key == base.key


def test_suite_method_params_are_validated(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[dataset]\nname = "smoke"\n[model]\nname = "smoke_cnn"\n[budget]\nepochs = 1\n'
                    '[method_params.snip]\nscore_batch_sise = 3\n')
    with pytest.raises(BenchError, match="no parameter 'score_batch_sise'"):
        build_plan(load_suite(str(path)), [Snip], [0.5], [0], "equal")


def test_where_the_data_lives_does_not_change_the_key():
    suite = load_suite("smoke")
    base = build_plan(suite, [Snip], [0.5], [0], "equal")[0].key
    moved = suite.with_overrides(**{"dataset.data_dir": "/elsewhere", "dataset.download": True})
    assert build_plan(moved, [Snip], [0.5], [0], "equal")[0].key == base


def test_duplicate_sparsities_and_seeds_plan_each_trial_once():
    plan = build_plan(load_suite("smoke"), [Snip], [0.5, 0.50], [0, 0], "equal")
    assert len(plan) == 1


def test_a_relative_data_dir_is_read_from_the_suite_files_folder(tmp_path, monkeypatch):
    folder = tmp_path / "suites"
    folder.mkdir()
    (folder / "s.toml").write_text('[dataset]\nname = "cifar10"\ndata_dir = "../data"\n[model]\nname = "resnet20"\n'
                                   '[budget]\nepochs = 1\n')
    monkeypatch.chdir(folder.parent.parent)  # anywhere else
    assert load_suite(str(folder / "s.toml")).dataset.data_dir == str(tmp_path / "data")
    (folder / "s.toml").write_text('[dataset]\nname = "cifar10"\ndata_dir = "/abs/data"\n[model]\nname = "resnet20"\n'
                                   '[budget]\nepochs = 1\n')
    assert load_suite(str(folder / "s.toml")).dataset.data_dir == "/abs/data"


def test_empty_seed_list_is_rejected(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('seeds = []\n[dataset]\nname = "smoke"\n[model]\nname = "smoke_cnn"\n[budget]\nepochs = 1\n')
    with pytest.raises(BenchError, match="key 'seeds' is empty"):
        load_suite(str(path))


def test_integer_for_a_float_parameter_is_the_same_experiment():
    from pruning_bench.methods.global_magnitude import GlobalMagnitude

    params = GlobalMagnitude.parse_params({"gradual_begin": 0})
    assert isinstance(params.gradual_begin, float)
    suite = load_suite("smoke")
    a = build_plan(suite, [GlobalMagnitude], [0.5], [0], "equal", params={"global_magnitude": params})[0]
    b = build_plan(suite, [GlobalMagnitude], [0.5], [0], "equal",
                   params={"global_magnitude": GlobalMagnitude.parse_params({"gradual_begin": 0.0})})[0]
    assert a.key == b.key


def test_a_folder_named_like_a_suite_does_not_shadow_it(tmp_path, monkeypatch):
    (tmp_path / "smoke").mkdir()  # e.g. a results folder named after the suite, in the working directory
    monkeypatch.chdir(tmp_path)
    assert load_suite("smoke").name == "smoke"
