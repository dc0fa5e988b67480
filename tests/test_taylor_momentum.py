"""Taylor channel pruning carries its importance across prune steps as the reference code does
(``NVlabs/Taylor_pruning``, ``pruning_engine.py``: a_t = m a_{t-1} + (1 - m) c_t, the first step c_1),
re-indexed to the channels a step keeps when the network is physically shrunk."""

from __future__ import annotations

import pytest
import torch
from conftest import make_context
from pruning_bench.methods.taylor_channels import TaylorChannels, TaylorImportance, TaylorParams


def run_recording(monkeypatch, momentum: float):
    """Each step's own importance (c_t), what selection was given, and which channels each step kept."""
    own, given, kept = [], [], []
    importance, select = TaylorImportance.importance, TaylorChannels._select

    def record_importance(self):
        own.append({k: v.clone() for k, v in importance(self).items()})
        return own[-1]

    def record_select(self, ctx, groups, scores, *args):
        given.append({k: v.clone() for k, v in scores.items()})
        kept.append(select(self, ctx, groups, scores, *args))
        return kept[-1]

    monkeypatch.setattr(TaylorImportance, "importance", record_importance)
    monkeypatch.setattr(TaylorChannels, "_select", record_select)
    TaylorChannels(TaylorParams(prune_steps=3, momentum=momentum)).run(make_context(epochs=3, sparsity=0.5))
    return own, given, kept


def test_the_importance_is_a_running_average_across_prune_steps(monkeypatch):
    own, given, kept = run_recording(monkeypatch, momentum=0.9)
    assert len(given) == 3
    for bn in own[0]:
        torch.testing.assert_close(given[0][bn], own[0][bn])  # the first step: its own average
    expected = own[0]
    for t in (1, 2):  # then 0.9 x the kept channels' running average + 0.1 x this step's, by hand
        expected = {bn: 0.9 * expected[bn][kept[t - 1][bn]] + 0.1 * own[t][bn] for bn in own[t]}
        for bn in own[t]:
            assert given[t][bn].shape == own[t][bn].shape  # one value per channel left after the shrink
            torch.testing.assert_close(given[t][bn], expected[bn])
    removed = sum(len(v) for v in own[0].values()) - sum(len(v) for v in kept[0].values())
    assert removed > 0  # the first step did shrink the network, so the re-indexing was exercised


def test_momentum_zero_forgets_the_previous_steps(monkeypatch):
    own, given, _ = run_recording(monkeypatch, momentum=0.0)
    for t in range(3):
        for bn in own[t]:
            torch.testing.assert_close(given[t][bn], own[t][bn])


def test_a_momentum_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="momentum must be in \\[0, 1\\), got 1.0"):
        TaylorParams(momentum=1.0).validate()
