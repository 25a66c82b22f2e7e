"""RanPAC and the analytic learner: the incremental classifier equals the joint ridge solution."""

import pytest
import torch

from lifelong import methods
from lifelong.backbones import load_backbone
from lifelong.data import class_incremental
from lifelong.data.files import load_file
from lifelong.data.task import Examples
from lifelong.methods.ridge import one_hot, ridge_solve


@pytest.fixture(scope="module")
def enc(tiny_backbone):
    return load_backbone(tiny_backbone)


@pytest.fixture
def stream(intents_jsonl):
    return class_incremental(load_file(intents_jsonl), groups=[["weather"], ["pay_bill", "play_music"], ["book_flight"]])


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


def test_ranpac_equals_joint_ridge_and_picks_lambda_on_held_out(enc, stream):
    cfg = methods.config_from_dict(methods.get("ranpac").Config, {"projection": 64, "ridges": "0.1,10"})
    learner = methods.get("ranpac")(enc, cfg)
    for t in stream:
        learner.learn(t)
    assert learner.lam in (0.1, 10.0)

    def kept(t):  # ranpac holds out every tenth training example when a task has no validation split
        idx = torch.arange(len(t.train))
        return t.train.select(idx[idx % 10 != 0].tolist())

    assert torch.allclose(learner.weight, joint_ridge(learner, stream, learner.lam, kept), atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("name", ["ranpac", "analytic"])
def test_save_load_is_exact(enc, stream, tmp_path, name):
    learner = methods.get(name)(enc, methods.config_from_dict(methods.get(name).Config, {"projection": 32}))
    for t in stream:
        learner.learn(t)
    learner.save(tmp_path / name)
    again = methods.get(name).load(tmp_path / name, enc)
    x = Examples.concat([t.test for t in stream]).inputs
    assert torch.equal(again.predict(x), learner.predict(x))
