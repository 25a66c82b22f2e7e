"""Everyday conventions of the CLI: --version, config files, a guard on finished runs, quiet logs, a safe learn."""

import json

import pytest
from conftest import intent_rows
from test_cli import assert_one_line_error, lifelong


def test_version():
    proc = lifelong("--version")
    assert proc.returncode == 0 and proc.stdout.strip().startswith("lifelong 0.")


@pytest.fixture
def finished_run(tmp_path, tiny_backbone, intents_jsonl):
    out = tmp_path / "run"
    proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", "ranpac",
                    "--set", "projection=64", "--backbone", tiny_backbone, "--out", out, "--seed", 3)
    assert proc.returncode == 0, proc.stderr
    return out


def test_a_finished_run_is_not_overwritten_without_asking(finished_run, tiny_backbone, intents_jsonl):
    before = (finished_run / "results.json").read_text()
    proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", "ncm",
                    "--backbone", tiny_backbone, "--out", finished_run)
    assert_one_line_error(proc, "holds a finished run", "--overwrite")
    assert (finished_run / "results.json").read_text() == before
    proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", "ncm",
                    "--backbone", tiny_backbone, "--out", finished_run, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((finished_run / "results.json").read_text())["method"] == "ncm"


def test_results_json_rebuilds_its_run(finished_run, tmp_path):
    again = tmp_path / "again"
    proc = lifelong("run", "--config", finished_run / "results.json", "--out", again)
    assert proc.returncode == 0, proc.stderr
    a, b = (json.loads((d / "results.json").read_text()) for d in (finished_run, again))
    assert a["config"] == b["config"] and b["config"]["seed"] == 3
    assert a["accuracy_matrix"] == b["accuracy_matrix"]


def test_a_yaml_config_file_with_flags_that_win(tmp_path, tiny_backbone, intents_jsonl):
    config = tmp_path / "run.yaml"
    config.write_text(f"benchmark: {intents_jsonl}\nclasses-per-task: 2\nmethod: ranpac\nbackbone: {tiny_backbone}\n"
                      "seed: 1\nsettings:\n  projection: 32\n")
    out = tmp_path / "out"
    proc = lifelong("run", "--config", config, "--seed", 2, "--out", out)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["method"] == "ranpac" and res["config"]["seed"] == 2  # the flag wins over the file
    assert res["config"]["settings"]["projection"] == 32


@pytest.mark.parametrize("text, needle", [("methd: ncm\n", "unknown option 'methd'"),
                                          ("benchmark: [a, b]\n", "expected one value"),
                                          ("method: [ncm\n", "not valid YAML"),
                                          ("- ncm\n", "expected a mapping")])
def test_a_bad_config_file_is_one_line(tmp_path, text, needle):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    proc = lifelong("run", "--config", config, "--out", tmp_path / "out")
    assert_one_line_error(proc, "bad.yaml", needle)
    assert not (tmp_path / "out").exists()


def test_bad_settings_and_options_fail_before_anything_runs(tmp_path, intents_jsonl):
    for args, needle in [(["--set", "refit_head=flase"], "setting 'refit_head'"),
                         (["--top-k", "0"], "setting 'top_k'"),
                         (["--epochs", "-1"], "setting 'epochs'"),
                         (["--max-length", "0"], "option 'max_length'")]:
        proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", "adapters",
                        "--out", tmp_path / "out", *args)
        assert_one_line_error(proc, needle)
        assert not (tmp_path / "out").exists()


