"""Trackers the protocol loop feeds after each task: metrics.csv always, TensorBoard and MLflow when installed."""

import csv
import importlib.util

import pytest
from test_cli import assert_one_line_error, lifelong

RUN = ["run", "--classes-per-task", 2, "--method", "ranpac", "--set", "projection=32"]


def test_metrics_csv_has_a_row_per_task_matching_results(tmp_path, tiny_backbone, intents_jsonl):
    import json

    out = tmp_path / "out"
    proc = lifelong(*RUN, "--benchmark", intents_jsonl, "--backbone", tiny_backbone, "--out", out)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    res = json.loads((out / "results.json").read_text())
    assert [int(r["task"]) for r in rows] == [1, 2]
    for i, r in enumerate(rows):
        seen = res["accuracy_matrix"][i][: i + 1]
        assert float(r["average_accuracy"]) == pytest.approx(sum(seen) / len(seen))
        assert float(r["accuracy_task0"]) == pytest.approx(seen[0])
        assert float(r["learn_seconds"]) == pytest.approx(res["seconds_per_task"][i])
    assert rows[0]["accuracy_task1"] == "" and rows[1]["accuracy_task1"] != ""


def test_unknown_or_missing_tracker_is_one_line_and_writes_nothing(tmp_path, intents_jsonl):
    proc = lifelong(*RUN, "--benchmark", intents_jsonl, "--out", tmp_path / "out", "--log", "wandb")
    assert_one_line_error(proc, "--log 'wandb'", "tensorboard, mlflow")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_gets_a_scalar_per_task(tmp_path, tiny_backbone, intents_jsonl):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    proc = lifelong(*RUN, "--benchmark", intents_jsonl, "--backbone", tiny_backbone, "--out", out,
                    "--log", "tensorboard")
    assert proc.returncode == 0, proc.stderr
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("average_accuracy")]
    assert steps == [1, 2]
    assert "final/final_accuracy" in events.Tags()["scalars"]


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")
def test_mlflow_run_records_params_metrics_and_results(tmp_path, tiny_backbone, intents_jsonl, monkeypatch):
    import os
    import subprocess
    import sys

    out, store = tmp_path / "out", tmp_path / "mlruns"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
    proc = subprocess.run([sys.executable, "-m", "lifelong.cli", *map(str, RUN), "--benchmark", str(intents_jsonl),
                           "--backbone", tiny_backbone, "--out", str(out), "--log", "mlflow"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(store.as_uri())
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["method"] == "ranpac" and run.data.params["settings.projection"] == "32"
    assert "final_accuracy" in run.data.metrics
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "average_accuracy")
    assert [m.step for m in history] == [1, 2]
