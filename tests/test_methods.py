"""The method protocol: registry, settings, and each method learning a small stream end to end."""

import json

import pytest
import torch

from lifelong import evaluation, methods
from lifelong.backbones import FeatureCache, load_backbone
from lifelong.data import class_incremental
from lifelong.data.files import load_file
from lifelong.errors import LifelongError


@pytest.fixture
def stream(intents_jsonl):
    data = load_file(intents_jsonl)
    return class_incremental(data, groups=[["weather", "pay_bill"], ["play_music", "book_flight"]])


def test_registry_and_settings():
    assert {"ncm", "finetune", "joint"} <= set(methods.METHODS)
    with pytest.raises(LifelongError, match="unknown method 'nope'"):
        methods.get("nope")
    cfg = methods.config_from_dict(methods.get("finetune").Config, {"epochs": "3", "lr": "0.5"})
    assert cfg.epochs == 3 and cfg.lr == 0.5
    with pytest.raises(LifelongError, match="unknown setting 'rank'"):
        methods.config_from_dict(methods.get("finetune").Config, {"rank": "4"})
    with pytest.raises(LifelongError, match="setting 'epochs': input should be a valid integer.*'many'"):
        methods.config_from_dict(methods.get("finetune").Config, {"epochs": "many"})


@pytest.mark.parametrize("key,value,message", [
    ("refit_head", "flase", "valid boolean"),
    ("top_k", "0", "greater than or equal to 1"),
    ("epochs", "-1", "greater than or equal to 1"),
    ("lr", "0", "greater than 0"),
    ("blocks", "-2", "greater than or equal to 0"),
    ("precision", "2bit", "'1bit', 'ternary', 'fp16' or 'fp32'"),
    ("adapter", "prefix", "unknown adapter 'prefix'; choose one of bottleneck, lora"),
    ("epochs", "2.5", "valid integer"),
])
def test_settings_are_checked_before_anything_runs(key, value, message):
    with pytest.raises(LifelongError, match=f"setting '{key}': .*{message}"):
        methods.config_from_dict(methods.get("adapters").Config, {key: value})


def test_settings_parse_the_usual_spellings():
    cfg = methods.config_from_dict(methods.get("adapters").Config,
                                   {"refit_head": "no", "blocks": "0", "lr": "1e-3", "precision": "fp16"})
    assert (cfg.refit_head, cfg.blocks, cfg.lr, cfg.precision) == (False, 0, 1e-3, "fp16")
    assert methods.config_from_dict(methods.get("adapters").Config, {"refit_head": "True"}).refit_head is True
    # JSON values (config files, learner.json) go through the same check
    assert methods.config_from_dict(methods.get("adapters").Config, {"epochs": 3}).epochs == 3
    with pytest.raises(LifelongError, match="setting 'epochs'"):
        methods.config_from_dict(methods.get("adapters").Config, {"epochs": 0})


def test_adapter_settings_have_one_home_and_fixed_ones_are_no_settings():
    from lifelong.methods.topblock import AdapterSettings

    shape = set(methods.settings(AdapterSettings))
    assert shape == {"blocks", "adapter", "precision", "rank", "alpha", "targets"}
    for name, fixed in [("adapters", set()), ("aper", set()), ("ekpc", {"precision"}),
                        ("inflora", {"adapter", "precision"})]:
        cls = methods.get(name)
        assert issubclass(cls.Config, AdapterSettings) and shape - set(methods.settings(cls.Config)) == fixed
        for key in fixed:
            with pytest.raises(LifelongError, match=f"unknown setting {key!r}"):
                methods.config_from_dict(cls.Config, {key: "fp16" if key == "precision" else "bottleneck"})
    inflora = methods.config_from_dict(methods.get("inflora").Config, {"rank": "4"}).adapter_config()
    assert (inflora.kind, inflora.precision, inflora.rank) == ("lora", "fp32", 4)
    assert methods.get("ekpc").Config(adapter="bottleneck").adapter_config().precision == "fp32"


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_method_accepts_its_own_defaults(name):
    cls = methods.get(name)
    defaults = methods.settings(cls.Config)
    assert methods.config_from_dict(cls.Config, {k: str(v) for k, v in defaults.items()}) == cls.Config()


def test_ncm_with_real_minilm_separates_intents(minilm, stream):
    learner = methods.get("ncm")(minilm)
    result = evaluation.run(learner, stream)
    # Class means of a real sentence encoder tell weather, bills, music and flights apart.
    assert result["final_accuracy"] == 1.0
    assert result["bytes_per_task"] == [2 * 384 * 4, 2 * 384 * 4]
    assert learner.predict(["play a song by the beatles"]).argmax().item() == stream.class_names.index("play_music")


def test_ncm_save_load_roundtrip(tiny_backbone, stream, tmp_path):
    enc = load_backbone(tiny_backbone)
    learner = methods.get("ncm")(enc)
    for t in stream:
        learner.learn(t)
    learner.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model/learner.json").read_text())
    assert meta["method"] == "ncm" and meta["num_classes"] == 4
    again = methods.get("ncm").load(tmp_path / "model", enc)
    x = stream.tasks[1].test.inputs
    assert torch.equal(learner.predict(x), again.predict(x))
    with pytest.raises(LifelongError, match="not 'finetune'"):
        methods.get("finetune").load(tmp_path / "model", enc)


