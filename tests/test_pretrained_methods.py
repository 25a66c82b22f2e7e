"""SLCA, InfLoRA and EKPC do what they claim: InfLoRA's update leaves the protected input subspace alone, SLCA's
pseudo-features follow the stored Gaussians and alignment moves only the head, EKPC's penalty vanishes at the
anchor and its drift map is exact on exact drifts; each saves and loads exactly and runs through the CLI."""

import json
import subprocess
import sys

import pytest
import torch
from test_regularizers import assert_penalty_grows

from lifelong import methods
from lifelong.data import Examples
from lifelong.methods.ekpc import compensate
from lifelong.methods.inflora import design_down, extend_basis
from lifelong.methods.slca import gaussian_stats, sample_gaussians


def make(name, enc, **settings):
    return methods.get(name)(enc, methods.config_from_dict(methods.get(name).Config, {"epochs": 2, **settings}))


# -- InfLoRA ----------------------------------------------------------------------------------------------------
def test_basis_grows_by_the_fewest_directions_that_reach_the_threshold():
    gram = torch.diag(torch.tensor([6.0, 3.0, 1.0], dtype=torch.float64))
    basis = extend_basis(torch.zeros(3, 0), gram, 0.85)  # 6 + 3 of 10 >= 8.5
    assert basis.shape == (3, 2) and torch.allclose(basis.abs(), torch.eye(3)[:, :2], atol=1e-6)
    assert extend_basis(basis, gram, 0.85) is basis  # already captured
    assert extend_basis(basis, gram, 0.95).shape == (3, 3)


def test_inflora_update_is_orthogonal_to_old_tasks_input_subspace(enc, stream):
    learner = make("inflora", enc, rank=4, lr=1e-2, threshold=0.9)
    learner.learn(stream.tasks[0])
    protected = {g: b.clone() for g, b in learner.basis.items()}
    for b in protected.values():
        assert 0 < b.shape[1] < b.shape[0]
        assert torch.allclose(b.T @ b, torch.eye(b.shape[1]), atol=1e-5)
    weights = {n: s.base.weight.detach().clone() for n, s in learner.top.sites.items()}
    old_rows = learner.head.weight.detach()[:2].clone()

    learner.learn(stream.tasks[1])
    for n, site in learner.top.sites.items():
        basis = protected[learner.group[n]]
        update = site.base.weight.detach() - weights[n]
        assert update.norm() > 1e-3  # the task did adapt this layer
        assert (update @ basis).norm() <= 1e-5 * update.norm()  # but not on anything old tasks fed it
        assert (learner.branches[1][f"{n}.A"] @ basis).norm() < 1e-5
    # the same design without removing the old subspace would overlap it: the check above can fail
    grams = learner.input_grams(stream.tasks[1].train.inputs)
    g, basis = next(iter(protected.items()))
    assert (design_down(grams[g], torch.zeros(basis.shape[0], 0), 4) @ basis).norm() > 0.1
    assert torch.equal(learner.head.weight.detach()[:2], old_rows)  # old classes' rows kept


# -- SLCA -------------------------------------------------------------------------------------------------------
def correlated(n, d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=gen)
    return torch.randn(n, d, generator=gen) @ mix + torch.arange(d, dtype=torch.float32)


def test_gaussian_stats_keep_the_variances_and_samples_follow_them():
    x = correlated(300, 6)
    mean, factor, rest = gaussian_stats(x, rank=2)
    assert torch.allclose(mean, x.mean(0))
    assert torch.allclose(factor.pow(2).sum(0) + rest, x.var(0), rtol=1e-4)  # every dimension's variance kept
    _, full, full_rest = gaussian_stats(x, rank=6)
    assert torch.allclose(full.T @ full, torch.cov(x.T), rtol=1e-4, atol=1e-4) and full_rest.abs().max() < 1e-3

    cov = factor.T @ factor + torch.diag(rest)
    draws = sample_gaussians(mean[None], factor[None], rest[None], 40000, torch.Generator().manual_seed(1))[0]
    scale = cov.diagonal().sqrt()
    assert ((draws.mean(0) - mean).abs() / scale).max() < 0.03
    assert ((torch.cov(draws.T) - cov).abs() / (scale[:, None] * scale[None])).max() < 0.03


