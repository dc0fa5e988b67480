"""Report stage 3, the laid-out document: plain data (sections of tables of text cells, paragraphs,
bullet lists and figures) that :mod:`pruning_bench.report.layout` builds and that the renderers
(:mod:`pruning_bench.report.markdown`, :mod:`pruning_bench.report.html`) take. Nothing here computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

MISSING = "—"


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


def frame_table(frame: pd.DataFrame) -> Table:
    """A DataFrame of text values as a plain table (the cost and sanity tables)."""
    return Table(list(frame.columns), [[Cell(str(v)) for v in row] for row in frame.itertuples(index=False)])
