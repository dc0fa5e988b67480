"""Report stage 3, the cost and sanity tables: per budget level, method and target sparsity, what every
number cost (training and inference) and whether the trials hit their target (sparsity, emptied layers,
failures, does-not-fit), as text-valued DataFrames (also written as they are by the CSV and Markdown
outputs).
"""

from __future__ import annotations

import math

import pandas as pd

from pruning_bench.core.units import unit_suffix
from pruning_bench.report.cells import pct
from pruning_bench.report.data import FIT_LEVEL, level_order
from pruning_bench.report.document import MISSING
from pruning_bench.report.leaderboard import row_order
from pruning_bench.report.stats import si_split

COST_LEGEND = ("Means over seeds. Epochs charged = sample passes / training-set size (a forward-only pass "
               "counts 1/3); train FLOPs as charged by the meter (3x the masked forward per sample, dense "
               "gradient steps and forward-only passes as they are); unspent = share of the equal budget "
               "left; plan = rounds x round length x particles of iterative methods; inference FLOPs = "
               "per-layer FLOPs (torch.utils.flop_counter, a multiply-add = 2) x per-layer density.")


def _si(value: float, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    scaled, prefix = si_split(value)
    return f"{scaled:.3g} {prefix}{unit}".strip()


def _num(value: float, fmt: str = "{:.3g}") -> str:
    return MISSING if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def _ordered(cells: pd.DataFrame) -> pd.DataFrame:
    refs = set(cells.loc[cells["target_sparsity"] == 0, "method"])
    order = {r: i for i, r in enumerate(row_order(sorted(cells["method"].unique()), refs))}
    return cells.assign(_o=cells["method"].map(order), _l=cells["level"].map(level_order)).sort_values(
        ["policy", "unit", "_l", "budget_multiple", "_o", "target_sparsity"]).drop(columns=["_o", "_l"])


def _budget_labels(cells: pd.DataFrame) -> list[str]:
    """'equal 4x', 'equal 1x flops', 'equal fit=7.4x': a cell's budget level in a table column."""
    return [f"{p} {'fit=' if lv == FIT_LEVEL else ''}{m:g}x" + unit_suffix(u)
            for p, u, lv, m in zip(cells["policy"], cells["unit"], cells["level"], cells["budget_multiple"],
                                   strict=True)]


def _plan(rec: pd.Series) -> str:
    if math.isnan(rec["plan_rounds_mean"]):
        return ""
    particles = rec["plan_particles_mean"]
    text = f"{rec['plan_rounds_mean'] + 1:.0f} x {rec['plan_round_epochs_mean']:.3g} ep"
    return text + (f" x {particles:.0f}" if particles > 1 else "")


def cost_table(cells: pd.DataFrame) -> pd.DataFrame:
    """What every number cost, per budget level, method and target sparsity: training (epochs charged,
    FLOPs, unspent share of an equal budget, the iterative plan, seconds, device) and inference
    (effective FLOPs, their share of the dense FLOPs, latency where measured)."""
    cells = _ordered(cells[cells["n"] > 0])
    out = pd.DataFrame({
        "budget": _budget_labels(cells),
        "method": cells["method"],
        "target": [pct(t) if t > 0 else "0% (dense)" for t in cells["target_sparsity"]],
        "n": cells["n"].astype(int),
        "epochs charged": [_num(v, "{:.2f}") for v in cells["epochs_charged_mean"]],
        "train FLOPs": [_si(v, "FLOP") for v in cells["train_flops_mean"]],
        "unspent": [_num(100 * v, "{:.1f}%") if p == "equal" else MISSING
                    for v, p in zip(cells["budget_unspent_fraction_mean"], cells["policy"], strict=True)],
        "plan (rounds x length x particles)": [_plan(rec) or MISSING for _, rec in cells.iterrows()],
        "train time (s)": [_num(v, "{:.1f}") for v in cells["train_seconds_mean"]],
        "inference FLOPs": [_si(v, "FLOP") for v in cells["flops_effective_mean"]],
        "% of dense FLOPs": [_num(100 * e / d, "{:.1f}") if d else MISSING
                             for e, d in zip(cells["flops_effective_mean"], cells["flops_dense_mean"], strict=True)],
    })
    if cells["latency_ms_mean"].notna().any():
        out["latency (ms)"] = [_num(v, "{:.3f}") for v in cells["latency_ms_mean"]]
    out["device"] = cells["devices"].to_numpy()
    return out.reset_index(drop=True)


def sanity_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Achieved vs target sparsity, emptied layers, failures and does-not-fit trials per cell."""
    cells = _ordered(cells)
    return pd.DataFrame({
        "budget": _budget_labels(cells),
        "method": cells["method"],
        "target": [pct(t) if t > 0 else "0% (dense)" for t in cells["target_sparsity"]],
        "finished": cells["n"].astype(int),
        "did not fit": [_flag(v) for v in cells["n_does_not_fit"]],
        "achieved sparsity": [_num(100 * v, "{:.2f}%") for v in cells["sparsity_mean"]],
        "max deviation (pp)": [_num(v, "{:.2f}") for v in cells["max_sparsity_error_pp"]],
        "off target (>0.5 pp)": [_flag(v) for v in cells["off_target"]],
        "trials with an emptied layer": [_flag(v) for v in cells["emptied_layer_trials"]],
        "thinnest layer (channels kept)": [_num(100 * v, "{:.0f}%") for v in cells["min_channels_kept_fraction_mean"]],
        "FAILED/KILLED runs": [_failed(a, b) for a, b in zip(cells["n_failed"], cells["n_failed_unrecovered"],
                                                             strict=True)],
    }).reset_index(drop=True)


def _flag(count: float) -> str:
    return f"⚠ {int(count)}" if count else "0"


def _failed(total: int, unrecovered: int) -> str:
    if not total:
        return "0"
    rerun = total - unrecovered
    return f"⚠ {int(total)}" + (f" ({int(rerun)} rerun ok)" if rerun else "")

