"""The Gaussian class model (LDA from additive statistics), `held_out`, the routing mixture, the evaluation loop's
task-given and routing fields, and the `lda` and `probe` methods end to end."""

import math

import pytest
import torch
import torch.nn.functional as F

from lifelong import evaluation, methods, routing
from lifelong.data.task import Examples, Task
from lifelong.methods.base import held_out
from lifelong.methods.gaussian import (
    ALPHAS,
    SHRINKAGES,
    GaussianClassModel,
    dequantize_nibbles,
    dequantize_rows,
    eigh,
    quantize_nibbles,
    quantize_rows,
)

FP16_REL = 2.0**-11  # half an fp16 ulp, relative, for normal numbers
FP16_SUB = 2.0**-25  # half an fp16 ulp, absolute, for subnormal numbers


def blobs(num_classes=6, per_class=40, dim=12, noise=0.05, seed=0):
    """Well-separated Gaussian blobs: features [n, dim], labels [n] (class c's examples contiguous)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    return centres[y] + noise * torch.randn(len(y), dim, generator=g, dtype=torch.float64), y, centres


def fit(model, x, y, tasks):
    for classes in tasks:
        sel = torch.isin(y, torch.tensor(classes))
        model.add(*model.task_statistics(x[sel], y[sel], classes))
    return model


TASKS = [[0, 1], [2, 3], [4, 5]]


# -- GaussianClassModel --------------------------------------------------------------------------------------
def test_incremental_statistics_equal_the_pooled_covariance_of_all_data():
    x, y, _ = blobs()
    model = fit(GaussianClassModel(12), x, y, TASKS)
    z = F.normalize(x, dim=-1)  # the model's feature: unit-normalised (no projection at width 12)
    means = torch.stack([z[y == c].mean(0) for c in range(6)])
    scatter = [(z[y == c] - means[c]).T @ (z[y == c] - means[c]) for c in range(6)]
    n, num_classes = len(y), 6
    joint = sum(scatter) / (n - num_classes)  # pooled within-class covariance, all data at once

    assert model.num_classes == 6 and model.dof == n - num_classes
    assert torch.equal(model.counts, torch.full((6,), 40.0, dtype=torch.float64))
    scale = means.abs().amax(1) / 127  # means are kept as int8 rows
    assert ((model.means - means).abs() <= scale[:, None] / 2 * (1 + 1e-6)).all()
    assert torch.equal(model.covariance, model.covariance.half().double())  # held as stored: fp16 values
    # each add rounds the running covariance to fp16 once; the rounding errors shrink by dof_{k-1}/dof_k and add
    bound = 0.0
    for k in range(1, 4):
        running = sum(scatter[: 2 * k]) / (40 * 2 * k - 2 * k)
        bound += FP16_REL * float(running.abs().max()) + FP16_SUB
    assert (model.covariance - joint).abs().max() <= bound
    # the bound is tight enough to see a wrong denominator (n instead of n - classes)
    assert (model.covariance - sum(scatter) / n).abs().max() > bound


def test_one_task_or_three_give_the_same_model():
    x, y, _ = blobs()
    inc = fit(GaussianClassModel(12), x, y, TASKS)
    once = fit(GaussianClassModel(12), x, y, [[0, 1, 2, 3, 4, 5]])
    assert torch.equal(inc.means, once.means) and inc.dof == once.dof
    bound = 4 * (FP16_REL * float(once.covariance.abs().max()) + FP16_SUB)  # three roundings against one
    assert (inc.covariance - once.covariance).abs().max() <= bound


def test_logits_classify_separated_blobs_at_every_shrinkage():
    x, y, centres = blobs()
    model = fit(GaussianClassModel(12), x, y, TASKS)
    test_y = torch.arange(6).repeat_interleave(25)
    g = torch.Generator().manual_seed(1)  # fresh points around the same centres
    test_x = centres[test_y] + 0.05 * torch.randn(len(test_y), 12, generator=g, dtype=torch.float64)
    for shrink in SHRINKAGES:
        logits = model.logits(test_x, shrink)
        assert logits.shape == (150, 6)
        assert torch.equal(logits.argmax(1), test_y)


def test_low_rank_fp16_covariance_still_classifies_at_every_shrinkage():
    """Fewer examples than dimensions (a small task, as in the fixture stream): the fp16-rounded covariance has
    slightly negative eigenvalues, larger than the 1e-3 shrinkage's ridge; the model clips them, so every candidate
    shrinkage still classifies the training blobs (unclipped, 1e-3 gave garbage)."""
    x, y, _ = blobs(num_classes=4, per_class=4, dim=384, noise=0.5)
    model = fit(GaussianClassModel(384), x, y, [[0, 1], [2, 3]])
    assert torch.linalg.eigvalsh(model.covariance)[0] < 0  # the case this guards against
    for shrink in SHRINKAGES:
        assert torch.equal(model.logits(x, shrink).argmax(1), y), f"shrinkage {shrink}: training data misclassified"


def test_projection_only_when_wider_than_max_dim_and_seeded():
    assert GaussianClassModel(16, max_dim=16).projection is None and GaussianClassModel(16, max_dim=16).dim == 16
    assert GaussianClassModel(8, max_dim=16).projection is None and GaussianClassModel(8, max_dim=16).dim == 8
    assert GaussianClassModel(40, max_dim=0).projection is None and GaussianClassModel(40, max_dim=0).dim == 40
    torch.manual_seed(123)  # the global generator plays no part
    a = GaussianClassModel(40, max_dim=16, seed=3)
    torch.manual_seed(456)
    b = GaussianClassModel(40, max_dim=16, seed=3)
    assert a.dim == 16 and a.projection.shape == (40, 16)
    assert torch.equal(a.projection, b.projection)
    assert not torch.equal(a.projection, GaussianClassModel(40, max_dim=16, seed=4).projection)
    x = torch.randn(5, 40)
    assert torch.equal(a.transform(x), F.normalize((x @ a.projection).double(), dim=-1))
    assert a.transform(x).shape == (5, 16)
    assert torch.equal(GaussianClassModel(16, max_dim=16).transform(x[:, :16]), F.normalize(x[:, :16].double(), dim=-1))


@pytest.mark.parametrize("in_dim,max_dim,rank", [(12, 1024, 0), (40, 16, 0), (40, 16, 2), (13, 13, 3)])
def test_state_round_trip_gives_an_identical_model(in_dim, max_dim, rank):
    x, y, _ = blobs(dim=in_dim)
    model = fit(GaussianClassModel(in_dim, max_dim, seed=5, rank=rank), x, y, TASKS)
    again = GaussianClassModel(in_dim, max_dim, seed=5, rank=rank)
    again.load_shared(model.shared_state())
    again.load_classes(model.class_state())
    per_task = GaussianClassModel(in_dim, max_dim, seed=5, rank=rank)  # classes stored task by task, as `adapters` does
    per_task.load_shared(model.shared_state())
    for start, stop in ((0, 2), (2, 4), (4, None)):
        per_task.load_classes(model.class_state(start, stop))
    for m in (again, per_task):
        assert torch.equal(m.means, model.means) and torch.equal(m.counts, model.counts)
        assert torch.equal(m.covariance, model.covariance) and m.dof == model.dof
        assert torch.equal(m.directions(), model.directions()) and torch.equal(m.variances, model.variances)
        for shrink in SHRINKAGES:
            for alpha in ALPHAS:
                assert torch.equal(m.logits(x, shrink, alpha), model.logits(x, shrink, alpha))
        assert {k: (tuple(v.shape), v.dtype) for k, v in model.class_state(0, 2).items()} == model.class_shapes(2)
        assert torch.equal(m.nearest_cosine(m.transform(x)), model.nearest_cosine(model.transform(x)))


def test_stored_covariance_is_the_upper_triangle_in_fp16():
    x, y, _ = blobs(dim=40)
    model = fit(GaussianClassModel(40, max_dim=16), x, y, TASKS)
    shared = model.shared_state()
    packed = shared["shared.covariance"]
    assert packed.dtype == torch.float16 and packed.shape == (16 * 17 // 2,)
    i, j = torch.triu_indices(16, 16)
    assert torch.equal(packed.double(), model.covariance[i, j])
    assert float(shared["shared.dof"][0]) == 240 - 6
    classes = model.class_state()
    assert classes["classes.means"].dtype == torch.int8 and classes["classes.means"].shape == (6, 16)
    assert classes["classes.scale"].dtype == torch.float32 and classes["classes.scale"].shape == (6,)


def test_wrong_size_covariance_is_refused():
    x, y, _ = blobs(dim=12)
    small = fit(GaussianClassModel(11), x[:, :11], y, TASKS)
    model = GaussianClassModel(12)
    with pytest.raises(ValueError, match="expected 78"):
        model.load_shared(small.shared_state())
    with pytest.raises(ValueError):
        model.load_shared({"shared.covariance": torch.zeros(12, 12, dtype=torch.float16),
                           "shared.dof": torch.tensor([1.0])})


def test_quantized_rows_are_within_half_a_step():
    g = torch.Generator().manual_seed(0)
    magnitudes = torch.tensor([1e-4, 1.0, 100.0, 0.5, 7.0], dtype=torch.float64)
    x = torch.randn(5, 300, generator=g, dtype=torch.float64) * magnitudes[:, None]
    q, scale = quantize_rows(x)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (5,)
    assert torch.equal(q.abs().amax(1), torch.full((5,), 127, dtype=torch.int8))  # each row uses the full range
    err = (dequantize_rows(q, scale) - x).abs()
    assert (err <= scale.double()[:, None] / 2 * (1 + 1e-9)).all()
    assert (err.amax(1) > 0.4 * scale.double()).all()  # the bound is met, not loose (rounding, not truncation)
    zq, zs = quantize_rows(torch.zeros(2, 4, dtype=torch.float64))
    assert torch.equal(dequantize_rows(zq, zs), torch.zeros(2, 4, dtype=torch.float64))


def test_nibbles_are_4_bit_levels_packed_two_per_byte():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 25, generator=g, dtype=torch.float64) * torch.tensor([1e-3, 1.0, 50.0])[:, None, None]
    packed, step = quantize_nibbles(x)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 2, 13) and step.shape == (3, 2)
    y = dequantize_nibbles(packed, step, 25)
    levels = y / step.double()[..., None] - 0.5  # whole numbers from -8 to 7
    assert torch.equal(levels, levels.round()) and levels.min() >= -8 and levels.max() <= 7
    inside = (x / step.double()[..., None]).abs() < 7.5  # not clipped: within half a step
    assert ((y - x).abs()[inside] <= step.double()[..., None].expand_as(x)[inside] / 2 * (1 + 1e-6)).all()
    assert torch.equal(quantize_nibbles(x)[0], packed)  # deterministic
    rel = (y - x).norm(dim=-1) / x.norm(dim=-1)
    assert (rel < 0.2).all()  # about 0.1 for Gaussian values at the MSE-optimal step


def test_class_directions_score_each_class_under_its_own_covariance():
    """Woodbury scores equal the Gaussian log density under Sigma_c = (1 - alpha) Sigma_shrunk + alpha U_c U_c^T,
    computed directly, up to a constant per row; alpha 0 is LDA; `log_density` is that density, summed."""
    x, y, _ = blobs(num_classes=6, per_class=30, dim=10, noise=0.3)
    lda = fit(GaussianClassModel(10), x, y, TASKS)
    model = fit(GaussianClassModel(10, rank=2), x, y, TASKS)
    assert torch.equal(model.means, lda.means) and torch.equal(model.covariance, lda.covariance)  # same pooling
    z = model.transform(x)
    for shrink in (0.3, 1e-2):
        assert torch.allclose(model.scores(z, shrink, 0.0), lda.scores(z, shrink), rtol=0, atol=1e-9)
        values, vectors = torch.linalg.eigh(model.covariance)
        values = values.clamp_min(0)
        shrunk = vectors @ torch.diag((1 - shrink) * values + shrink * values.mean()) @ vectors.T
        for alpha in (0.1, 0.5):
            u = model.directions() * (alpha * model.variances.double()).sqrt()[..., None]
            dens = torch.stack([torch.distributions.MultivariateNormal(
                model.means[c], (1 - alpha) * shrunk + u[c].T @ u[c]).log_prob(z) for c in range(6)], 1)
            diff = model.scores(z, shrink, alpha) - dens
            assert torch.allclose(diff, diff[:, :1].expand_as(diff), rtol=0, atol=1e-6)  # a constant per row
            own = dens.gather(1, y[:, None]).sum() + len(z) * 5 * math.log(2 * math.pi)
            assert model.log_density(z, y, shrink, alpha) == pytest.approx(float(own), rel=1e-9)
    # the stored directions are the top eigenvectors of each class's own scatter, to 4-bit precision
    c = 4
    zc = z[y == c] - z[y == c].mean(0)
    values, vectors = torch.linalg.eigh(zc.T @ zc)
    for i in range(2):
        assert abs(float(F.cosine_similarity(model.directions()[c, i], vectors[:, -1 - i], dim=0))) > 0.95
        assert float(model.variances[c, i]) == pytest.approx(float(values[-1 - i]) / (30 - 1), rel=1e-5)


def test_eigh_gives_the_largest_pairs_of_a_full_decomposition():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 12, generator=g, dtype=torch.float64)
    matrix = a.T @ a
    values, vectors = torch.linalg.eigh(matrix)
    top_values, top_vectors = eigh(matrix, 3)
    assert top_values.shape == (3,) and top_vectors.shape == (12, 3)
    assert torch.allclose(top_values, values[-3:], rtol=1e-12, atol=0)  # ascending, as torch gives them
    assert torch.allclose((top_vectors * vectors[:, -3:]).sum(0).abs(), torch.ones(3, dtype=torch.float64))
    all_values, all_vectors = eigh(matrix)
    assert torch.allclose(all_values, values, rtol=1e-12, atol=1e-12)
    assert torch.allclose(all_vectors @ torch.diag(all_values) @ all_vectors.T, matrix, atol=1e-10)


def test_class_directions_help_when_classes_vary_differently():
    """Two classes share a mean but vary along different axes: LDA, with one pooled covariance, cannot tell them
    apart; each class's own direction can."""
    g = torch.Generator().manual_seed(0)
    base = torch.zeros(8, dtype=torch.float64)
    base[0] = 5.0
    n = 200
    a = base + 0.02 * torch.randn(n, 8, generator=g, dtype=torch.float64)
    b = base + 0.02 * torch.randn(n, 8, generator=g, dtype=torch.float64)
    a[:, 1] += torch.randn(n, generator=g, dtype=torch.float64)  # class 0 varies along axis 1, class 1 along 2
    b[:, 2] += torch.randn(n, generator=g, dtype=torch.float64)
    x, y = torch.cat([a, b]), torch.arange(2).repeat_interleave(n)
    lda = fit(GaussianClassModel(8), x, y, [[0], [1]])
    model = fit(GaussianClassModel(8, rank=1), x, y, [[0], [1]])
    acc = (model.logits(x, 1e-2, 0.5).argmax(1) == y).double().mean()
    # at alpha 0.5 a class's variance along its own axis is 3 times the other's: the Bayes rule |x1| > |x2| is
    # right 2/3 of the time (an angle of 60 of 90 degrees); LDA is at chance
    assert acc > 0.6 and (lda.logits(x, 1e-2).argmax(1) == y).double().mean() < 0.56


