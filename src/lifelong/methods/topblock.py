"""The shared machinery of every method that learns in the top blocks of a frozen backbone (`adapters`, `aper`,
`slca`, `inflora`, `ekpc`): their settings (`TopBlockSettings`, `AdapterSettings`), the frozen pass cached once per
input (`SplitCache`), training through it (`fit_top`, `train_adapter`), pooled features of the top blocks
(`top_features`, `adapted`) and the head refit. A method file imports these from here, never from a sibling method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from .. import distributed, threads
from ..adapters import AdaptedTop, AdapterConfig
from ..backbones.cache import input_key, missing_keys
from ..data.task import Examples
from ..devices import training_pass
from .settings import AdapterKind, Count, Positive, PositiveFloat, Precision
from .training import fit


@dataclass
class TopBlockSettings:
    """Where a top-block method learns (`slca` trains these blocks, the others adapt them)."""

    blocks: Count = 2  # the top N blocks of the backbone (0: all)


@dataclass
class AdapterSettings(TopBlockSettings):
    """The adapter in those blocks: the one home of these settings, for every method that injects one. A method
    that fixes one of them declares it a `ClassVar` (InfLoRA: `adapter = "lora"`), which makes it no setting: it can
    be neither passed with --set nor saved."""

    adapter: AdapterKind = "lora"  # a registered kind: lora | bottleneck
    precision: Precision = "1bit"  # 1bit | ternary | fp16 | fp32
    rank: Positive = 8  # LoRA rank or bottleneck width
    alpha: PositiveFloat = 16.0  # LoRA: the update is (alpha / rank) * B A
    targets: str = "query,value"  # LoRA target layers, comma-separated

    def adapter_config(self) -> AdapterConfig:
        return AdapterConfig(self.adapter, self.precision, self.rank, self.alpha, parse_targets(self.targets),
                             self.blocks).validate()


@dataclass
class AdapterTrainConfig(AdapterSettings):
    """Settings of one trained adapter and its task head (shared by `adapters` and `aper`)."""

    epochs: Positive = 6
    lr: PositiveFloat = 3e-3
    batch_size: Positive = 32
    seed: int = 0


def parse_targets(targets: str) -> list[str]:
    """LoRA target layers from a comma-separated setting."""
    return [t.strip() for t in targets.split(",") if t.strip()]


def class_features(pooled: torch.Tensor, levels: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """The class model's input: the pooled final feature and every block's pooled output (`encode_split`), each
    unit-normalised so that none dominates by scale. Depth matters when tasks share a domain: on CLINC150's
    random split a shared covariance over all six MiniLM layers routes better than over the top one or two
    (BENCHMARKS.md, issue 11)."""
    parts = [pooled, *torch.split(levels, dims, dim=1)]
    return torch.cat([F.normalize(p, dim=-1) for p in parts], dim=1)


def pad(hidden: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(h) for h in hidden], device=hidden[0].device)
    mask = (torch.arange(int(lengths.max()), device=lengths.device)[None, :] < lengths[:, None]).long()
    return pad_sequence(hidden, batch_first=True), mask


class SplitCache:
    """The frozen pass, once per input: hidden states entering the first adapted block, the pooled feature and
    the pooled block outputs. Texts (and image paths) are their own keys; image arrays are keyed by a digest of
    their bytes."""

    def __init__(self, backbone, split: int):
        self.backbone, self.split = backbone, split
        self.hidden: dict[str, torch.Tensor] = {}
        self.pooled: dict[str, torch.Tensor] = {}
        self.levels: dict[str, torch.Tensor] = {}
        self.outputs: dict[tuple[str, int], torch.Tensor] = {}  # see memo

    def __call__(self, inputs) -> tuple[list[torch.Tensor], torch.Tensor]:
        keys = self.keys(inputs, whole=True)
        return [self.hidden[k] for k in keys], torch.stack([self.pooled[k] for k in keys])

    def class_input(self, inputs) -> torch.Tensor:
        """`class_features` of the inputs."""
        keys = self.ensure(inputs, whole=True)
        return class_features(torch.stack([self.pooled[k] for k in keys]),
                              torch.stack([self.levels[k] for k in keys]), self.backbone.level_dims)

    @staticmethod
    def key_list(inputs) -> list[str]:
        if isinstance(inputs, torch.Tensor) or (len(inputs) and not isinstance(inputs[0], str)):
            return [input_key(torch.as_tensor(x)) for x in inputs]
        return list(inputs)

    def keys(self, inputs, whole: bool = False) -> list[str]:
        """The inputs' keys, after one frozen pass over those not cached yet: lacking hidden states, or with
        `whole` also those whose pooled outputs were `release`d (a released input keeps its hidden states)."""
        keys = self.key_list(inputs)
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        missing = missing_keys(keys, self.pooled if whole else self.hidden)
        if missing:
            batch = [inputs[first[k]] for k in missing]
            hidden, pooled, levels = self._encode(batch)
            kept = self.hidden if distributed.world() == 1 else {}  # see `release`
            self.hidden.update((k, h) for k, h in zip(missing, hidden) if k not in kept)
            self.pooled.update(zip(missing, pooled))
            self.levels.update(zip(missing, levels))
        return keys

    def lazy_keys(self, inputs) -> list[str]:
        """The inputs' keys for a `memo`, whose `compute` then encodes (`ensure`) only the rows it lacks. Alone,
        nothing is encoded now; with several processes the shared pass runs now, for every input, because it is a
        collective call that every rank must make alike, and memos may differ between ranks."""
        return self.keys(inputs) if distributed.world() > 1 else self.key_list(inputs)

    def ensure(self, inputs, whole: bool = False) -> list[str]:
        """`keys` inside a memo's `compute`: encodes what is missing when alone; with several processes
        `lazy_keys` encoded it already, and a collective call here (made by the ranks whose memo lacks rows) would
        wait for the others forever."""
        return self.keys(inputs, whole) if distributed.world() == 1 else self.key_list(inputs)

    def release(self, keys: list[str]) -> None:
        """Forget the pooled outputs of these inputs and keep their hidden states, for a method that has memoised
        all it derives from the pooled outputs (`adapters`' class feature). Why: the evaluation keeps every seen
        test input's hidden states for the tasks still to come, and every block's pooled outputs would add more
        than half as much again (BENCHMARKS.md, issue 12). An input asked for whole again is encoded again, its
        hidden states kept as they were. Alone only: with several processes `lazy_keys` must find the same inputs
        missing on every rank."""
        if distributed.world() > 1:
            return
        for k in keys:
            self.pooled.pop(k, None)
            self.levels.pop(k, None)

    def _encode(self, batch: list) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """`encode_split` of the batch; with several processes each embeds its share and every rank receives every
        row (hidden states of different lengths through `gather_list`, bit for bit), as `FeatureCache` does."""
        if distributed.world() == 1:
            return self.backbone.encode_split(batch, self.split)
        start, stop = distributed.share(len(batch))
        if stop > start:
            hidden, pooled, levels = self.backbone.encode_split(batch[start:stop], self.split)
        else:
            hidden, pooled = [], torch.empty(0, self.backbone.dim)
            levels = torch.empty(0, sum(self.backbone.level_dims))
        return (distributed.gather_list(hidden, len(batch), device=getattr(self.backbone, "device", None)),
                distributed.gather_rows(pooled, len(batch)),
                distributed.gather_rows(levels, len(batch)))

    def clear(self) -> None:
        self.hidden.clear()
        self.pooled.clear()
        self.levels.clear()
        self.outputs.clear()

    def memo_rows(self, keys: list[str]) -> dict[int, tuple[list[str], torch.Tensor]]:
        """tag -> (keys, rows) of the memo's rows for these keys (for a model store to keep)."""
        wanted, out = set(keys), {}
        for (k, tag), v in self.outputs.items():
            if k in wanted:
                out.setdefault(tag, ([], []))
                out[tag][0].append(k)
                out[tag][1].append(v)
        return {tag: (ks, torch.stack(vs)) for tag, (ks, vs) in out.items()}

    def memo(self, keys: list[str], tag: int, compute) -> torch.Tensor:
        """Rows of `compute(indices)` kept per (key, tag): the output of a frozen module (a finished task's adapter
        and head) on an input never changes, so scoring the same inputs again after each new task costs nothing
        for the tasks scored before."""
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if (k, tag) not in self.outputs:
                first.setdefault(k, i)
        missing = list(first.values())
        if missing:
            self.outputs.update(zip(((keys[i], tag) for i in missing), compute(missing)))
        return torch.stack([self.outputs[(k, tag)] for k in keys])

    def drop(self, inputs) -> None:
        """Forget these inputs (a learned task's training data, not scored again): memory then holds the hidden
        states of the inputs still to be scored, not of every training example seen."""
        gone = set(self.key_list(inputs))
        for store in (self.hidden, self.pooled, self.levels):
            for k in gone:
                store.pop(k, None)
        self.outputs = {kt: v for kt, v in self.outputs.items() if kt[0] not in gone}


def adapted(top: AdaptedTop, hidden: list[torch.Tensor], which: int | str) -> torch.Tensor:
    """Pooled output of the top blocks with adapter `which` on padded cached hidden states."""
    top.set_active(which)
    h, mask = pad(hidden)
    return top(h, mask)


# Rows per chunk of the top blocks on a CPU: the frozen pass's batch per worker. The feed-forward layer holds 4 x
# the width per token, and the head refit's chunks of 188 texts (1,500 over 2 workers x 4) were a whole CLINC150
# run's memory peak; chunks of 64 held about half as much and ran a fifth to a quarter faster, with one thread or
# two (BENCHMARKS.md, issue 12).
CPU_CHUNK = 64


def _rows_to_power_of_two(h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The padded batch with copies of its first row appended up to a power of two rows (the caller drops their
    outputs). Why: oneDNN, which runs torch's matrix products on a CPU, compiles a kernel for each shape it meets
    and keeps the last 1,024 with their buffers. Routed subsets of every size gave the top blocks every row count
    times every token count: hundreds of shapes, each compiled and kept (BENCHMARKS.md, issue 12). Copies, not
    zeros: an all-masked row would compute NaNs."""
    n = len(h)
    rows = 1 << (n - 1).bit_length()
    if rows == n:
        return h, mask
    return torch.cat([h, h[:1].expand(rows - n, *h.shape[1:])]), torch.cat([mask, mask[:1].expand(rows - n, -1)])


@torch.no_grad()
def top_features(forward, hidden: list[torch.Tensor], chunk: int | None = None, shared: bool = False,
                 workers: int | None = None) -> torch.Tensor:
    """`forward(h, mask) -> pooled` over cached hidden states in length-sorted chunks, rows in input order.
    `shared`: the same call on every rank (not inside `distributed.alone`), each computing its share of the rows
    and all receiving every row. On a CPU `workers` chunks (default `threads.workers`) run at once in threads,
    so `forward` must keep no state between calls (else pass 1).

    Chunks of at most `chunk` rows: by default 256 on an accelerator, 64 on a CPU (`CPU_CHUNK`). On a CPU every
    chunk is a power of two rows, the last one padded (`_rows_to_power_of_two`), so the blocks meet few shapes."""
    if shared and distributed.world() > 1:
        start, stop = distributed.share(len(hidden))
        part = top_features(forward, hidden[start:stop], chunk) if stop > start else None
        width, ranks = distributed.all_sum(torch.tensor([part.shape[1] if part is not None else 0,
                                                         int(part is not None)])).tolist()
        part = part if part is not None else torch.empty(0, width // ranks)
        return distributed.gather_rows(part, len(hidden))
    order = sorted(range(len(hidden)), key=lambda i: len(hidden[i]))
    device = hidden[0].device if hidden else None
    workers = threads.workers(device) if workers is None else workers
    cpu = device is None or device.type == "cpu"
    if chunk is None:
        chunk = CPU_CHUNK if cpu else 256
    if workers > 1:  # chunks of similar lengths, several per worker: a pool balances them as they finish
        chunk = min(chunk, max(32, -(-len(order) // (4 * workers))))
    if cpu:
        chunk = 1 << (chunk.bit_length() - 1)
    chunks = [order[s : s + chunk] for s in range(0, len(order), chunk)]

    def one(rows: list[int]) -> torch.Tensor:
        h, mask = pad([hidden[i] for i in rows])
        return forward(*_rows_to_power_of_two(h, mask))[: len(rows)] if cpu else forward(h, mask)

    feats = torch.cat(threads.run(one, chunks, workers))
    out = torch.empty_like(feats)
    out[torch.tensor(order)] = feats
    return out


def fit_top(forward, cache: SplitCache, head: nn.Linear, task, groups: list[dict], config, desc: str,
            extra=None, after_epoch=None) -> list[float]:
    """Train on a task through the frozen pass and `forward(h, mask) -> pooled`: cross-entropy over the task's own
    classes, which are the last columns of `head` (earlier columns get no gradient), plus `extra()` if given. The
    top blocks compute in the backbone's `train_dtype` (bf16 autocast only when asked for: devices.train_dtype)."""
    offset, n = min(task.classes), len(task.classes)

    def loss_fn(texts, labels):
        hidden, _ = cache(texts)
        with training_pass(cache.backbone):
            pooled = forward(*pad(hidden)).float()
        loss = F.cross_entropy(head(pooled)[:, -n:], labels - offset)
        return loss + extra() if extra is not None else loss

    hidden, _ = cache(task.train.inputs)  # the frozen pass now, not inside the slices' threads
    lengths = None
    if getattr(cache.backbone, "modality", "text") == "text":  # batches of similar length pad little (training.py)
        lengths = [len(h) for h in hidden]
    return fit(task.train, loss_fn, groups, config.epochs, config.batch_size, config.seed + task.index, desc=desc,
               lengths=lengths, after_epoch=after_epoch, workers=threads.workers(hidden[0].device if hidden else None))


def refit(features: torch.Tensor, labels: torch.Tensor, classes: int, config, seed: int) -> nn.Linear:
    """A fresh head over `classes` outputs (labels 0 .. classes-1) trained on fixed features, with the adapter's
    epochs, lr and batch. The width comes from the task, like the head trained with the adapter, not from the labels.

    Why: the head trained together with the adapter chased a moving target. At 1 bit, latent weights crossing the
    matrix mean flip quantised weights until the last step, so the final head fits an adapter that no longer exists
    and its logit scale (the mixture's confidence term) varies from task to task and from seed to seed. Refitting on
    the frozen adapter's features costs one pass of the top blocks over the task's data. On CLINC150, 1-bit runs
    went from 0.948 to 0.951 (seed 0) and 0.953 (seed 1); on fixed adapters it changed val accuracy by less than
    0.001 for 1-bit and fp32: it removes spread between runs more than it adds accuracy (BENCHMARKS.md)."""
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(features.shape[1], classes)
    # nn.Linear's initialisation, redrawn from the seeded generator (constructing it also draws from the global
    # stream, which the measured runs in BENCHMARKS.md include)
    with torch.no_grad():
        bound = 1 / features.shape[1] ** 0.5
        head.weight.uniform_(-bound, bound, generator=g)
        head.bias.uniform_(-bound, bound, generator=g)
    fit(Examples(features, labels), lambda x, y: F.cross_entropy(head(x), y), [{"params": head.parameters(),
        "lr": config.lr}], config.epochs, config.batch_size, seed, desc="refit head")
    return head


class BestOnHeldOut:
    """Epochs chosen on held-out data of the task: after each epoch the adapter (quantised as at inference: the
    training forward already quantises) and the head score the held-out examples; training stops once `patience`
    epochs in a row bring no better score, and the best epoch's weights come back. The score is held-out hits, then
    cross-entropy to break ties (hits saturate early on easy tasks, where the loss still tells overfitting apart).

    Why: how many epochs a task needs depends on its data (a fixed count is either fitted to one benchmark or
    wasted time on the others), and the held-out examples that choose it are the task's own, already kept out of
    adapter and head for choosing the mixture (`held_out`)."""

    def __init__(self, forward, params: list[torch.Tensor], head: nn.Linear, hidden: list[torch.Tensor],
                 labels: torch.Tensor, patience: int):
        self.forward, self.head, self.hidden, self.labels, self.patience = forward, head, hidden, labels, patience
        self.params = [*params, *head.parameters()]
        self.best: tuple[int, float] | None = None
        self.best_epoch = -1
        self.saved: list[torch.Tensor] = []

    @torch.no_grad()
    def __call__(self, epoch: int) -> bool:
        score = self._score() if distributed.world() > 1 else None
        if score is None:
            logits = self.head(top_features(self.forward, self.hidden))
            score = (int((logits.argmax(1) == self.labels).sum()), -float(F.cross_entropy(logits, self.labels)))
        if self.best is None or score > self.best:
            self.best, self.best_epoch = score, epoch
            self.saved = [p.detach().clone() for p in self.params]
        return epoch - self.best_epoch >= self.patience

    def _score(self) -> tuple[int, float]:
        """The score with several processes: each rank scores its share of the held-out examples and hits and
        summed cross-entropy are all-reduced, so every rank sees the same score, stops at the same epoch and keeps
        the same weights."""
        start, stop = distributed.share(len(self.hidden))
        local = torch.zeros(2, dtype=torch.float64)
        if stop > start:
            logits = self.head(top_features(self.forward, self.hidden[start:stop]))
            labels = self.labels[start:stop]
            local[0] = float((logits.argmax(1) == labels).sum())
            local[1] = float(F.cross_entropy(logits, labels, reduction="sum"))
        hits, loss = distributed.all_sum(local).tolist()
        return int(hits), -loss / len(self.hidden)

    @torch.no_grad()
    def restore(self) -> None:
        for p, v in zip(self.params, self.saved):
            p.copy_(v)


def train_adapter(top: AdaptedTop, cache: SplitCache, task, config, desc: str, held: Examples | None = None,
                  patience: int = 0) -> tuple[dict, nn.Linear, int]:
    """Train a fresh adapter and a head over the task's classes; returns the packed adapter, the head and the
    epochs trained. With held-out examples and `patience` > 0, the epochs are chosen on them (`BestOnHeldOut`)."""
    head = nn.Linear(top.model_config.hidden_size, len(task.classes))
    params = top.new_task()
    top.set_active("train")
    groups = [{"params": params, "lr": config.lr}, {"params": head.parameters(), "lr": config.lr}]
    stop = None
    if held is not None and len(held) and patience:
        stop = BestOnHeldOut(top, params, head, cache(held.inputs)[0], held.labels - min(task.classes), patience)
    history = fit_top(top, cache, head, task, groups, config, desc, after_epoch=stop)
    if stop is None:
        return top.freeze(), head, len(history)
    stop.restore()
    return top.freeze(), head, stop.best_epoch + 1
