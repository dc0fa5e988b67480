"""Report stage 3, lay out and render: a :class:`~pruning_bench.report.summary.Report` becomes a plain
:class:`Document` (sections of tables of text cells, paragraphs and figures), which is rendered as
Markdown here and as HTML by :mod:`pruning_bench.report.html`. Renderers take only this plain data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pruning_bench.core.units import UNITS, unit_suffix
from pruning_bench.report.cells import level_cells, levels, pct, scale_of, shown_cells
from pruning_bench.report.data import FIT_LEVEL, level_order
from pruning_bench.report.findings import column_resolution, findings
from pruning_bench.report.stats import TEST_DESCRIPTION, ceil_2sig, si_split
from pruning_bench.report.summary import Report

MISSING = "—"
RESOLUTION_ROW = "smallest significant difference"  # the leaderboard's last row: what Welch's test resolves
LEGEND = ("Cells: mean ± sample std (n seeds) of the final model. **Bold ★** = best mean in the column "
          "(among rows of the same budget level); ≈ = statistically indistinguishable from the best; "
          f"the last row, '{RESOLUTION_ROW}', is the smallest difference of two rows' means that Welch's test "
          "calls significant at p < 0.05 with the column's seeds and pooled spread; "
          "— = no run; 'needs ≥ N×' = the method's own schedule does not fit this budget (recorded, not run; "
          "N = the smallest multiple of the base run that fits). The _dense_ row is the unpruned baseline of "
          "the same budget (target sparsity 0), repeated in every column as a reference and not ranked.")
COST_LEGEND = ("Means over seeds. Epochs charged = sample passes / training-set size (a forward-only pass "
               "counts 1/3); train FLOPs as charged by the meter (3x the masked forward per sample, dense "
               "gradient steps and forward-only passes as they are); unspent = share of the equal budget "
               "left; plan = rounds x round length x particles of iterative methods; inference FLOPs = "
               "per-layer FLOPs (torch.utils.flop_counter, a multiply-add = 2) x per-layer density.")


@dataclass
class Cell:
    text: str
    kind: str = "normal"  # best | tied | ref | missing | failed | dnf | normal


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]  # the first cell of a row is its header


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Bullets:
    """A titled list of sentences (one leaderboard column's findings)."""

    title: str
    items: list[str]


@dataclass
class Section:
    title: str
    blocks: list[Table | Figure | Bullets | str] = field(default_factory=list)  # str = a paragraph


@dataclass
class Document:
    title: str
    header: list[tuple[str, str]]
    warnings: list[str]
    sections: list[Section]


# ------------------------------------------------------------------------------------------- cells

VERSUS_RANDOM = {"tied": "n.s. vs random", "below": "< random"}  # cells that do not beat the random baseline


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
    kind = "best" if rec["best"] else "tied" if rec["tied_with_best"] else "normal"
    return Cell(f"{text} ({'; '.join([str(int(rec['n'])), *extra])})", kind)


def row_order(rows: list[str], references: set[str]) -> list[str]:
    """Reference rows (dense) first, then the random-pruning sanity baseline, then methods alphabetically."""
    return sorted(rows, key=lambda r: (r not in references, not r.startswith("dense"),
                                       r.split(" ")[0] != "random", r))


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


def frame_table(frame: pd.DataFrame) -> Table:
    return Table(list(frame.columns), [[Cell(str(v)) for v in row] for row in frame.itertuples(index=False)])


# ---------------------------------------------------------------------------------------- document

def findings_blocks(report: Report) -> list[Bullets]:
    """Each leaderboard column's findings (:mod:`pruning_bench.report.findings`) under its level's title."""
    return [Bullets(f"{level_title(report.cells, f.level)}; {pct(f.target)} sparsity", f.lines)
            for f in findings(report.cells, report.metric, report.compare)]


def document(report: Report, plots: dict[str, Path] | None = None) -> Document:
    """The report laid out: findings first, then one leaderboard per budget level, compute-matched
    curves, cost, sanity, plots. ``plots`` (caption -> PNG) come from
    :func:`pruning_bench.report.plots.write_plots`."""
    plots = plots or {}
    sections = []
    blocks = findings_blocks(report)
    if blocks:
        sections.append(Section(f"Findings: {report.metric_label}", [*blocks, f"Significance: {TEST_DESCRIPTION}"]))
    for i, level in enumerate(levels(report.cells)):
        blocks: list[Table | Figure | str] = [leaderboard_table(level_cells(report.cells, level), report.metric)]
        if i == 0:
            blocks += [LEGEND, f"Significance: {TEST_DESCRIPTION}"]
        sections.append(Section(f"Leaderboard: {report.metric_label}, {level_title(report.cells, level)}", blocks))
    if report.notes:
        sections.append(Section("Notes", list(report.notes)))
    curves = {c: p for c, p in plots.items() if "vs budget" in c}
    if curves:
        sections.append(Section("Compute-matched curves", [
            "Each method's accuracy against the budget it was given (multiples of the base run; error bars: "
            "std over seeds). Where a curve starts late, the method's own schedule did not fit the smaller "
            "budgets.", *(Figure(p, c) for c, p in curves.items())]))
    sections.append(Section("Cost", [COST_LEGEND, frame_table(cost_table(shown_cells(report.cells)))]))
    sections.append(Section("Sanity checks", [frame_table(sanity_table(shown_cells(report.cells)))]))
    others = [Figure(p, c) for c, p in plots.items() if c not in curves]
    if others:
        sections.append(Section("Plots", others))
    return Document(f"{report.suite}: pruning benchmark report", report.header, report.warnings, sections)


# ---------------------------------------------------------------------------------------- markdown

_MD_MARK = {"best": "**{}** ★", "tied": "{} ≈", "ref": "_{}_", "dnf": "_{}_"}


def markdown_table(table: Table) -> str:
    body = [[c.text if i == 0 else _MD_MARK.get(c.kind, "{}").format(c.text) for i, c in enumerate(row)]
            for row in table.rows]
    frame = pd.DataFrame(body, columns=table.columns)
    return frame.to_markdown(index=False, colalign=["left"] + ["right"] * (len(table.columns) - 1))


def render_markdown(doc: Document) -> str:
    lines = [f"# {doc.title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in doc.header]
    if doc.warnings:
        lines += ["", "## Warnings", ""] + [f"- ⚠ {w}" for w in doc.warnings]
    for section in doc.sections:
        lines += ["", f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines += [markdown_table(block), ""]
            elif isinstance(block, Figure):
                lines += [f"![{block.caption}]({block.path.name})", "", f"*{block.caption}*", ""]
            elif isinstance(block, Bullets):
                lines += [f"**{block.title}**", "", *(f"- {item}" for item in block.items), ""]
            else:
                lines += [("- " + block) if section.title == "Notes" else block, ""]
    return "\n".join(lines).rstrip() + "\n"


def leaderboards_markdown(report: Report) -> str:
    """Every budget level's leaderboard as Markdown, each under its title, then the findings (for the
    terminal)."""
    parts = []
    for level in levels(report.cells):
        parts += [f"\n{level_title(report.cells, level)}:\n",
                  markdown_table(leaderboard_table(level_cells(report.cells, level), report.metric))]
    blocks = findings_blocks(report)
    if blocks:
        parts.append("\nFindings:")
        for block in blocks:
            parts += [f"\n{block.title}:", *(f"- {item}" for item in block.items)]
    return "\n".join(parts)