def test_per_class_statistics_of_shards_add_up():
    x, y, _ = blobs(dim=12)
    model = GaussianClassModel(12, rank=2)
    whole = model.task_statistics(x, y, list(range(6)))
    halves = [model.task_statistics(x[i::2], y[i::2], list(range(6))) for i in (0, 1)]
    assert whole[2].shape == (6, 12, 12)
    for w, a, b in zip(whole, *halves):
        assert torch.allclose(w, a + b, rtol=1e-6, atol=1e-6)


# -- held_out ------------------------------------------------------------------------------------------------
def make_task(counts, val=None):
    """Examples of classes interleaved round-robin; input 'c{label}-{k}' is class label's k-th example (1-based)."""
    order, seen = [], dict.fromkeys(range(len(counts)), 0)
    while len(order) < sum(counts):
        for c, n in enumerate(counts):
            if seen[c] < n:
                seen[c] += 1
                order.append((c, seen[c]))
    train = Examples([f"c{c}-{k}" for c, k in order], torch.tensor([c for c, _ in order]))
    return Task(0, list(range(len(counts))), train, val, Examples(["t"], torch.tensor([0])))


def test_held_out_uses_the_val_split_when_there_is_one():
    val = Examples(["v1", "v2"], torch.tensor([0, 1]))
    task = make_task([12, 3], val)
    train, held = held_out(task)
    assert train is task.train and held is val


