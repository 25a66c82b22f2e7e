"""`lifelong` as a user runs it: a subprocess, real files, exit codes and one-line errors."""

import json
import subprocess
import sys

import pytest
from conftest import intent_rows

REQUIRED = ["accuracy_matrix", "final_accuracy", "average_incremental_accuracy", "forgetting",
            "backward_transfer", "bytes_per_task", "seconds_per_task", "config", "environment"]


def lifelong(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lifelong.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600, check=False)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("method, extra", [("ncm", []), ("finetune", ["--epochs", 1]), ("joint", ["--epochs", 1]),
                                           ("ranpac", ["--set", "projection=64"]), ("analytic", []),
                                           *[(m, ["--epochs", 1]) for m in ("l2", "ewc", "lwf", "wa", "replay", "aper")]])
def test_run_on_user_file_writes_results(tiny_backbone, intents_jsonl, tmp_path, method, extra):
    out = tmp_path / "out"
    proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", method,
                    "--backbone", tiny_backbone, "--out", out, *extra)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "results.json").read_text())
    for key in REQUIRED:
        assert key in res
    R = res["accuracy_matrix"]
    assert len(R) == 2 and R[0][1] is None
    assert all(0.0 <= a <= 1.0 for row in R for a in row if a is not None)
    assert len(res["bytes_per_task"]) == 2 and all(b > 0 for b in res["bytes_per_task"])
    assert res["config"]["method"] == method and res["config"]["seed"] == 0
    assert res["environment"]["torch"].startswith("2.13")
    assert res["environment"]["frozen_pass"] == res["environment"]["training"] == "float32"  # LIFELONG_AUTOCAST=off
    for name in ("accuracy_curve.png", "accuracy_matrix.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Final average accuracy" in (out / "summary.md").read_text()
    assert "Final average accuracy" in proc.stdout  # the printed metrics table


def test_help_documents_every_flag():
    proc = lifelong("run", "--help")
    assert proc.returncode == 0
    for flag in ["--benchmark", "--method", "--seed", "--out", "--backbone", "--classes-per-task", "--task-field",
                 "--tasks", "--epochs", "--lr", "--batch-size", "--set", "--test-file", "--cache-dir"]:
        assert flag in proc.stdout


def test_methods_lists_each_method():
    proc = lifelong("methods")
    assert proc.returncode == 0
    for name in ("ncm", "finetune", "joint"):
        assert name in proc.stdout


def test_unknown_method_and_benchmark(tmp_path):
    assert_one_line_error(lifelong("run", "--method", "magic", "--out", tmp_path), "unknown method 'magic'")
    assert_one_line_error(lifelong("run", "--benchmark", "mnist", "--out", tmp_path), "unknown benchmark 'mnist'")
    assert not (tmp_path / "results.json").exists()


def test_setting_the_method_lacks(tmp_path, intents_jsonl):
    proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", "ncm",
                    "--epochs", 3, "--out", tmp_path)
    assert_one_line_error(proc, "unknown setting 'epochs'")


@pytest.mark.parametrize(
    "content, needles",
    [
        ('{"text": "hi", "label": "a"}\n{"text": "yo"}\n', ["bad.jsonl:2", "missing field 'label'"]),
        ('{"text": "hi", "label": "a"}\n{"text": "  ", "label": "a"}\n', ["bad.jsonl:2", "empty text"]),
        (b'{"text": "hi", "label": "a"}\n{"text": "caf\xe9", "label": "a"}\n', ["bad.jsonl:2", "UTF-8"]),
        ('{"text": "a1", "label": "a", "split": "train"}\n{"text": "b1", "label": "b", "split": "test"}\n',
         ["bad.jsonl", "'b' never appears in the training data"]),
    ],
)
def test_bad_file_gives_one_line_error_and_no_results(tmp_path, content, needles):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "out"
    proc = lifelong("run", "--benchmark", bad, "--classes-per-task", 1, "--out", out)
    assert_one_line_error(proc, *needles)
    assert not (out / "results.json").exists()


def test_file_needs_classes_per_task(intents_jsonl, tmp_path):
    assert_one_line_error(lifelong("run", "--benchmark", intents_jsonl, "--out", tmp_path), "--classes-per-task")


