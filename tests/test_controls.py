"""The control methods on a tiny model: reinit keeps the source's exact mask from a fresh initialisation,
shuffle keeps every layer's kept count and moves the weights, scratch rebuilds a shrunk architecture."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_context
from pruning_bench.methods.network_slimming import NetworkSlimming
from pruning_bench.methods.reinit import Reinit
from pruning_bench.methods.scratch import Scratch
from pruning_bench.methods.shuffle import Shuffle

from pruning_bench.core.model_factory import ModelFactory
from pruning_bench.core.source import LayerRecord, SourceResult, layer_counts, load_masks, save_masks
from pruning_bench.errors import BenchError
from pruning_bench.models import build_model, initialize
from pruning_bench.pruning.controls import ControlParams, fresh_seed, rebuild


def with_factory(ctx):
    ctx.models = ModelFactory(build=lambda: build_model("smoke_cnn", num_classes=ctx.data.num_classes,
                                                        input_shape=ctx.data.input_shape), initialize=initialize)
    return ctx


def source_of(ctx, method: str, *, masks: bool = True, structured: bool = False) -> SourceResult:
    """What a finished trial of ``ctx`` records, as a control reads it back."""
    layers = {s.layer: LayerRecord(s.shape, s.nonzero) for s in ctx.masks.layer_stats()}
    kept = {n: m.clone() for n, m in ctx.masks.masks.items()} if masks else None
    return SourceResult(method=method, key="k" * 16, run_id="r", layers=layers, masks=kept, structured=structured)


def magnitude_source(sparsity: float = 0.8, seed: int = 0) -> SourceResult:
    ctx = make_context(epochs=0.5, sparsity=sparsity, seed=seed)
    ctx.train(epochs=0.5)
    ctx.masks.prune_magnitude(sparsity)
    return source_of(ctx, "global_magnitude")


def _control(cls, source: SourceResult, *, seed: int = 0, epochs: float = 1.0):
    ctx = with_factory(make_context(epochs=epochs, sparsity=0.8, seed=seed))
    ctx.source = source
    initial = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    cls(ControlParams(source=source.method)).run(ctx)
    return ctx, initial


def test_masks_round_trip_bit_packed(tmp_path):
    masks = {"a": torch.rand(3, 5, 7) > 0.5, "b": torch.rand(9) > 0.2}
    save_masks(masks, tmp_path / "masks.pt")
    back = load_masks(tmp_path / "masks.pt")
    assert set(back) == {"a", "b"} and all(torch.equal(back[n], masks[n]) for n in masks)
    assert (tmp_path / "masks.pt").stat().st_size < 2000  # 114 bits, not 114 bytes of bools plus pickling


def test_reinit_keeps_the_exact_mask_and_draws_fresh_weights():
    source = magnitude_source()
    ctx, initial = _control(Reinit, source)
    for n, m in ctx.masks.masks.items():
        assert torch.equal(m.cpu(), source.masks[n])  # the very same weights kept
    assert ctx.masks.leaked() == [] and ctx.budget.epochs_charged == pytest.approx(1.0)
    fresh = rebuild(ctx, source, fresh_seed(0))  # the run started from this model, not the trial seed's
    assert all(not torch.equal(fresh.get_parameter(n), initial[n]) for n in ctx.masks.names)
    assert all(torch.equal(fresh.get_parameter(n), ctx.models.fresh(fresh_seed(0)).get_parameter(n))
               for n in ctx.masks.names)


def test_shuffle_keeps_each_layers_count_and_moves_the_weights():
    source = magnitude_source()
    ctx, _ = _control(Shuffle, source)
    same = 0
    for n, m in ctx.masks.masks.items():
        assert int(m.sum()) == int(source.masks[n].sum())  # the source's layer-wise densities, exactly
        assert not torch.equal(m.cpu(), source.masks[n])
        same += int((m.cpu() & source.masks[n]).sum())
    kept = sum(int(m.sum()) for m in source.masks.values())
    assert same / kept < 0.5  # a random draw at density 0.2 keeps about a fifth of the source's weights


def test_shuffle_uses_the_table_when_the_source_recorded_no_masks_and_refuses_a_shrunk_source():
    source = magnitude_source()
    counts = {n: int(m.sum()) for n, m in source.masks.items()}
    no_masks = dataclasses.replace(source, masks=None)
    ctx, _ = _control(Shuffle, no_masks)
    assert {n: int(m.sum()) for n, m in ctx.masks.masks.items()} == counts
    shapes = {n: tuple(m.shape) for n, m in source.masks.items()}
    first = next(iter(shapes))
    shrunk = {**source.layers, first: LayerRecord((1, *shapes[first][1:]), 1)}
    with pytest.raises(BenchError, match="physically shrunk source: use scratch"):
        layer_counts(shrunk, shapes, who="shuffle[source=network_slimming]")


def test_scratch_rebuilds_the_shrunk_architecture_at_its_new_size():
    slim = make_context(epochs=1, sparsity=0.6)
    NetworkSlimming().run(slim)
    source = source_of(slim, "network_slimming", structured=True)
    shrunk = {n: tuple(p.shape) for n, p in slim.masks.params.items()}
    dense = {n: tuple(p.shape) for n, p in make_context().masks.params.items()}
    assert shrunk != dense
    ctx, _ = _control(Scratch, source)
    assert {n: tuple(p.shape) for n, p in ctx.masks.params.items()} == shrunk
    assert ctx.masks.sparsity() == 0 and ctx.budget.epochs_charged == pytest.approx(1.0)
    # every layer drawn afresh at its new size, not a slice of a fresh dense model (whose consumer weights
    # would keep the dense fan-in's scale)
    built = rebuild(with_factory(make_context()), source, fresh_seed(0))
    sliced_dense = with_factory(make_context()).models.fresh(fresh_seed(0))
    consumer = [n for n in shrunk if shrunk[n][1:] != dense[n][1:]][0]
    rows, cols = shrunk[consumer][0], shrunk[consumer][1]
    assert not torch.equal(built.get_parameter(consumer), sliced_dense.get_parameter(consumer)[:rows, :cols])


def test_reinit_of_a_structured_source_is_scratch_and_an_unrecorded_mask_is_a_clear_error():
    slim = make_context(epochs=1, sparsity=0.6)
    NetworkSlimming().run(slim)
    source = source_of(slim, "network_slimming", masks=False, structured=True)
    ctx, _ = _control(Reinit, source)  # all weights of the shrunk layers
    assert ctx.masks.sparsity() == 0
    unstructured = dataclasses.replace(magnitude_source(), masks=None)
    with pytest.raises(BenchError, match="recorded no masks.pt"):
        _control(Reinit, unstructured)


def test_a_control_outside_a_plan_and_without_a_source_parameter_are_clear_errors():
    with pytest.raises(BenchError, match="needs source=METHOD"):
        Reinit.parse_params({})
    ctx = with_factory(make_context(epochs=0.5))
    with pytest.raises(BenchError, match="runs in a plan, after its source"):
        Shuffle(ControlParams(source="imp")).run(ctx)
