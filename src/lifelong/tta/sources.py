"""Where a source model comes from: any `lifelong` learner that scores frozen features, its backbone's
normalisation statistics made the source data's (function unchanged)."""

from __future__ import annotations

import torch

from ..errors import LifelongError
from .base import SourceModel, norm_layers


def source_from_learner(learner, classes: list[str] | None = None) -> SourceModel:
    """A `lifelong` learner of an image benchmark that scores frozen features, as a source model."""
    encoder = learner.backbone
    if getattr(encoder, "modality", None) != "image":
        raise LifelongError(f"the model's backbone {getattr(encoder, 'name', '?')!r} is not an image model; "
                            "test-time adaptation needs one")
    if not learner.frozen_features:
        raise LifelongError(f"method {learner.name!r} reads more than the frozen feature; test-time adaptation "
                            "adapts the backbone under a fixed head: use a model of ncm, lda, ranpac, analytic or "
                            "probe")
    means = getattr(learner, "means", None)
    return SourceModel(net=encoder.model, head=learner.score_features, classes=classes or learner.class_names,
                       mean=encoder.mean, std=encoder.std,
                       prototypes=means.float() if isinstance(means, torch.Tensor) else None)


@torch.no_grad()
def norm_statistics(encoder, images, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Additive statistics of every normalisation layer's input on `images`, through the network as it is:
    `{name}.sum`, `{name}.squares` (per channel, float64) and `{name}.count`. Sums of two sets' statistics are
    the statistics of their union, so a store can add each task's as it learns."""
    net = encoder.model.eval()
    names = {m: n for n, m in net.named_modules() if m in set(norm_layers(net))}
    out: dict[str, torch.Tensor] = {}

    def record(module, inputs, _output):
        x = inputs[0].double().transpose(0, 1).flatten(1)
        name = names[module]
        for key, value in (("sum", x.sum(1)), ("squares", (x * x).sum(1)),
                           ("count", torch.tensor([x.shape[1]], dtype=torch.float64))):
            out[f"{name}.{key}"] = out.get(f"{name}.{key}", 0) + value.cpu()

    hooks = [m.register_forward_hook(record) for m in names]
    try:
        for s in range(0, len(images), batch_size):
            net(encoder.pixels(images[s : s + batch_size]))
    finally:
        for h in hooks:
            h.remove()
    return out


@torch.no_grad()
def fold_statistics(net, stats: dict[str, torch.Tensor]) -> None:
    """Give the normalisation layers the statistics in `stats` (from `norm_statistics` on the source's training
    data) without changing the function the network computes.

    Methods that normalise a test batch with its own statistics assume the running statistics are the source
    data's; a frozen pretrained backbone keeps its pretraining data's (ImageNet's), so batch statistics would move
    activations somewhere the head was never fitted. Each layer's input mean and variance (mu_c, var_c) become its
    running statistics, and the difference is folded into its scale and shift:
    gamma' = gamma sqrt(var_c + eps) / sqrt(var_s + eps), beta' = beta + gamma (mu_c - mu_s) / sqrt(var_s + eps),
    so in inference mode every output is what it was, and a clean batch normalised by itself lands where the head
    expects it."""
    for name, m in net.named_modules():
        if m not in set(norm_layers(net)):
            continue
        if m.weight is None or m.bias is None or m.running_mean is None:
            raise LifelongError(f"normalisation layer {name} keeps no scale, shift or statistics: it cannot take "
                                "the source statistics")
        n = stats[f"{name}.count"]
        mu_c = stats[f"{name}.sum"] / n
        var_c = (stats[f"{name}.squares"] / n - mu_c * mu_c).clamp_min(0)
        mu_s, std_s = m.running_mean.double().cpu(), (m.running_var.double().cpu() + m.eps).sqrt()
        gamma, beta = m.weight.double().cpu(), m.bias.double().cpu()
        device = m.weight.device
        m.weight.copy_((gamma * (var_c + m.eps).sqrt() / std_s).to(device))
        m.bias.copy_((beta + gamma * (mu_c - mu_s) / std_s).to(device))
        m.running_mean.copy_(mu_c.to(device))
        m.running_var.copy_(var_c.to(device))


def calibrate_norm(encoder, images, batch_size: int = 256) -> None:
    """`fold_statistics` of `images`' statistics into the encoder's network (the source's clean training data)."""
    fold_statistics(encoder.model, norm_statistics(encoder, images, batch_size))
