"""`--device`: what is asked for is used or refused in one line; what runs on a GPU saves what a CPU loads."""

import pytest
import torch
from test_cli import assert_one_line_error, lifelong

from lifelong import methods
from lifelong.backbones import load_backbone
from lifelong.data import class_incremental
from lifelong.data.files import load_file
from lifelong.devices import resolve_device
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
    gpu = load_backbone(tiny_backbone, device="cuda")
    learner = methods.get("adapters")(gpu, cfg)
    for task in stream:
        learner.learn(task)
    assert all(v.device.type == "cpu" for p in learner.packed for v in p.values())
    x = [t for task in stream for t in task.test.inputs]
    on_gpu = learner.predict(x)
    learner.save(tmp_path / "m")
    cpu = methods.get("adapters").load(tmp_path / "m", load_backbone(tiny_backbone, device="cpu"))
    assert on_gpu.device.type == "cpu"
    assert torch.allclose(cpu.predict(x), on_gpu, atol=1e-3)