def test_a_redirected_log_has_lines_not_bar_frames(tmp_path, tiny_backbone, intents_jsonl):
    args = ["run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", "finetune", "--epochs", 1,
            "--backbone", tiny_backbone]
    proc = lifelong(*args, "--out", tmp_path / "a")
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "it/s" not in proc.stderr and "steps/s" not in proc.stderr
    assert "train" in proc.stderr and "steps in" in proc.stderr  # one line per training loop instead
    quiet = lifelong(*args, "--out", tmp_path / "b", "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.strip() == ""
    assert "Final average accuracy" in quiet.stdout  # the result is still printed


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_learn_refuses_a_class_with_too_few_examples(tmp_path, tiny_backbone):
    model = tmp_path / "m"
    assert lifelong("init", model, "--backbone", tiny_backbone, "--method", "ncm").returncode == 0
    rows = [r for r in intent_rows() if r["label"] in ("weather", "pay_bill")]
    few = _write(tmp_path / "few.jsonl", rows + [{"text": "hello there", "label": "greet"}])
    assert_one_line_error(lifelong("learn", model, "--data", few), "'greet' (1)", "fewer than 5", "--min-examples")
    assert json.loads((model / "manifest.json").read_text())["current"] == 0
    proc = lifelong("learn", model, "--data", few, "--min-examples", 1, "--holdout", 0)
    assert proc.returncode == 0, proc.stderr
    assert "not calibrated" in proc.stdout
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["versions"][-1]["calibrated"] is False
    assert "(not calibrated)" in lifelong("info", model).stdout
    good = _write(tmp_path / "good.jsonl", [r for r in intent_rows() if r["label"] == "play_music"] * 2)
    proc = lifelong("learn", model, "--data", good)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((model / "manifest.json").read_text())["versions"][-1]["calibrated"] is True


def test_bench_and_learn_take_a_config_file(tmp_path, tiny_backbone, intents_jsonl):
    config = tmp_path / "grid.json"
    config.write_text(json.dumps({"benchmarks": str(intents_jsonl), "methods": ["ncm", "lda"], "classes_per_task": 2,
                                  "backbone": tiny_backbone}))
    out = tmp_path / "grid"
    proc = lifelong("bench", "--config", config, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.parent.name for p in out.glob("*/*/results.json")) == ["lda", "ncm"]
    model = tmp_path / "m"
    assert lifelong("init", model, "--backbone", tiny_backbone, "--method", "ncm").returncode == 0
    data = _write(tmp_path / "t.jsonl", [r for r in intent_rows() if r["label"] in ("weather", "pay_bill")])
    learn = tmp_path / "learn.yaml"
    learn.write_text(f"data: {data}\nname: first\nholdout: 0\n")
    proc = lifelong("learn", model, "--config", learn)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((model / "manifest.json").read_text())["versions"][-1]["tasks"][0]["name"] == "first"


def test_help_shows_boolean_flags_as_pairs_and_offers_completion():
    run_help = lifelong("run", "--help").stdout
    assert "--oos / --no-oos" in run_help and "<bool>" not in run_help
    assert "--install-completion" in lifelong("--help").stdout


def test_tqdm_disable_silences_bars_and_lines(monkeypatch, caplog):
    import logging

    from lifelong import progress

    monkeypatch.setattr(progress, "EVERY", 0.0)
    with caplog.at_level(logging.INFO, logger="lifelong"):
        bar = progress.Progress(3, "embed", "texts")
        bar.update(3)
        bar.close()
    assert "embed: 3/3 texts" in caplog.text and "embed: 3 texts in" in caplog.text  # off a terminal: lines
    caplog.clear()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    with caplog.at_level(logging.INFO, logger="lifelong"):
        bar = progress.Progress(3, "embed", "texts")
        bar.update(3)
        bar.close()
    assert bar.bar is None and "embed" not in caplog.text


def test_the_python_store_refuses_a_one_example_class(tmp_path, tiny_backbone):
    import lifelong as lib
    from lifelong.errors import LifelongError

    store = lib.ModelStore.init(tmp_path / "m", tiny_backbone, "ncm", {})
    with pytest.raises(LifelongError, match="fewer than 5 examples: 'b' \\(1\\)"):
        store.learn([("a", "b")], name="tiny")
    assert store.manifest()["current"] == 0
    rows = [(f"{w} apple", "a") for w in "red green big small sweet sour".split()]
    rows += [(f"{w} car", "b") for w in "red green big small fast slow".split()]
    store.learn(rows)
    loaded = store.load()
    assert loaded.predict("sweet apple") in ("a", "b", "out_of_scope")  # one text, one answer
    assert len(loaded.predict(["sweet apple", "fast car"])) == 2
    assert "ModelStore(" in repr(store) and "version 1" in repr(store)
