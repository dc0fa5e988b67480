"""The report as one self-contained HTML file: inline CSS, plots embedded as base64 PNG data URIs,
no scripts and no external links, so it opens in any browser, offline, and can be mailed as one file."""

from __future__ import annotations

import base64
import html
from typing import TYPE_CHECKING

from pruning_bench.report_stats import TEST_DESCRIPTION

if TYPE_CHECKING:
    from pruning_bench.report import Report

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
td.best { font-weight: bold; background: #d9f2d9; } td.tied { background: #eef8ee; }
td.ref { font-style: italic; color: #555; } td.missing { color: #999; } td.failed { color: #b00; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1em; }
dl.header dt { font-weight: bold; } dl.header dd { margin: 0; }
.warn { background: #fff4e0; border-left: 4px solid #e69500; padding: 0.4em 0.8em; margin: 0.3em 0; }
.legend, .note { font-size: 0.9em; color: #444; }
figure { margin: 1.2em 0; } figcaption { font-size: 0.9em; color: #444; } img { max-width: 100%; }
"""

_MARK = {"best": " ★", "tied": " ≈"}


def _e(text: object) -> str:
    return html.escape(str(text))


def _leaderboard(report: Report) -> str:
    from pruning_bench.report import leaderboard_cells

    rows, columns, grid = leaderboard_cells(report.cells, report.metric)
    head = "".join(f"<th>{_e(c)}</th>" for c in ["method \\ target sparsity"] + columns)
    body = []
    for row, line in zip(rows, grid):
        tds = "".join(f'<td class="{c.kind}">{_e(c.text)}{_MARK.get(c.kind, "")}</td>' for c in line)
        body.append(f"<tr><td>{_e(row)}</td>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(path.stem)}" src="data:image/png;base64,{data}">'


def render_html(report: Report) -> str:
    """The whole report as one HTML document (plots must already be written: ``report.plots``)."""
    from pruning_bench.report import COST_LEGEND, LEGEND, cost_table, sanity_table

    parts = [f"<h1>{_e(report.suite)}: pruning benchmark report</h1>", '<dl class="header">']
    parts += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in report.header]
    parts.append("</dl>")
    if report.warnings:
        parts.append("<h2>Warnings</h2>")
        parts += [f'<div class="warn">⚠ {_e(w)}</div>' for w in report.warnings]
    parts += [f"<h2>Leaderboard: {_e(report.metric_label)}</h2>", _leaderboard(report),
              f'<p class="legend">{_e(LEGEND.replace("**", "").replace("_dense_", "dense"))}</p>',
              f'<p class="legend">Significance: {_e(TEST_DESCRIPTION)}</p>']
    parts += [f'<p class="note">{_e(n)}</p>' for n in report.notes]
    parts += ["<h2>Cost</h2>", f'<p class="legend">{_e(COST_LEGEND)}</p>',
              cost_table(report.cells).to_html(index=False, border=0),
              "<h2>Sanity checks</h2>", sanity_table(report.cells).to_html(index=False, border=0)]
    if report.plots:
        parts.append("<h2>Plots</h2>")
        for caption, path in report.plots.items():
            parts.append(f"<figure>{_image(path)}<figcaption>{_e(caption)}</figcaption></figure>")
    title = _e(f"{report.suite}: pruning benchmark report")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