@pytest.mark.parametrize("val", [None, Examples([], torch.empty(0, dtype=torch.long))])
def test_held_out_takes_every_tenth_example_of_each_class(val):
    task = make_task([25, 9, 10, 20], val)
    train, held = held_out(task)
    expected = {"c0-10", "c0-20", "c2-10", "c3-10", "c3-20"}  # none of class 1: it has fewer than ten
    assert set(held.inputs) == expected and len(held) == 5
    assert [int(x.split("-")[0][1:]) for x in held.inputs] == held.labels.tolist()
    assert held.inputs == [x for x in task.train.inputs if x in expected]  # in the task's order
    assert sorted(train.inputs + held.inputs) == sorted(task.train.inputs)  # a partition
    assert not set(train.inputs) & set(held.inputs)
    assert train.inputs == [x for x in task.train.inputs if x not in expected]
    assert [int(x.split("-")[0][1:]) for x in train.inputs] == train.labels.tolist()


def test_held_out_is_empty_when_every_class_is_small():
    task = make_task([9, 4])
    train, held = held_out(task)
    assert len(held) == 0 and train.inputs == task.train.inputs and torch.equal(train.labels, task.train.labels)


# -- routing -------------------------------------------------------------------------------------------------
TASK_OF = torch.tensor([0, 0, 1, 1, 1, 2])