@pytest.mark.parametrize("how", ["--task-field", "--tasks"])
def test_run_with_tasks_from_a_field_or_a_file(tiny_backbone, tmp_path, how):
    group = {"weather": "home", "play_music": "home", "pay_bill": "money", "book_flight": "travel"}
    data = tmp_path / "intents.jsonl"
    data.write_text("".join(json.dumps({**r, "group": group[r["label"]]}) + "\n" for r in intent_rows()))
    tasks = tmp_path / "tasks.json"
    tasks.write_text('[["weather", "play_music"], ["pay_bill"], ["book_flight"]]')
    out = tmp_path / "out"
    proc = lifelong("run", "--benchmark", data, how, "group" if how == "--task-field" else tasks,
                    "--backbone", tiny_backbone, "--out", out)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "results.json").read_text())
    config = res["config"]
    assert config["task_classes"] == [["weather", "play_music"], ["pay_bill"], ["book_flight"]]
    assert len(res["accuracy_matrix"]) == 3
    assert (config["task_field"], config["tasks_file"]) == (("group", None) if how == "--task-field" else
                                                            (None, str(tasks)))
    assert (config["text_field"], config["label_field"], config["test_file"]) == ("text", "label", None)


def test_bad_tasks_file_is_one_line_and_writes_nothing(intents_jsonl, tmp_path):
    tasks = tmp_path / "tasks.json"
    tasks.write_text('[["weather", "pay_bill"], ["play_music", "pay_bill"]]')
    out = tmp_path / "out"
    proc = lifelong("run", "--benchmark", intents_jsonl, "--tasks", tasks, "--out", out)
    assert_one_line_error(proc, "tasks.json: class 'pay_bill' is in task 1 and task 2")
    assert len(proc.stderr.splitlines()) == 1 and not out.exists()
    tasks.write_text('[["weather", "pay_bill"], ["play_music"]]')  # parses; the data's book_flight is in no task
    proc = lifelong("run", "--benchmark", intents_jsonl, "--tasks", tasks, "--out", out)
    assert_one_line_error(proc, "tasks.json: no task holds 1 of the 4 classes of", "'book_flight'")
    assert not out.exists()
    proc = lifelong("run", "--benchmark", intents_jsonl, "--tasks", tasks, "--classes-per-task", 2, "--out", out)
    assert_one_line_error(proc, "exactly one of --classes-per-task, --task-field or --tasks",
                          "(got --classes-per-task and --tasks)")
    assert not out.exists()


def test_bad_backbone_is_one_line(intents_jsonl, tmp_path):
    proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--backbone", tmp_path / "none",
                    "--out", tmp_path / "o")
    assert_one_line_error(proc, "cannot load text backbone")


def test_adapters_run_reports_file_bytes_and_routing(tiny_backbone, intents_jsonl, tmp_path):
    out = tmp_path / "out"
    proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", "adapters",
                    "--adapter", "bottleneck", "--precision", "ternary", "--rank", 4, "--blocks", 1, "--top-k", 2,
                    "--epochs", 1, "--backbone", tiny_backbone, "--out", out)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["settings"]["adapter"] == "bottleneck" and res["config"]["settings"]["precision"] == "ternary"
    assert res["routing_top_k_accuracy"] == 1.0  # two tasks, top 2
    files = sorted(p.name for p in (out / "model").iterdir())
    assert files == ["learner.json", "shared.safetensors", "task000.safetensors", "task001.safetensors"]
    assert res["file_bytes_per_task"] == [(out / "model" / f).stat().st_size for f in files[2:]]
    assert set(res["stored_bytes"][0]) == {"adapter", "head", "classes", "shared"}
    assert res["shared_bytes"] == res["stored_bytes"][-1]["shared"] > 0
    assert set(res["chosen"]) == {"alpha", "shrinkage", "temperature", "beta", "epochs"}  # chosen inside learn
    assert res["chosen"]["epochs"] == [1, 1]


def test_bad_precision_is_one_line(tiny_backbone, intents_jsonl, tmp_path):
    proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", "adapters",
                    "--precision", "2bit", "--backbone", tiny_backbone, "--out", tmp_path)
    assert_one_line_error(proc, "setting 'precision'", "'1bit', 'ternary', 'fp16' or 'fp32'", "'2bit'")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_pages_go_back_to_the_system():
    """Many small tensors freed between live ones leave pages glibc keeps; `run` hands them back before its plots,
    which otherwise raised a run's peak above its evaluation's."""
    import os

    import torch

    from lifelong import heap

    def resident_mb() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    small = [torch.ones(5_000) for _ in range(10_000)]  # 20 KB each: the heap, not their own mappings
    kept = small[::10]
    del small
    before = resident_mb()
    heap.trim()
    assert before - resident_mb() > 100
    assert all(float(t.sum()) == 5_000 for t in kept)
