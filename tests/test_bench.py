"""`lifelong bench` and `lifelong report`: a resumable grid of runs and its markdown and self-contained HTML report."""

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import intent_rows
from test_cli import REQUIRED, assert_one_line_error, lifelong

from lifelong import bench
from lifelong.bench import parse_method, plan, split_methods
from lifelong.errors import LifelongError

ROOT = Path(__file__).resolve().parents[1]
METHODS = "ncm,adapters:precision=fp32,rank=2"  # the second: cell adapters-fp32-rank2, label adapters:fp32:rank=2
CELLS = {"intents": ["ncm", "adapters-fp32-rank2"], "bad": ["ncm", "adapters-fp32-rank2"]}


def test_jobs_run_cells_at_once_and_split_the_threads(tmp_path, intents_jsonl, monkeypatch):
    import threading

    cells = plan([str(intents_jsonl)], ["ncm", "lda", "probe"], {"classes_per_task": 2}, {})
    together = threading.Barrier(2, timeout=30)  # broken (and the test failed) unless two cells run at once
    seen = []

    def fake(cell, root, env):
        seen.append((cell.name, env["LIFELONG_THREADS"]))
        if cell.name != "probe":
            together.wait()  # ncm and lda, the first two cells, wait for each other
        if cell.name == "lda":
            (root / cell.path).mkdir(parents=True)
            (root / cell.path / "results.json").write_text('{"final_accuracy": 0.5}')
            return None
        return "exit 1: boom"

    monkeypatch.setattr(bench, "run_cell", fake)
    monkeypatch.setenv("LIFELONG_THREADS", "4")
    failed = bench.run_grid(cells, tmp_path, jobs=2)
    assert sorted(seen) == [("lda", "2"), ("ncm", "2"), ("probe", "2")]
    assert failed == [f"{cells[0].path}: exit 1: boom", f"{cells[2].path}: exit 1: boom"]  # in grid order
    assert bench.cell_env(1) is None


def test_method_specs():
    assert split_methods("ncm, adapters:1bit,adapters:precision=fp32,rank=4,finetune") == [
        "ncm", "adapters:1bit", "adapters:precision=fp32:rank=4", "finetune"]
    assert parse_method("adapters:1bit:top-k=2") == ("adapters", {"precision": "1bit", "top_k": "2"})
    assert parse_method("ncm") == ("ncm", {})


def test_plan_gives_task_definitions_to_data_files_only(tmp_path, intents_jsonl):
    tasks = tmp_path / "tasks.json"
    tasks.write_text('[["weather", "pay_bill"], ["play_music", "book_flight"]]')
    common = {"tasks_file": str(tasks)}
    named, own = plan(["clinc150", str(intents_jsonl)], ["ncm"], common, {})
    assert named.experiment.tasks_file is None and own.experiment.tasks_file == str(tasks)
    argv = own.experiment.argv(tmp_path / "o")
    assert argv[argv.index("--tasks") + 1] == str(tasks) and "--tasks" not in named.experiment.argv(tmp_path / "o")
    tasks.write_text('[["weather"], []]')
    with pytest.raises(LifelongError, match="task 2 is empty"):
        plan([str(intents_jsonl)], ["ncm"], common, {})
    with pytest.raises(LifelongError, match=r"\(got --classes-per-task and --tasks\)"):
        plan([str(intents_jsonl)], ["ncm"], common | {"classes_per_task": 2}, {})


@pytest.fixture(scope="module")
def grid(tiny_backbone, tmp_path_factory):
    """A 2 x 2 grid run once: a good data file and one that fails to load, ncm and a 1-epoch adapters cell."""
    data = tmp_path_factory.mktemp("data")
    good = data / "intents.jsonl"
    good.write_text("\n".join(json.dumps(r) for r in intent_rows()) + "\n")
    bad = data / "bad.jsonl"
    bad.write_text('{"text": "hi", "label": "a"}\n{"text": "yo"}\n')
    out = tmp_path_factory.mktemp("bench")
    args = ["bench", "--benchmarks", f"{good},{bad}", "--methods", METHODS, "--classes-per-task", 2,
            "--epochs", 1, "--backbone", tiny_backbone, "--out", out]
    return out, args, lifelong(*args)


