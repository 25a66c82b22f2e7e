"""PNG plots of continual-learning results, written atomically (a reader never sees half a file)."""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, PercentFormatter

from lifelong.io import atomic_write
from lifelong.report.summary import human_bytes, mean_bytes_per_task, task_names

__all__ = ["accuracy_curve", "accuracy_heatmap", "accuracy_vs_bytes", "error_by_corruption", "error_curve"]

_DPI = 150


def _label(run: dict) -> str:
    return str(run.get("label") or run.get("method") or "?")


def _benchmarks(runs: list[dict]) -> str:
    seen = dict.fromkeys(str(r.get("benchmark")) for r in runs if r.get("benchmark"))
    return ", ".join(seen) or "?"


def _num(x) -> float:
    return float(x) if isinstance(x, numbers.Real) and not isinstance(x, bool) else math.nan


def _save(fig, path: str | os.PathLike) -> Path:
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight"))
    finally:
        plt.close(fig)


def accuracy_curve(runs: list[dict], path: str | os.PathLike) -> Path:
    """Average accuracy over the tasks seen so far against the number of tasks learned, one line per run."""
    n_max = max((len(r.get("average_accuracy_per_task") or []) for r in runs), default=0)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * n_max + 3.0), 4.5))
    for run in runs:
        ys = [_num(y) for y in (run.get("average_accuracy_per_task") or [])]
        if not ys:
            continue
        xs = np.arange(1, len(ys) + 1)
        ax.plot(xs, ys, marker="o", markersize=5, linewidth=1.8, label=_label(run))
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_xlim(0.5, max(n_max, 1) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Tasks learned")
    ax.set_ylabel("Average accuracy on seen tasks")
    ax.set_title(f"Average accuracy over seen tasks: {_benchmarks(runs)}")
    ax.grid(True, alpha=0.35)
    if any(r.get("average_accuracy_per_task") for r in runs):
        ax.legend(loc="best", fontsize="small", framealpha=0.9)
    fig.tight_layout()
    return _save(fig, path)


def accuracy_heatmap(result: dict, path: str | os.PathLike) -> Path:
    """The accuracy matrix R[i][j] (after learning task i, evaluated on task j) as an annotated heatmap."""
    matrix = result.get("accuracy_matrix") or []
    names = task_names(result)
    n = len(names)
    data = np.full((n, n), np.nan)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row[: i + 1]):
            data[i, j] = _num(v)
    masked = np.ma.masked_invalid(data)

    side = max(4.5, 0.75 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    im = ax.imshow(masked, cmap=cmap, vmin=0.0, vmax=1.0, aspect="equal")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    cbar.set_label("Accuracy")

    font = 9 if n <= 12 else 8 if n <= 16 else 6
    for i in range(n):
        for j in range(i + 1):
            v = data[i, j]
            if math.isnan(v):
                continue
            ax.text(j, i, f"{100 * v:.1f}", ha="center", va="center", fontsize=font,
                    color="black" if v > 0.6 else "white")

    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticklabels(names)
    ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("Evaluated on task")
    ax.set_ylabel("After learning task")
    ax.set_title(f"Accuracy matrix (%): {_label(result)} on {result.get('benchmark', '?')}")
    fig.tight_layout()
    return _save(fig, path)


# Byte ticks at 1, 10, 100 of each binary unit (1 KB, 10 KB, 100 KB, 1 MB, ...), so labels read as round numbers.
_BYTE_MAJOR = [1024**k * 10**m for k in range(5) for m in range(3)]
_BYTE_MINOR = [1024**k * d * 10**m for k in range(5) for m in range(3) for d in range(2, 10)]


def _place_labels(ax, points: list[tuple[float, float, str, str]]) -> None:
    """Annotate each point, trying a few offsets so labels overlap neither each other nor the markers."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    taken = []  # display-space boxes already used: (x0, y0, x1, y1)
    for x, y, _, _ in points:
        px, py = to_px((x, y))
        taken.append((px - 6, py - 6, px + 6, py + 6))
    candidates = [((7, 5), "left", "bottom"), ((7, -5), "left", "top"), ((-7, 5), "right", "bottom"),
                  ((-7, -5), "right", "top"), ((0, 9), "center", "bottom"), ((0, -9), "center", "top")]
    axbox = ax.get_window_extent(renderer)
    for x, y, text, color in points:
        best = None
        for offset, ha, va in candidates:
            ann = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va,
                              fontsize=9, color=color)
            bb = ann.get_window_extent(renderer)
            box = (bb.x0, bb.y0, bb.x1, bb.y1)
            clashes = sum(not (box[2] < t[0] or t[2] < box[0] or box[3] < t[1] or t[3] < box[1]) for t in taken)
            clashes += 0 if (axbox.x0 <= box[0] and box[2] <= axbox.x1 and axbox.y0 <= box[1] and box[3] <= axbox.y1) else 1
            if best is None or clashes < best[0]:
                if best is not None:
                    best[1].remove()
                best = (clashes, ann, box)
            else:
                ann.remove()
            if clashes == 0:
                break
        taken.append(best[2])


def accuracy_vs_bytes(runs: list[dict], path: str | os.PathLike) -> Path:
    """Final accuracy against mean bytes stored per task (log scale), one labelled point per run."""
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    points = []
    for k, run in enumerate(runs):
        b = mean_bytes_per_task(run)
        y = _num(run.get("final_accuracy"))
        if b is None or math.isnan(y):
            continue
        label = _label(run)
        if b < 1:  # a method that stores nothing still gets a point, drawn at 1 byte
            label += " (0 B)"
        x = max(b, 1.0)
        color = f"C{k % 10}"
        ax.scatter([x], [y], s=60, color=color, zorder=3, edgecolor="black", linewidth=0.6)
        points.append((x, y, label, color))
    ax.set_xscale("log")
    if points:
        lo, hi = min(p[0] for p in points), max(p[0] for p in points)
        ax.set_xlim(lo / 5, hi * 10)  # room either side for the labels
    lo, hi = ax.get_xlim()
    majors = [t for t in _BYTE_MAJOR if lo <= t <= hi]
    if len(majors) > 10:  # a very wide range: label only 1 B, 1 KB, 1 MB, ...
        ax.xaxis.set_major_locator(FixedLocator([1024**k for k in range(5)]))
        ax.xaxis.set_minor_locator(FixedLocator(_BYTE_MAJOR))
    else:
        ax.xaxis.set_major_locator(FixedLocator(_BYTE_MAJOR))
        ax.xaxis.set_minor_locator(FixedLocator(_BYTE_MINOR))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human_bytes(v).replace(".0 ", " ")))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_xlabel("Mean bytes stored per task (log scale)")
    ax.set_ylabel("Final average accuracy")
    ax.set_title(f"Accuracy vs memory: {_benchmarks(runs)}")
    ax.grid(True, which="major", alpha=0.35)
    fig.tight_layout()
    _place_labels(ax, points)
    return _save(fig, path)


def error_by_corruption(runs: list[dict], path: str | os.PathLike) -> Path:
    """Test-time adaptation: error per corruption in stream order, one bar group per corruption, a bar per run."""
    names = list(dict.fromkeys(c for r in runs for c in (r.get("errors") or {})))
    width = 0.8 / max(len(runs), 1)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.5 * len(names) * max(1, len(runs) / 2) + 3), 4.5))
    xs = np.arange(len(names))
    for i, run in enumerate(runs):
        ys = [_num((run.get("errors") or {}).get(c)) for c in names]
        ax.bar(xs + (i - (len(runs) - 1) / 2) * width, ys, width,
               label=f"{_label(run)} (mean {_num(run.get('mean_error')):.1f}%)")
    ax.set_xticks(xs, [c.replace("_", " ") for c in names], rotation=45, ha="right")
    ax.set_ylabel("Error (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Error per corruption, in stream order ({_benchmarks(runs)})")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def error_curve(runs: list[dict], path: str | os.PathLike, window: int = 5) -> Path:
    """Test-time adaptation: error against stream position (a moving average over `window` batches), segment
    boundaries marked; a method that collapses rises towards the end."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for run in runs:
        curve = run.get("curve") or {}
        xs, ys = np.asarray(curve.get("images") or [], float), np.asarray(curve.get("error") or [], float)
        if len(ys) == 0:
            continue
        k = min(window, len(ys))
        smooth = np.convolve(ys, np.ones(k) / k, mode="valid")
        ax.plot(xs[k - 1 :], smooth, linewidth=1.5, label=_label(run))
    first = runs[0] if runs else {}
    edge = 0
    for seg in first.get("segments") or []:
        edge += seg.get("images", 0)
        ax.axvline(edge, color="grey", linewidth=0.5, alpha=0.5)
    ax.set_xlabel("Images seen")
    ax.set_ylabel(f"Error (%), mean of {window} batches")
    ax.set_ylim(0, 100)
    ax.set_title(f"Error along the stream ({_benchmarks(runs)}; lines: segment ends)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
