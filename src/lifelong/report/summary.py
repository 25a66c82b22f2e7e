"""Human-readable summaries of a results dict: a metrics list, a markdown report, a rich table."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence

__all__ = ["COMPARISON_HEADER", "comparison_row", "human_bytes", "human_seconds", "markdown", "md_table",
           "metrics_rows", "print_table"]

NA = "n/a"


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _pct(x, decimals: int = 2) -> str:
    """A fraction in [0, 1] as a percentage; "n/a" for null or non-finite."""
    return f"{100.0 * x:.{decimals}f}%" if _is_number(x) else NA


def _signed_pct(x, decimals: int = 2) -> str:
    """Like `_pct` but always with a sign (backward transfer is negative when the model forgets)."""
    return f"{100.0 * x:+.{decimals}f}%" if _is_number(x) else NA


def human_bytes(n) -> str:
    """1536 -> '1.5 KB' (binary multiples, 1 KB = 1024 B)."""
    if not _is_number(n):
        return NA
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _bytes_with_exact(n) -> str:
    if not _is_number(n):
        return NA
    exact = f"{round(n):,} bytes"
    return f"{human_bytes(n)} ({exact})"


def _mean(xs: Sequence) -> float | None:
    xs = [x for x in (xs or []) if _is_number(x)]
    return sum(xs) / len(xs) if xs else None


def mean_bytes_per_task(result: dict) -> float | None:
    return _mean(result.get("bytes_per_task"))


def total_stored_bytes(result: dict) -> int | float | None:
    """Bytes stored once every task is learned. `stored_bytes[i]` is the total after task i, by kind, and
    `bytes_per_task[i]` what task i added, so either gives it."""
    stored = result.get("stored_bytes")
    if stored and isinstance(stored[-1], dict) and all(_is_number(v) for v in stored[-1].values()):
        return sum(stored[-1].values())
    per_task = result.get("bytes_per_task")
    if per_task and all(_is_number(b) for b in per_task):
        return sum(per_task)
    return None


def _stored_breakdown(result: dict) -> str | None:
    """'adapter 30.6 KB, head 112.8 KB' after the last task, or None when not available."""
    stored = result.get("stored_bytes")
    if not stored or not isinstance(stored[-1], dict):
        return None
    totals = {k: v for k, v in stored[-1].items() if _is_number(v)}
    if len(totals) < 2:  # a single component says nothing the total does not
        return None
    return ", ".join(f"{k} {human_bytes(v)}" for k, v in totals.items())


def _seconds(x) -> str:
    return f"{x:.1f} s" if _is_number(x) else NA


def metrics_rows(result: dict) -> list[tuple[str, str]]:
    """(metric, value) pairs for display, in a fixed order; missing or null values read "n/a"."""
    rows: list[tuple[str, str]] = [
        ("Final average accuracy", _pct(result.get("final_accuracy"))),
        ("Average incremental accuracy", _pct(result.get("average_incremental_accuracy"))),
        ("Forgetting", _pct(result.get("forgetting"))),
        ("Backward transfer", _signed_pct(result.get("backward_transfer"))),
    ]
    if "routing_accuracy" in result:
        rows.append(("Routing accuracy", _pct(result.get("routing_accuracy"))))
    if "routing_top_k_accuracy" in result:
        rows.append((f"Routing accuracy (true task in top {result.get('routing_top_k')})",
                     _pct(result.get("routing_top_k_accuracy"))))
    if "accuracy_given_task" in result:
        rows.append(("Accuracy given the true task", _pct(result.get("accuracy_given_task"))))
    rows.append(("Mean bytes per task", _bytes_with_exact(mean_bytes_per_task(result))))
    if result.get("shared_bytes"):
        rows.append(("Shared state (stored once)", _bytes_with_exact(result.get("shared_bytes"))))
    rows.append(("Total stored bytes (after last task)", _bytes_with_exact(total_stored_bytes(result))))
    breakdown = _stored_breakdown(result)
    if breakdown:
        rows.append(("Stored by component", breakdown))
    secs = [s for s in (result.get("seconds_per_task") or []) if _is_number(s)]
    rows.append(("Training time (total)", _seconds(sum(secs)) if secs else NA))
    rows.append(("Training time (mean per task)", _seconds(_mean(secs))))
    if "total_seconds" in result:
        rows.append(("Wall time (train + eval)", _seconds(result.get("total_seconds"))))
    peak = result.get("peak_memory_mb")
    rows.append(("Peak memory", f"{peak:,.1f} MB" if _is_number(peak) else NA))
    return rows


def human_seconds(x) -> str:
    """45.2 s, 12.5 min, 3.1 h."""
    if not _is_number(x):
        return NA
    return f"{x:.1f} s" if x < 120 else f"{x / 60:.1f} min" if x < 7200 else f"{x / 3600:.1f} h"


COMPARISON_HEADER = ["Method", "Final accuracy", "Avg. incremental accuracy", "Forgetting", "BWT",
                     "Bytes per task", "Train time", "Run time", "Peak memory"]


def comparison_row(result: dict) -> list[str]:
    """One run as a row under COMPARISON_HEADER (several runs side by side). Train time: learning only, summed
    over tasks; run time: learning and evaluation."""
    secs = [s for s in (result.get("seconds_per_task") or []) if _is_number(s)]
    peak = result.get("peak_memory_mb")
    return [
        str(result.get("label") or result.get("method") or "?"),
        _pct(result.get("final_accuracy")),
        _pct(result.get("average_incremental_accuracy")),
        _pct(result.get("forgetting")),
        _signed_pct(result.get("backward_transfer")),
        human_bytes(mean_bytes_per_task(result)),
        human_seconds(sum(secs)) if secs else NA,
        human_seconds(result.get("total_seconds")),
        f"{peak:,.0f} MB" if _is_number(peak) else NA,
    ]


ADAPT_HEADER = ["Method", "Protocol", "Mean error", "First corruption", "Last corruption", "Source, clean",
                "Time per batch", "Run time", "Peak memory"]


def is_adaptation(result: dict) -> bool:
    """A test-time adaptation run (`lifelong adapt`), whose report is errors along a shift stream."""
    return result.get("kind") == "adapt"


def adapt_row(result: dict) -> list[str]:
    """One `lifelong adapt` run as a row under ADAPT_HEADER; errors in percent, as that literature reports."""
    errors = list((result.get("errors") or {}).items())
    peak = result.get("peak_memory_mb")

    def err(x) -> str:
        return f"{x:.2f}%" if _is_number(x) else NA

    return [
        str(result.get("label") or result.get("method") or "?"),
        str(result.get("protocol") or "?"),
        err(result.get("mean_error")),
        f"{errors[0][0]} {err(errors[0][1])}" if errors else NA,
        f"{errors[-1][0]} {err(errors[-1][1])}" if errors else NA,
        err((result.get("source") or {}).get("clean_error")),
        f"{result['seconds_per_batch']:.3f} s" if _is_number(result.get("seconds_per_batch")) else NA,
        human_seconds(result.get("total_seconds")),
        f"{peak:,.0f} MB" if _is_number(peak) else NA,
    ]


def _md_escape(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> str:
    """A markdown table, cells escaped; `align` per column, e.g. "---" or "--:"."""
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def task_names(result: dict) -> list[str]:
    """The result's task names, or "task 1".."task n" when absent or of the wrong length."""
    n = len(result.get("accuracy_matrix") or [])
    names = [str(t) for t in (result.get("task_names") or [])]
    return names if len(names) == n else [f"task {i + 1}" for i in range(n)]


