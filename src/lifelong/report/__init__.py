"""Reporting: plots (PNG) and human-readable summaries of a continual-learning results dict."""

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
]
