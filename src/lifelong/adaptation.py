"""Test-time adaptation on a shift stream -> a run directory: the source model, the protocol loop, the metrics.

The loop is online, as deployed: each unlabeled batch is predicted by the method while it adapts on it, and only
then scored against its labels, which the method never sees. Errors are in percent, as the test-time adaptation
literature reports them: per segment in stream order, per corruption, their mean, and per batch against the
stream position (where a collapse shows).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from .data.shift import CORRUPTIONS, Segment, shift_benchmark, shift_stream, stack
from .data.task import class_incremental
from .evaluation import peak_memory_mb
from .io import atomic_dir, write_json
from .progress import Progress
from .tta import SourceModel, TestTimeMethod
from .tta.sources import calibrate_norm, source_from_learner

log = logging.getLogger(__name__)


def source_from_clean(encoder, data, cache_dir=None):
    """The default source: the backbone's normalisation statistics re-estimated on the clean training split, a
    joint linear probe fitted on its features (strength chosen on held-out training data), and the class means
    of those features as prototypes."""
    from .backbones import FeatureCache
    from .methods import get

    calibrate_norm(encoder, stack(data.train)[0])
    stream = class_incremental(data, groups=[data.class_names()], task_names=["clean"])
    features = FeatureCache(encoder, cache_dir, progress=True)
    learner = get("probe")(encoder, features=features)
    learner.class_names = list(stream.class_names)
    learner.learn(stream.tasks[0])
    x, y = torch.cat(learner.train_x + learner.held_x), torch.cat(learner.train_y + learner.held_y)
    learner.train_x = learner.held_x = []  # the features are not part of the source model
    protos = torch.stack([x[y == c].mean(0) for c in range(learner.num_classes)])
    source = source_from_learner(learner)
    return dataclasses.replace(source, prototypes=protos), learner


def run_stream(method: TestTimeMethod, segments: list[Segment], encoder, batch_size: int = 64,
               progress: bool = True) -> dict:
    """Adapt online through every segment; per-image hits, per-batch errors and times."""
    total = sum(len(s.labels) for s in segments)
    bar = Progress(total, f"adapt {method.name}", "images", enabled=progress)
    hits, curve, seconds, rows = [], [], [], []
    seen = 0
    for seg in segments:
        if seg.reset:
            method.reset()
        seg_hits = []
        for s in range(0, len(seg.labels), batch_size):
            pixels = encoder.pixels(seg.images[s : s + batch_size], normalise=False)
            start = time.perf_counter()
            scores = method.adapt(pixels)
            seconds.append(time.perf_counter() - start)
            hit = scores.argmax(1).cpu() == seg.labels[s : s + batch_size]
            seg_hits.append(hit)
            seen += len(hit)
            curve.append((seen, 100 * (1 - hit.float().mean().item())))
            bar.update(len(hit))
        seg_hit = torch.cat(seg_hits)
        hits.append(seg_hit)
        rows.append({"name": seg.name, "images": len(seg_hit), "reset": seg.reset,
                     "error": 100 * (1 - seg_hit.float().mean().item())})
        log.info("%s: %s error %.2f%%", method.name, seg.name, rows[-1]["error"])
    bar.close()
    hit = torch.cat(hits)
    kind = torch.cat([s.corruption for s in segments])
    errors = {c: 100 * (1 - hit[kind == i].float().mean().item()) for i, c in enumerate(CORRUPTIONS) if (kind == i).any()}
    return {"segments": rows, "errors": errors, "mean_error": sum(errors.values()) / len(errors),
            "error_all_images": 100 * (1 - hit.float().mean().item()),
            "curve": {"images": [c[0] for c in curve], "error": [c[1] for c in curve]},
            "seconds": sum(seconds), "seconds_per_batch": sum(seconds) / max(len(seconds), 1), "batches": len(seconds)}


@torch.no_grad()
def clean_error(source: SourceModel, encoder, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    source.net.eval()
    hits = [source.logits(source.net, encoder.pixels(images[s : s + batch_size], normalise=False)).argmax(1)
            == labels[s : s + batch_size] for s in range(0, len(labels), batch_size)]
    return 100 * (1 - torch.cat(hits).float().mean().item())


def adapt_benchmark(benchmark: str, method: str, out: Path, protocol: str = "continual", severity: int = 5,
                    corruptions=CORRUPTIONS, settings: dict | None = None, seed: int = 0, batch_size: int = 64,
                    images: int | None = None, backbone: str = "efficientnet-lite0", device=None, cache_dir=None,
                    model=None, progress: bool = True) -> dict:
    """Corrupt the benchmark's test images, adapt `method` online over the protocol's stream, write `out`
    (results.json last, plots, the adapted network as adapted.safetensors) atomically; returns the results."""
    from safetensors.torch import save_file

    from . import tta
    from .backbones import load_backbone
    from .experiment import environment
    from .report.plots import error_by_corruption, error_curve

    cls = tta.get(method)
    started = time.perf_counter()
    torch.manual_seed(seed)
    data = shift_benchmark(benchmark, seed=seed)
    if model is not None:
        from .api import load

        learner = load(model, device=device or "cpu").learner
        encoder = learner.backbone
        source = source_from_learner(learner)  # checked before the calibration pass
        calibrate_norm(encoder, stack(data.train)[0])
        about = {"model": str(model), "method": learner.name}
    else:
        encoder = load_backbone(backbone, device=device or "cpu")
        source, probe = source_from_clean(encoder, data, cache_dir)
        about = {"model": f"probe on the clean training split ({len(data.train)} images)", **probe.chosen()}
    test_x, test_y, _ = stack(data.test, source.classes)
    if images:
        keep = torch.randperm(len(test_y), generator=torch.Generator().manual_seed(seed))[:images].sort().values
        test_x, test_y = test_x[keep], test_y[keep]
    about["clean_error"] = clean_error(source, encoder, test_x, test_y)
    segments = shift_stream(test_x, test_y, protocol, severity, corruptions, seed, cache_dir, progress)
    adapter = cls.from_settings(source, settings or {})
    torch.manual_seed(seed)
    result = run_stream(adapter, segments, encoder, batch_size, progress)
    result = {"kind": "adapt", "benchmark": benchmark, "method": method, "protocol": protocol,
              "severity": severity if protocol != "gradual" else "1-5-1", "seed": seed, "batch_size": batch_size,
              "backbone": encoder.name, "settings": dataclasses.asdict(adapter.config), "adapts": cls.adapts,
              "source": about, "images_per_segment": len(test_y), **result,
              "total_seconds": time.perf_counter() - started, "peak_memory_mb": peak_memory_mb(),
              "environment": environment(encoder.device)}

    def write(tmp: Path) -> None:
        save_file(adapter.state(), tmp / "adapted.safetensors", metadata={"method": method})
        error_by_corruption([result], tmp / "error_by_corruption.png")
        error_curve([result], tmp / "error_curve.png")
        write_json(tmp / "results.json", result)

    atomic_dir(out, write)
    return result
