"""Report stage 3, the leaderboards: one :class:`~pruning_bench.report.document.Table` per budget level
(rows = methods, columns = target sparsities, cells = mean ± std with best/tied marks), its title and
its legend.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from pruning_bench.core.units import UNITS
from pruning_bench.report.cells import level_cells, pct, scale_of
from pruning_bench.report.data import FIT_LEVEL
from pruning_bench.report.document import MISSING, Cell, Table
from pruning_bench.report.findings import column_resolution
from pruning_bench.report.stats import ceil_2sig

RESOLUTION_ROW = "smallest significant difference"  # the leaderboard's last row: what Welch's test resolves
LEGEND = ("Cells: mean ± sample std (n seeds) of the final model. **Bold ★** = best mean in the column "
          "(among rows of the same budget level); ≈ = statistically indistinguishable from the best; "
          f"the last row, '{RESOLUTION_ROW}', is the smallest difference of two rows' means that Welch's test "
          "calls significant at p < 0.05 with the column's seeds and pooled spread; "
          "— = no run; 'needs ≥ N×' = the method's own schedule does not fit this budget (recorded, not run; "
          "N = the smallest multiple of the base run that fits). The _dense_ row is the unpruned baseline of "
          "the same budget (target sparsity 0), repeated in every column as a reference and not ranked. "
          "A control row (reinit, shuffle, scratch [source=M]) follows its source M and is marked '< M' when M "
          "beats it, 'n.s. vs M' when Welch's test cannot tell them apart, '> M' when it beats M.")

VERSUS_RANDOM = {"tied": "n.s. vs random", "below": "< random"}  # cells that do not beat the random baseline
VERSUS_SOURCE = {"below": "< {source}", "tied": "n.s. vs {source}", "above": "> {source}"}  # a control vs its source


def _fmt_cell(rec: pd.Series, scale: float) -> Cell:
    if rec["n"] == 0:
        if rec["n_does_not_fit"]:
            return Cell(f"needs ≥ {ceil_2sig(rec['min_budget_multiple'])}×", "dnf")
        return Cell(f"FAILED ({int(rec['n_failed'])})", "failed") if rec["n_failed"] else Cell(MISSING, "missing")
    mean = rec["mean"] * scale
    digits = 2 if abs(mean) < 1000 else 0
    text = f"{mean:.{digits}f}" + (f" ± {rec['std'] * scale:.{digits}f}" if rec["n"] > 1 else "")
    extra = [f"{int(rec['n_failed_unrecovered'])} failed"] if rec["n_failed_unrecovered"] else []
    if rec["n_does_not_fit"]:
        extra.append(f"{int(rec['n_does_not_fit'])} did not fit")
    versus = VERSUS_RANDOM.get(rec.get("vs_random", ""))
    if versus:
        extra.append(versus)
    if rec.get("vs_source", ""):
        extra.append(VERSUS_SOURCE[rec["vs_source"]].format(source=rec["source_method"]))
    kind = "best" if rec["best"] else "tied" if rec["tied_with_best"] else "normal"
    return Cell(f"{text} ({'; '.join([str(int(rec['n'])), *extra])})", kind)


def row_order(rows: list[str], references: set[str]) -> list[str]:
    """Reference rows (dense) first, then the random-pruning sanity baseline, then methods alphabetically,
    each method's controls (``reinit [source=imp]``) right after it."""
    def key(r: str) -> tuple:
        source = re.search(r"\[source=([^],]+)", r)
        anchor = source[1] if source else r
        return (r not in references, not r.startswith("dense"), anchor.split(" ")[0] != "random", anchor,
                source is not None, r)
    return sorted(rows, key=key)


def column_multiples(cells: pd.DataFrame) -> dict[float, float]:
    """Per target sparsity > 0 of one level's cells, the budget multiple its rows were given (one per
    column; a ``fit`` level's columns may differ)."""
    pruned = cells[cells["target_sparsity"] > 0]
    return {t: float(g["budget_multiple"].max()) for t, g in pruned.groupby("target_sparsity")}


def leaderboard_table(cells: pd.DataFrame, metric: str) -> Table:
    """Rows = methods (dense first), columns = target sparsities, for the cells of one budget level. In a
    ``fit`` level each column names its multiple and the dense row shows the dense runs of that multiple."""
    scale, _ = scale_of(metric)
    refs = set(cells.loc[cells["target_sparsity"] == 0, "method"])
    targets = sorted(t for t in cells["target_sparsity"].unique() if t > 0) or [0.0]
    fit = bool(len(cells)) and (cells["level"] == FIT_LEVEL).all()
    multiples = column_multiples(cells)
    rows = []
    for row in row_order(sorted(cells["method"].unique()), refs):
        line = [Cell(row)]
        for target in targets:
            match = cells[(cells["method"] == row) & (cells["target_sparsity"] == (0.0 if row in refs else target))]
            if fit and row in refs and target in multiples:
                match = match[match["budget_multiple"] == multiples[target]]
            if match.empty:
                line.append(Cell(MISSING, "missing"))
                continue
            cell = _fmt_cell(match.iloc[0], scale)
            line.append(Cell(cell.text, "ref") if row in refs and cell.kind == "normal" else cell)
        rows.append(line)
    resolvable = [column_resolution(cells[(cells["target_sparsity"] == t) & (cells["n"] > 0)]) for t in targets]
    if any(r is not None for r in resolvable):
        rows.append([Cell(RESOLUTION_ROW)] + [Cell(f"≥ {r[2] * scale:.2f} ({r[1]} seeds)" if r else MISSING, "ref")
                                               for r in resolvable])
    heads = [(f"{pct(t)} (fit = {multiples[t]:g}×)" if fit and t in multiples else pct(t)) if t > 0
             else "dense (0%)" for t in targets]
    return Table(["method \\ target sparsity", *heads], rows)


def level_title(cells: pd.DataFrame, level: tuple[str, str, str]) -> str:
    """'equal budget, 4x (160 epochs)', '... 1x in FLOPs (40 dense epochs)', '... 1x in seconds (30 s)';
    'equal budget, fit: 7.4x at 80%, 9.8x at 90% (296-392 epochs), the smallest at which every method fits'."""
    policy, unit, name = level
    here = level_cells(cells, level)
    epochs = here.loc[here["target_sparsity"] > 0, "budget_epochs_mean"].dropna()
    if not len(epochs):
        epochs = here["budget_epochs_mean"].dropna()
    low, high = (epochs.min(), epochs.max()) if len(epochs) else (math.nan, math.nan)
    size = "?" if not len(epochs) else f"{low:.4g} epochs" if math.isclose(low, high) else \
        f"{low:.4g}-{high:.4g} epochs"
    if unit in UNITS:
        size = UNITS[unit].budget_text(size)
    if name != FIT_LEVEL:
        return f"{policy} budget, {name} ({size})"
    multiples = column_multiples(here)
    where = ", ".join(f"{m:g}x at {pct(t)}" for t, m in multiples.items())
    return f"{policy} budget, fit: {where or '1x'} ({size}), the smallest at which every method of the plan fits"

