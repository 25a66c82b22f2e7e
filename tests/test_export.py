"""PEFT export: each task's LoRA adapter loads with `peft.PeftModel.from_pretrained` and gives the same features."""

import importlib.util
import json

import pytest
import torch
from test_cli import assert_one_line_error, lifelong

pytestmark = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft not installed")


@pytest.mark.parametrize("precision", ["1bit", "fp32"])
def test_exported_adapters_reproduce_the_adapted_features(tmp_path, tiny_backbone, intents_jsonl, precision):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    import lifelong as lib
    from lifelong.backbones.text import mean_pool
    from lifelong.methods.topblock import adapted

    run = tmp_path / "run"
    proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", "adapters",
                    "--precision", precision, "--epochs", 1, "--backbone", tiny_backbone, "--out", run)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "peft"
    proc = lifelong("export", run, "--format", "peft", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["task000", "task001"]

    model = lib.load(run, device="cpu")
    learner = model.learner
    texts = ["will it rain tomorrow", "play the latest taylor swift song", "pay my gas bill please"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    for t in range(2):
        folder = out / f"task{t:03d}"
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["r"] == 8
        peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone), folder).eval()
        with torch.no_grad():
            theirs = mean_pool(peft_model(**batch).last_hidden_state, batch["attention_mask"])
            hidden, _ = learner.cache(texts)
            ours = adapted(learner.top, hidden, t)
        assert torch.allclose(theirs, ours, atol=1e-5), (theirs - ours).abs().max()
        # the adapter changes the features (an export of zeros would also "load")
        with torch.no_grad(), peft_model.disable_adapter():
            plain = mean_pool(peft_model(**batch).last_hidden_state, batch["attention_mask"])
        assert not torch.allclose(plain, ours, atol=1e-4)
        head = load_file(str(folder / "head.safetensors"))
        names = json.loads((folder / "head.json").read_text())["classes"]
        assert names == model.classes_[2 * t : 2 * t + 2]
        logits = theirs @ head["weight"].T + head["bias"]
        assert torch.allclose(logits, learner.heads[t](ours), atol=1e-4)


def test_export_refuses_what_peft_cannot_hold(tmp_path, tiny_backbone, intents_jsonl):
    run = tmp_path / "run"
    proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", "ncm",
                    "--backbone", tiny_backbone, "--out", run)
    assert proc.returncode == 0, proc.stderr
    assert_one_line_error(lifelong("export", run, "--out", tmp_path / "x"), "needs an `adapters` model")
    assert_one_line_error(lifelong("export", run, "--out", tmp_path / "x", "--format", "onnx"), "unknown export format")
    assert not (tmp_path / "x").exists()
