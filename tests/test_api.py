"""The Python face: `lifelong.load` over runs, saved learners and stores; labels, not column ids."""

import json

import pytest
import torch

import lifelong
from lifelong.errors import LifelongError


@pytest.fixture
def run_dir(tmp_path, tiny_backbone, intents_jsonl):
    from lifelong.experiment import Experiment

    out = tmp_path / "run"
    Experiment(benchmark=str(intents_jsonl), method="ncm", classes_per_task=2, backbone=tiny_backbone).run(out)
    return out


def test_import_is_light_and_exports_the_main_types():
    import subprocess
    import sys

    code = "import lifelong, sys; print('torch' in sys.modules, sorted(lifelong.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("False")  # nothing heavy on `import lifelong`
    for name in ("load", "Model", "ModelStore", "Learner", "Experiment", "LifelongError"):
        assert name in out and getattr(lifelong, name) is not None
    with pytest.raises(AttributeError):
        lifelong.nonexistent


def test_a_run_loads_and_answers_with_class_names(run_dir):
    model = lifelong.load(run_dir)
    tasks = json.loads((run_dir / "results.json").read_text())["config"]["task_classes"]
    assert model.classes_ == [c for t in tasks for c in t]
    texts = ["play some jazz", "pay the gas bill please", "book me a flight home"]
    labels = model.predict(texts)
    assert isinstance(labels, list) and len(labels) == 3 and set(labels) <= set(model.classes_)
    scores = model.scores(texts)
    assert scores.shape == (3, len(model.classes_))
    assert labels == [model.classes_[i] for i in scores.argmax(-1).tolist()]  # the run measured no threshold
    # one string is one input, never one input per character
    assert model.predict(texts[0]) == labels[0]
    assert model.scores(texts[0]).shape == (1, len(model.classes_))
    assert "ncm" in repr(model) and "classes=4" in repr(model)


def test_a_learner_keeps_its_class_names_through_save_and_load(run_dir, tmp_path):
    meta = json.loads((run_dir / "model" / "learner.json").read_text())
    model = lifelong.load(run_dir)
    assert meta["classes"] == model.classes_  # the protocol loop named them
    model.threshold = 0.25
    model.save(tmp_path / "saved")
    again = lifelong.load(tmp_path / "saved")
    assert again.classes_ == model.classes_ and again.threshold == 0.25
    assert again.learner.backbone.max_length == model.learner.backbone.max_length
    texts = ["what is the weather today", "shuffle my favourite songs"]
    assert torch.equal(again.scores(texts), model.scores(texts))
    # the base class loads whichever method the file holds
    from lifelong.methods import Learner

    learner = Learner.load(tmp_path / "saved", again.learner.backbone)
    assert learner.name == "ncm" and learner.class_names == model.classes_


def test_learners_refuse_a_bare_string(run_dir):
    learner = lifelong.load(run_dir).learner
    with pytest.raises(TypeError, match=r"not one str; pass \[text\]"):
        learner.predict("what is my balance")
    with pytest.raises(TypeError, match="not one str"):
        learner.predict_routed("what is my balance")
    assert learner.predict(["what is my balance"]).shape[0] == 1


def test_a_store_version_loads_through_the_same_entry_point(tmp_path, tiny_backbone):
    store = lifelong.ModelStore.init(tmp_path / "m", tiny_backbone, "ncm", {})
    rows = [(t, c) for c, ts in {"a": ["red apple", "green apple", "apple pie", "apple juice", "apple tree"],
                                 "b": ["fast car", "red car", "car wash", "car keys", "old car"]}.items() for t in ts]
    store.learn(rows, holdout=0)
    model = lifelong.load(tmp_path / "m")
    assert model.version == 1 and model.classes_ == ["a", "b"]
    assert model.predict(["apple juice", "car wash"]) == ["a", "b"]
    assert lifelong.load(tmp_path / "m", version=0).classes_ == []
    with pytest.raises(LifelongError, match="learned no classes"):
        lifelong.load(tmp_path / "m", version=0).predict(["x"])


def test_load_names_what_it_cannot_read(tmp_path, run_dir):
    with pytest.raises(LifelongError, match="not a lifelong model"):
        lifelong.load(tmp_path)
    with pytest.raises(LifelongError, match="version.*store directories only"):
        lifelong.load(run_dir, version=2)
    (run_dir / "model" / "learner.json").write_text("{")
    with pytest.raises(LifelongError, match="learner.json: cannot read"):
        lifelong.load(run_dir)
