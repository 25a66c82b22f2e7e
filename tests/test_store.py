"""The production loop: a versioned model store that learns, predicts, rolls back and survives being killed."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import PHRASES
from test_cli import assert_one_line_error, lifelong

from lifelong import oos
from lifelong.errors import LifelongError
from lifelong.methods import get
from lifelong.store import ModelStore

TASKS = {
    **PHRASES,
    "set_alarm": ["set an alarm for 7am", "wake me up at six", "alarm for tomorrow morning",
                  "set my alarm to 8:30", "i need an alarm at noon", "create an alarm for 5pm"],
    "timer": ["set a timer for ten minutes", "start a 5 minute timer", "timer for twenty minutes",
              "count down three minutes", "set a timer for the pasta", "one hour timer please"],
}
GROUPS = [["weather", "pay_bill"], ["play_music", "book_flight"], ["set_alarm", "timer"]]


def write_task(path, classes, oos_rows=()):
    rows = [{"text": t, "label": c} for c in classes for t in TASKS[c]]
    rows += [{"text": t, "label": "oos"} for t in oos_rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def model(tmp_path, tiny_backbone):
    path = tmp_path / "model"
    proc = lifelong("init", path, "--backbone", tiny_backbone, "--method", "adapters", "--precision", "1bit",
                    "--set", "epochs=2", "--set", "rank=2")
    assert proc.returncode == 0, proc.stderr
    return path


def learn(model, tmp_path, i, *extra):
    data = write_task(tmp_path / f"task{i}.jsonl", GROUPS[i])
    return lifelong("learn", model, "--data", data, "--name", f"t{i}", *extra)


def test_init_learn_predict_info_rollback(model, tmp_path):
    for i in range(3):
        proc = learn(model, tmp_path, i)
        assert proc.returncode == 0, proc.stderr
        assert f"version {i + 1}: learned 2 classes" in proc.stdout
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["current"] == 3 and [e["version"] for e in manifest["versions"]] == [0, 1, 2, 3]
    v3 = manifest["versions"][3]
    assert [t["classes"] for t in v3["tasks"]] == GROUPS
    assert [t["version"] for t in v3["tasks"]] == [1, 2, 3]
    assert v3["threshold"] is not None and v3["metrics"]["in_scope_examples"] > 0
    # earlier tasks' files are shared with the parent version, so a version stores only what it adds
    assert 0 < v3["new_bytes"] < v3["bytes"]
    old, new = model / "versions/v0002/learner/task000.safetensors", model / "versions/v0003/learner/task000.safetensors"
    assert os.stat(old).st_ino == os.stat(new).st_ino

    proc = lifelong("predict", model, "--text", "play some jazz", "--text", "wake me up at six", "--top-k", 3)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    all_classes = {c for g in GROUPS for c in g}
    assert len(out) == 2
    for p in out:
        assert p["label"] in all_classes | {oos.OUT_OF_SCOPE}
        assert len(p["top"]) == 3 and {t["label"] for t in p["top"]} <= all_classes
        assert p["top"][0]["score"] >= p["top"][1]["score"] >= p["top"][2]["score"]

    proc = lifelong("info", model)
    assert proc.returncode == 0 and "current version 3" in proc.stdout and "set_alarm" in proc.stdout

    proc = lifelong("rollback", model, "--to", 1)
    assert proc.returncode == 0, proc.stderr
    proc = lifelong("predict", model, "--text", "wake me up at six", "--top-k", 5)
    top = json.loads(proc.stdout)["top"]
    assert {t["label"] for t in top} == set(GROUPS[0])  # version 1 knows only the first task's classes
    # learning after a rollback branches from version 1; versions 2 and 3 stay loadable
    proc = learn(model, tmp_path, 2)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["current"] == 4 and manifest["versions"][4]["parent"] == 1
    assert [t["classes"] for t in manifest["versions"][4]["tasks"]] == [GROUPS[0], GROUPS[2]]
    assert ModelStore(model).load(3).classes == [c for g in GROUPS for c in g]


def test_same_model_predicts_the_same_after_reload(model, tmp_path):
    assert learn(model, tmp_path, 0).returncode == 0
    texts = [t for c in GROUPS[0] for t in TASKS[c]]
    a = ModelStore(model).load().learner.predict(texts)
    b = ModelStore(model).load().learner.predict(texts)
    assert torch.equal(a, b)


def test_learn_rejects_known_classes_and_oos_rows(model, tmp_path):
    assert learn(model, tmp_path, 0).returncode == 0
    proc = learn(model, tmp_path, 0)
    assert_one_line_error(proc, "task0.jsonl", "'weather' was already learned")
    bad = write_task(tmp_path / "bad.jsonl", ["timer"], oos_rows=["tell me a joke"])
    assert_one_line_error(lifelong("learn", model, "--data", bad), "bad.jsonl", "out of scope")
    assert json.loads((model / "manifest.json").read_text())["current"] == 1


def test_eval_file_records_metrics_and_calibrates_with_oos(model, tmp_path):
    held = write_task(tmp_path / "held.jsonl", GROUPS[0], oos_rows=["tell me a joke", "who won the game"])
    proc = learn(model, tmp_path, 0, "--eval", held)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((model / "manifest.json").read_text())["versions"][1]["metrics"]
    assert m["in_scope_examples"] == 12 and m["out_of_scope_examples"] == 2
    assert m["oos_recall"] is not None and 0 <= m["in_scope_accuracy"] <= m["in_scope_accuracy_no_rejection"] <= 1
    unknown = write_task(tmp_path / "unknown.jsonl", ["timer"])
    assert_one_line_error(learn(model, tmp_path, 1, "--eval", unknown), "'timer' was never learned")


@pytest.mark.parametrize("point", ["after-save", "after-publish", "before-manifest"])
def test_learn_killed_at_a_crash_point_leaves_the_previous_version(model, tmp_path, point):
    assert learn(model, tmp_path, 0).returncode == 0
    env = {**os.environ, "LIFELONG_CRASH_AT": point}
    data = write_task(tmp_path / "task1.jsonl", GROUPS[1])
    proc = subprocess.run([sys.executable, "-m", "lifelong.cli", "learn", str(model), "--data", str(data)],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == -signal.SIGKILL
    store = ModelStore(model)
    assert store.manifest()["current"] == 1 and store.load().classes == GROUPS[0]
    # the next writer cleans up what the killed one left and publishes normally
    assert learn(model, tmp_path, 1).returncode == 0
    assert sorted(p.name for p in (model / "versions").iterdir()) == ["v0001", "v0002"]
    assert store.load().classes == GROUPS[0] + GROUPS[1]


def test_learn_killed_at_random_moments_leaves_a_loadable_store(model, tmp_path):
    assert learn(model, tmp_path, 0).returncode == 0
    data = write_task(tmp_path / "task1.jsonl", GROUPS[1])
    for delay in (0.5, 2.0, 4.0, 6.0):
        proc = subprocess.Popen([sys.executable, "-m", "lifelong.cli", "learn", str(model), "--data", str(data)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        store = ModelStore(model)
        current = store.manifest()["current"]
        assert store.load().classes == (GROUPS[0] if current == 1 else GROUPS[0] + GROUPS[1])
        if current == 2:  # it finished before the kill: undo so the next round kills a real learn
            store.rollback(1)


def test_corrupted_file_is_named_and_older_versions_load(model, tmp_path):
    assert learn(model, tmp_path, 0).returncode == 0
    assert learn(model, tmp_path, 1).returncode == 0
    victim = model / "versions/v0002/learner/task001.safetensors"
    victim.write_bytes(victim.read_bytes()[:-10])
    assert_one_line_error(lifelong("predict", model, "--text", "play some jazz"), str(victim), "checksum")
    proc = lifelong("predict", model, "--text", "play some jazz", "--version", 1)
    assert proc.returncode == 0, proc.stderr
    assert_one_line_error(lifelong("rollback", model, "--to", 2), "task001.safetensors")
    (model / "manifest.json").write_text("{not json")
    assert_one_line_error(lifelong("info", model), "manifest.json")


def test_second_writer_fails_cleanly_while_one_holds_the_lock(model, tmp_path):
    store = ModelStore(model)
    with store.lock():
        proc = learn(model, tmp_path, 0, "--wait", 0)
        assert_one_line_error(proc, "another learn or rollback is running", f"pid {os.getpid()}")
    assert learn(model, tmp_path, 0, "--wait", 0).returncode == 0


def test_bad_commands_give_one_line_errors(tmp_path, tiny_backbone, model):
    assert_one_line_error(lifelong("predict", tmp_path / "nowhere", "--text", "hi"), "not a model")
    assert_one_line_error(lifelong("predict", model, "--text", "hi"), "learned no classes")
    assert_one_line_error(lifelong("init", model, "--backbone", tiny_backbone), "already exists")
    assert_one_line_error(lifelong("init", tmp_path / "m2", "--backbone", tiny_backbone, "--method", "nope"),
                          "unknown method")
    assert not (tmp_path / "m2" / "manifest.json").exists()
    assert_one_line_error(lifelong("rollback", model, "--to", 7), "no version 7")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hi"}\n')
    assert_one_line_error(lifelong("learn", model, "--data", bad), "bad.jsonl:1", "label")


def test_calibrate_keeps_the_requested_in_scope_fraction():
    scores = torch.linspace(0, 1, 101)
    t = oos.calibrate(scores, torch.ones(101, dtype=torch.bool), keep=0.9)
    assert (scores >= t).float().mean().item() == pytest.approx(0.9, abs=0.011)


def test_calibrate_separates_out_of_scope_when_it_can():
    in_scores, oos_scores = torch.tensor([0.7, 0.8, 0.9, 0.95]), torch.tensor([0.2, 0.3, 0.5])
    t = oos.calibrate(in_scores, torch.ones(4, dtype=torch.bool), oos_scores)
    r = oos.Rejection.measure(t, in_scores, torch.ones(4, dtype=torch.bool), oos_scores)
    assert r.in_scope_accuracy == 1.0 and r.oos_recall == 1.0 and r.in_scope_rejected == 0.0
    # wrong in-scope answers cost nothing when rejected: the threshold may rise above them
    t = oos.calibrate(in_scores, torch.tensor([False, True, True, True]), oos_scores)
    assert 0.5 < t <= 0.8


def test_stream_protocol_reports_rejection_after_each_task(tiny_backbone):
    from lifelong import evaluation
    from lifelong.backbones import load_backbone
    from lifelong.data.task import LabelledData, class_incremental

    rows = [(t, c) for c in TASKS for t in TASKS[c]]
    data = LabelledData("toy", rows[::2], rows[1::2], rows[1::2])
    stream = class_incremental(data, groups=GROUPS)
    with pytest.raises(LifelongError, match="no out-of-scope"):
        evaluation.run(get("ncm")(load_backbone(tiny_backbone)), stream, oos_protocol=True)
    stream = type(stream)(stream.name, stream.tasks, stream.class_names, oos={"val": ["tell me a joke"],
                                                                              "test": ["who are you", "what is love"]})
    learner = get("ncm")(load_backbone(tiny_backbone))
    res = evaluation.run(learner, stream, oos_protocol=True)
    assert len(res["out_of_scope_per_task"]) == 3
    for r in res["out_of_scope_per_task"]:
        assert r["in_scope_accuracy"] <= r["in_scope_accuracy_no_rejection"]  # a rejection only costs
    # the last row is the final model's: its recall is the share of out-of-scope test queries below the threshold
    last = res["out_of_scope_per_task"][-1]
    oos_scores = evaluation.best_scores(learner, stream.oos["test"])
    assert last["oos_recall"] == pytest.approx((oos_scores < last["threshold"]).float().mean().item())
    assert last == res["out_of_scope"]


def test_a_finished_run_becomes_version_one(tmp_path, tiny_backbone, intents_jsonl):
    run = tmp_path / "run"
    proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", "ncm",
                    "--backbone", tiny_backbone, "--out", run)
    assert proc.returncode == 0, proc.stderr
    model = tmp_path / "model"
    proc = lifelong("init", model, "--from-run", run)
    assert proc.returncode == 0, proc.stderr
    store = ModelStore(model)
    tasks = json.loads((run / "results.json").read_text())["config"]["task_classes"]
    loaded = store.load()
    assert loaded.version == 1 and loaded.classes == [c for t in tasks for c in t]
    texts = ["play some jazz", "book a flight to paris"]
    run_model = get("ncm").load(run / "model", loaded.learner.backbone)
    assert torch.equal(loaded.learner.predict(texts), run_model.predict(texts))
    assert_one_line_error(lifelong("init", tmp_path / "m2", "--from-run", tmp_path / "nowhere"), "not a finished run")
    assert not (tmp_path / "m2").exists()


def test_adapters_confidence_discounts_queries_far_from_every_class(model, tmp_path):
    assert learn(model, tmp_path, 0).returncode == 0
    learner = ModelStore(model).load().learner
    texts = [t for c in GROUPS[0] for t in TASKS[c]] + ["zzzz qqqq xxxx", "the mitochondria is the powerhouse"]
    scores = learner.predict(texts)
    conf = learner.confidence(texts, scores)
    x = learner.classes.transform(learner.cache.class_input(texts))  # the class model's feature
    nearest = x @ torch.nn.functional.normalize(learner.classes.means, dim=-1).T
    assert torch.allclose(conf, scores.max(-1).values * nearest.max(-1).values.float().clamp(min=0), atol=1e-5)
    assert (conf <= scores.max(-1).values + 1e-6).all()


def test_calibrate_makes_a_version_with_a_new_threshold_and_shared_files(model, tmp_path):
    assert learn(model, tmp_path, 0, "--holdout", 0).returncode == 0
    assert ModelStore(model).entry()["threshold"] is None  # nothing held out: nothing rejected
    held = write_task(tmp_path / "held.jsonl", GROUPS[0], oos_rows=["tell me a joke", "who won the game"])
    proc = lifelong("calibrate", model, "--eval", held)
    assert proc.returncode == 0, proc.stderr
    entry = ModelStore(model).entry()
    assert entry["version"] == 2 and entry["parent"] == 1
    assert entry["threshold"] == entry["metrics"]["threshold"]  # None when rejecting nothing scores best
    assert entry["metrics"]["out_of_scope_examples"] == 2 and entry["tasks"] == ModelStore(model).entry(1)["tasks"]
    assert entry["new_bytes"] < entry["bytes"]  # the weights are the parent's files, linked
    unknown = write_task(tmp_path / "unknown.jsonl", ["timer"])
    assert_one_line_error(lifelong("calibrate", model, "--eval", unknown), "'timer' was never learned")


def test_the_same_learn_gives_the_same_version_whatever_the_callers_random_state(tmp_path, tiny_backbone):
    rows = [(t, c) for c in GROUPS[0] for t in TASKS[c]]
    learned = []
    for k, draws in (("a", 3), ("b", 11)):
        store = ModelStore.init(tmp_path / k, tiny_backbone, "adapters", {"epochs": 2, "rank": 2})
        torch.rand(draws)  # the process's generator somewhere else, as in another process
        state = torch.get_rng_state()
        entry = store.learn(rows, name="t0", min_examples=2)
        assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left as it was
        learned.append((store.version_dir(entry["version"]) / "learner" / "task000.safetensors").read_bytes())
    assert learned[0] == learned[1]


@pytest.mark.parametrize("method", ["adapters", "ncm"])
def test_a_learn_reuses_its_parents_held_out_results_and_changes_no_result(tmp_path, tiny_backbone, monkeypatch,
                                                                           method):
    """`learn --eval` with a held-out file that grows by each task's rows: a learn reads what its parent version
    kept (store/memo.py) and embeds fewer rows than the file holds; deleting the cache changes no result."""
    from lifelong.backbones.text import TextEncoder

    embedded = []
    for name in ("encode", "encode_split"):
        real = getattr(TextEncoder, name)

        def counted(self, texts, *args, _real=real, **kwargs):
            embedded.append(len(texts))
            return _real(self, texts, *args, **kwargs)

        monkeypatch.setattr(TextEncoder, name, counted)
    settings = {"epochs": 2, "rank": 2} if method == "adapters" else {}
    stores = {k: ModelStore.init(tmp_path / k, tiny_backbone, method, settings) for k in ("cached", "fresh")}
    held = [("tell me a joke", "oos"), ("who won the game", "oos")]
    per_learn = {k: [] for k in stores}
    for i, group in enumerate(GROUPS):
        rows = [(t, c) for c in group for t in TASKS[c][:4]]
        held += [(t, c) for c in group for t in TASKS[c][4:]]
        for k, store in stores.items():
            if k == "fresh":
                for f in (store.path / "cache").glob("*"):
                    f.unlink()
            embedded.clear()
            entry = store.learn(rows, name=f"t{i}", calibration=list(held), min_examples=2)
            per_learn[k].append((sum(embedded), entry))
    assert sorted(p.name for p in (stores["cached"].path / "cache").iterdir()) == ["v0003.safetensors"]
    for (_, cached), (_, fresh) in zip(per_learn["cached"], per_learn["fresh"]):
        assert cached["metrics"]["in_scope_accuracy_no_rejection"] == fresh["metrics"]["in_scope_accuracy_no_rejection"]
        assert cached["threshold"] == pytest.approx(fresh["threshold"], abs=1e-5)
    # the third learn: 8 training rows, 4 new held-out rows, and rows routed to its task; not all 14 held-out rows
    assert per_learn["cached"][2][0] < per_learn["fresh"][2][0]
    assert per_learn["cached"][2][0] <= 8 + 4 + (4 if method == "adapters" else 0) < 8 + len(held)
