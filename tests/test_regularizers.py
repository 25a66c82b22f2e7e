"""The methods built on fine-tuning do what they claim: penalties vanish at the anchor and grow away from it,
distillation vanishes when logits agree, the replay buffer stays class-balanced and within size."""

import pytest
import torch

from lifelong import methods
from lifelong.data import Examples
from lifelong.methods.lwf import distillation
from lifelong.methods.replay import balanced
from lifelong.methods.wa import align


def trained(name, enc, stream, **settings):
    cfg = methods.config_from_dict(methods.get(name).Config, {"epochs": 1, **settings})
    learner = methods.get(name)(enc, cfg)
    learner.learn(stream.tasks[0])
    return learner


@pytest.mark.parametrize("name", ["l2", "ewc"])
def test_penalty_is_zero_at_anchor_and_grows_away(enc, stream, name):
    learner = trained(name, enc, stream)
    assert learner.penalty().item() == 0.0
    if name == "ewc":
        assert all((f >= 0).all() for f in learner.importance.values())
        assert sum(f.sum() for f in learner.importance.values()) > 0
    assert_penalty_grows(list(learner.encoder.model.parameters()), learner.penalty)


def test_distillation_is_zero_iff_logits_agree():
    old = torch.randn(8, 5)
    assert distillation(old, old.clone(), 2.0).abs().item() < 1e-6
    assert distillation(old, old + torch.randn(8, 5), 2.0).item() > 1e-3


def test_lwf_distils_from_the_model_before_the_task(enc, stream):
    learner = trained("lwf", enc, stream)
    learner.start_task(stream.tasks[1])
    x = stream.tasks[1].train.inputs[:4]
    learner.encoder.eval()
    logits = learner.head(learner.encoder(x))
    assert learner.extra_loss(x, logits).abs().item() < 1e-6  # nothing changed yet


def test_replay_buffer_is_class_balanced_and_within_size():
    labels = torch.tensor([0] * 50 + [1] * 7 + [2] * 30)
    ex = Examples([f"x{i}" for i in range(len(labels))], labels)
    buf = balanced(ex, 30, seed=0)
    counts = torch.bincount(buf.labels).tolist()
    assert len(buf) <= 30 and counts == [10, 7, 10]
    assert balanced(ex, 30, seed=0).inputs == buf.inputs


def test_replay_learner_keeps_buffer(enc, stream):
    learner = trained("replay", enc, stream, buffer=4)
    assert torch.bincount(learner.buffer.labels).tolist() == [2, 2]
    assert learner.stored_bytes()["examples"] == learner.buffer.nbytes() > 0


def test_weight_aligning_matches_mean_norms():
    w = torch.cat([torch.randn(3, 4), 5 * torch.randn(2, 4)])
    gamma = align(w, 3)
    assert gamma < 1
    assert torch.isclose(w[:3].norm(dim=1).mean(), w[3:].norm(dim=1).mean())


def assert_penalty_grows(params, penalty):
    """Moving every parameter further from where it is (the anchor) raises the penalty monotonically from 0."""
    start = [p.detach().clone() for p in params]
    values = []
    for scale in (1e-3, 1e-2, 1e-1):
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s + scale)
        values.append(penalty().item())
    assert 0 < values[0] < values[1] < values[2]
