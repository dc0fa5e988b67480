"""The shared training loop: schedules, schedule continuation, callbacks, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_context

from pruning_bench.core.recipe import Recipe
from pruning_bench.core.training import LRSchedule, TrainCallback


def test_cosine_and_step_schedules():
    cos = LRSchedule(Recipe(lr=0.1, schedule="cosine"), total_steps=100)
    assert cos.lr(0) == pytest.approx(0.1)
    assert cos.lr(50) == pytest.approx(0.05)
    assert cos.lr(100) == pytest.approx(0.0, abs=1e-12)
    step = LRSchedule(Recipe(lr=0.1, schedule="step", milestones=[0.5, 0.75], gamma=0.1), total_steps=100)
    assert [step.lr(s) for s in (0, 49, 50, 74, 75)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    warm = LRSchedule(Recipe(lr=0.1, schedule="constant"), total_steps=100, warmup_steps=10)
    assert warm.lr(0) == pytest.approx(0.01) and warm.lr(9) == pytest.approx(0.1)


class RecordLR(TrainCallback):
    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.steps: list[int] = []

    def on_step_end(self, state) -> None:
        self.lrs.append(state.optimizer.param_groups[0]["lr"])
        self.steps.append(state.step)


def test_schedule_continues_from_start_step():
    ctx = make_context(policy="native", epochs=1)
    rec = RecordLR()
    ctx.train(steps=5, start_step=10, schedule_steps=40, callbacks=[rec])
    assert rec.steps == list(range(10, 15))
    expected = [0.05 * 0.5 * (1 + math.cos(math.pi * s / 40)) for s in range(10, 15)]
    assert rec.lrs == pytest.approx(expected)


def test_same_seed_same_result_and_data_seed_changes_it():
    a, b, c = make_context(policy="native"), make_context(policy="native"), make_context(policy="native")
    a.train(steps=6)
    b.train(steps=6)
    c.train(steps=6, data_seed=99)
    wa, wb, wc = (torch.cat([p.detach().flatten() for p in m.model.parameters()]) for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_skip_optimizer_step_and_extra_loss():
    class Skip(TrainCallback):
        def skip_optimizer_step(self, state):
            return True

    ctx = make_context(policy="native")
    before = [p.detach().clone() for p in ctx.model.parameters()]
    ctx.train(steps=3, callbacks=[Skip()])
    # BN running stats move, but no parameter changes without an optimizer step
    assert all(torch.equal(b, p.detach()) for b, p in zip(before, ctx.model.parameters()))

    class Penalty(TrainCallback):
        def extra_loss(self, state):
            return 3.0 * sum((p ** 2).sum() for p in state.model.parameters())

    ctx2 = make_context(policy="native")
    norm0 = sum(float((p.detach() ** 2).sum()) for p in ctx2.model.parameters())
    ctx2.train(steps=5, callbacks=[Penalty()])
    assert sum(float((p.detach() ** 2).sum()) for p in ctx2.model.parameters()) < 0.5 * norm0


def test_snapshot_restore_rewinds_weights_and_masks():
    ctx = make_context(policy="native")
    snap = ctx.snapshot()
    ctx.train(steps=3)
    ctx.masks.prune_to_global({n: p.detach().abs() for n, p in ctx.masks.params.items()}, 0.5)
    ctx.restore(snap)
    for name, value in snap["model"].items():
        assert torch.equal(ctx.model.state_dict()[name], value)
    assert ctx.masks.sparsity() == 0.0


def test_checkpoint_round_trip_restores_weights_masks_meter_and_rng(tmp_path):
    ctx = make_context(policy="native", checkpoint_dir=tmp_path)
    ctx.train(steps=3)
    ctx.masks.prune_magnitude(0.5)
    ctx.save_checkpoint({"round": 2})
    expected_rng = torch.get_rng_state()
    weights = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    used = ctx.budget.used_samples
    fresh = make_context(policy="native", checkpoint_dir=tmp_path)
    torch.manual_seed(123)  # disturb the global RNG: the checkpoint must put it back
    assert fresh.load_checkpoint() == {"round": 2}
    assert torch.equal(torch.get_rng_state(), expected_rng)
    assert all(torch.equal(fresh.model.state_dict()[k], v) for k, v in weights.items())
    assert fresh.masks.sparsity() == ctx.masks.sparsity() and fresh.budget.used_samples == used
    assert fresh.budget.seconds_before > 0  # wall-clock before the interruption is carried over


def test_round_checkpoints_keep_the_measured_step_time_and_older_ones_still_load(tmp_path):
    ctx = make_context(policy="native", checkpoint_dir=tmp_path, unit="seconds", seconds=5.0)
    ctx.train(steps=2)  # the seconds unit measures its step time first
    measured = ctx.pricing.seconds_per_sample
    ctx.log("round_sparsity", 0.2, step=0)
    ctx.save_checkpoint({"round": 1})
    fresh = make_context(policy="native", checkpoint_dir=tmp_path, unit="seconds", seconds=5.0)
    assert fresh.load_checkpoint() == {"round": 1}
    assert fresh.pricing.seconds_per_sample == measured and fresh.logged == [("round_sparsity", 0.2, 0)]
    path = tmp_path / "checkpoint.pt"
    payload = torch.load(path, weights_only=False)
    del payload["seconds_per_sample"]  # a round checkpoint written before it was kept
    torch.save(payload, path)
    older = make_context(policy="native", checkpoint_dir=tmp_path)
    assert older.load_checkpoint() == {"round": 1} and older.pricing.seconds_per_sample is None


def test_without_a_terminal_progress_is_a_line_per_interval(monkeypatch, capsys):
    import pruning_bench.core.loop_state as loop_state

    monkeypatch.setattr(loop_state, "HEARTBEAT_SECONDS", 0.0)
    ctx = make_context(policy="native", epochs=2)
    ctx.trainer.progress = True  # pytest's stderr is no terminal: the bar is off, lines come instead
    ctx.train(epochs=2, desc="demo")
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip().startswith("demo:")]
    assert len(lines) == 2 and "epoch 2" in lines[1] and "2.0 epochs charged" in lines[1]


def test_nan_loss_stops_training_at_the_epoch_it_appears():
    ctx = make_context(policy="native", epochs=3, recipe=Recipe(lr=1e12, batch_size=64, momentum=0.9))
    with pytest.raises(FloatingPointError, match="NaN by step"):
        ctx.train(epochs=3)
    assert ctx.budget.epochs_charged < 3