def posteriors(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    log_post = torch.randn(n, 6, generator=g, dtype=torch.float64).log_softmax(1)
    head = 3 * torch.randn(n, 6, generator=g, dtype=torch.float64)
    return log_post, head


def test_task_log_posterior_sums_class_probabilities():
    log_post, _ = posteriors()
    tlp = routing.task_log_posterior(log_post, TASK_OF, 3)
    p = log_post.exp()
    by_hand = torch.stack([p[:, 0] + p[:, 1], p[:, 2] + p[:, 3] + p[:, 4], p[:, 5]], 1)
    assert tlp.shape == (7, 3)
    assert torch.allclose(tlp.exp(), by_hand, atol=0, rtol=1e-12)
    assert torch.allclose(tlp.exp().sum(1), torch.ones(7, dtype=torch.float64), rtol=1e-12)


def test_group_logsumexp_matches_each_group_alone_with_large_and_infinite_scores():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 6, generator=g, dtype=torch.float64) * 300  # far beyond exp's range
    x[0, :2] = float("-inf")  # a whole group masked out
    x[1, 2] = float("-inf")  # one class of a group
    out = routing.group_logsumexp(x, TASK_OF, 4)  # group 3 has no columns
    for t in range(3):
        assert torch.allclose(out[:, t], x[:, TASK_OF == t].logsumexp(1), rtol=1e-12, atol=0)
    assert out[0, 0] == float("-inf") and (out[:, 3] == float("-inf")).all() and out[:, :3][1:].isfinite().all()


