"""Runs on 2 gloo processes (`lifelong run --nproc 2`, torchrun underneath) give what one process gives."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from test_cli import lifelong

METHODS = ["ncm", "lda", "ranpac", "analytic"]


def run(tmp_path, name, method, tiny_backbone, data, *extra, env=None):
    out = tmp_path / name
    args = ["run", "--benchmark", data, "--classes-per-task", 2, "--method", method, "--backbone", tiny_backbone,
            "--out", out, *extra]
    if env:
        import subprocess
        import sys

        proc = subprocess.run([sys.executable, "-m", "lifelong.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=600, env={**os.environ, **env})
    else:
        proc = lifelong(*args)
    return out, proc


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_give_the_single_process_results(tmp_path, tiny_backbone, intents_jsonl, method):
    """The same matrix and tensors; and each process embeds only its share of the data (its statistics are summed
    across processes, no feature is gathered), so the main process's feature cache holds about half the rows."""
    one, p1 = run(tmp_path, "one", method, tiny_backbone, intents_jsonl, "--cache-dir", tmp_path / "cache1")
    two, p2 = run(tmp_path, "two", method, tiny_backbone, intents_jsonl, "--nproc", 2,
                  "--cache-dir", tmp_path / "cache2")
    assert p1.returncode == 0, p1.stderr
    assert p2.returncode == 0, p2.stderr
    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert r2["environment"]["processes"] == 2 and r1["environment"]["processes"] == 1
    m1, m2 = (torch.tensor([[v if v is not None else -1 for v in row] for row in r["accuracy_matrix"]])
              for r in (r1, r2))
    assert torch.allclose(m1, m2, atol=1e-6)
    t1, t2 = (load_file(d / "model" / "weights.safetensors") for d in (one, two))
    assert t1.keys() == t2.keys()
    for k in t1:
        assert torch.allclose(t1[k].double(), t2[k].double(), rtol=1e-4, atol=1e-5), k
    assert p2.stdout.count("wrote ") == 1  # one process reports
    rows1, rows2 = (len(json.loads(next((tmp_path / c).glob("features-*.json")).read_text()))
                    for c in ("cache1", "cache2"))
    calls = 3 * len(r1["accuracy_matrix"])  # train, held-out and test shares per task: each at most one row over half
    assert rows2 <= rows1 / 2 + calls, (rows1, rows2)


def test_a_process_that_dies_fails_the_run_in_one_line(tmp_path, tiny_backbone, intents_jsonl):
    out, proc = run(tmp_path, "dead", "ncm", tiny_backbone, intents_jsonl, "--nproc", 2,
                    env={"LIFELONG_CRASH_AT": "rank1-task0"})
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: process 1 of 2 was killed by signal 9, which stopped the run"], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "results.json").exists()


def test_adapters_share_their_run_and_reach_the_single_process_accuracy(tmp_path, tiny_backbone):
    """`adapters` with 2 processes: the frozen pass is shared (SplitCache), training takes each rank's slice of the
    same global batch (batches of 5 split 3 + 2, so the slices weigh differently), the epochs are chosen on
    held-out data scored in shares, evaluation is shared; the final accuracy is the single-process one within 0.3
    points, and the saved adapters load and predict what the single-process ones predict."""
    import lifelong
    from conftest import PHRASES

    rows = [{"text": t, "label": label, "split": "train" if i < 3 else "val" if i == 3 else "test"}
            for label, texts in PHRASES.items() for i, t in enumerate(texts)]
    data = tmp_path / "intents.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    settings = ["--set", "epochs=4", "--set", "batch_size=5", "--set", "patience=1"]
    one, p1 = run(tmp_path, "one", "adapters", tiny_backbone, data, *settings)
    two, p2 = run(tmp_path, "two", "adapters", tiny_backbone, data, *settings, "--nproc", 2)
    assert p1.returncode == 0, p1.stderr
    assert p2.returncode == 0, p2.stderr
    assert "not checked with several processes" not in p2.stderr
    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert r2["environment"]["processes"] == 2
    assert abs(r1["final_accuracy"] - r2["final_accuracy"]) <= 0.003
    assert r1["chosen"] == r2["chosen"]  # epochs and mixture chosen on held-out data, the same in both
    for k in ("task000", "task001", "shared"):
        t1, t2 = (load_file(d / "model" / f"{k}.safetensors") for d in (one, two))
        assert t1.keys() == t2.keys()
        for name in t1:
            assert torch.allclose(t1[name].double(), t2[name].double(), rtol=1e-3, atol=1e-4), (k, name)
    texts = [t for texts in PHRASES.values() for t in texts[4:]]
    assert lifelong.load(two).predict(texts) == lifelong.load(one).predict(texts)
    assert p2.stdout.count("wrote ") == 1


@pytest.fixture(scope="module")
def tiny_backbone_without_dropout(tmp_path_factory):
    """The tiny BERT with dropout off: then a training step on 2 processes is the single-process step up to float
    rounding (with dropout each process draws its own masks, so only the accuracy could be compared)."""
    from conftest import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert-no-dropout"), hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0)


@pytest.mark.parametrize("method", ["finetune", "l2", "ewc", "lwf", "wa", "replay", "joint"])
def test_fine_tuning_methods_share_their_run(tmp_path, tiny_backbone_without_dropout, intents_jsonl, method):
    """Methods that fine-tune the whole backbone train through `fit` (each process its slice of every batch, the
    gradients summed) and share their statistics over batches (EWC's Fisher): 2 processes end with the weights,
    anchors and importances of 1 process, up to float rounding, and the same accuracy matrix."""
    settings = ["--set", "batch_size=5", "--set", "lr=1e-3", "--set", "epochs=2"]
    one, p1 = run(tmp_path, "one", method, tiny_backbone_without_dropout, intents_jsonl, *settings)
    two, p2 = run(tmp_path, "two", method, tiny_backbone_without_dropout, intents_jsonl, *settings, "--nproc", 2)
    assert p1.returncode == 0, p1.stderr
    assert p2.returncode == 0, p2.stderr
    assert "not checked with several processes" not in p2.stderr
    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert r2["environment"]["processes"] == 2
    assert r1["accuracy_matrix"] == r2["accuracy_matrix"]
    t1, t2 = (load_file(d / "model" / "weights.safetensors") for d in (one, two))
    assert t1.keys() == t2.keys()
    for k in t1:
        if k.endswith("attention.self.key.bias"):
            # softmax ignores a shift shared by every key, so this bias's gradient is 0 up to rounding noise, and
            # Adam turns noise into steps of +-lr whose signs differ with the summation order
            continue
        if t1[k].is_floating_point():
            assert torch.allclose(t1[k].double(), t2[k].double(), rtol=1e-3, atol=1e-4), k
        else:
            assert torch.equal(t1[k], t2[k]), k
