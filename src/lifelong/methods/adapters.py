"""One tiny adapter per task, stored at 1 bit per weight; routed without a task id (the `lifelong` learner).

Per task: a fresh adapter in the top blocks of the frozen backbone and a classifier over that task's classes are
trained on the task's data, then frozen: the adapter is quantised and packed, the head kept in int8 rows. Nothing
learned earlier changes, so isolation is exact. Beside them, one global class model over every seen class (class
means, each class's own top within-class directions and a shared covariance, methods/gaussian.py) grows with each
task, exactly as if fitted on all tasks at once. At inference its class posteriors pick the top-k tasks, those
tasks' adapters run on the shared hidden states of the frozen lower blocks, and global posteriors and adapted heads
are mixed (routing.py).

The class model reads the frozen pass's pooled final feature and every block's pooled output (`class_features`),
which the pass computes anyway: when tasks share a domain, the lower blocks tell related classes apart where the
final feature blurs them (measured in methods/gaussian.py and BENCHMARKS.md, issue 11). What the mixture needs is
chosen on held-out data of each task as it is learned (the task's val split, else a tenth of its training data held
out of adapter and head), summed over tasks: the class model's shrinkage and the weight of each class's own
directions by held-out log-likelihood (how well it models unseen examples of its classes; hits barely move with
them, because the newest task's held-out data competes only with the classes seen so far), then the posterior
temperature and how much the adapted heads count within a task by held-out hits. No example is kept and no constant
is fitted to a benchmark."""

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

from .. import routing
from ..adapters import AdaptedTop
from ..data.task import Examples
from ..errors import LifelongError
from ..io import atomic_dir
from . import register
from .base import Learner, held_out
from .gaussian import ALPHAS, SHRINKAGES, GaussianClassModel, dequantize_rows, quantize_rows
from .settings import Count, Positive, config_from_dict
from .topblock import (
    AdapterTrainConfig,
    SplitCache,
    refit,
    top_features,
    train_adapter,
)


@dataclass
class AdaptersConfig(AdapterTrainConfig):
    top_k: Positive = 2  # tasks whose adapters run per query
    max_dim: Count = 768  # width of the class model's feature (wider ones are randomly projected; bounds its bytes)
    class_rank: Count = 2  # each class's own top within-class directions in the class model (4-bit; 0: LDA)
    refit_head: bool = True  # retrain the task's head on the frozen, quantised adapter's features (see topblock.refit)
    patience: Count = 1  # epochs (up to `epochs`) chosen on held-out data: stop after this many without gain (0: all)


CLASS_FEATURE = -1  # the memo's tag of the class model's feature (tasks' adapted outputs are tagged 0, 1, ...)
FORMAT = 4  # learner.json format: 4 = class directions and int8 heads (3: every block's pooled output; 2: the top
# two; 1: prototypes)


