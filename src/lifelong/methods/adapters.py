"""One tiny adapter per task, stored at 1 bit per weight; routed without a task id (the `lifelong` learner).

Per task: a fresh adapter in the top blocks of the frozen backbone and a classifier over that task's classes are
trained on the task's data, then frozen: the adapter is quantised and packed, the head and the task's class
prototypes (frozen-feature class means, used for routing) are kept in fp16. Nothing learned earlier changes, so
isolation is exact. At inference, routing picks the top-k tasks, their adapters run on the shared hidden states of
the frozen lower blocks, and their predictions are mixed (see routing.py).

Routing feature (`route`): `pooled` is the backbone's final frozen feature; `split` is the frozen hidden state
entering the first adapted block, mean-pooled (over tokens, or over the feature map), which the frozen pass computes
anyway. `auto` (the default) is `split` on image backbones and `pooled` on text. `confidence` defaults to 1 on text
and 0 on images. Both were chosen on Split Fashion-MNIST with EfficientNet-Lite0, on 100 images per class held out
of the training split: given the true task the adapters were right on 99.1% of held-out images, so routing was the
whole error. Cosine to the class means of the pooled 1280-d head feature routed 76.5% of them to the right task
(NCM's own weakness: 76.0% class accuracy), of the mean-pooled 192-d hidden state entering block 14 80.3%; the
adapted heads' highest logit alone routed 49.5% (a head trained on two classes and no negatives is confident on
anything), so mixing it in at weight 1 cost 3 points with pooled routing and 9 with split routing. `auto` resolves
into the config when the learner is built, so a saved model records (and keeps) the routing it was trained with.
`prototypes` > 1 keeps that many k-means centres per class instead of the class mean, for classes that are not one
blob in the routing feature (held-out Fashion-MNIST, split routing: 8 per class routed 81.4-82.9% over 3 seeds).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from .. import routing
from ..adapters import AdaptedTop, AdapterConfig
from ..data.task import Examples
from ..errors import LifelongError
from ..io import atomic_dir
from . import register
from .base import Learner, config_from_dict
from .ncm import class_means
from .training import fit


@dataclass
class AdapterTrainConfig:
    """Settings of one trained adapter and its task head (shared by `adapters` and `aper`)."""

    adapter: str = "lora"  # lora | bottleneck
    precision: str = "1bit"  # 1bit | ternary | fp16 | fp32
    rank: int = 8  # LoRA rank or bottleneck width
    alpha: float = 16.0
    targets: str = "query,value"  # LoRA target linear layers, comma-separated
    blocks: int = 2  # adapt the top N blocks (0: all)
    epochs: int = 6
    lr: float = 3e-3
    batch_size: int = 32
    seed: int = 0

    def adapter_config(self) -> AdapterConfig:
        return AdapterConfig(self.adapter, self.precision, self.rank, self.alpha, parse_targets(self.targets),
                             self.blocks).validate()


def parse_targets(targets: str) -> list[str]:
    """LoRA target layers from a comma-separated setting."""
    return [t.strip() for t in targets.split(",") if t.strip()]


@dataclass
class AdaptersConfig(AdapterTrainConfig):
    top_k: int = 2  # tasks whose adapters run per query
    temperature: float = 0.02  # routing softmax temperature (cosine scale)
    confidence: float | None = None  # weight of the adapted model's confidence (highest logit) in the mixture
    # (None: 1.0 on text, 0.0 on images; see the module docstring)
    route: str = "auto"  # routing feature: pooled | split | auto (split on image backbones, pooled on text)
    prototypes: int = 1  # routing prototypes per class: the class mean (1), or k-means centres (cosine)
    refit_head: bool = True  # retrain the task's head on the frozen, quantised adapter's features (see refit)

    def resolve(self, image: bool) -> AdaptersConfig:
        """Fill in the modality-dependent defaults (in place) and check the routing settings."""
        if self.route == "auto":
            self.route = "split" if image else "pooled"
        if self.confidence is None:
            self.confidence = 0.0 if image else 1.0
        if self.route not in ROUTES:
            raise LifelongError(f"unknown route {self.route!r}; choose {', '.join(ROUTES)} or auto")
        if self.prototypes < 1:
            raise LifelongError("prototypes (per class) must be at least 1")
        return self


ROUTES = ("pooled", "split")


def split_pooled(hidden: list[torch.Tensor]) -> torch.Tensor:
    """[n, d]: each cached hidden state mean-pooled, over its tokens ([t, d]) or its feature map ([C, H, W])."""
    return torch.stack([h.mean(0) if h.ndim == 2 else h.flatten(1).mean(1) for h in hidden])


def class_prototypes(feats: torch.Tensor, labels: torch.Tensor, classes: list[int], per_class: int = 1,
                     seed: int = 0, iters: int = 25) -> torch.Tensor:
    """[per_class * len(classes), d], class by class: the class mean, or `per_class` spherical k-means centres of
    the class's unit-normalised features (seeded k-means++ start; a class with fewer distinct examples repeats
    centres, which does not change the max-cosine routing score)."""
    if per_class == 1:
        return class_means(feats, labels, classes)
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in classes:
        x = F.normalize(feats[labels == c], dim=-1)
        picks = [int(torch.randint(len(x), (1,), generator=g))]
        while len(picks) < min(per_class, len(x)):  # k-means++: draw by squared distance to the nearest pick
            far = (1 - (x @ x[picks].T).max(1).values).clamp_min(0)
            if far.sum() <= 0:
                break
            picks.append(int(torch.multinomial(far, 1, generator=g)))
        centres = x[picks]
        for _ in range(iters):
            assign = (x @ centres.T).argmax(1)
            centres = torch.stack([x[assign == j].mean(0) if (assign == j).any() else centres[j]
                                   for j in range(len(centres))])
        out.append(centres[torch.arange(per_class) % len(centres)])
    return torch.cat(out)


def pad(hidden: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(h) for h in hidden])
    mask = (torch.arange(int(lengths.max()))[None, :] < lengths[:, None]).long()
    return pad_sequence(hidden, batch_first=True), mask


class SplitCache:
    """The frozen pass, once per input: hidden states entering the first adapted block, and the pooled feature.
    Texts (and image paths) are their own keys; image arrays are keyed by a digest of their bytes."""

    def __init__(self, backbone, split: int):
        self.backbone, self.split = backbone, split
        self.hidden: dict[str, torch.Tensor] = {}
        self.pooled: dict[str, torch.Tensor] = {}

    def __call__(self, texts) -> tuple[list[torch.Tensor], torch.Tensor]:
        if isinstance(texts, torch.Tensor) or (len(texts) and not isinstance(texts[0], str)):
            return self._by_content(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self.hidden]
        if missing:
            hidden, pooled = self.backbone.encode_split(missing, self.split)
            self.hidden.update(zip(missing, hidden))
            self.pooled.update(zip(missing, pooled))
        return [self.hidden[t] for t in texts], torch.stack([self.pooled[t] for t in texts])

    def _by_content(self, images) -> tuple[list[torch.Tensor], torch.Tensor]:
        from ..backbones.cache import _key

        keys = [_key(torch.as_tensor(x)) for x in images]
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        missing = [k for k in first if k not in self.hidden]
        if missing:
            hidden, pooled = self.backbone.encode_split([images[first[k]] for k in missing], self.split)
            self.hidden.update(zip(missing, hidden))
            self.pooled.update(zip(missing, pooled))
        return [self.hidden[k] for k in keys], torch.stack([self.pooled[k] for k in keys])

    def clear(self) -> None:
        self.hidden.clear()
        self.pooled.clear()


def adapted(top: AdaptedTop, hidden: list[torch.Tensor], which: int | str) -> torch.Tensor:
    """Pooled output of the top blocks with adapter `which` on padded cached hidden states."""
    top.set_active(which)
    h, mask = pad(hidden)
    return top(h, mask)


def new_class_offset(learner: Learner, task) -> int:
    """First global id of the task's classes; methods with one output column per class need them new and
    consecutive (class-incremental streams)."""
    if task.classes != list(range(learner.num_classes, learner.num_classes + len(task.classes))):
        raise LifelongError(f"{learner.name} needs each task to introduce new, consecutive class ids")
    return learner.num_classes


@torch.no_grad()
def top_features(forward, hidden: list[torch.Tensor], chunk: int = 256) -> torch.Tensor:
    """`forward(h, mask) -> pooled` over cached hidden states in length-sorted chunks, rows in input order."""
    order = sorted(range(len(hidden)), key=lambda i: len(hidden[i]))
    parts = [forward(*pad([hidden[i] for i in order[s : s + chunk]])) for s in range(0, len(order), chunk)]
    feats = torch.cat(parts)
    out = torch.empty_like(feats)
    out[torch.tensor(order)] = feats
    return out


def fit_top(forward, cache: SplitCache, head: nn.Linear, task, groups: list[dict], config, desc: str,
            extra=None) -> list[float]:
    """Train on a task through the frozen pass and `forward(h, mask) -> pooled`: cross-entropy over the task's own
    classes, which are the last columns of `head` (earlier columns get no gradient), plus `extra()` if given."""
    offset, n = min(task.classes), len(task.classes)

    def loss_fn(texts, labels):
        hidden, _ = cache(texts)
        loss = F.cross_entropy(head(forward(*pad(hidden)))[:, -n:], labels - offset)
        return loss + extra() if extra is not None else loss

    return fit(task.train, loss_fn, groups, config.epochs, config.batch_size, config.seed + task.index, desc=desc)


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


def train_adapter(top: AdaptedTop, cache: SplitCache, task, config, desc: str) -> tuple[dict, nn.Linear]:
    """Train a fresh adapter and a head over the task's classes; returns the packed adapter and the head."""
    head = nn.Linear(top.model_config.hidden_size, len(task.classes))
    params = top.new_task()
    top.set_active("train")
    groups = [{"params": params, "lr": config.lr}, {"params": head.parameters(), "lr": config.lr}]
    fit_top(top, cache, head, task, groups, config, desc)
    return top.freeze(), head


