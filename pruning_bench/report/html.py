"""Report stage 4 (HTML): a :class:`~pruning_bench.report.document.Document` as one self-contained HTML file:
inline CSS, plots embedded as base64 PNG data URIs, no scripts and no external links, so it opens in any
browser, offline, and can be mailed as one file. Takes plain data only."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from pruning_bench.report.document import Bullets, Document, Figure, Table

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
td.best { font-weight: bold; background: #d9f2d9; } td.tied { background: #eef8ee; }
td.ref { font-style: italic; color: #555; } td.missing { color: #999; } td.failed { color: #b00; }
td.dnf { font-style: italic; color: #7a5a00; background: #fff8e6; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1em; }
dl.header dt { font-weight: bold; } dl.header dd { margin: 0; }
.warn { background: #fff4e0; border-left: 4px solid #e69500; padding: 0.4em 0.8em; margin: 0.3em 0; }
p { font-size: 0.9em; color: #444; }
figure { margin: 1.2em 0; } figcaption { font-size: 0.9em; color: #444; } img { max-width: 100%; }
"""

_MARK = {"best": " ★", "tied": " ≈"}


def _e(text: object) -> str:
    return html.escape(str(text))


def _plain(text: str) -> str:
    """Markdown emphasis markers of the shared legend texts, dropped."""
    return text.replace("**", "").replace("_dense_", "dense")


def _table(table: Table) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        first, *rest = row
        tds = "".join(f'<td class="{c.kind}">{_e(c.text)}{_MARK.get(c.kind, "")}</td>' for c in rest)
        body.append(f"<tr><td>{_e(first.text)}</td>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(path.stem)}" src="data:image/png;base64,{data}">'


def render_html(doc: Document) -> str:
    """The whole document as one HTML page (its figures' PNG files must exist)."""
    parts = [f"<h1>{_e(doc.title)}</h1>", '<dl class="header">']
    parts += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in doc.header]
    parts.append("</dl>")
    if doc.warnings:
        parts.append("<h2>Warnings</h2>")
        parts += [f'<div class="warn">⚠ {_e(w)}</div>' for w in doc.warnings]
    for section in doc.sections:
        parts.append(f"<h2>{_e(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(_table(block))
            elif isinstance(block, Figure):
                parts.append(f"<figure>{_image(block.path)}<figcaption>{_e(block.caption)}</figcaption></figure>")
            elif isinstance(block, Bullets):
                items = "".join(f"<li>{_e(item)}</li>" for item in block.items)
                parts.append(f"<p><strong>{_e(block.title)}</strong></p><ul>{items}</ul>")
            else:
                parts.append(f"<p>{_e(_plain(block))}</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(doc.title)}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
