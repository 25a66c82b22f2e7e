"""The report of finished runs, without running anything: a bench directory (DIR/<benchmark>/<cell>/results.json),
a run directory (DIR/results.json), a folder of runs (DIR/<run>/results.json), or several of these side by side.

Per benchmark: a table of its cells, their accuracy curves on one plot, final accuracy against bytes per task, and
each cell's accuracy matrix. report.md links the PNGs beside it; report.html embeds them and stands alone.
In a bench directory, cells are in the order of the last bench grid (DIR/bench.json), then any others found; a cell
of that grid with no results.json is listed as not finished. Runs are grouped by the benchmark they ran on.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
from pathlib import Path

from lifelong.errors import LifelongError
from lifelong.io import write_text
from lifelong.layout import BENCH_MANIFEST
from lifelong.report import html
from lifelong.report.plots import accuracy_curve, accuracy_heatmap, accuracy_vs_bytes, error_by_corruption, error_curve
from lifelong.report.summary import (ADAPT_HEADER, COMPARISON_HEADER, adapt_row, comparison_row, is_adaptation,
                                     md_table)

__all__ = ["collect", "collect_all", "write_report"]

CURVES, VS_BYTES, HEATMAP = "accuracy_curves.png", "accuracy_vs_bytes.png", "accuracy_matrix.png"
BY_CORRUPTION, ALONG_STREAM = "error_by_corruption.png", "error_curve.png"  # test-time adaptation runs
ADAPT_LEGEND = ("Test-time adaptation runs (`lifelong adapt`): error in percent on the unlabeled stream, predicted "
                "online while adapting. Mean error: mean over corruptions. Source, clean: the source model's error "
                "on the clean test images. Time per batch: adaptation and prediction of one batch.")
LEGEND = ("Final accuracy: average over all tasks after the last one. Avg. incremental accuracy: mean over the "
          "stream of the average accuracy on the tasks seen so far. Forgetting: mean drop from each task's best "
          "accuracy to its final one (lower is better). BWT: backward transfer (negative: forgetting). Bytes per "
          "task: mean bytes stored per task. Train time: learning only; run time: learning and evaluation. "
          "Peak memory: peak resident memory of the run's process.")


@dataclasses.dataclass
class Section:
    benchmark: str  # the group's name: its directory under the report root
    cells: list[tuple[Path, dict]]  # (run directory, results), finished runs only
    missing: list[Path] = dataclasses.field(default_factory=list)  # logs of a bench grid's unfinished cells


def _unique(xs):
    return list(dict.fromkeys(xs))


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LifelongError(f"{path}: cannot read results ({e})") from None


def collect(root: Path) -> list[Section]:
    """The finished cells of a bench directory, grouped by benchmark, each result labelled (its label, else the
    cell)."""
    manifest = _read(root / BENCH_MANIFEST) if (root / BENCH_MANIFEST).exists() else {"cells": []}
    planned = [(c["benchmark"], c["cell"]) for c in manifest["cells"]]
    labels = {(c["benchmark"], c["cell"]): c.get("label") for c in manifest["cells"]}
    found = sorted((p.parent.parent.name, p.parent.name) for p in root.glob("*/*/results.json"))
    sections = []
    for benchmark in _unique(b for b, _ in planned + found):
        section = Section(benchmark, [])
        for cell in _unique(c for b, c in planned + found if b == benchmark):
            path = root / benchmark / cell / "results.json"
            if not path.exists():
                section.missing.append(root / benchmark / f"{cell}.log")
                continue
            result = _read(path)
            result.setdefault("label", labels.get((benchmark, cell)) or cell)
            section.cells.append((path.parent, result))
        sections.append(section)
    return sections


def collect_all(paths: list[Path]) -> list[Section]:
    """Sections over runs, folders of runs and bench directories, merged by benchmark in the order given."""
    merged: dict[str, Section] = {}

    def add(section: Section) -> None:
        into = merged.setdefault(section.benchmark, Section(section.benchmark, []))
        into.cells += section.cells
        into.missing += section.missing

    for path in map(Path, paths):
        if (path / "results.json").is_file():
            runs = [path]
        elif (path / BENCH_MANIFEST).is_file() or any(path.glob("*/*/results.json")):
            for section in collect(path):
                add(section)
            continue
        else:
            runs = sorted(p.parent for p in path.glob("*/results.json"))
        if not runs:
            raise LifelongError(f"{path}: no results to report (expected a run's results.json, runs below it, or "
                                f"a bench directory's <benchmark>/<cell>/results.json)")
        for run in runs:
            result = _read(run / "results.json")
            result.setdefault("label", run.name)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(result.get("benchmark") or "runs")).strip("-") or "runs"
            name += "-adapt" if is_adaptation(result) and not name.endswith("-c") else ""
            add(Section(name, [(run, result)]))
    return list(merged.values())


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _about(section: Section) -> str:
    """'CLINC150: 10 tasks; backbone all-MiniLM-L6-v2; seed 0' from the section's results."""
    rs = [r for _, r in section.cells]
    def values(get):
        return ", ".join(_unique(str(get(r)) for r in rs if get(r) is not None)) or "?"
    return (f"{values(lambda r: r.get('benchmark'))}: {values(lambda r: len(r.get('accuracy_matrix') or []))} "
            f"tasks; backbone {values(lambda r: r.get('config', {}).get('backbone'))}; "
            f"seed {values(lambda r: r.get('config', {}).get('seed'))}")