def test_routed_mask_picks_the_top_k_tasks():
    scores = torch.tensor([[0.1, 0.5, 0.3], [0.9, 0.2, 0.4], [0.0, 0.1, 0.7]])
    assert routing.routed_mask(scores, 1).tolist() == [[False, True, False], [True, False, False],
                                                        [False, False, True]]
    assert routing.routed_mask(scores, 2).tolist() == [[False, True, True], [True, False, True],
                                                        [False, True, True]]
    assert routing.routed_mask(scores, 5).all()  # k above the number of tasks: every task


def test_mix_with_beta_0_is_the_global_posterior_on_routed_classes():
    log_post, head = posteriors()
    tlp = routing.task_log_posterior(log_post, TASK_OF, 3)
    routed = routing.routed_mask(tlp, 2)
    scores = routing.mix(log_post, tlp, head, TASK_OF, routed, beta=0.0)
    on = routed[:, TASK_OF]
    assert on.sum() < on.numel() and on.any(1).all()  # some classes are routed out, every row keeps some
    assert torch.equal(scores[on], log_post[on])
    assert torch.isneginf(scores[~on]).all()


def test_mix_with_beta_1_is_the_chain_rule_with_the_head_within_the_task():
    log_post, head = posteriors()
    tlp = routing.task_log_posterior(log_post, TASK_OF, 3)
    routed = routing.routed_mask(tlp, 2)
    scores = routing.mix(log_post, tlp, head, TASK_OF, routed, beta=1.0)
    on = routed[:, TASK_OF]
    for c in range(6):
        cols = (TASK_OF == TASK_OF[c]).nonzero().flatten()
        expected = tlp[:, TASK_OF[c]] + head[:, c] - head[:, cols].logsumexp(1)
        rows = on[:, c]
        assert torch.allclose(scores[rows, c], expected[rows], atol=1e-12, rtol=0)
    assert torch.isneginf(scores[~on]).all()


