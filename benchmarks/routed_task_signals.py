"""Do the adapted heads know which of the routed tasks is the query's? A diagnostic for issue 11 (BENCHMARKS.md)
on a saved `adapters` model: every val and test query is routed as the model routes it, the top-3 tasks' adapters
run, and three candidate signals are measured against the class model's own choice:

- a head term: `gamma * s_t(x)` added to every class of routed task t, for s = the head's energy (log-sum-exp of its
  logits) or its largest logit, over a grid of gamma and beta, the weight fitted on val queries of EVERY task (an
  upper bound: inside `learn` only the newest task's held-out data exists);
- an adapted-space class model: class means of each task's training data through its own adapter, one shared
  covariance, and each routed class scored by the Gaussian log-density of the query's feature through its task's
  adapter, mixed with the model's scores;
- how far each adapter moves its own task's queries and other tasks' queries from the frozen feature.

    python benchmarks/routed_task_signals.py runs/random0/model clinc150:random 0
"""

import sys

import torch
import torch.nn.functional as F

from lifelong import routing
from lifelong.backbones import load_backbone
from lifelong.data import load_stream
from lifelong.devices import set_threads
from lifelong.methods.adapters import Adapters
from lifelong.methods.topblock import top_features


@torch.no_grad()
def main(model_dir: str, name: str, seed: int) -> None:
    set_threads()
    stream = load_stream(name, seed, None, "text", "label", None, None, None)
    encoder = load_backbone()
    learner = Adapters.load(model_dir, encoder)
    shrink, temperature, beta = learner.mixture
    toc, T, C = learner.task_of_class, len(learner.heads), learner.num_classes

    def adapted(inputs, t):
        learner.top.set_active(t)
        keys = learner.cache.keys(inputs)
        return top_features(learner.top, [learner.cache.hidden[k] for k in keys])

    means = []  # adapted class means: each task's training data through its own adapter
    scatter, dof = torch.zeros(encoder.dim, encoder.dim, dtype=torch.float64), 0
    for t in stream:
        z = adapted(list(t.train.inputs), t.index).double()
        m = torch.stack([z[t.train.labels == c].mean(0) for c in t.classes])
        centred = z - m[t.train.labels - t.classes[0]]
        scatter, dof = scatter + centred.T @ centred, dof + len(z) - len(t.classes)
        means.append(m)
        learner.cache.clear()
    means = torch.cat(means)
    values, vectors = torch.linalg.eigh(scatter / dof)
    inverse = vectors @ torch.diag(1 / (0.9 * values.clamp_min(0) + 0.1 * values.mean())) @ vectors.T

    splits = {}
    for split in ("val", "test"):
        inputs = [x for t in stream for x in getattr(t, split).inputs]
        y = torch.cat([getattr(t, split).labels for t in stream])
        log_post, task_post, routed = learner._route(
            learner.classes.logits(learner.cache.class_input(inputs), shrink), temperature)
        top3 = routing.routed_mask(task_post, 3)
        Z = torch.zeros(len(y), T, encoder.dim)
        for t in range(T):
            rows = top3[:, t].nonzero().flatten().tolist()
            if rows:
                Z[rows, t] = adapted([inputs[i] for i in rows], t)
        logits = torch.zeros(len(y), C)
        for t in range(T):
            logits[:, toc == t] = learner.heads[t](Z[:, t])
        pooled = torch.stack([learner.cache.pooled[k] for k in learner.cache.keys(inputs)])
        splits[split] = dict(y=y, log_post=log_post, task_post=task_post, routed=routed, logits=logits, Z=Z,
                             pooled=pooled)
        learner.cache.clear()

    def accuracy(S, b, extra=None, w=0.0):
        """The model's mixture at beta b, plus `extra` [n, C], or (w > 0) mixed with weight w with `extra`."""
        scores = routing.mix(S["log_post"], S["task_post"], S["logits"], toc, S["routed"], b)
        if extra is not None:
            scores = (1 - w) * scores + w * extra if w else scores + extra
        return float((scores.argmax(1) == S["y"]).float().mean()) * 100

    te = splits["test"]
    truth = toc[te["y"]]
    in_top2 = te["routed"][torch.arange(len(truth)), truth]
    right_head = torch.stack([te["logits"][i, toc == truth[i]].argmax() + learner.offsets[truth[i]]
                              for i in range(len(truth))]) == te["y"]
    print(f"mixture {learner.mixture}: test {accuracy(te, beta):.2f}%, routing top-1 "
          f"{float((te['task_post'].argmax(1) == truth).float().mean()) * 100:.2f}%, top-2 "
          f"{float(in_top2.float().mean()) * 100:.2f}%, oracle choice among the top 2 "
          f"{float((in_top2 & right_head).float().mean()) * 100:.2f}%")
    for signal in ("energy", "max logit"):
        def term(S, gamma):
            s = torch.stack([(S["logits"][:, toc == t].logsumexp(1) if signal == "energy"
                              else S["logits"][:, toc == t].amax(1)) for t in range(T)], 1)
            return gamma * s[:, toc]

        for b in (0.5, 0.75, 1.0):
            print(f"{signal} term, beta {b}: " + "  ".join(
                f"gamma {g}: val {accuracy(splits['val'], b, term(splits['val'], g)):.2f} / test "
                f"{accuracy(te, b, term(te, g)):.2f}" for g in (0, 0.25, 0.5, 1.0, 2.0)))

    def density(S):
        out = torch.full((len(S["y"]), C), float("-inf"), dtype=torch.float64)
        for t in range(T):
            cols = (toc == t).nonzero().flatten()
            diff = S["Z"][:, t].double()[:, None, :] - means[cols][None]
            out[:, cols] = -0.5 * torch.einsum("ncd,de,nce->nc", diff, inverse, diff)
        return out.masked_fill(~S["routed"][:, toc], float("-inf"))

    for temp in (4.0, 16.0):
        dens = {k: F.log_softmax(density(S) / temp, 1).float() for k, S in splits.items()}
        print(f"adapted-space class model, temperature {temp}: " + "  ".join(
            f"w {w}: val {accuracy(splits['val'], beta, dens['val'], w):.2f} / test "
            f"{accuracy(te, beta, dens['test'], w):.2f}" for w in (0.25, 0.5)))
    own = torch.zeros_like(te["routed"])
    own[torch.arange(len(truth)), truth] = True
    shift = (te["Z"] - te["pooled"][:, None]).norm(dim=-1) / te["pooled"].norm(dim=-1)[:, None]
    cosine = F.cosine_similarity(te["Z"], te["pooled"][:, None], dim=-1)
    for label, mask in (("own task", te["routed"] & own), ("other routed task", te["routed"] & ~own)):
        print(f"{label}: cosine to the frozen feature {float(cosine[mask].mean()):.3f}, relative shift "
              f"{float(shift[mask].mean()):.3f} (sd {float(shift[mask].std()):.3f})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
