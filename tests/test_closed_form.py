"""RanPAC, the analytic learner and LDA: the incremental classifier equals the joint solution; held-out choices,
save/load and the shared-state byte report."""

import json

import pytest
import torch
from conftest import PHRASES

from lifelong import evaluation, methods
from lifelong.backbones import load_backbone
from lifelong.data import class_incremental
from lifelong.data.files import load_file
from lifelong.data.task import Examples
from lifelong.methods.base import held_out
from lifelong.methods.gaussian import SHRINKAGES, GaussianClassModel
from lifelong.methods.ridge import one_hot, ridge_solve


@pytest.fixture(scope="module")
def enc(tiny_backbone):
    return load_backbone(tiny_backbone)


@pytest.fixture
def stream(intents_jsonl):
    return class_incremental(load_file(intents_jsonl), groups=[["weather"], ["pay_bill", "play_music"], ["book_flight"]])


@pytest.fixture
def wide_stream(tmp_path):
    """Three tasks of 12 training examples per class: `held_out` holds out the 10th of each class."""
    rows = []
    for label, texts in PHRASES.items():
        rows += [{"text": f"{t} please {k}", "label": label, "split": "train"} for k in range(3) for t in texts[:4]]
        rows += [{"text": t, "label": label, "split": "test"} for t in texts[4:]]
    path = tmp_path / "wide.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return class_incremental(load_file(path), groups=[["weather"], ["pay_bill", "play_music"], ["book_flight"]])


def joint_ridge(learner, stream, lam, train_of=lambda t: t.train):
    phi = torch.cat([learner.expand(learner.features(train_of(t).inputs)) for t in stream])
    y = torch.cat([train_of(t).labels for t in stream])
    return ridge_solve(phi.T @ phi, phi.T @ one_hot(y, stream.seen_classes(len(stream) - 1)), lam)


@pytest.mark.parametrize("projection", [0, 64])
def test_analytic_equals_joint_ridge(enc, stream, projection):
    cfg = methods.config_from_dict(methods.get("analytic").Config, {"projection": projection, "gamma": 0.5})
    learner = methods.get("analytic")(enc, cfg)
    for t in stream:
        learner.learn(t)
    joint = joint_ridge(learner, stream, 0.5)
    assert torch.allclose(learner.weight, joint, atol=1e-8, rtol=1e-6)


def test_ranpac_equals_joint_ridge_and_picks_lambda_on_held_out(enc, wide_stream):
    cfg = methods.config_from_dict(methods.get("ranpac").Config, {"projection": 64, "ridges": "0.1,10"})
    learner = methods.get("ranpac")(enc, cfg)
    for t in wide_stream:
        learner.learn(t)
    assert learner.lam in (0.1, 10.0)
    # ranpac holds out `held_out`'s examples (the 10th of each class when a task has no validation split)
    assert [len(y) for _, y in learner.held_out] == [len(t.classes) for t in wide_stream]
    held_labels = torch.cat([held_out(t)[1].labels for t in wide_stream])
    assert torch.equal(torch.cat([y for _, y in learner.held_out]), held_labels)
    joint = joint_ridge(learner, wide_stream, learner.lam, lambda t: held_out(t)[0])
    assert torch.allclose(learner.weight, joint, atol=1e-8, rtol=1e-6)
    hx, hy = torch.cat([h for h, _ in learner.held_out]), torch.cat([y for _, y in learner.held_out])
    acc = {lam: ((hx @ joint_ridge(learner, wide_stream, lam, lambda t: held_out(t)[0])).argmax(1) == hy).sum()
           for lam in (0.1, 10.0)}
    assert acc[learner.lam] == max(acc.values()) and (learner.lam == 0.1 or acc[10.0] > acc[0.1])  # first on a tie


@pytest.mark.parametrize("name,settings", [("ranpac", {"projection": 32}), ("analytic", {"projection": 32}),
                                           ("lda", {}), ("lda", {"max_dim": 16}), ("probe", {})])
def test_save_load_is_exact(enc, stream, tmp_path, name, settings):
    learner = methods.get(name)(enc, methods.config_from_dict(methods.get(name).Config, settings))
    for t in stream:
        learner.learn(t)
    learner.save(tmp_path / name)
    again = methods.get(name).load(tmp_path / name, enc)
    x = Examples.concat([t.test for t in stream]).inputs
    assert torch.equal(again.predict(x), learner.predict(x))
    assert again.predict(x).shape == (len(x), 4)


@pytest.mark.parametrize("name,shared", [("ranpac", "gram"), ("analytic", "rls"), ("lda", "shared")])
def test_shared_state_is_reported_apart_from_bytes_per_task(enc, stream, name, shared):
    learner = methods.get(name)(enc, methods.config_from_dict(methods.get(name).Config,
                                                              {"projection": 32} if name != "lda" else {}))
    assert learner.shared_kinds == (shared,)
    result = evaluation.run(learner, stream)
    stored = result["stored_bytes"]
    assert result["shared_bytes"] == stored[-1][shared] > 0
    per_task = [sum(v for k, v in s.items() if k != shared) for s in stored]
    assert result["bytes_per_task"] == [per_task[0], per_task[1] - per_task[0], per_task[2] - per_task[1]]
    assert sum(result["bytes_per_task"]) == sum(stored[-1].values()) - result["shared_bytes"]
    classes = [len(t.classes) for t in stream]
    if name in ("ranpac", "analytic"):  # the classifier's float64 columns are what each task adds
        assert result["bytes_per_task"] == [32 * c * 8 for c in classes]
    if name == "ranpac":  # the Gram matrix and the cross term (which grows with classes) are the shared kind
        assert result["shared_bytes"] == 32 * 32 * 8 + 32 * 4 * 8
    if name == "lda":  # int8 means and an fp32 scale and count per class; the fp16 upper-triangle covariance
        assert result["bytes_per_task"] == [c * (enc.dim + 8) for c in classes]
        assert result["shared_bytes"] == enc.dim * (enc.dim + 1) + 4 + 4 * len(SHRINKAGES)


def test_lda_equals_the_joint_model_and_counts_held_out_hits(enc, wide_stream):
    learner = methods.get("lda")(enc)
    by_hand = GaussianClassModel(enc.dim)
    hits = torch.zeros(len(SHRINKAGES), dtype=torch.float64)
    for t in wide_stream:
        learner.learn(t)
        train, held = held_out(t)
        assert len(held) == len(t.classes)  # the 10th of each class's 12
        by_hand.add(*by_hand.task_statistics(learner.features(train.inputs), train.labels, t.classes))
        x = learner.features(held.inputs)
        hits += torch.tensor([float((by_hand.logits(x, s).argmax(1) == held.labels).sum()) for s in SHRINKAGES],
                             dtype=torch.float64)
        assert torch.equal(learner.hits, hits)  # each task scored against the classes seen by then
    assert learner.shrink == SHRINKAGES[int(hits.argmax())]
    assert torch.equal(learner.model.means, by_hand.means) and torch.equal(learner.model.covariance, by_hand.covariance)
    assert learner.model.dof == sum(len(held_out(t)[0]) for t in wide_stream) - 4
    x = Examples.concat([t.test for t in wide_stream]).inputs
    assert torch.equal(learner.predict(x), by_hand.logits(learner.features(x), learner.shrink).float())