def test_mix_general_weights_by_hand():
    log_post, head = posteriors(seed=1)
    tlp = routing.task_log_posterior(log_post, TASK_OF, 3)
    routed = routing.routed_mask(tlp, 3)
    beta = 0.25
    scores = routing.mix(log_post, tlp, head, TASK_OF, routed, beta)
    for c in range(6):
        cols = (TASK_OF == TASK_OF[c]).nonzero().flatten()
        chain = tlp[:, TASK_OF[c]] + head[:, c] - head[:, cols].logsumexp(1)
        expected = (1 - beta) * log_post[:, c] + beta * chain
        assert torch.allclose(scores[:, c], expected, atol=1e-12, rtol=0)


def test_mix_of_several_betas_at_once_equals_one_call_each():
    """The learner scores every candidate beta in one call (held-out hits): each slice must be, bit for bit, what
    its own call gives, or the chosen setting could differ from the one a single call would score."""
    log_post, head = posteriors(seed=2)
    log_post, head = log_post.float(), head.float()
    tlp = routing.task_log_posterior(log_post, TASK_OF, 3)
    routed = routing.routed_mask(tlp, 2)
    betas = torch.tensor(routing.BETAS)[:, None, None]
    log_a = routing.within_task(head, TASK_OF, 3)
    many = routing.mix(log_post, tlp, head, TASK_OF, routed, betas, log_a)
    assert many.shape == (len(routing.BETAS), *log_post.shape)
    for b, beta in enumerate(routing.BETAS):
        assert torch.equal(many[b], routing.mix(log_post, tlp, head, TASK_OF, routed, beta))


@pytest.mark.parametrize("beta", routing.BETAS)
def test_needed_skips_only_tasks_that_cannot_move_the_prediction(beta):
    """A runner-up task dropped by `needed` leaves every row's argmax as it was with all routed tasks, and moves
    the top probability by at most MASS of itself; on sharp posteriors most runners-up are dropped."""
    g = torch.Generator().manual_seed(3)
    n, task_of = 400, torch.arange(8).repeat_interleave(5)  # 8 tasks of 5 classes
    log_post = F.log_softmax(torch.randn(n, 40, generator=g, dtype=torch.float64) * 6, dim=1)
    head = torch.randn(n, 40, generator=g, dtype=torch.float64) * 3
    tlp = routing.task_log_posterior(log_post, task_of, 8)
    routed = routing.routed_mask(tlp, 3)
    first = routing.routed_mask(tlp, 1)
    first_scores = routing.mix(log_post, tlp, head, task_of, first, beta)
    kept = routing.needed(first_scores, tlp, routed, first)
    assert (kept <= routed).all() and (kept >= first).all()
    assert kept.sum() < routed.sum()  # some runner-up is skipped
    full = routing.mix(log_post, tlp, head, task_of, routed, beta)
    part = routing.mix(log_post, tlp, head, task_of, kept, beta)
    assert torch.equal(part.argmax(1), full.argmax(1))
    top_full, top_part = full.softmax(1).max(1).values, part.softmax(1).max(1).values
    assert ((top_part - top_full) / top_full <= 2 * routing.MASS + 1e-12).all()  # two runners-up at most
    assert (top_part >= top_full).all()


