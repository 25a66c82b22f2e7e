"""Reporting: plots (PNG) and human-readable summaries of a continual-learning results dict;
the report of a bench directory (markdown and self-contained HTML)."""

from lifelong.report.grid import write_report
from lifelong.report.plots import accuracy_curve, accuracy_heatmap, accuracy_vs_bytes
from lifelong.report.summary import human_bytes, markdown, metrics_rows, print_table

__all__ = [
    "accuracy_curve",
    "accuracy_heatmap",
    "accuracy_vs_bytes",
    "human_bytes",
    "markdown",
    "metrics_rows",
    "print_table",
    "write_report",
]
