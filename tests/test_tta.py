"""Test-time adaptation (issue 14): the methods' protocol, the source statistics, and `lifelong adapt`.

A tiny convolutional network with normalisation layers stands in for the backbone where the method is the subject;
EfficientNet-Lite0 runs the command end to end on a few 32 x 32 images."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lifelong import tta
from lifelong.backbones.image import ImageEncoder, StagedModel
from lifelong.errors import LifelongError
from lifelong.tta.base import entropy
from lifelong.tta.sources import calibrate_norm, norm_statistics, source_from_learner


class Pool(nn.Module):
    def forward(self, h):
        return h.mean((2, 3))


class Block(nn.Module):
    """An inverted bottleneck named as EfficientNet's, so the adapter placement finds its pointwise convolutions."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self._expand_conv, self._bn0 = nn.Conv2d(c_in, 2 * c_out, 1, bias=False), nn.BatchNorm2d(2 * c_out)
        self._project_conv, self._bn1 = nn.Conv2d(2 * c_out, c_out, 1, bias=False), nn.BatchNorm2d(c_out)

    def forward(self, x):
        return torch.relu(self._bn1(self._project_conv(torch.relu(self._bn0(self._expand_conv(x))))))


def tiny_encoder(seed=0) -> ImageEncoder:
    torch.manual_seed(seed)
    stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU())
    model = StagedModel(stem, nn.ModuleList([Block(8, 16)]), Pool(), 16, "efficientnet", [16])
    for m in model.modules():  # pretraining statistics unlike the data's, as ImageNet's are unlike any user's
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return ImageEncoder("tiny", model.eval(), None, (0.5,) * 3, (0.25,) * 3)


def two_class_images(n, seed=0):
    """Class 0 bright on the left, class 1 bright on the right, with noise: [n, 16, 16, 3] uint8, labels."""
    g = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = g.normal(60, 20, (n, 16, 16, 3))
    x[y == 0, :, :8] += 120
    x[y == 1, :, 8:] += 120
    return torch.from_numpy(x.clip(0, 255).astype(np.uint8)), torch.from_numpy(y)


def shifted(images):
    """A contrast and brightness shift the source never saw."""
    return (images.float() * 0.3 + 150).clamp(0, 255).to(torch.uint8)


def source_model(encoder, images, labels):
    """Statistics of the clean images folded in, then a nearest-class-mean head on their features."""
    calibrate_norm(encoder, images)
    feats = encoder.encode(images)
    means = torch.stack([feats[labels == c].mean(0) for c in (0, 1)])
    head = lambda f: -torch.cdist(f, means)  # noqa: E731
    return tta.SourceModel(encoder.model, head, ["left", "right"], encoder.mean, encoder.std, means)


def error(method, encoder, images, labels, batch=32):
    hits = [method.adapt(encoder.pixels(images[s : s + batch], normalise=False)).argmax(1) == labels[s : s + batch]
            for s in range(0, len(labels), batch)]
    return 1 - torch.cat(hits).float().mean().item()


QUICK = {"augmentations": 2, "high_rank": 4}


def make(name, source):
    cls = tta.get(name)
    own = {f for f in cls.Config.__dataclass_fields__} if hasattr(cls.Config, "__dataclass_fields__") else set()
    return cls.from_settings(source, {k: v for k, v in QUICK.items() if k in own})


def test_folded_statistics_keep_the_function_and_become_the_running_statistics():
    enc = tiny_encoder()
    x, _ = two_class_images(40)
    before = enc.encode(x)
    calibrate_norm(enc, x[:30])
    assert torch.allclose(enc.encode(x), before, atol=1e-4)
    first = enc.model.stem[1]
    stats = norm_statistics(enc, x[:30])
    # after folding, the first layer's running mean is its input mean on the calibration images
    assert torch.allclose(first.running_mean.double(), stats["stem.1.sum"] / stats["stem.1.count"], atol=1e-4)
    assert len(stats) == 3 * 3  # three normalisation layers, three statistics each


def test_normalisation_statistics_add_up():
    enc = tiny_encoder()
    x, _ = two_class_images(24)
    a, b, both = norm_statistics(enc, x[:10]), norm_statistics(enc, x[10:]), norm_statistics(enc, x)
    assert set(a) == set(both) and {k.rsplit(".", 1)[1] for k in a} == {"sum", "squares", "count"}
    for k in both:
        assert torch.allclose(a[k] + b[k], both[k], rtol=1e-9, atol=1e-6), k