# -- evaluation fields, on ncm (tiny backbone) ---------------------------------------------------------------
def test_accuracy_given_task_and_routing_fields_by_hand(enc, stream):
    learner = methods.get("ncm")(enc)
    result = evaluation.run(learner, stream)
    hits, given, routed_right = [], [], []
    for t, task in enumerate(stream):
        scores = learner.predict(task.test.inputs)
        hits.append(scores.argmax(1) == task.test.labels)
        given.append(torch.tensor(task.classes)[scores[:, task.classes].argmax(1)] == task.test.labels)
        per_task = torch.stack([scores[:, k.classes].max(1).values for k in stream], 1)
        routed_right.append(per_task.argmax(1) == t)
    hits, given, routed_right = torch.cat(hits), torch.cat(given), torch.cat(routed_right)
    assert result["accuracy_given_task"] == given.float().mean().item()
    assert (given | ~hits).all()  # right over all classes -> right within its task (restricted argmax)
    assert result["accuracy_given_task"] >= result["final_accuracy"]
    assert result["final_accuracy"] == pytest.approx(hits.float().mean().item())  # equal test sizes per task
    assert result["routing_accuracy"] == routed_right.float().mean().item()
    assert result["routing_top_k"] == 2
    assert result["routing_top_k_accuracy"] == 1.0 and result["routing_top_k_accuracy_per_task"] == [1.0, 1.0]
    assert result["routing_top_k_accuracy"] >= result["routing_accuracy"]
    assert len(result["routing_accuracy_per_task"]) == 2
    assert result["shared_bytes"] == 0  # ncm keeps nothing shared
    assert result["bytes_per_task"] == [2 * enc.dim * 4, 2 * enc.dim * 4]


# -- lda and probe on the real encoder -----------------------------------------------------------------------
def test_lda_separates_the_fixture_intents_and_reports_shared_bytes(minilm, stream):
    """FAILS against the current src: final accuracy 0.25 (chance). The fixture's classes have 4 training
    examples, so nothing is held out, every shrinkage has 0 hits and the first (1e-3) is used, at which the
    fp16-rounded covariance is indefinite (see the report)."""
    learner = methods.get("lda")(minilm)
    result = evaluation.run(learner, stream)
    d = minilm.dim
    stored = result["stored_bytes"][-1]
    assert learner.shared_kinds == ("shared",) and set(stored) == {"shared", "classes"}
    assert result["shared_bytes"] == stored["shared"] == d * (d + 1) // 2 * 2 + 4 + 4 * len(SHRINKAGES)
    assert result["bytes_per_task"] == [2 * (d + 4 + 4)] * 2  # int8 means, fp32 scale and count per class
    assert sum(result["bytes_per_task"]) == stored["classes"]
    assert result["final_accuracy"] == 1.0
    assert result["accuracy_given_task"] == 1.0


def test_probe_separates_the_fixture_intents_and_counts_its_examples(minilm, stream):
    learner = methods.get("probe")(minilm)
    assert learner.keeps_examples
    result = evaluation.run(learner, stream)
    d = minilm.dim
    assert result["accuracy_matrix"] == [[1.0, None], [1.0, 1.0]]
    assert result["accuracy_given_task"] == 1.0 and result["routing_accuracy"] == 1.0
    stored = result["stored_bytes"]
    seen_train = [sum(len(t.train) for t in stream.tasks[: i + 1]) for i in range(2)]
    assert [s["examples"] for s in stored] == [n * d * 4 for n in seen_train]  # every training feature, fp32
    assert [s["probe"] for s in stored] == [2 * (d + 1) * 4, 4 * (d + 1) * 4]
    assert [s["standardise"] for s in stored] == [2 * d * 4] * 2
    assert result["shared_bytes"] == 0
    assert result["bytes_per_task"] == [2 * (d + 1) * 4 + 2 * d * 4 + 8 * d * 4, 2 * (d + 1) * 4 + 8 * d * 4]