def test_bench_writes_every_cell_and_reports_failures(grid):
    out, _, proc = grid
    assert proc.returncode == 1, proc.stderr  # a cell failed: the grid went on, the exit code says so
    for cell in CELLS["intents"]:
        res = json.loads((out / "intents" / cell / "results.json").read_text())
        assert all(key in res for key in REQUIRED)
        for name in ("accuracy_curve.png", "accuracy_matrix.png", "summary.md", "model/learner.json"):
            assert (out / "intents" / cell / name).exists()
    adapters = json.loads((out / "intents" / "adapters-fp32-rank2" / "results.json").read_text())
    assert adapters["label"] == "adapters:fp32:rank=2"
    assert adapters["config"]["settings"]["precision"] == "fp32" and adapters["config"]["settings"]["rank"] == 2
    assert adapters["config"]["settings"]["epochs"] == 1  # the grid-wide --epochs reached the method that trains
    for cell in CELLS["bad"]:
        assert not (out / "bad" / cell / "results.json").exists()
        assert "missing field 'label'" in (out / "bad" / f"{cell}.log").read_text()
    assert "bad/ncm: exit 2: error: " in proc.stderr and "Traceback" not in proc.stderr
    assert "2 of 4 cells failed" in proc.stderr


def test_report_has_every_benchmark_and_method(grid):
    out = grid[0]
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for text in (md, page):
        for needle in ("intents", "bad", "ncm", "adapters:fp32:rank=2", "Final accuracy", "Peak memory",
                       "Not finished"):
            assert needle in text, needle
    for png in ("intents/accuracy_curves.png", "intents/accuracy_vs_bytes.png", "intents/ncm/accuracy_matrix.png"):
        assert f"]({png})" in md and (out / png).exists()
    assert page.count('src="data:image/png;base64,') == 4  # curves, accuracy vs bytes, two heatmaps
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)  # nothing fetched from a network
    assert "<script" not in page and "<link" not in page


def test_rerun_skips_finished_cells(grid):
    out, args, _ = grid
    done = out / "intents" / "ncm" / "results.json"
    before = done.stat().st_mtime_ns
    proc = lifelong(*args)
    assert proc.returncode == 1
    assert done.stat().st_mtime_ns == before
    assert proc.stderr.count("skip, finished earlier") == 2
    assert "bad/ncm: FAILED" in proc.stderr  # unfinished cells are tried again


def test_report_command_rebuilds_without_running(grid):
    out = grid[0]
    (out / "report.html").unlink()
    proc = lifelong("report", out)
    assert proc.returncode == 0, proc.stderr
    assert "adapters:fp32:rank=2" in (out / "report.html").read_text()


@pytest.mark.parametrize("methods, needle", [("ncm,magic", "unknown method 'magic'"),
                                             ("ncm,adapters:2bit", "setting 'precision'"),
                                             ("ncm,ncm", "both make the cell")])
def test_bad_grid_fails_before_running_anything(tmp_path, intents_jsonl, methods, needle):
    out = tmp_path / "out"
    proc = lifelong("bench", "--benchmarks", intents_jsonl, "--methods", methods, "--classes-per-task", 2,
                    "--out", out)
    assert proc.returncode == 2
    assert_one_line_error(proc, needle)
    assert not out.exists()


def test_report_of_empty_dir_is_one_line(tmp_path):
    assert_one_line_error(lifelong("report", tmp_path), "no results to report")


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian chromium for the screenshot")
def test_report_renders_in_chromium(grid, tmp_path):
    from PIL import Image

    png = tmp_path / "report.png"
    proc = subprocess.run([ROOT / "benchmarks" / "render_report.sh", grid[0] / "report.html", png, "1200,1600"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    with Image.open(png) as img:
        assert img.size == (1200, 1600)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colours) > 200  # text, a table and plots, not a blank page
