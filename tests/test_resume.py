"""Every method resumes mid-trial from the shared loop's checkpoints and ends exactly where an
uninterrupted run ends (weights, masks, budget spent, per-round logs)."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import make_context
from pruning_bench.methods.network_slimming import NetworkSlimming
from test_controls import magnitude_source, source_of, with_factory

from pruning_bench.core.resume import CallCheckpoint, TrialCheckpoints
from pruning_bench.core.training import TrainCallback
from pruning_bench.plan.registry import default_registry

pytestmark = pytest.mark.slow  # every method crashed and resumed

FAST = {"imp": {"rewind_iters": 2}, "swamp": {"particles": 2, "rewind_iters": 2},
        "grasp": {"score_batch_size": 64}}
METHODS = default_registry().names()


class Crash(Exception):
    """Stands in for kill -9: raised right after the n-th checkpoint write."""


def _run(name: str, checkpoint_dir, *, crash_after: int | None = None, monkeypatch=None):
    cls = default_registry().get(name)
    ctx = make_context(policy="native", epochs=1, sparsity=0.5, checkpoint_dir=checkpoint_dir,
                       checkpoint_seconds=0.0 if checkpoint_dir else 300.0, params=None)
    if cls.control:  # a control trains from its source's result: a shrunk one for scratch
        ctx.source, ctx.models = _source(structured=name == "scratch"), with_factory(ctx).models
    saves = {"n": 0}
    if monkeypatch is not None:
        original = CallCheckpoint.save

        def counting(self, loop, *, final):
            original(self, loop, final=final)
            saves["n"] += 1
            if crash_after is not None and saves["n"] == crash_after:
                raise Crash
        monkeypatch.setattr(CallCheckpoint, "save", counting)
    cls(cls.parse_params(FAST.get(name, {"source": "snip"} if cls.control else {}))).run(ctx)
    return ctx, saves["n"]


@functools.cache
def _source(structured: bool):
    """A control's source result, the same in every run: magnitude-pruned, or physically slimmed."""
    if not structured:
        return magnitude_source(sparsity=0.5)
    slim = make_context(epochs=1, sparsity=0.5)
    NetworkSlimming().run(slim)
    return source_of(slim, "network_slimming", structured=True)


def _same(a, b) -> None:
    for (n, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), n
    for n in a.masks.masks:
        assert torch.equal(a.masks.masks[n], b.masks.masks[n]), n
    assert a.budget.samples == b.budget.samples
    assert a.logged == b.logged


@pytest.mark.parametrize("name", METHODS)
def test_every_method_resumes_mid_trial_to_the_uninterrupted_result(name, tmp_path, monkeypatch):
    reference, _ = _run(name, None)
    _, total = _run(name, tmp_path / "count", monkeypatch=monkeypatch)
    assert total >= 2, f"{name}: the loop wrote {total} checkpoints"
    with pytest.raises(Crash):
        _run(name, tmp_path / "ckpt", crash_after=total // 2 + 1, monkeypatch=monkeypatch)
    resumed, _ = _run(name, tmp_path / "ckpt", monkeypatch=monkeypatch)
    assert resumed.checkpoints.skipped + resumed.checkpoints.resumed >= 1  # it did continue, not restart
    _same(reference, resumed)


class Counter(TrainCallback):
    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        self.steps, self.seen, self.total, self.weights = 0, [], torch.zeros(2), weights

    def on_step_end(self, state) -> None:
        self.steps += 1
        self.seen.append(self.steps)
        self.total += 1


def test_callback_state_round_trips_in_place_and_leaves_parameters_to_the_model():
    param = torch.nn.Parameter(torch.ones(3))
    cb = Counter({"w": param})
    for _ in range(3):
        cb.on_step_end(None)
    state = cb.state_dict()
    assert state["steps"] == 3 and state["seen"] == [1, 2, 3] and "weights" not in state
    fresh = Counter({"w": param})
    alias = fresh.total
    fresh.load_state_dict(state)
    assert fresh.steps == 3 and fresh.total is alias and torch.equal(alias, torch.full((2,), 3.0))


def test_a_rerun_whose_calls_differ_from_the_checkpoints_is_refused(tmp_path):
    ctx = make_context(policy="native", epochs=1, checkpoint_dir=tmp_path, checkpoint_seconds=0.0)
    ctx.train(steps=3)
    again = make_context(policy="native", epochs=1, checkpoint_dir=tmp_path, checkpoint_seconds=0.0)
    from pruning_bench.core.resume import CheckpointMismatch

    with pytest.raises(CheckpointMismatch, match="steps"):
        again.train(steps=4)


def test_checkpoint_files_are_written_by_rename_and_cleared_at_a_barrier(tmp_path):
    ctx = make_context(policy="native", epochs=1, checkpoint_dir=tmp_path, checkpoint_seconds=0.0)
    ctx.train(steps=3)
    assert (tmp_path / "calls" / "b0-c0.pt").is_file() and not list(tmp_path.rglob("*.tmp"))
    ctx.save_checkpoint({"round": 1})
    assert not (tmp_path / "calls").exists() and (tmp_path / "checkpoint.pt").is_file()
    assert TrialCheckpoints(tmp_path).meta() == {}


@pytest.mark.parametrize(("name", "victim"), [("dense", "partial.pt"), ("imp", "checkpoint.pt"),
                                              ("global_magnitude", "calls"), ("dense", "meta.json")])
def test_a_corrupt_checkpoint_is_one_warning_and_the_trial_still_ends_as_uninterrupted(name, victim, tmp_path,
                                                                                       monkeypatch, capsys):
    reference, _ = _run(name, None)
    _, total = _run(name, tmp_path / "count", monkeypatch=monkeypatch)
    with pytest.raises(Crash):  # late, for an end state of an earlier call to exist
        _run(name, tmp_path / "ckpt", crash_after=total - 2 if victim == "calls" else total // 2 + 1,
             monkeypatch=monkeypatch)
    ckpt = tmp_path / "ckpt"
    if victim == "meta.json":  # read by the trial runner, before the method
        (ckpt / "meta.json").write_text('{"threads": ')
        capsys.readouterr()
        assert TrialCheckpoints(ckpt).meta() == {}
        assert capsys.readouterr().err.startswith("warning: checkpoint")
        return
    else:
        files = sorted((ckpt / "calls").glob("*.pt")) if victim == "calls" else [ckpt / victim]
        assert files and all(f.is_file() for f in files), sorted(p.name for p in ckpt.rglob("*"))
        data = files[-1].read_bytes()
        files[-1].write_bytes(data[: len(data) // 2])  # truncated, as a full disk or a kill mid-copy leaves it
    capsys.readouterr()
    resumed, _ = _run(name, ckpt, monkeypatch=monkeypatch)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: checkpoint")]
    assert len(warnings) == 1 and "unreadable" in warnings[0]
    _same(reference, resumed)