def test_slca_slow_backbone_and_alignment_touches_only_the_head(enc, stream):
    frozen = make("slca", enc, slow=0.0, align_samples=8)
    frozen.learn(stream.tasks[0])
    original = methods.get("slca")(enc).top.blocks.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in frozen.top.blocks.state_dict().items())

    learner = make("slca", enc, cov_rank=2, align_samples=32)
    learner.learn(stream.tasks[0])
    learner.learn(stream.tasks[1])
    assert any(not torch.equal(v, original[k]) for k, v in learner.top.blocks.state_dict().items())  # slow, not still
    assert learner.mean.shape == (4, 32) and learner.factor.shape == (4, 2, 32) and learner.rest.shape == (4, 32)
    assert learner.state()["stats.mean"].dtype == torch.float16

    blocks = {k: v.clone() for k, v in learner.top.blocks.state_dict().items()}
    stats = [t.clone() for t in (learner.mean, learner.factor, learner.rest)]
    head = learner.head.weight.detach().clone()
    learner.align(seed=123)
    assert all(torch.equal(v, blocks[k]) for k, v in learner.top.blocks.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(stats, (learner.mean, learner.factor, learner.rest)))
    assert not torch.equal(learner.head.weight.detach(), head)
    # the head learns from the stored statistics alone: give it four separated Gaussians, old classes included
    learner.mean, learner.factor, learner.rest = 3 * torch.eye(4, 32), torch.zeros(4, 2, 32), torch.full((4, 32), 0.5)
    learner.config.align_epochs, learner.config.align_lr = 50, 1e-2
    assert not (learner.head(learner.mean).argmax(1) == torch.arange(4)).all()
    learner.align(seed=0)
    assert (learner.head(learner.mean).argmax(1) == torch.arange(4)).all()


# -- EKPC -------------------------------------------------------------------------------------------------------
def test_ekpc_penalty_is_zero_at_anchor_and_grows_away(enc, stream):
    learner = make("ekpc", enc)
    learner.learn(stream.tasks[0])
    assert learner.penalty().item() == 0.0
    assert all((v >= 0).all() for v in learner.importance.values())
    assert abs(torch.cat([v.flatten() for v in learner.importance.values()]).mean().item() - 1) < 1e-5
    assert_penalty_grows(list(learner.params().values()), learner.penalty)


def test_drift_compensation_is_exact_on_identity_and_affine_drift():
    gen = torch.Generator().manual_seed(0)
    before, protos = torch.randn(300, 8, generator=gen), torch.randn(5, 8, generator=gen)
    assert torch.equal(compensate(before, before.clone(), protos, 0.1), protos)  # no drift: prototypes stay
    a, b = torch.eye(8) + 0.2 * torch.randn(8, 8, generator=gen), torch.randn(8, generator=gen)
    moved = compensate(before, before @ a + b, protos, 1e-12)
    assert torch.allclose(moved, protos @ a + b, atol=1e-4)
    assert not torch.allclose(protos, protos @ a + b, atol=1e-1)


def test_ekpc_moves_old_prototypes_only_when_the_adapter_moves(enc, stream):
    still = make("ekpc", enc)
    still.learn(stream.tasks[0])
    kept = still.prototypes.clone()
    still.config.lr = 0.0
    still.learn(stream.tasks[1])
    assert torch.equal(still.prototypes[:2], kept)

    moving = make("ekpc", enc, lr=1e-2)
    moving.learn(stream.tasks[0])
    kept = moving.prototypes.clone()
    moving.learn(stream.tasks[1])
    assert not torch.equal(moving.prototypes[:2], kept) and moving.prototypes.shape == (4, 32)


# -- all three --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, settings", [("slca", {"align_samples": 16, "blocks": 1}), ("inflora", {"rank": 4}),
                                            ("ekpc", {"adapter": "bottleneck"})])
def test_save_load_gives_identical_predictions(enc, stream, tmp_path, name, settings):
    learner = make(name, enc, **settings)
    for t in stream:
        learner.learn(t)
    learner.save(tmp_path / name)
    again = methods.get(name).load(tmp_path / name, enc)
    x = Examples.concat([t.test for t in stream]).inputs
    scores = learner.predict(x)
    assert scores.shape == (len(x), 4)
    assert torch.equal(again.predict(x), scores)
    assert again.stored_bytes() == learner.stored_bytes()


def lifelong(*args):
    return subprocess.run([sys.executable, "-m", "lifelong.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.mark.parametrize("method, extra", [("slca", ["--set", "align_samples=16"]), ("inflora", ["--rank", 4]),
                                           ("ekpc", ["--blocks", 1])])
def test_two_task_run_through_the_cli(tiny_backbone, intents_jsonl, tmp_path, method, extra):
    out = tmp_path / "out"
    proc = lifelong("run", "--benchmark", intents_jsonl, "--classes-per-task", 2, "--method", method,
                    "--backbone", tiny_backbone, "--epochs", 1, "--out", out, *extra)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "results.json").read_text())
    R = res["accuracy_matrix"]
    assert len(R) == 2 and R[0][1] is None and all(0 <= a <= 1 for row in R for a in row if a is not None)
    assert res["config"]["method"] == method and res["config"]["settings"]["epochs"] == 1
    assert len(res["bytes_per_task"]) == 2 and all(b > 0 for b in res["bytes_per_task"])
    assert (out / "model" / "weights.safetensors").exists()


def test_methods_lists_them_with_settings():
    proc = lifelong("methods")
    assert proc.returncode == 0, proc.stderr
    for needle in ("slca", "inflora", "ekpc", "cov_rank", "threshold", "drift_ridge"):
        assert needle in proc.stdout
