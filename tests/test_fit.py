"""The ``fit`` budget level: each method's minimum priced before training, resolved per column on a stated
grid, identical budgets in a column, and a plan that really fits when it runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_context
from pruning_bench.methods.dense import Dense
from pruning_bench.methods.imp import IMP
from pruning_bench.methods.snip import Snip
from pruning_bench.methods.swamp import SWAMP

from pruning_bench.cli import main
from pruning_bench.core.budget import DoesNotFit
from pruning_bench.core.method import Method
from pruning_bench.core.steps import PlanSetting, StepCounts
from pruning_bench.errors import BenchError
from pruning_bench.execution.estimate import price_plan
from pruning_bench.plan.fit import FIT, parse_level, round_up_multiple
from pruning_bench.plan.registry import default_registry
from pruning_bench.plan.suite import load_suite
from pruning_bench.plan.trial import MethodSpec, build_plan


def test_grid_rounds_up_to_two_significant_digits_and_never_below_the_base_run():
    assert round_up_multiple(1.825) == 1.9
    assert round_up_multiple(7.305) == 7.4
    assert round_up_multiple(12.16) == 13.0
    assert round_up_multiple(123.4) == 130.0
    assert round_up_multiple(0.3) == 1.0 and round_up_multiple(0.0) == 1.0
    for x in (1.01, 2.345, 9.99, 10.01, 47.3):
        assert x <= round_up_multiple(x) <= x * 1.1 + 1e-9


@pytest.mark.parametrize(("item", "message"), [
    ("fitt", "'fitt' is not a budget level"), ("0", "budget multiple 0 is out of range"),
    ("-2", "budget multiple -2 is out of range")])
def test_bad_levels_are_one_line_errors(item, message):
    with pytest.raises(BenchError, match=message):
        parse_level(item, "--budgets")
    assert parse_level("FIT", "x") == FIT and parse_level("4x", "x") == 4.0


def counts_of(ctx) -> StepCounts:
    return StepCounts(ctx.data.n_train, ctx.recipe.batch_size)


@pytest.mark.parametrize(("cls", "params"), [
    (IMP, {"rewind_iters": 3}), (SWAMP, {"rewind_iters": 3}), (SWAMP, {"rewind_iters": 2, "swamp_plus": True}),
    (IMP, {"rewind_fraction": 0.1, "prune_fraction": 0.5})])
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_minimum_priced_before_training_equals_what_a_too_small_budget_reports(cls, params, sparsity):
    method = cls(cls.parse_params(params))
    ctx = make_context(epochs=1.0, sparsity=sparsity, min_round_epochs=0.5)
    setting = PlanSetting(sparsity, counts_of(ctx), 0.5)
    priced = method.min_budget_epochs(setting)
    with pytest.raises(DoesNotFit) as raised:
        method.run(ctx)
    assert priced == pytest.approx(raised.value.min_budget_epochs, rel=1e-12)


@pytest.mark.parametrize("cls", [IMP, SWAMP])
def test_at_the_fit_multiple_the_method_runs_as_itself_and_one_grid_step_below_it_does_not(cls):
    params = cls.parse_params({"rewind_iters": 3})
    probe = make_context(epochs=1.0, sparsity=0.8, min_round_epochs=0.5)
    need = cls(params).min_budget_epochs(PlanSetting(0.8, counts_of(probe), 0.5))
    fit = round_up_multiple(need)
    ctx = make_context(epochs=fit, sparsity=0.8, min_round_epochs=0.5)
    cls(params).run(ctx)
    assert ctx.masks.sparsity() == pytest.approx(0.8, abs=1e-3)  # its own 8 rounds of 20%, to the target
    assert ctx.budget.used <= ctx.budget.limit
    below = fit - 10 ** (math.floor(math.log10(fit)) - 1)  # the grid step below (two significant digits)
    assert below < need
    with pytest.raises(DoesNotFit):
        cls(params).run(make_context(epochs=below, sparsity=0.8, min_round_epochs=0.5))


def smoke_plan(methods, levels, sparsities=(0.5, 0.8)):
    suite = load_suite("smoke")
    registry = default_registry(())
    specs = [MethodSpec(registry.get(name)) for name in methods]
    return suite, build_plan(suite, specs, list(sparsities), [0, 1], "equal", multiples=levels)


def test_fit_gives_every_trial_of_a_column_one_budget_and_the_dense_row_each_columns():
    suite, plan = smoke_plan(["dense", "snip", "imp", "swamp"], [FIT])
    by_column = {}
    for t in plan:
        assert t.budget_levels == (FIT,)
        by_column.setdefault(t.target_sparsity, set()).add(t.budget_multiple)
    assert all(len(m) == 1 for s, m in by_column.items() if s > 0)
    fits = {s: m.pop() for s, m in by_column.items() if s > 0}
    assert fits[0.8] > fits[0.5] > 1  # more rounds at 80%
    assert by_column[0.0] == set(fits.values())  # dense trained at each column's fit
    registry = default_registry(())
    costs = price_plan(suite, plan, lambda t: registry.get(t.method)(t.params))
    assert all(c.epochs == c.trial.budget_epochs > 0 for c in costs)  # nothing does_not_fit at fit


def test_one_shot_methods_alone_fit_the_base_run():
    _, plan = smoke_plan(["dense", "snip"], [FIT])
    assert {t.budget_multiple for t in plan} == {1.0}


def test_a_fit_level_equal_to_a_numeric_level_is_one_trial_standing_for_both():
    _, plan = smoke_plan(["snip", "imp"], [1.0, FIT], sparsities=(0.5,))
    fit = {t.budget_multiple for t in plan if FIT in t.budget_levels}
    assert fit == {1.3}  # IMP's 1.25x at 50%, rounded up
    _, again = smoke_plan(["snip", "imp"], [1.3, FIT], sparsities=(0.5,))
    merged = [t for t in again if t.budget_multiple == 1.3]
    assert len(merged) == 4 and all(t.level_tag == "1.3x,fit" for t in merged)
    assert len({t.key for t in again}) == len(again)


def test_a_plugin_method_sets_the_fit_level_through_its_hook():
    class NeedsThree(Method):
        name = "needs_three"

        def min_budget_epochs(self, setting: PlanSetting) -> float:
            return 3.0 * 4 * (1 + setting.target_sparsity)  # 3x the 4-epoch base, more when sparser

        def run(self, ctx) -> None:
            ctx.train(steps=ctx.remaining_steps())

    suite = load_suite("smoke")
    plan = build_plan(suite, [Snip, NeedsThree, Dense], [0.5], [0], "equal", multiples=[FIT])
    assert {t.budget_multiple for t in plan} == {4.5}


@pytest.fixture
def default_suite_plans():
    registry = default_registry(())
    suite = load_suite("mnist1d")
    specs = [MethodSpec(registry.get(name)) for name in suite.methods]
    costs = {}
    for level in (1.0, FIT):
        plan = build_plan(suite, specs, suite.sparsities, suite.seeds, "equal", multiples=[level])
        costs[level] = price_plan(suite, plan, lambda t: registry.get(t.method)(t.params))
    return suite, costs


def test_default_suite_fit_level_holds_every_method_and_1x_still_leaves_imp_and_swamp_out(default_suite_plans):
    suite, costs = default_suite_plans
    assert suite.budget.multiples == [FIT]
    fit = costs[FIT]
    assert {c.trial.method for c in fit} == set(suite.methods)
    assert {c.trial.budget_epochs for c in fit} == {296.0}  # SWAMP's 9 rounds x 4 particles x 8 epochs: 7.4x
    assert all(c.epochs > 0 for c in fit)
    left_out = {c.trial.method for c in costs[1.0] if c.epochs == 0}
    assert left_out == {"imp", "swamp"}


def test_dry_run_prints_budgets_total_and_estimates(tmp_path):
    result = CliRunner().invoke(main, ["run", "--suite", "smoke", "--methods", "snip,imp", "--sparsities", "0.8",
                                       "--budgets", "1,fit", "--results-dir", str(tmp_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "imp s=0.8 seed=0 1x" in out and "does not fit (needs 2.107x)" in out
    assert "imp s=0.8 seed=0 fit=2.2x" in out and "8.8 epochs" in out
    assert "Budget level fit at 0.8 sparsity = 2.2x the base run (8.8 epochs); set by imp, which needs 2.107x" in out
    assert "Total: 22 epochs of training in 3 trials (1 will be recorded as does_not_fit" in out
    assert "Estimate here:" in out and "s per epoch, measured now on cpu" in out
    assert not (tmp_path / "mlflow.db").exists()


def test_a_suite_names_fit_in_its_ladder_and_a_bad_entry_names_the_file(tmp_path):
    text = load_suite("smoke").source
    suite_file = tmp_path / "mine.toml"
    base = Path(text).read_text().replace("[budget]\n", "[budget]\nmultiples = [1, \"fit\"]\n")
    suite_file.write_text(base)
    assert load_suite(str(suite_file)).budget.multiples == [1.0, FIT]
    suite_file.write_text(base.replace('"fit"', '"fast"'))
    with pytest.raises(BenchError, match=r"mine.toml: key 'budget.multiples': 'fast' is not a budget level"):
        load_suite(str(suite_file))
