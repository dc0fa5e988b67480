"""Report stage 3, lay out: a :class:`~pruning_bench.report.summary.Report` becomes a plain
:class:`~pruning_bench.report.document.Document`: findings first, then one leaderboard per budget level,
compute-matched curves, cost, sanity, plots.
"""

from __future__ import annotations

from pathlib import Path

from pruning_bench.report.cells import level_cells, levels, pct, shown_cells
from pruning_bench.report.cost import COST_LEGEND, cost_table, sanity_table
from pruning_bench.report.document import Bullets, Document, Figure, Section, Table, frame_table
from pruning_bench.report.findings import findings
from pruning_bench.report.leaderboard import LEGEND, leaderboard_table, level_title
from pruning_bench.report.stats import TEST_DESCRIPTION
from pruning_bench.report.summary import Report


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