def markdown(result: dict) -> str:
    """A short markdown report: metrics, the accuracy matrix, plot links and the config."""
    method = result.get("method", "?")
    benchmark = result.get("benchmark", "?")
    parts = [f"# {method} on {benchmark}", ""]

    parts += ["## Metrics", "", md_table(["Metric", "Value"], metrics_rows(result), ["---", "--:"]), ""]

    matrix = result.get("accuracy_matrix") or []
    names = task_names(result)
    if matrix:
        rows = []
        for i, row in enumerate(matrix):
            cells = [
                "" if j > i or j >= len(row) else (_pct(row[j], 1) if row[j] is not None else "")
                for j in range(len(names))
            ]
            rows.append([f"after {names[i]}", *cells])
        parts += [
            "## Accuracy matrix",
            "",
            "Row *i*: after learning task *i*; column *j*: accuracy on task *j*.",
            "",
            md_table(["", *names], rows, ["---"] + ["--:"] * len(names)),
            "",
        ]

    parts += [
        "## Plots",
        "",
        "![Average accuracy over seen tasks](accuracy_curve.png)",
        "",
        "![Accuracy matrix](accuracy_matrix.png)",
        "",
    ]

    if "config" in result:
        cfg = json.dumps(result["config"], indent=2, sort_keys=True, default=str)
        parts += ["## Config", "", "```json", cfg, "```", ""]

    return "\n".join(parts)


def print_table(result: dict, console=None) -> None:
    """Print `metrics_rows(result)` as a rich table (to `console`, or a new stdout Console)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{result.get('method', '?')} on {result.get('benchmark', '?')}")
    table.add_column("Metric", style="bold")
    table.add_column("Value", justify="right")
    for metric, value in metrics_rows(result):
        table.add_row(metric, value)
    console.print(table)