@pytest.mark.parametrize("name", sorted(tta.METHODS))
def test_every_method_keeps_the_protocol(name):
    enc = tiny_encoder()
    x, y = two_class_images(48)
    source = source_model(enc, x, y)
    pristine = {k: v.clone() for k, v in source.net.state_dict().items()}
    method = make(name, source)
    fresh = {k: v.clone() for k, v in method.state().items()}
    assert set(fresh) == set(pristine)
    for _ in range(2):
        scores = method.adapt(enc.pixels(shifted(x[:16]), normalise=False))
        assert scores.shape == (16, 2) and torch.isfinite(scores).all()
    # the source model is never changed; a reset goes back to it exactly
    assert all(torch.equal(v, pristine[k]) for k, v in source.net.state_dict().items())
    method.reset()
    assert all(torch.equal(v, fresh[k]) for k, v in method.state().items())
    assert tta.get(name).adapts in {"nothing", "normalisation statistics", "normalisation affine", "adapters", "all"}


def test_bad_settings_and_names_are_one_line():
    enc = tiny_encoder()
    x, y = two_class_images(8)
    source = source_model(enc, x, y)
    with pytest.raises(LifelongError, match="lr"):
        tta.get("tent").from_settings(source, {"lr": "-1"})
    with pytest.raises(LifelongError, match="restore"):
        tta.get("cotta").from_settings(source, {"restore": "1.5"})
    with pytest.raises(LifelongError, match="unknown adaptation method 'tnet'"):
        tta.get("tnet")


def test_batch_statistics_undo_a_shift_the_source_does_not():
    enc = tiny_encoder()
    x, y = two_class_images(64)
    source = source_model(enc, x, y)
    test_x, test_y = two_class_images(64, seed=1)
    clean = error(make("source", source), enc, test_x, test_y)
    on_shift = error(make("source", source), enc, shifted(test_x), test_y)
    normalised = error(make("bn", source), enc, shifted(test_x), test_y)
    assert clean < 0.1 and on_shift > 0.3, (clean, on_shift)
    assert normalised < on_shift - 0.2 and normalised < clean + 0.1, (normalised, on_shift)


def test_tent_lowers_the_entropy_it_minimises():
    enc = tiny_encoder()
    x, y = two_class_images(32)
    source = source_model(enc, x, y)
    method = tta.get("tent").from_settings(source, {"lr": "0.05"})
    pixels = enc.pixels(shifted(x), normalise=False)
    first = entropy(method.adapt(pixels)).mean().item()
    for _ in range(10):
        last = entropy(method.adapt(pixels)).mean().item()
    assert last < first


def test_cotta_with_full_restore_stays_the_source():
    enc = tiny_encoder()
    x, y = two_class_images(32)
    source = source_model(enc, x, y)
    method = tta.get("cotta").from_settings(source, {"restore": "1", "augmentations": "2"})
    method.adapt(enc.pixels(shifted(x), normalise=False))
    for name, p in method.net.named_parameters():
        assert torch.equal(p, dict(source.net.named_parameters())[name]), name


def test_a_text_model_is_not_a_source(enc, stream):
    from lifelong.methods import get

    learner = get("ncm")(enc)
    learner.learn(stream.tasks[0])
    with pytest.raises(LifelongError, match="not an image model"):
        source_from_learner(learner)


