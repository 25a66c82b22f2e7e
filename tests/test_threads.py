"""A batch's slices at once in threads (threads.py): the same results as one pass, whatever runs them."""

import threading

import pytest
import torch
import torch.nn.functional as F

from lifelong import threads
from lifelong.data.task import Examples
from lifelong.methods import training
from lifelong.methods.topblock import CPU_CHUNK, top_features


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_cut_covers_every_item_once_in_near_equal_parts():
    assert threads.cut(7, 2) == [(0, 4), (4, 7)]
    assert threads.cut(1, 2) == [(0, 1), (1, 1)]
    for n in range(12):
        parts = threads.cut(n, 3)
        assert [i for a, b in parts for i in range(a, b)] == list(range(n))
        assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


def test_run_keeps_order_and_carries_the_callers_modes_into_each_worker(two_threads):
    def probe(i):
        return (i, threading.current_thread().name, torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
                torch.is_autocast_enabled("cpu"), torch.get_num_threads())

    with torch.no_grad():
        got = threads.run(probe, list(range(6)), 2)
    assert [g[0] for g in got] == list(range(6))
    assert {g[1].split("_")[0] for g in got} == {"lifelong-slice"}  # not the caller's thread
    assert not any(g[2] for g in got) and not any(g[3] for g in got)
    assert {g[5] for g in got} == {1}  # 2 torch threads shared by 2 workers
    assert torch.get_num_threads() == 2  # the caller's count is left as it was
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = threads.run(probe, [0, 1], 2)
    assert all(g[3] and g[4] for g in got)
    assert all(g[2] for g in threads.run(probe, [0, 1], 2))


def test_a_call_from_inside_a_worker_runs_serially(two_threads):
    def outer(i):
        assert threads.workers() == 1
        return threads.run(lambda j: (i, j, threading.current_thread().name), [0, 1, 2], 2)

    got = threads.run(outer, [0, 1], 2)
    for i, inner in enumerate(got):
        assert [(a, b) for a, b, _ in inner] == [(i, 0), (i, 1), (i, 2)]
        assert len({name for _, _, name in inner}) == 1  # the worker that called, not the pool


def test_one_worker_off_the_cpu_and_at_one_thread():
    assert threads.workers("meta") == 1
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert threads.workers() == 1
    finally:
        torch.set_num_threads(before)


def test_slices_gradients_add_up_to_the_whole_batchs(two_threads):
    torch.manual_seed(0)
    x, y = torch.randn(13, 6), torch.randint(0, 3, (13,))
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    unused = torch.nn.Parameter(torch.zeros(2))  # reached by no loss: no gradient, as with backward()
    params = [*net.parameters(), unused]

    def loss_fn(inputs, labels):
        return F.cross_entropy(net(inputs), labels) + 0.1 * net[0].weight.square().sum()  # a penalty, once in all

    F.cross_entropy(net(x), y).add(0.1 * net[0].weight.square().sum()).backward()
    whole = [p.grad.clone() if p.grad is not None else None for p in params]
    examples = Examples(x, y)
    rows = list(range(13))
    for workers in (1, 2, 3):
        grads, loss = training._slice_grads(examples, rows, 13, loss_fn, params, workers)
        assert grads[-1] is None
        for g, w in zip(grads[:-1], whole[:-1]):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            assert loss == pytest.approx(loss_fn(x, y).item() * 13, rel=1e-5)


def test_fit_with_workers_trains_as_one_pass_does(two_threads):
    def train(workers):
        torch.manual_seed(0)
        x, y = torch.randn(40, 5), torch.randint(0, 2, (40,))
        head = torch.nn.Linear(5, 2)
        fit_loss = training.fit(Examples(x, y), lambda a, b: F.cross_entropy(head(a), b),
                                [{"params": head.parameters(), "lr": 0.05}], 3, 8, 0, workers=workers)
        return head.weight.detach(), fit_loss

    (w1, l1), (w2, l2) = train(1), train(2)
    torch.testing.assert_close(w2, w1, rtol=1e-5, atol=1e-6)
    assert l2 == pytest.approx(l1, rel=1e-5)


def test_top_features_in_threads_equal_one_thread(two_threads):
    torch.manual_seed(0)
    hidden = [torch.randn(n, 4) for n in (3, 1, 5, 2, 4, 3, 2)]

    def forward(h, mask):  # a masked mean, as the top blocks pool
        return (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    one = top_features(forward, hidden, chunk=2, workers=1)
    torch.testing.assert_close(top_features(forward, hidden, chunk=2, workers=2), one)
    torch.testing.assert_close(one, torch.stack([h.mean(0) for h in hidden]))


def test_top_features_on_a_cpu_run_at_most_cpu_chunk_rows_at_once():
    """The top blocks' activations grow with the rows of a chunk: on a CPU no call sees more than CPU_CHUNK,
    however many rows there are, with one worker or two; and every call sees a power of two rows (oneDNN keeps a
    compiled kernel per shape), the padding rows dropped from the result."""
    for count in (5 * CPU_CHUNK + 3, 3, 1, 40):
        hidden = [torch.randn(1 + i % 7, 4) for i in range(count)]
        for workers in (1, 2):
            sizes = []

            def forward(h, mask):
                sizes.append(len(h))
                return (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

            out = top_features(forward, hidden, workers=workers)
            assert max(sizes) <= CPU_CHUNK and all(s & (s - 1) == 0 for s in sizes)
            assert count <= sum(sizes) < count + max(sizes)
            torch.testing.assert_close(out, torch.stack([h.mean(0) for h in hidden]))


def test_the_frozen_pass_in_threads_equals_one_thread(enc, two_threads, monkeypatch):
    texts = ["book a flight to paris", "what is my balance", "hi", "set an alarm for seven in the morning please",
             "play some jazz", "transfer money"] * 3
    monkeypatch.setattr(enc, "batch_size", 4)  # several batches: 2 texts each in 2 threads, then 4 in one
    hidden2, pooled2, levels2 = enc.encode_split(texts, 1)
    plain2 = enc.encode(texts)
    monkeypatch.setattr(threads, "MAX_WORKERS", 1)
    hidden1, pooled1, levels1 = enc.encode_split(texts, 1)
    tol = {"rtol": 2e-2, "atol": 2e-2} if enc.frozen_dtype is not None else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(pooled2, pooled1, **tol)
    torch.testing.assert_close(levels2, levels1, **tol)
    torch.testing.assert_close(plain2, enc.encode(texts), **tol)
    assert [len(h) for h in hidden2] == [len(h) for h in hidden1]
    for a, b in zip(hidden2, hidden1):
        torch.testing.assert_close(a, b, **tol)
