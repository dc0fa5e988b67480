"""Report stage 4 (Markdown): a :class:`~pruning_bench.report.document.Document` as Markdown, and the
leaderboards with their findings as Markdown for the terminal. Takes plain data only (HTML:
:mod:`pruning_bench.report.html`).
"""

from __future__ import annotations

import pandas as pd

from pruning_bench.report.cells import level_cells, levels
from pruning_bench.report.document import Bullets, Document, Figure, Table
from pruning_bench.report.layout import findings_blocks
from pruning_bench.report.leaderboard import leaderboard_table, level_title
from pruning_bench.report.summary import Report

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
