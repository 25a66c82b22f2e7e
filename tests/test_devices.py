"""`--device`: what is asked for is used or refused in one line; what runs on a GPU saves what a CPU loads."""

import pytest
import torch
from test_cli import assert_one_line_error, lifelong

from lifelong import methods
from lifelong.backbones import load_backbone
from lifelong.data import class_incremental
from lifelong.data.files import load_file
from lifelong.backbones.cache import FeatureCache
from lifelong.devices import frozen_dtype, resolve_device, train_dtype
from lifelong.errors import LifelongError

CUDA = torch.cuda.is_available()


def test_cpu_and_auto_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if CUDA else resolve_device("auto").type)
    if not CUDA:
        assert resolve_device("auto").type in ("cpu", "mps")


@pytest.mark.parametrize("name, needle", [("tpu", "unknown device 'tpu'"), ("cuda:x", "cuda:x")])
def test_unknown_devices_are_refused(name, needle):
    with pytest.raises(LifelongError, match=needle):
        resolve_device(name)


@pytest.mark.skipif(CUDA, reason="a CUDA GPU is present")
def test_absent_gpu_is_one_line_and_writes_nothing(tiny_backbone, intents_jsonl, tmp_path):
    with pytest.raises(LifelongError, match="no CUDA GPU is visible"):
        resolve_device("cuda")
    out = tmp_path / "out"
    proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", "ncm",
                    "--backbone", tiny_backbone, "--out", out, "--device", "cuda")
    assert_one_line_error(proc, "cuda", "--device cpu")
    assert not out.exists()
    proc = lifelong("init", tmp_path / "model", "--backbone", tiny_backbone, "--device", "cuda:0")
    assert_one_line_error(proc, "cuda:0")
    assert not (tmp_path / "model").exists()


def test_backbone_on_cpu_hands_back_cpu_tensors(tiny_backbone):
    enc = load_backbone(tiny_backbone, device="cpu")
    assert enc.device == torch.device("cpu")
    hidden, pooled, levels = enc.encode_split(["play some jazz", "pay my bill"], 1)
    assert pooled.device.type == levels.device.type == "cpu" and hidden[0].device == enc.device


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_adapters_trained_on_gpu_load_and_predict_on_cpu(tiny_backbone, intents_jsonl, tmp_path):
    stream = class_incremental(load_file(intents_jsonl), groups=[["weather", "pay_bill"], ["play_music", "book_flight"]])
    cfg = methods.config_from_dict(methods.get("adapters").Config, {"rank": 4, "epochs": 1})
    gpu = load_backbone(tiny_backbone, device="cuda", autocast="off")  # the device move alone (bf16: below)
    learner = methods.get("adapters")(gpu, cfg)
    for task in stream:
        learner.learn(task)
    assert all(v.device.type == "cpu" for p in learner.packed for v in p.values())
    x = [t for task in stream for t in task.test.inputs]
    on_gpu = learner.predict(x)
    learner.save(tmp_path / "m")
    cpu = methods.get("adapters").load(tmp_path / "m", load_backbone(tiny_backbone, device="cpu",
                                                                          autocast="off"))
    assert on_gpu.device.type == "cpu"
    assert torch.allclose(cpu.predict(x), on_gpu, atol=1e-3)


def test_frozen_pass_dtype_is_asked_for_or_refused(monkeypatch):
    cpu = torch.device("cpu")
    assert frozen_dtype(cpu, "off") is None
    assert frozen_dtype(cpu, "bf16") is torch.bfloat16
    monkeypatch.setenv("LIFELONG_AUTOCAST", "off")
    assert frozen_dtype(cpu) is None
    assert frozen_dtype(cpu, "bf16") is torch.bfloat16  # an explicit setting wins over the environment
    monkeypatch.setenv("LIFELONG_AUTOCAST", "fp8")
    with pytest.raises(LifelongError, match="unknown autocast 'fp8'.*LIFELONG_AUTOCAST"):
        frozen_dtype(cpu)


