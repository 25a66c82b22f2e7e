"""Tests for lifelong.report: PNG plots written atomically, markdown and rich summaries."""

from __future__ import annotations

import io

import pytest

from lifelong.report import (
    accuracy_curve,
    accuracy_heatmap,
    accuracy_vs_bytes,
    markdown,
    metrics_rows,
    print_table,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _result(task_names, matrix, method="ncm", **extra):
    n = len(task_names)
    avg = [sum(matrix[i][: i + 1]) / (i + 1) for i in range(n)]
    r = {
        "method": method,
        "benchmark": "clinc150",
        "task_names": task_names,
        "accuracy_matrix": matrix,
        "average_accuracy_per_task": avg,
        "final_accuracy": avg[-1],
        "average_incremental_accuracy": sum(avg) / n,
        "forgetting": None,
        "backward_transfer": None,
        "bytes_per_task": [23040] * n,
        "stored_bytes": [{"class_means": 23040 * (i + 1)} for i in range(n)],  # running totals
        "seconds_per_task": [12.0] * n,
        "eval_seconds_per_task": [1.0] * n,
        "total_seconds": 15.0 * n,
        "peak_memory_mb": 1234.5,
        "config": {"method": method, "lr": 0.01, "seed": 0},
        "environment": {"python": "3.11"},
    }
    r.update(extra)
    return r


@pytest.fixture
def three():
    matrix = [[0.98, None, None], [0.97, 0.95, None], [0.96, 0.94, 0.93]]
    return _result(["banking", "travel", "utility"], matrix, forgetting=0.015, backward_transfer=-0.015,
                   routing_accuracy=0.9123)


@pytest.fixture
def one():
    return _result(["banking"], [[0.98]], method="finetune")


def _check_png(path):
    assert path.exists()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000  # a real rendered figure, not an empty file


def _no_tmp(directory):
    leftovers = [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_plots_written_as_png(tmp_path, three, one):
    runs = [three, {**one, "label": "fine-tune (1 task)"}]
    accuracy_curve(runs, tmp_path / "accuracy_curve.png")
    accuracy_heatmap(three, tmp_path / "accuracy_matrix.png")
    accuracy_heatmap(one, tmp_path / "accuracy_matrix_one.png")
    accuracy_vs_bytes(runs, tmp_path / "accuracy_vs_bytes.png")
    for name in ["accuracy_curve.png", "accuracy_matrix.png", "accuracy_matrix_one.png", "accuracy_vs_bytes.png"]:
        _check_png(tmp_path / name)
    _no_tmp(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["accuracy_curve.png", "accuracy_matrix.png", "accuracy_matrix_one.png", "accuracy_vs_bytes.png"]
    )


def test_plot_overwrites_atomically_and_creates_dirs(tmp_path, three):
    out = tmp_path / "nested" / "dir" / "curve.png"
    accuracy_curve([three], out)
    first = out.read_bytes()
    accuracy_curve([three, {**three, "label": "again"}], out)
    _check_png(out)
    assert out.read_bytes() != first
    _no_tmp(out.parent)


def test_plots_close_figures(tmp_path, three):
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    accuracy_curve([three], tmp_path / "a.png")
    accuracy_heatmap(three, tmp_path / "b.png")
    accuracy_vs_bytes([three], tmp_path / "c.png")
    assert len(plt.get_fignums()) == before


def test_vs_bytes_handles_zero_bytes(tmp_path, three):
    zero = {**three, "method": "zeroshot", "bytes_per_task": [0, 0, 0], "stored_bytes": [{}, {}, {}]}
    accuracy_vs_bytes([three, zero], tmp_path / "v.png")
    _check_png(tmp_path / "v.png")


def test_metrics_rows(three):
    rows = dict(metrics_rows(three))
    assert rows["Final average accuracy"] == "94.33%"  # (0.96 + 0.94 + 0.93) / 3
    assert rows["Average incremental accuracy"] == "96.11%"  # mean of 0.98, 0.96, 0.9433
    assert rows["Forgetting"] == "1.50%"
    assert rows["Backward transfer"] == "-1.50%"
    assert rows["Routing accuracy"] == "91.23%"
    assert rows["Mean bytes per task"] == "22.5 KB (23,040 bytes)"
    assert rows["Total stored bytes (after last task)"] == "67.5 KB (69,120 bytes)"
    assert rows["Training time (total)"] == "36.0 s"
    assert rows["Training time (mean per task)"] == "12.0 s"
    assert rows["Peak memory"] == "1,234.5 MB"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metrics_rows(three))


def test_metrics_rows_one_task(one):
    rows = dict(metrics_rows(one))
    assert rows["Forgetting"] == "n/a"
    assert rows["Backward transfer"] == "n/a"
    assert "Routing accuracy" not in rows  # key absent
    assert dict(metrics_rows({**one, "routing_accuracy": None}))["Routing accuracy"] == "n/a"


def test_markdown_three(three):
    md = markdown(three)
    assert md.startswith("# ncm on clinc150")
    for name in three["task_names"]:
        assert name in md
    for pct in ["98.0%", "97.0%", "95.0%", "96.0%", "94.0%", "93.0%"]:  # matrix cells, 1 decimal
        assert pct in md
    assert "94.33%" in md and "1.50%" in md and "-1.50%" in md
    assert "| after banking | 98.0% |  |  |" in md  # j > i left blank
    assert "(accuracy_curve.png)" in md and "(accuracy_matrix.png)" in md
    assert "```json" in md and '"lr": 0.01' in md


def test_markdown_one_task(one):
    md = markdown(one)
    assert "banking" in md
    assert "98.0%" in md and "98.00%" in md
    assert "n/a" in md
    assert md.count("| Forgetting | n/a |") == 1


def test_print_table(three):
    from rich.console import Console

    buf = io.StringIO()
    print_table(three, console=Console(file=buf, width=120, color_system=None))
    out = buf.getvalue()
    assert "Final average accuracy" in out and "94.33%" in out
    assert "22.5 KB" in out


def test_report_compares_runs_and_folders_of_runs(tmp_path, tiny_backbone, intents_jsonl):
    from test_cli import assert_one_line_error, lifelong

    for name, extra in [("a/ncm", []), ("a/ranpac", ["--set", "projection=32"]), ("solo", [])]:
        method = name.split("/")[-1] if "/" in name else "analytic"
        proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", method,
                        "--backbone", tiny_backbone, "--out", tmp_path / name, *extra)
        assert proc.returncode == 0, proc.stderr
    out = tmp_path / "compare"
    proc = lifelong("report", tmp_path / "a", tmp_path / "solo", "--out", out)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "## intents" in md  # runs grouped by the benchmark they ran on
    for label in ("ncm", "ranpac", "solo"):
        assert f"| {label} |" in md
    assert "](../a/ncm/accuracy_matrix.png)" in md  # links to each run's own heatmap
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64") >= 5  # curves, bytes plot and three matrices, embedded
    proc = lifelong("report", tmp_path / "solo")
    assert proc.returncode == 0 and (tmp_path / "solo" / "report.html").exists()
    assert_one_line_error(lifelong("report", tmp_path / "a", tmp_path / "solo"), "needs --out")
    assert_one_line_error(lifelong("report", tmp_path / "compare" / "intents"), "no results to report")
