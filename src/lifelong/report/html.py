"""Self-contained HTML: one file, PNGs embedded as base64 data URIs, inline CSS, no script, nothing fetched."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["document", "figure", "table"]

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f; margin: 0;
       background: #f6f7f9; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { margin: 0 0 4px; font-size: 28px; }
h2 { margin: 40px 0 8px; padding-top: 12px; border-top: 2px solid #d0d4da; font-size: 22px; }
h3 { margin: 24px 0 8px; font-size: 17px; }
p.meta, p.note { color: #555; margin: 4px 0 12px; max-width: 110ch; }
p.note { color: #9a3412; }
nav { margin: 8px 0; }
nav a { margin-right: 16px; color: #1d4ed8; }
.scroll { overflow-x: auto; margin-bottom: 16px; }
table { border-collapse: collapse; background: #fff; font-variant-numeric: tabular-nums;
        border: 1px solid #e3e6ea; }
th, td { padding: 6px 10px; border-bottom: 1px solid #e3e6ea; }
td { white-space: nowrap; }
th { background: #eef1f5; text-align: left; font-weight: 600; vertical-align: bottom; }
td.num, th.num { text-align: right; }
tbody tr:nth-child(even) { background: #fafbfc; }
.row { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; max-width: 1320px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(400px, 1fr)); gap: 16px; }
.grid.big { grid-template-columns: repeat(auto-fill, minmax(600px, 1fr)); }
figure { margin: 0; background: #fff; border: 1px solid #e3e6ea; border-radius: 6px; padding: 8px; }
figure img { display: block; width: 100%; height: auto; }
figcaption { font-size: 13px; color: #555; margin-top: 4px; text-align: center; }
"""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """A table whose columns from `numeric_from` on are right-aligned numbers."""
    def cells(tag, values):
        return "".join(f'<{tag}{" class=num" if i >= numeric_from else ""}>{esc(v)}</{tag}>'
                       for i, v in enumerate(values))

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{cells("th", header)}</tr></thead><tbody>{body}</tbody></table></div>'


def figure(png: str | os.PathLike, caption: str) -> str:
    """The PNG embedded as a data URI, with a caption."""
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body><main>\n{body}\n</main></body></html>\n")