def test_bf16_frozen_pass_hands_back_fp32_features_within_rounding(tiny_backbone, tmp_path):
    texts = ["play some jazz", "pay my bill before friday", "what is the weather like in paris tomorrow"]
    exact, half = load_backbone(tiny_backbone, autocast="off"), load_backbone(tiny_backbone, autocast="bf16")
    for a, b in zip(exact.encode_split(texts, 1), half.encode_split(texts, 1)):
        a, b = (torch.cat(a), torch.cat(b)) if isinstance(a, list) else (a, b)
        assert a.dtype == b.dtype == torch.float32
        assert not torch.equal(a, b)  # bf16 did run
        assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.99
    assert torch.allclose(exact.encode(texts), half.encode(texts), atol=0.05, rtol=0.05)
    # features of another compute dtype never come back from a disk cache
    assert FeatureCache(exact, tmp_path).path != FeatureCache(half, tmp_path).path


def test_adapters_learn_save_and_load_with_a_bf16_frozen_pass(tiny_backbone, intents_jsonl, tmp_path):
    stream = class_incremental(load_file(intents_jsonl), groups=[["weather", "pay_bill"], ["play_music", "book_flight"]])
    cfg = methods.config_from_dict(methods.get("adapters").Config, {"rank": 4, "epochs": 1})
    learner = methods.get("adapters")(load_backbone(tiny_backbone, autocast="bf16"), cfg)
    for task in stream:
        learner.learn(task)
    x = [t for task in stream for t in task.test.inputs]
    learner.save(tmp_path / "m")
    again = methods.get("adapters").load(tmp_path / "m", load_backbone(tiny_backbone, autocast="bf16"))
    assert torch.equal(again.predict(x), learner.predict(x))


def test_auto_leaves_image_backbones_in_fp32(monkeypatch):
    monkeypatch.setenv("LIFELONG_AUTOCAST", "auto")
    assert frozen_dtype(torch.device("cpu"), modality="image") is None
    assert frozen_dtype(torch.device("cpu"), "bf16", modality="image") is torch.bfloat16


def test_training_runs_in_bf16_only_when_asked_for(monkeypatch):
    monkeypatch.setenv("LIFELONG_AUTOCAST", "auto")
    assert train_dtype() is None  # on every device: see devices.train_dtype
    assert train_dtype("bf16") is torch.bfloat16
    monkeypatch.setenv("LIFELONG_AUTOCAST", "bf16")
    assert train_dtype() is torch.bfloat16
    assert train_dtype("off") is None


@pytest.mark.parametrize("method", ["adapters", "finetune"])
def test_training_computes_in_the_backbones_train_dtype(tiny_backbone, intents_jsonl, tmp_path, method):
    stream = class_incremental(load_file(intents_jsonl), groups=[["weather", "pay_bill"], ["play_music", "book_flight"]])
    # fp32 adapters without the head refit: a 1-bit adapter's signs, and a head refit in fp32, can hide the change
    settings = ({"rank": 4, "epochs": 1, "patience": 0, "precision": "fp32", "refit_head": False}
                if method == "adapters" else {"epochs": 1})
    cfg = methods.config_from_dict(methods.get(method).Config, settings)
    x = [t for task in stream for t in task.test.inputs]
    predictions, weights = [], []
    for dtype in (None, torch.bfloat16):
        backbone = load_backbone(tiny_backbone, autocast="off")  # the frozen pass in fp32 for both
        backbone.train_dtype = dtype
        torch.manual_seed(0)  # heads draw their initial weights from the global stream
        learner = methods.get(method)(backbone, cfg)
        for task in stream:
            learner.learn(task)
        predictions.append(learner.predict(x))
        assert torch.isfinite(predictions[-1]).all()
        trained = ([v.flatten() for v in learner.packed[-1].values()] if method == "adapters"
                   else [p.detach().flatten() for p in learner.encoder.parameters()])
        assert all(v.dtype == torch.float32 for v in trained)  # weights stay fp32
        weights.append(torch.cat(trained))
    assert not torch.equal(*weights)  # bf16 did run in training
    learner.save(tmp_path / "m")
    again = methods.get(method).load(tmp_path / "m", load_backbone(tiny_backbone, autocast="off"))
    assert torch.equal(again.predict(x), predictions[-1])