def npz_images(path, n=40, size=32):
    g = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = g.integers(0, 80, (n, size, size, 3))
    x[y == 0, :, : size // 2] += 150
    x[y == 1, :, size // 2 :] += 150
    np.savez(path, x=x.astype(np.uint8), y=np.array(["left", "right"])[y])
    return path


def test_adapt_command_end_to_end(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    monkeypatch.setenv("LIFELONG_LOG_LEVEL", "INFO")  # `-q` sets it in this process; undone after the test

    from lifelong.cli import app

    data = npz_images(tmp_path / "toy.npz")
    out = tmp_path / "run"
    args = ["adapt", "--benchmark", str(data), "--method", "tent", "--corruptions", "gaussian_noise,fog",
            "--batch-size", "4", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    r = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in r["segments"]] == ["gaussian_noise@5", "fog@5"]
    assert set(r["errors"]) == {"gaussian_noise", "fog"} and all(0 <= e <= 100 for e in r["errors"].values())
    assert r["mean_error"] == pytest.approx(sum(r["errors"].values()) / 2)
    assert len(r["curve"]["images"]) == r["batches"] and r["curve"]["images"][-1] == 2 * r["images_per_segment"]
    assert r["method"] == "tent" and r["settings"]["lr"] == 1e-3 and 0 <= r["source"]["clean_error"] <= 100
    assert (out / "error_by_corruption.png").stat().st_size > 0 and (out / "error_curve.png").stat().st_size > 0
    from lifelong.backbones import load_backbone

    assert set(load_file(out / "adapted.safetensors")) == set(load_backbone("efficientnet-lite0").model.state_dict())
    from lifelong.report import write_report

    md, page = write_report(out, out=tmp_path / "report")
    assert "| run | continual | " in md.read_text() and "Error per corruption" in page.read_text()
    assert [p.stat().st_size > 0 for p in (tmp_path / "report").glob("*-adapt/error_curve.png")] == [True]
    # a finished run is not replaced without --overwrite
    again = CliRunner().invoke(app, args)
    assert isinstance(again.exception, LifelongError) and "--overwrite" in str(again.exception)


@pytest.mark.parametrize("flags, message", [
    (["--severity", "6"], "severity 6: must be 1 to 5"),
    (["--corruptions", "fogg"], "unknown corruption 'fogg'"),
    (["--protocol", "sideways"], "sideways"),
    (["--method", "tnet"], "unknown adaptation method 'tnet'"),
    (["--benchmark", "nowhere-c"], "nowhere-c"),
])
def test_adapt_bad_input_is_one_line_and_writes_nothing(tmp_path, flags, message):
    import subprocess
    import sys

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "lifelong.cli", "adapt", "--out", str(out), *flags],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()


def test_vida_trains_only_its_adapters_and_merges_them_into_the_source_names():
    from lifelong.tta.base import use_batch_statistics

    enc = tiny_encoder()
    x, y = two_class_images(32)
    source = source_model(enc, x, y)
    method = tta.get("vida").from_settings(source, {"augmentations": "2", "high_rank": "4", "lr": "0.05"})
    trained = {n for n, p in method.net.named_parameters() if p.requires_grad}
    assert trained and all(".sites." in n and ".latent." in n for n in trained)
    pixels = enc.pixels(shifted(x), normalise=False)
    for _ in range(3):
        method.adapt(pixels)
    merged = tiny_encoder().model
    merged.load_state_dict(method.state())
    use_batch_statistics(merged)
    with torch.no_grad():
        assert torch.allclose(source.logits(merged, pixels), source.logits(method.teacher, pixels), atol=1e-4)
        assert not torch.allclose(source.logits(merged, pixels), source.logits(source.net, pixels), atol=1e-3)


def test_adapt_a_saved_model_of_an_image_benchmark(tmp_path, monkeypatch):
    """A run's saved `ncm` model is the source: its classes by name, its function unchanged by the folded
    statistics (the source's error on clean images is the run's own)."""
    from typer.testing import CliRunner

    from lifelong.cli import app

    monkeypatch.setenv("LIFELONG_LOG_LEVEL", "INFO")  # `-q` sets it in this process; undone after the test
    data = npz_images(tmp_path / "toy.npz")
    run = CliRunner().invoke(app, ["run", "--benchmark", str(data), "--classes-per-task", "1", "--method", "ncm",
                                   "--backbone", "efficientnet-lite0", "--out", str(tmp_path / "run"), "-q"])
    assert run.exit_code == 0, run.output
    trained = json.loads((tmp_path / "run" / "results.json").read_text())
    out = tmp_path / "adapted"
    result = CliRunner().invoke(app, ["adapt", str(tmp_path / "run"), "--benchmark", str(data), "--method", "bn",
                                      "--corruptions", "contrast", "--batch-size", "8", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "results.json").read_text())
    assert r["source"]["method"] == "ncm"
    assert r["source"]["clean_error"] == pytest.approx(100 * (1 - trained["final_accuracy"]), abs=1e-6)