@register
class Adapters(Learner):
    name = "adapters"
    description = "One 1-bit (or ternary/fp16/fp32) LoRA or bottleneck adapter per task, routed without task id"
    Config = AdaptersConfig

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.config.resolve(getattr(backbone, "modality", "text") == "image")
        self.top = AdaptedTop(backbone.model, self.config.adapter_config())
        self.cache = SplitCache(backbone, self.top.split)
        self.packed: list[dict[str, torch.Tensor]] = []
        self.heads: list[nn.Linear] = []
        self.prototypes: list[torch.Tensor] = []
        self.offsets: list[int] = []  # first global class id of each task (a task's classes are contiguous)

    def route_features(self, hidden: list[torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:
        return pooled if self.config.route == "pooled" else split_pooled(hidden)

    def route_dim(self) -> int:
        """Width of the routing feature (and of each stored prototype)."""
        if self.config.route == "pooled":
            return self.backbone.dim
        if self.top.image and getattr(self.top.model_config, "bottleneck", None) == "block":  # CNN: channels in
            return next(m for m in self.top.blocks[0].modules() if isinstance(m, nn.Conv2d)).in_channels
        return self.top.model_config.hidden_size

    # -- learning -------------------------------------------------------------------------------------------
    def learn(self, task) -> None:
        new_class_offset(self, task)
        hidden, pooled = self.cache(task.train.inputs)
        packed, head = train_adapter(self.top, self.cache, task, self.config, f"adapters task {task.index}")
        if self.config.refit_head:
            self.top.set_active(len(self.heads))  # the adapter just banked, quantised as at inference
            head = refit(top_features(self.top, hidden), task.train.labels - self.num_classes, len(task.classes),
                         self.config, self.config.seed + task.index)
        protos = class_prototypes(self.route_features(hidden, pooled), task.train.labels, task.classes,
                                  self.config.prototypes, self.config.seed + task.index)
        state = {"weight": head.weight.detach(), "bias": head.bias.detach()}
        self._add_task(packed, state, protos, self.num_classes)

    def _add_task(self, packed, head_state, prototypes, offset, bank: bool = False) -> None:
        """Append a finished task; head and prototypes are rounded to fp16 now so memory matches the file."""
        if bank:
            self.top.add_packed(packed)
        self.packed.append(packed)
        w, b = head_state["weight"].half().float(), head_state["bias"].half().float()
        head = nn.Linear(w.shape[1], w.shape[0])
        head.load_state_dict({"weight": w, "bias": b})
        head.requires_grad_(False)
        self.heads.append(head)
        self.prototypes.append(prototypes.half().float())
        self.offsets.append(offset)
        self.num_classes = offset + w.shape[0]

    # -- inference ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_routed(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores over all seen classes, and the mixture weight of each task [n, T] (for routing accuracy)."""
        hidden, pooled = self.cache(list(inputs))
        n, T = len(hidden), len(self.heads)
        scores = routing.task_scores(self.route_features(hidden, pooled), self.prototypes)
        index, route = routing.top_tasks(scores, self.config.top_k)
        probs: dict[tuple[int, int], torch.Tensor] = {}
        confidence = torch.zeros_like(route)
        for t in index.unique().tolist():
            rows, slots = (index == t).nonzero(as_tuple=True)
            order = sorted(range(len(rows)), key=lambda i: len(hidden[rows[i]]))
            for s in range(0, len(order), 256):
                chunk = order[s : s + 256]
                logits = self.heads[t](adapted(self.top, [hidden[rows[i]] for i in chunk], t))
                for i, row_logits in zip(chunk, logits):
                    probs[(int(rows[i]), int(slots[i]))] = torch.softmax(row_logits, -1)
                    confidence[rows[i], slots[i]] = row_logits.max()
        weights = routing.mixture_weights(route, confidence, self.config.temperature, self.config.confidence)
        scores = torch.zeros(n, self.num_classes)
        task_weights = torch.zeros(n, T)
        for (row, slot), p in probs.items():
            t = int(index[row, slot])
            scores[row, self.offsets[t] : self.offsets[t] + len(p)] += weights[row, slot] * p
            task_weights[row, t] = weights[row, slot]
        return scores, task_weights

    def predict(self, inputs) -> torch.Tensor:
        return self.predict_routed(inputs)[0]

    @torch.no_grad()
    def confidence(self, inputs, scores) -> torch.Tensor:
        """Mixture probability of the best class times the frozen feature's cosine to the nearest known class
        prototype: a query far from every class learned is doubted even when some head is sure of it. Chosen on
        CLINC150's val split and out-of-scope val queries (BENCHMARKS.md); no setting to tune."""
        hidden, pooled = self.cache(list(inputs))
        nearest = routing.task_scores(self.route_features(hidden, pooled), self.prototypes).max(-1).values
        return scores.max(-1).values * nearest.clamp(min=0)

    # -- what is stored -------------------------------------------------------------------------------------
    def task_state(self, t: int) -> dict[str, torch.Tensor]:
        out = {f"adapter.{k}": v for k, v in self.packed[t].items()}
        out["head.weight"] = self.heads[t].weight.detach().half()
        out["head.bias"] = self.heads[t].bias.detach().half()
        out["prototypes.weight"] = self.prototypes[t].half()
        return out

    def state(self):
        return {f"{k.split('.', 1)[0]}.t{t}.{k.split('.', 1)[1]}": v for t in range(len(self.heads)) for k, v in self.task_state(t).items()}

    def load_state(self, tensors):
        raise LifelongError("adapters models load with Adapters.load(path, backbone): one file per task")

    # -- persistence: one safetensors file per task, checked before use -------------------------------------
    def save(self, path) -> Path:
        meta = {
            "method": self.name,
            "config": dataclasses.asdict(self.config),
            "backbone": self.backbone.name,
            "backbone_sha256": self.backbone.weights_hash(),
            "offsets": self.offsets,
            "files": [],
        }

        def write(tmp: Path) -> None:
            for t in range(len(self.heads)):
                name = f"task{t:03d}.safetensors"
                # no safetensors metadata: its key order varies between processes, and byte-identical files
                # for an unchanged task let a model store share them between versions (task and offset are in
                # learner.json)
                save_file({k: v.contiguous() for k, v in sorted(self.task_state(t).items())}, str(tmp / name))
                meta["files"].append({"name": name, "sha256": hashlib.sha256((tmp / name).read_bytes()).hexdigest(),
                                      "bytes": (tmp / name).stat().st_size})
            (tmp / "learner.json").write_text(json.dumps(meta, indent=2))

        return atomic_dir(path, write)

    def file_bytes(self, path) -> list[int]:
        return [(Path(path) / f"task{t:03d}.safetensors").stat().st_size for t in range(len(self.heads))]

    @classmethod
    def load(cls, path, backbone, features=None) -> Adapters:
        path = Path(path)
        try:
            meta = json.loads((path / "learner.json").read_text())
        except (OSError, ValueError) as e:
            raise LifelongError(f"{path / 'learner.json'}: cannot read ({e})") from None
        if meta.get("method") != cls.name:
            raise LifelongError(f"{path}: holds method {meta.get('method')!r}, not {cls.name!r}")
        if meta.get("backbone_sha256") != backbone.weights_hash():
            raise LifelongError(f"{path / 'learner.json'}: adapters were trained on other backbone weights "
                                f"({meta.get('backbone')!r}) than {backbone.name!r}")
        settings = {"route": "pooled", **meta["config"]}  # models saved before `route` existed routed on pooled
        learner = cls(backbone, config_from_dict(cls.Config, settings), features)
        expected = learner.top.expected()
        for entry, offset in zip(meta["files"], meta["offsets"]):
            file = path / entry["name"]
            try:
                data = file.read_bytes()
            except OSError as e:
                raise LifelongError(f"{file}: cannot read ({e.strerror})") from None
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise LifelongError(f"{file}: checksum mismatch (truncated or modified)")
            try:
                tensors = load_file(str(file))
            except (SafetensorError, ValueError) as e:
                raise LifelongError(f"{file}: not a valid safetensors file ({e})") from None
            learner._add_task(*_split_task_file(file, tensors, expected, backbone.dim, learner.route_dim(),
                                                learner.config.prototypes), offset, bank=True)
        return learner


def _split_task_file(file, tensors, expected, dim, route_dim, per_class):
    adapter = {k[len("adapter."):]: v for k, v in tensors.items() if k.startswith("adapter.")}
    for k, (shape, dtype) in expected.items():
        if k not in adapter:
            raise LifelongError(f"{file}: missing adapter tensor {k!r}")
        if tuple(adapter[k].shape) != shape or adapter[k].dtype != dtype:
            raise LifelongError(f"{file}: tensor {k!r} has shape {tuple(adapter[k].shape)} {adapter[k].dtype}, "
                                f"expected {shape} {dtype} (different adapter settings or backbone)")
    if set(adapter) != set(expected):
        raise LifelongError(f"{file}: unexpected adapter tensors {sorted(set(adapter) - set(expected))}")
    for k in ("head.weight", "head.bias", "prototypes.weight"):
        if k not in tensors:
            raise LifelongError(f"{file}: missing tensor {k!r}")
    w, p = tensors["head.weight"], tensors["prototypes.weight"]
    if (w.ndim != 2 or w.shape[1] != dim or tuple(p.shape) != (per_class * w.shape[0], route_dim)
            or tensors["head.bias"].shape != (w.shape[0],)):
        raise LifelongError(f"{file}: head/prototype shapes {tuple(w.shape)}/{tuple(p.shape)} do not fit a "
                            f"{dim}-wide backbone with {per_class} prototype(s) per class of a {route_dim}-wide "
                            "routing feature")
    head = {"weight": w.float(), "bias": tensors["head.bias"].float()}
    return adapter, head, p.float()