@register
class Adapters(Learner):
    name = "adapters"
    shares_processes = True  # SplitCache shares the frozen pass; fit shares the training
    description = "One 1-bit (or ternary/fp16/fp32) LoRA or bottleneck adapter per task, routed without task id"
    Config = AdaptersConfig

    def __init__(self, backbone, config=None, features=None):
        super().__init__(backbone, config, features)
        self.top = AdaptedTop(backbone.model, self.config.adapter_config())
        self.cache = SplitCache(backbone, self.top.split)
        self.classes = GaussianClassModel(backbone.dim + sum(backbone.level_dims), self.config.max_dim,
                                          self.config.seed, self.config.class_rank)
        self.packed: list[dict[str, torch.Tensor]] = []
        self.heads: list[nn.Linear] = []
        self.head_files: list[dict[str, torch.Tensor]] = []  # each head as stored (see `_add_task`)
        self.offsets: list[int] = []  # first global class id of each task (a task's classes are contiguous)
        self.task_of_class = torch.zeros(0, dtype=torch.long)
        # held-out log-likelihood per (alpha, shrinkage) of the class model, and held-out hits per (alpha, shrinkage,
        # temperature, beta), summed over tasks: what the settings are chosen by (see `mixture`)
        self.loglik = torch.zeros(len(ALPHAS), len(SHRINKAGES), dtype=torch.float64)
        if not self.classes.rank:  # alpha has no effect without directions: never chosen over alpha = 0
            self.loglik[1:] = float("-inf")
        self.hits = torch.zeros(len(ALPHAS), len(SHRINKAGES), len(routing.TEMPERATURES), len(routing.BETAS),
                                dtype=torch.float64)
        self.epochs_trained: list[int] = []  # per task, as chosen on its held-out data (see topblock.BestOnHeldOut)

    @property
    def mixture(self) -> tuple[float, float, float, float]:
        """(alpha, shrinkage) of the class model with the highest held-out log-likelihood, then (temperature, beta)
        with the most held-out hits under it (the first, on a tie: with no held-out data, LDA at the strongest
        shrinkage)."""
        a, s = (int(i) for i in torch.unravel_index(self.loglik.argmax(), self.loglik.shape))
        t, b = (int(i) for i in torch.unravel_index(self.hits[a, s].argmax(), self.hits[a, s].shape))
        return ALPHAS[a], SHRINKAGES[s], routing.TEMPERATURES[t], routing.BETAS[b]

    def chosen(self) -> dict:
        return {**dict(zip(("alpha", "shrinkage", "temperature", "beta"), self.mixture)),
                "epochs": list(self.epochs_trained)}

    # -- learning -------------------------------------------------------------------------------------------
    def _learn(self, task) -> None:
        offset = self.num_classes - len(task.classes)
        train, held = held_out(task)
        task = dataclasses.replace(task, train=train)
        hidden, _ = self.cache(train.inputs)
        packed, head, epochs = train_adapter(self.top, self.cache, task, self.config, f"adapters task {task.index}",
                                             held, self.config.patience)
        self.epochs_trained.append(epochs)
        if self.config.refit_head:
            self.top.set_active(len(self.heads))  # the adapter just banked, quantised as at inference
            head = refit(top_features(self.top, hidden, shared=True), train.labels - offset, len(task.classes),
                         self.config, self.config.seed + task.index)
        stats = self.classes.task_statistics(self.cache.class_input(train.inputs), train.labels, task.classes)
        weight, scale = quantize_rows(head.weight.detach())
        self._add_task(packed, {"weight": weight, "scale": scale, "bias": head.bias.detach().half()}, offset)
        self.classes.add(*stats)
        del stats  # a task's per-class second moments: not held while the held-out data is scored
        self._count_hits(held)
        self.cache.drop(list(train.inputs) + list(held.inputs))

    def _add_task(self, packed, head_state, offset, bank: bool = False) -> None:
        """Append a finished task; its head as stored (int8 rows with a scale each, fp16 bias) is kept beside the
        layer computed from it, so memory matches the file and saving it again writes the same bytes."""
        if bank:
            self.top.add_packed(packed)
        self.packed.append(packed)
        self.head_files.append(head_state)
        w, b = dequantize_rows(head_state["weight"], head_state["scale"]).float(), head_state["bias"].float()
        head = nn.Linear(w.shape[1], w.shape[0])
        head.load_state_dict({"weight": w, "bias": b})
        head.requires_grad_(False)
        self.heads.append(head)
        self.offsets.append(offset)
        self.task_of_class = torch.cat([self.task_of_class, torch.full((w.shape[0],), len(self.heads) - 1)])

    @torch.no_grad()
    def _count_hits(self, held: Examples) -> None:
        """Score the task's held-out examples under every candidate setting, against every class seen so far: per
        class-model setting, every temperature and beta at once, in chunks of rows (`_hit_chunks`)."""
        if len(held) == 0:
            return
        x = self._class_feature(held.inputs)
        raws = {}
        for a, s in ((a, s) for a in range(len(ALPHAS)) for s in range(len(SHRINKAGES))
                     if ALPHAS[a] == 0 or self.classes.rank):
            raw = self.classes.scores(x, SHRINKAGES[s], ALPHAS[a])  # each setting's scores, once
            self.loglik[a, s] += self.classes.log_density(x, held.labels, SHRINKAGES[s], ALPHAS[a], raw)
            raws[a, s] = raw.float()  # what routing reads (`_route`): half the memory of float64
        temperatures = torch.tensor(routing.TEMPERATURES)[:, None, None]
        chunks = self._hit_chunks(len(held))
        # each task's head runs only on the rows some candidate setting routes to it; the routings are kept (task
        # posteriors and masks: [temperature, row, task], small beside the class posteriors, which are recomputed)
        union = torch.zeros(len(held), len(self.heads), dtype=torch.bool)
        routes = {}
        for (a, s), raw in raws.items():
            for c, rows in enumerate(chunks):
                _, task_post, routed = self._route(raw[rows], temperatures)
                routes[a, s, c] = task_post, routed
                union[rows] |= routed.any(0)
        logits = self._head_logits(held.inputs, union)
        log_a = routing.within_task(logits, self.task_of_class, len(self.heads))  # the same under every setting
        betas = torch.tensor(routing.BETAS)[:, None, None, None]
        for (a, s), raw in raws.items():
            for c, rows in enumerate(chunks):
                task_post, routed = routes.pop((a, s, c))
                scores = routing.mix(self._log_posterior(raw[rows], temperatures), task_post, logits[rows],
                                     self.task_of_class, routed, betas, log_a[rows])  # [beta, temperature, row, class]
                self.hits[a, s] += (scores.argmax(-1) == held.labels[rows]).sum(-1).T.double()

    def _hit_chunks(self, n: int) -> list[slice]:
        """Row ranges whose scores under every temperature and beta hold at most 2^20 numbers (4 MB a tensor),
        whatever the number of held-out rows and classes."""
        size = max(1, 2**20 // (len(routing.TEMPERATURES) * len(routing.BETAS) * max(1, self.num_classes)))
        return [slice(start, min(start + size, n)) for start in range(0, n, size)]

    # -- inference ------------------------------------------------------------------------------------------
    def _class_feature(self, inputs) -> torch.Tensor:
        """The class model's feature of each input (`GaussianClassModel.transform` of `class_features`), once per
        input: it is fixed (the projection never changes), and the evaluation scores every seen test input again
        after each task."""
        inputs = list(inputs)
        keys = self.cache.lazy_keys(inputs)
        out = self.cache.memo(keys, CLASS_FEATURE, lambda rows: self.classes.transform(
            self.cache.class_input([inputs[i] for i in rows])))
        self.cache.release(keys)  # what the feature came from is not read again
        return out

    @staticmethod
    def _log_posterior(raw: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
        """Class log-posteriors of raw class scores at a temperature, or at several ([K, 1, 1]: then [K, n, C])."""
        return F.log_softmax(raw.float() / temperature, dim=-1)

    def _route(self, raw: torch.Tensor, temperature: float | torch.Tensor):
        """(class log-posteriors, task log-posteriors, routed tasks) of raw class scores at a temperature, or at
        several ([K, 1, 1]: then each output has a leading dimension K)."""
        log_post = self._log_posterior(raw, temperature)
        task_post = routing.task_log_posterior(log_post, self.task_of_class, len(self.heads))
        return log_post, task_post, routing.routed_mask(task_post, self.config.top_k)

    def _head_logits(self, inputs, routed: torch.Tensor) -> torch.Tensor:
        """[n, C]: each routed task's adapted head logits in its columns (0 elsewhere), adapters run per task on
        its routed rows in length-sorted chunks, each (input, task) once (`SplitCache.memo`)."""
        out = torch.zeros(len(inputs), self.num_classes)
        tasks = routed.any(0).nonzero().flatten().tolist()
        # one frozen pass over every row that some routed task has not scored yet, not a small one per task: rows
        # the memo scored (a store's held-out cache keeps no hidden states) are newly routed to tasks in many parts
        keys = self.cache.key_list(inputs)
        lacking = sorted({i for t in tasks for i in routed[:, t].nonzero().flatten().tolist()
                          if (keys[i], t) not in self.cache.outputs})
        if lacking:
            self.cache.ensure([inputs[i] for i in lacking])
        for t in tasks:
            rows = routed[:, t].nonzero().flatten()
            out[rows, self.offsets[t] : self.offsets[t] + self.heads[t].out_features] = self._task_logits(
                [inputs[i] for i in rows.tolist()], t)
        return out

    def _task_logits(self, inputs, t: int) -> torch.Tensor:
        def compute(rows: list[int]) -> torch.Tensor:
            keys = self.cache.ensure([inputs[i] for i in rows])  # the frozen pass of these rows only
            self.top.set_active(t)
            return self.heads[t](top_features(self.top, [self.cache.hidden[k] for k in keys]))

        return self.cache.memo(self.cache.lazy_keys(inputs), t, compute)

    @torch.no_grad()
    def predict_routed(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities over all seen classes (zero outside the routed tasks), and each task's log-posterior
        under the class model [n, T] (for routing accuracy; in log space, where a sharp temperature cannot
        flatten the runners-up to a tie at zero)."""
        inputs = list(inputs)
        alpha, shrink, temperature, beta = self.mixture
        log_post, task_post, routed = self._route(self.classes.scores(self._class_feature(inputs), shrink, alpha),
                                                  temperature)
        # the top task's adapter first; a runner-up's only where it can matter (routing.needed)
        first = routing.routed_mask(task_post, 1)
        first_scores = routing.mix(log_post, task_post, self._head_logits(inputs, first), self.task_of_class,
                                   first, beta)
        routed = routing.needed(first_scores, task_post, routed, first)
        logits = self._head_logits(inputs, routed)  # the top task's logits come from the memo
        scores = routing.mix(log_post, task_post, logits, self.task_of_class, routed, beta)
        return torch.softmax(scores, dim=1), task_post

    def predict(self, inputs) -> torch.Tensor:
        return self.predict_routed(inputs)[0]

    @torch.no_grad()
    def predict_in_task(self, inputs, task: int, classes: list[int]) -> torch.Tensor:
        return self._task_logits(list(inputs), task)

    @torch.no_grad()
    def confidence(self, inputs, scores) -> torch.Tensor:
        """Mixture probability of the best class times the frozen feature's cosine to the nearest class mean: a
        query far from every class learned is doubted even when some head is sure of it. Chosen on CLINC150's
        val split and out-of-scope val queries (BENCHMARKS.md); no setting to tune."""
        cosine = self.classes.nearest_cosine(self._class_feature(inputs)).float().clamp(min=0)
        return scores.max(-1).values * cosine

    def memo_state(self, inputs) -> dict[str, tuple[list[str], torch.Tensor]]:
        """Each input's class feature and every finished task's head logits on it (see `SplitCache.memo`)."""
        return {str(tag): v for tag, v in self.cache.memo_rows(self.cache.key_list(list(inputs))).items()}

    def load_memo(self, memo: dict[str, tuple[list[str], torch.Tensor]]) -> None:
        """Rows saved by this version (or for its tasks, by its parent's): tags of tasks it does not hold, and rows
        of another shape, are ignored."""
        for tag, (keys, rows) in memo.items():
            t = int(tag) if tag.lstrip("-").isdigit() else None
            width = self.classes.dim if t == CLASS_FEATURE else (
                self.heads[t].out_features if t is not None and 0 <= t < len(self.heads) else None)
            if width is None or rows.ndim != 2 or rows.shape[1] != width or len(rows) != len(keys):
                continue
            self.cache.outputs.update(zip(((k, t) for k in keys), rows))

    # -- what is stored -------------------------------------------------------------------------------------
    def task_state(self, t: int) -> dict[str, torch.Tensor]:
        out = {f"adapter.{k}": v for k, v in self.packed[t].items()}
        out.update({f"head.{k}": v for k, v in self.head_files[t].items()})
        out.update(self.classes.class_state(self.offsets[t], self.offsets[t] + self.heads[t].out_features))
        return out

    def shared_state(self) -> dict[str, torch.Tensor]:
        return {**self.classes.shared_state(), "shared.held_out_hits": self.hits.float(),
                "shared.held_out_loglik": self.loglik}

    def state(self):
        per_task = {f"{k.split('.', 1)[0]}.t{t}.{k.split('.', 1)[1]}": v
                    for t in range(len(self.heads)) for k, v in self.task_state(t).items()}
        return {**per_task, **self.shared_state()}

    def load_state(self, tensors):
        raise LifelongError("adapters models load with Adapters.load(path, backbone): one file per task")

    # -- persistence: one safetensors file per task and one shared file, checked before use -----------------
    def save(self, path, extra: dict | None = None) -> Path:
        meta = {
            **self.meta(extra),
            "format": FORMAT,
            "backbone_sha256": self.backbone.weights_hash(),
            "offsets": self.offsets,
            "epochs_trained": self.epochs_trained,
            "files": [],
        }

        def write(tmp: Path) -> None:
            def put(name: str, tensors: dict[str, torch.Tensor]) -> dict:
                # no safetensors metadata: its key order varies between processes, and byte-identical files
                # for an unchanged task let a model store share them between versions (task and offset are in
                # learner.json)
                save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(tmp / name))
                data = (tmp / name).read_bytes()
                return {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

            meta["files"] = [put(f"task{t:03d}.safetensors", self.task_state(t)) for t in range(len(self.heads))]
            meta["shared"] = put("shared.safetensors", self.shared_state())
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
        if meta.get("format") != FORMAT:
            raise LifelongError(f"{path}: saved by an earlier lifelong (adapters format {meta.get('format', 1)}, "
                                f"this version reads {FORMAT}); learn it again with this version")
        if meta.get("backbone_sha256") != backbone.weights_hash():
            raise LifelongError(f"{path / 'learner.json'}: adapters were trained on other backbone weights "
                                f"({meta.get('backbone')!r}) than {backbone.name!r}")
        learner = cls(backbone, config_from_dict(cls.Config, meta["config"]), features)
        shared = _read_checked(path, meta["shared"])
        try:
            learner.classes.load_shared(shared)
            learner.hits = shared["shared.held_out_hits"].double().reshape(learner.hits.shape)
            learner.loglik = shared["shared.held_out_loglik"].double().reshape(learner.loglik.shape)
        except (KeyError, ValueError, RuntimeError) as e:
            raise LifelongError(f"{path / meta['shared']['name']}: unexpected contents ({e})") from None
        expected = learner.top.expected()
        for entry, offset in zip(meta["files"], meta["offsets"]):
            if offset != len(learner.task_of_class):
                raise LifelongError(f"{path / 'learner.json'}: task offsets {meta['offsets']} do not follow the "
                                    "tasks' class counts")
            tensors = _read_checked(path, entry)
            adapter, head = _split_task_file(path / entry["name"], tensors, expected, backbone.dim,
                                             learner.classes)
            learner._add_task(adapter, head, offset, bank=True)
            learner.classes.load_classes(tensors)
        learner.num_classes = len(learner.task_of_class)  # from the task files, which the checksums vouch for
        learner.class_names = [str(c) for c in meta.get("classes") or []]
        learner.epochs_trained = [int(e) for e in meta.get("epochs_trained") or []]
        return learner


def _read_checked(path: Path, entry: dict) -> dict[str, torch.Tensor]:
    """A model file's tensors, after checking its SHA-256 against learner.json."""
    file = path / entry["name"]
    try:
        data = file.read_bytes()
    except OSError as e:
        raise LifelongError(f"{file}: cannot read ({e.strerror})") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise LifelongError(f"{file}: checksum mismatch (truncated or modified)")
    try:
        return load_file(str(file))
    except (SafetensorError, ValueError) as e:
        raise LifelongError(f"{file}: not a valid safetensors file ({e})") from None


def _split_task_file(file, tensors, expected, dim, classes: GaussianClassModel):
    adapter = {k[len("adapter."):]: v for k, v in tensors.items() if k.startswith("adapter.")}
    for k, (shape, dtype) in expected.items():
        if k not in adapter:
            raise LifelongError(f"{file}: missing adapter tensor {k!r}")
        if tuple(adapter[k].shape) != shape or adapter[k].dtype != dtype:
            raise LifelongError(f"{file}: tensor {k!r} has shape {tuple(adapter[k].shape)} {adapter[k].dtype}, "
                                f"expected {shape} {dtype} (different adapter settings or backbone)")
    if set(adapter) != set(expected):
        raise LifelongError(f"{file}: unexpected adapter tensors {sorted(set(adapter) - set(expected))}")
    w = tensors.get("head.weight")
    if w is None or w.ndim != 2:
        raise LifelongError(f"{file}: missing tensor 'head.weight' or not a matrix")
    k = w.shape[0]
    shapes = {"head.weight": ((k, dim), torch.int8), "head.scale": ((k,), torch.float32),
              "head.bias": ((k,), torch.float16), **classes.class_shapes(k)}
    for name, (shape, dtype) in shapes.items():
        if name not in tensors:
            raise LifelongError(f"{file}: missing tensor {name!r}")
        if tuple(tensors[name].shape) != shape or tensors[name].dtype != dtype:
            raise LifelongError(f"{file}: tensor {name!r} has shape {tuple(tensors[name].shape)} "
                                f"{tensors[name].dtype}, expected {shape} {dtype} for a {dim}-wide backbone and a "
                                f"{classes.dim}-wide class model")
    return adapter, {"weight": w, "scale": tensors["head.scale"], "bias": tensors["head.bias"]}
