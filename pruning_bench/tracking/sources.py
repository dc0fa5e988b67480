"""A control trial's source, read back from the tracking store: the newest finished run of the source's
trial key, its per-layer table and its masks (:mod:`pruning_bench.core.source`).

When there is none, the reason is one line the sweep prints as the control's ``no_source`` outcome: the
source failed, did not fit its budget, was interrupted or never ran. The control then records nothing,
so the same command runs it once its source has finished.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pruning_bench.core.source import (
    LAYERS_ARTIFACT,
    MASKS_ARTIFACT,
    SourceResult,
    load_masks,
    read_layer_table,
)
from pruning_bench.tracking.tracker import Tracker


def load_source(tracker: Tracker, method: str, key: str) -> SourceResult | str:
    """The finished source trial ``key`` of method ``method``, or why a control cannot use it."""
    run = tracker.latest_finished(key)
    name = f"{method} (key {key})"
    if run is None:
        states = sorted({v.status for v in tracker.runs_with_key(key)})
        why = f"its runs are {'/'.join(states)}" if states else "it has no run in this store"
        return f"source {name} has not finished: {why}; run the command again once it has"
    tags = run.data.tags
    if tags.get("outcome") == "does_not_fit":
        need = run.data.metrics.get("min_budget_epochs", float("nan"))
        return f"source {name} did not fit its budget (needs >= {need:.4g} epochs): there is nothing to control"
    with tempfile.TemporaryDirectory() as tmp:
        table = tracker.download(run.info.run_id, LAYERS_ARTIFACT, Path(tmp))
        if table is None:
            return f"source {name} (run {run.info.run_id}) recorded no {LAYERS_ARTIFACT}; rerun it with --rerun"
        masks_file = tracker.download(run.info.run_id, MASKS_ARTIFACT, Path(tmp))
        layers = read_layer_table(table, who=f"source {name}")
        masks = load_masks(masks_file) if masks_file is not None else None
    return SourceResult(method=method, key=key, run_id=run.info.run_id, layers=layers, masks=masks,
                        structured=tags.get("granularity") == "structured")