def test_truncated_learner_file_is_reported(tiny_backbone, stream, tmp_path):
    enc = load_backbone(tiny_backbone)
    learner = methods.get("ncm")(enc)
    learner.learn(stream.tasks[0])
    learner.save(tmp_path / "m")
    w = tmp_path / "m/weights.safetensors"
    w.write_bytes(w.read_bytes()[:-20])
    with pytest.raises(LifelongError, match="cannot load learner"):
        methods.get("ncm").load(tmp_path / "m", enc)


# -- the class bookkeeping every method shares (Learner.learn) -------------------------------------------------
@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_method_refuses_class_ids_out_of_order(tiny_backbone, stream, name):
    import dataclasses

    learner = methods.get(name)(load_backbone(tiny_backbone))
    late = dataclasses.replace(stream.tasks[1], index=0)  # ids 2, 3 where 0, 1 are due
    with pytest.raises(LifelongError, match=r"brings class ids \[2, 3\], expected the next ones \[0, 1\]"):
        learner.learn(late)
    assert learner.num_classes == 0


def test_classes_are_counted_task_by_task(tiny_backbone, stream):
    import dataclasses

    learner = methods.get("ncm")(load_backbone(tiny_backbone))
    learner.learn(stream.tasks[0])
    assert learner.num_classes == 2
    with pytest.raises(LifelongError, match="expected the next ones"):
        learner.learn(stream.tasks[0])  # the same classes again are not new ones
    learner.learn(stream.tasks[1])
    assert learner.num_classes == 4 and learner.predict(stream.tasks[1].test.inputs).shape[1] == 4
    finetune = methods.get("finetune")(load_backbone(tiny_backbone), methods.config_from_dict(
        methods.get("finetune").Config, {"epochs": 1}))
    finetune.learn(stream.tasks[0])
    finetune.learn(dataclasses.replace(stream.tasks[1], classes=[], train=stream.tasks[0].train))  # no new class
    assert finetune.num_classes == 2 and finetune.head.out_features == 2


def test_a_task_that_fails_to_learn_is_not_counted(tiny_backbone, stream, monkeypatch):
    learner = methods.get("ncm")(load_backbone(tiny_backbone))
    learner.learn(stream.tasks[0])

    def fail(task):
        raise LifelongError("refused")

    monkeypatch.setattr(learner, "_learn", fail)
    with pytest.raises(LifelongError, match="refused"):
        learner.learn(stream.tasks[1])
    assert learner.num_classes == 2  # the same task can be learned again once fixed
    monkeypatch.undo()
    learner.learn(stream.tasks[1])
    assert learner.num_classes == 4


def test_head_growth_keeps_old_rows(tiny_backbone):
    learner = methods.get("ncm")(load_backbone(tiny_backbone))
    learner.num_classes = 2
    head = learner.grow_head(None, 8)
    learner.num_classes = 5
    grown = learner.grow_head(head, 8)
    assert (grown.out_features, grown.in_features) == (5, 8)
    assert torch.equal(grown.weight[:2], head.weight) and torch.equal(grown.bias[:2], head.bias)


def test_a_method_defines_its_own_learning_not_learn():
    with pytest.raises(TypeError, match="defines learn\\(\\): a method defines _learn"):
        class Counting(methods.Learner):  # noqa: F841
            def learn(self, task):
                self.num_classes += len(task.classes)


@pytest.mark.parametrize("name", ["finetune", "joint"])
def test_training_methods_learn_and_grow_head(tiny_backbone, stream, name):
    enc = load_backbone(tiny_backbone)
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    cfg = methods.config_from_dict(methods.get(name).Config, {"epochs": 2, "lr": 1e-3})
    learner = methods.get(name)(enc, cfg)
    result = evaluation.run(learner, stream)
    assert learner.head.out_features == 4
    assert learner.predict(stream.tasks[0].test.inputs).shape == (4, 4)
    # the shared backbone is untouched; the method's own copy moved
    assert all(torch.equal(v, enc.model.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, learner.encoder.model.state_dict()[k]) for k, v in before.items())
    assert len(result["seconds_per_task"]) == 2
    stored = result["stored_bytes"][-1]
    assert stored["head"] == (4 * 32 + 4) * 4
    if name == "joint":
        assert stored["examples"] > 0 and methods.get(name).keeps_examples
    else:
        assert "examples" not in stored


def test_feature_cache_embeds_once_and_persists(tiny_backbone, tmp_path):
    enc = load_backbone(tiny_backbone)
    calls = []
    real = enc.encode
    enc.encode = lambda xs, progress=False: calls.append(len(xs)) or real(xs)
    cache = FeatureCache(enc, tmp_path)
    a = cache(["one", "two", "one"])
    b = cache(["two", "three"])
    assert calls == [2, 1]
    assert torch.equal(a[0], a[2]) and torch.equal(a[1], b[0])
    cache.save()
    again = FeatureCache(enc, tmp_path)
    assert torch.equal(again(["three", "one"]), torch.stack([b[1], a[0]]))
    assert calls == [2, 1]


def test_runs_sharing_a_feature_cache_keep_each_others_rows(tiny_backbone, tmp_path):
    enc = load_backbone(tiny_backbone)
    first, second = FeatureCache(enc, tmp_path), FeatureCache(enc, tmp_path)  # both load the same (empty) disk copy
    a, b = first(["alpha", "beta"]), second(["gamma"])
    first.save()
    second.save()  # the later writer merges what the earlier one wrote instead of replacing it
    calls = []
    enc.encode = lambda xs, progress=False: calls.append(len(xs))
    merged = FeatureCache(enc, tmp_path)
    assert torch.equal(merged(["gamma", "alpha", "beta"]), torch.cat([b, a])) and calls == []
