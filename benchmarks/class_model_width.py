"""How much the frozen class model gains from width and from other poolings, against what its bytes allow. A
diagnostic for issue 11 (BENCHMARKS.md): LDA (class means + one shared covariance, `GaussianClassModel`) on
unit-normalised parts of the frozen pass, the shrinkage chosen by held-out hits summed over tasks as `adapters` does
(starred), then class accuracy / routing (the true task holds the best class) of the final model on test.

Parts: mean-pooled embeddings and each block's output (`mean0` .. `mean6` on MiniLM-L6), max-pooled outputs of the
top three blocks (`max4` .. `max6`), the final first token (`cls`). The last variants leave out the blocks that
`adapters` adapts (could the frozen pass stop below them?). Trains no adapter.

    python benchmarks/class_model_width.py clinc150:random 0
"""

import sys
import time

import torch
import torch.nn.functional as F

from lifelong.backbones import load_backbone
from lifelong.data import load_stream
from lifelong.devices import set_threads
from lifelong.methods.gaussian import GaussianClassModel

SHRINKAGES = (0.3, 0.1, 0.03, 1e-2, 3e-3, 1e-3)
VARIANTS = {  # name: (parts, projected width; 0 = none)
    "adapters today: mean1-6 + final, projected": (["mean6", "mean1", "mean2", "mean3", "mean4", "mean5", "mean6"], 960),
    "mean1-6 + max4-6, projected": (["mean1", "mean2", "mean3", "mean4", "mean5", "mean6", "max4", "max5", "max6"], 960),
    "mean5-6 + max5-6 (1,536)": (["mean5", "mean6", "max5", "max6"], 0),
    "mean2-6 (1,920)": (["mean2", "mean3", "mean4", "mean5", "mean6"], 0),
    "mean1-6 + final, full (2,688)": (["mean6", "mean1", "mean2", "mean3", "mean4", "mean5", "mean6"], 0),
    "mean1-6 + max4-6, full (3,456)": (["mean1", "mean2", "mean3", "mean4", "mean5", "mean6", "max4", "max5", "max6"], 0),
    # a frozen pass that stops where the adapted blocks begin (blocks 5-6 on MiniLM-L6) could not give these
    "embeddings + blocks 1-4, projected": (["mean0", "mean1", "mean2", "mean3", "mean4"], 960),
    "blocks 1-4, projected": (["mean1", "mean2", "mean3", "mean4"], 960),
    "blocks 1-5, projected": (["mean1", "mean2", "mean3", "mean4", "mean5"], 960),
}


@torch.no_grad()
def parts(encoder, texts) -> dict[str, torch.Tensor]:
    out: dict[str, list] = {}
    for s in range(0, len(texts), 128):
        batch = encoder.tokenize(texts[s : s + 128])
        states = encoder.model(**batch, output_hidden_states=True).hidden_states
        mask = batch["attention_mask"].unsqueeze(-1).float()
        for i, h in enumerate(states):
            out.setdefault(f"mean{i}", []).append((h * mask).sum(1) / mask.sum(1))
        for i in range(len(states) - 3, len(states)):
            out.setdefault(f"max{i}", []).append(states[i].masked_fill(mask == 0, -1e4).max(1).values)
        out.setdefault("cls", []).append(states[-1][:, 0])
    return {k: F.normalize(torch.cat(v), dim=-1) for k, v in out.items()}


def frozen_parts(name: str, seed: int):
    """(stream, {(task, split): (parts, labels)}, task of each class) for the stream `name` at `seed`."""
    set_threads()
    stream = load_stream(name, seed, None, "text", "label", None, None, None)
    encoder = load_backbone()
    t0 = time.time()
    data = {(t.index, s): (parts(encoder, list(getattr(t, s).inputs)), getattr(t, s).labels)
            for t in stream for s in ("train", "val", "test")}
    print(f"frozen pass {time.time() - t0:.0f} s", flush=True)
    return stream, data, torch.cat([torch.full((len(t.classes),), t.index) for t in stream])


def main(name: str, seed: int) -> None:
    stream, data, task_of = frozen_parts(name, seed)
    for variant, (names, width) in VARIANTS.items():
        def x(key):
            return torch.cat([data[key][0][n] for n in names], 1)

        model, hits = None, dict.fromkeys(SHRINKAGES, 0)
        for t in stream:
            if model is None:
                model = GaussianClassModel(x((0, "train")).shape[1], width, seed)
            model.add(*model.task_statistics(x((t.index, "train")), data[t.index, "train"][1], t.classes))
            for s in SHRINKAGES:
                hits[s] += int((model.logits(x((t.index, "val")), s).argmax(1) == data[t.index, "val"][1]).sum())
        chosen = max(SHRINKAGES, key=lambda s: (hits[s], -SHRINKAGES.index(s)))
        xt = torch.cat([x((t.index, "test")) for t in stream])
        yt = torch.cat([data[t.index, "test"][1] for t in stream])
        row = []
        for s in SHRINKAGES:
            pred = model.logits(xt, s).argmax(1)
            row.append(f"{s}: {(pred == yt).float().mean() * 100:.2f}/{(task_of[pred] == task_of[yt]).float().mean() * 100:.2f}"
                       + ("*" if s == chosen else ""))
        print(f"{variant} [{model.dim} wide, covariance {model.dim * (model.dim + 1)} B fp16]: " + "  ".join(row),
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "clinc150:random", int(sys.argv[2]) if len(sys.argv) > 2 else 0)