def _missing_note(section: Section, root: Path) -> str:
    logs = ", ".join(f"{log.stem} (see {_rel(log, root)})" for log in section.missing)
    return f"Not finished: {logs}." if section.missing else ""


def _markdown(root: Path, sections: list[Section], when: str) -> str:
    parts = ["# Benchmark report", "", f"Generated {when}.", "", LEGEND, ""]
    for s in sections:
        b = s.benchmark
        parts += [f"## {b}", ""]
        if _adapting(s):
            rows = [adapt_row(r) for _, r in s.cells]
            parts += [ADAPT_LEGEND, "", md_table(ADAPT_HEADER, rows, ["---", "---"] + ["--:"] * 7), "",
                      f"![Error per corruption, {b}]({b}/{BY_CORRUPTION})", "",
                      f"![Error along the stream, {b}]({b}/{ALONG_STREAM})", ""]
            continue
        if s.cells:
            rows = [comparison_row(r) for _, r in s.cells]
            parts += [_about(s), "", md_table(COMPARISON_HEADER, rows, ["---"] + ["--:"] * 8), ""]
        parts += [_missing_note(s, root), ""] if s.missing else []
        if s.cells:
            parts += [f"![Average accuracy over seen tasks, {b}]({b}/{CURVES})", "",
                      f"![Final accuracy against bytes per task, {b}]({b}/{VS_BYTES})", "", "### Accuracy matrices", ""]
            parts += [f"![Accuracy matrix, {r['label']}]({_rel(c / HEATMAP, root)})\n" for c, r in s.cells]
    return "\n".join(parts)


def _adapting(section: Section) -> bool:
    return bool(section.cells) and all(is_adaptation(r) for _, r in section.cells)


def _grid_class(section: Section) -> str:
    """Heatmaps of many tasks get more room, so their numbers stay legible."""
    tasks = max(len(r.get("accuracy_matrix") or []) for _, r in section.cells)
    return "grid big" if tasks > 8 else "grid"


def _html(root: Path, sections: list[Section], when: str) -> str:
    nav = " ".join(f'<a href="#{html.esc(s.benchmark)}">{html.esc(s.benchmark)}</a>' for s in sections)
    body = ["<h1>Benchmark report</h1>", f'<p class="meta">Generated {html.esc(when)}.</p>',
            f"<nav>{nav}</nav>", f'<p class="meta">{html.esc(LEGEND)}</p>']
    for s in sections:
        b = s.benchmark
        body.append(f'<section id="{html.esc(b)}"><h2>{html.esc(b)}</h2>')
        if _adapting(s):
            body += [f'<p class="meta">{html.esc(ADAPT_LEGEND)}</p>',
                     html.table(ADAPT_HEADER, [adapt_row(r) for _, r in s.cells], numeric_from=2),
                     '<div class="row">', html.figure(root / b / BY_CORRUPTION, "Error per corruption, in stream order"),
                     html.figure(root / b / ALONG_STREAM, "Error along the stream (lines: segment ends)"),
                     "</div></section>"]
            continue
        if s.cells:
            body += [f'<p class="meta">{html.esc(_about(s))}</p>',
                     html.table(COMPARISON_HEADER, [comparison_row(r) for _, r in s.cells])]
        if s.missing:
            body.append(f'<p class="note">{html.esc(_missing_note(s, root))}</p>')
        if s.cells:
            body += ['<div class="row">', html.figure(root / b / CURVES, "Average accuracy over the tasks seen so far"),
                     html.figure(root / b / VS_BYTES, "Final accuracy against mean bytes stored per task (log scale)"),
                     "</div>", "<h3>Accuracy matrices</h3>", f'<div class="{_grid_class(s)}">']
            body += [html.figure(c / HEATMAP, r["label"]) for c, r in s.cells]
            body.append("</div>")
        body.append("</section>")
    return html.document("Benchmark report", "\n".join(body))


def write_report(*paths: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """Make the plots, then write OUT/report.md and OUT/report.html over runs, folders of runs and bench
    directories; OUT defaults to the one path given. Returns the two files' paths."""
    if not paths:
        raise LifelongError("nothing to report: give a run, a folder of runs or a bench directory")
    if out is None and len(paths) > 1:
        raise LifelongError("a report over several folders needs --out DIR for its files")
    root = Path(out if out is not None else paths[0])
    sections = collect_all([Path(p) for p in paths])
    root.mkdir(parents=True, exist_ok=True)
    for s in sections:
        results = [r for _, r in s.cells]
        if _adapting(s):
            error_by_corruption(results, root / s.benchmark / BY_CORRUPTION)
            error_curve(results, root / s.benchmark / ALONG_STREAM)
            continue
        if results:
            accuracy_curve(results, root / s.benchmark / CURVES)
            accuracy_vs_bytes(results, root / s.benchmark / VS_BYTES)
        for cell, result in s.cells:
            if not (cell / HEATMAP).exists():
                accuracy_heatmap(result, cell / HEATMAP)
    when = datetime.datetime.now().astimezone().isoformat(sep=" ", timespec="seconds")
    md = write_text(root / "report.md", _markdown(root, sections, when))
    page = write_text(root / "report.html", _html(root, sections, when))
    return md, page
