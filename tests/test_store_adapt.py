"""`lifelong adapt STORE --data FOLDER`: a store of an image model adapted on unlabeled images is a new version
that rollback undoes; the source statistics it starts from are recorded as the store learns. EfficientNet-Lite0
(packaged, offline) on a few 32 x 32 images."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_cli import assert_one_line_error, lifelong

import lifelong as lib
from lifelong.backbones.image import _read
from lifelong.errors import LifelongError
from lifelong.store import ModelStore
from lifelong.tta.sources import norm_statistics

CLASSES = ["dark", "mid", "light", "bright"]


def write_images(folder, classes, per_class=6, seed=0, shift=False):
    """RGB noise whose brightness tells the class; `shift`: the same images with less contrast, brighter."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    paths = []
    for c in classes:
        level = 50 * CLASSES.index(c)
        for i in range(per_class):
            a = g.integers(0, 60, (32, 32, 3)) + level
            if shift:
                a = a // 2 + 110
            path = folder / f"{c}_{i}.png"
            Image.fromarray(a.astype(np.uint8)).save(path)
            paths.append((str(path), c))
    return paths


@pytest.fixture
def store(tmp_path):
    """Version 1: an ncm model of two classes learned from image files."""
    s = ModelStore.init(tmp_path / "model", "efficientnet-lite0", "ncm", {}, device="cpu")
    s.learn(write_images(tmp_path / "train", CLASSES[:2]), name="first", holdout=0)
    return s


@pytest.fixture
def shifted(tmp_path):
    write_images(tmp_path / "shifted", CLASSES[:2], shift=True)
    return tmp_path / "shifted"


def files(folder):
    return sorted(str(p) for p in folder.rglob("*.png"))


def manifest(store):
    return (store.path / "manifest.json").read_text()


def test_adapt_publishes_a_version_and_rollback_gives_the_parent_back(store, shifted):
    images = files(shifted)
    before = store.load().scores(images)
    proc = lifelong("adapt", store.path, "--data", shifted, "--method", "bn", "--batch-size", 5)
    assert proc.returncode == 0, proc.stderr
    assert "version 2: backbone adapted with bn on 12 images" in proc.stdout
    entry = ModelStore(store.path).entry()
    assert entry["version"] == 2 and entry["parent"] == 1 and entry["tasks"] == store.entry(1)["tasks"]
    assert entry["adapted"] == {"method": "bn", "settings": {}, "images": 12, "source": str(shifted), "seed": 0}
    assert entry["calibrated"] is False and entry["metrics"] is None
    # the learner's files and the statistics are the parent's, linked; only the backbone is new
    v1, v2 = store.version_dir(1) / "learner", store.version_dir(2) / "learner"
    assert set(entry["files"]) == {"learner.json", "weights.safetensors", "norm.safetensors", "backbone.safetensors"}
    for name in ("learner.json", "weights.safetensors", "norm.safetensors"):
        assert os.stat(v1 / name).st_ino == os.stat(v2 / name).st_ino
    assert entry["new_bytes"] == (v2 / "backbone.safetensors").stat().st_size

    fresh = ModelStore(store.path)
    adapted = fresh.load().scores(images)
    assert not torch.allclose(adapted, before, atol=1e-3)
    assert torch.equal(lib.load(store.path).scores(images), adapted)
    assert torch.equal(fresh.load(1).scores(images), before)  # the cached pristine backbone is untouched
    assert "backbone adapted with bn on 12 images" in lifelong("info", store.path).stdout
    assert lifelong("info", store.path, "--check").stdout.splitlines() == ["version 1: ok", "version 2: ok"]
    assert lifelong("rollback", store.path, "--to", 1).returncode == 0
    assert torch.equal(ModelStore(store.path).load().scores(images), before)
    assert torch.equal(lib.load(store.path).scores(images), before)


def test_learning_after_tent_keeps_the_adapted_backbone_and_adds_up_the_statistics(store, shifted, tmp_path):
    images = files(shifted)
    entry = store.adapt(images, "tent", {"lr": "0.01"}, batch_size=6)
    assert entry["version"] == 2 and entry["adapted"]["settings"] == {"lr": 0.01, "steps": 1}
    adapted = store.load().scores(images)
    new = write_images(tmp_path / "train2", CLASSES[2:], seed=1)
    entry = store.learn(new, name="second", holdout=0)
    assert entry["version"] == 3 and entry["adapted"]["method"] == "tent"
    v2, v3 = store.version_dir(2) / "learner", store.version_dir(3) / "learner"
    assert os.stat(v2 / "backbone.safetensors").st_ino == os.stat(v3 / "backbone.safetensors").st_ino
    model = store.load()
    assert model.classes == CLASSES and torch.equal(model.scores(images)[:, :2], adapted)
    # version 3's statistics are those of both tasks' images, through the pristine backbone
    from safetensors.torch import load_file

    encoder = store.backbone(store.manifest())
    everything = [_read(p) for p in files(tmp_path / "train") + files(tmp_path / "train2")]
    want = norm_statistics(encoder, everything)
    got = load_file(v3 / "norm.safetensors")
    assert set(got) == set(want) and len(want) > 0
    for k in want:
        assert torch.allclose(got[k], want[k], rtol=1e-9, atol=1e-6), k
    first = load_file(store.version_dir(1) / "learner" / "norm.safetensors")
    assert all(torch.allclose(first[k], norm_statistics(encoder, everything[:12])[k], rtol=1e-9, atol=1e-6)
               for k in first)


def test_bad_input_is_one_line_and_publishes_nothing(store, shifted, tmp_path, tiny_backbone):
    before = manifest(store)
    broken = tmp_path / "broken"
    write_images(broken / "sub", ["dark"], per_class=2)
    (broken / "sub" / "dark_9.png").write_bytes(b"not a png")
    assert_one_line_error(lifelong("adapt", store.path, "--data", broken), "dark_9.png", "cannot read image")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(lifelong("adapt", store.path, "--data", tmp_path / "empty"), str(tmp_path / "empty"),
                          "no images")
    assert_one_line_error(lifelong("adapt", store.path, "--data", tmp_path / "nowhere"), "nowhere", "not a folder")
    assert_one_line_error(lifelong("adapt", tmp_path / "train", "--data", shifted), "not a model store")
    assert_one_line_error(lifelong("adapt", store.path, "--data", shifted, "--method", "nope"), "unknown adaptation")
    assert_one_line_error(lifelong("adapt", store.path, "--data", shifted, "--set", "lr=-1"), "lr")
    assert manifest(store) == before
    assert sorted(p.name for p in (store.path / "versions").iterdir()) == ["v0001"]

    text = ModelStore.init(tmp_path / "text", tiny_backbone, "ncm", {})
    text.learn([(t, c) for c in ("a", "b") for t in (f"{c} one", f"{c} two", f"{c} three", f"{c} four", f"{c} five")],
               holdout=0)
    text_before = manifest(text)
    assert_one_line_error(lifelong("adapt", text.path, "--data", shifted), str(text.path), "not an image model")
    assert manifest(text) == text_before and "norm.safetensors" not in text.entry()["files"]
    with pytest.raises(LifelongError, match="learned no classes"):
        ModelStore.init(tmp_path / "empty-model", "efficientnet-lite0", "ncm", {}).adapt(files(shifted), "bn")


@pytest.mark.parametrize("point", ["after-save", "before-manifest"])
def test_adapt_killed_at_a_crash_point_leaves_the_parent_current(store, shifted, point):
    images = files(shifted)
    before = store.load().scores(images)
    env = {**os.environ, "LIFELONG_CRASH_AT": point}
    proc = subprocess.run([sys.executable, "-m", "lifelong.cli", "adapt", str(store.path), "--data", str(shifted),
                           "--method", "bn"], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == -signal.SIGKILL
    fresh = ModelStore(store.path)
    assert fresh.manifest()["current"] == 1 and torch.equal(fresh.load().scores(images), before)
    assert fresh.adapt(images, "bn")["version"] == 2
    assert sorted(p.name for p in (store.path / "versions").iterdir()) == ["v0001", "v0002"]


def test_a_run_imports_with_its_statistics_when_its_data_is_at_hand(tmp_path):
    from safetensors.torch import load_file

    from lifelong.data import load_stream

    g = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 5)
    x = (g.integers(0, 60, (20, 32, 32, 3)) + 50 * y[:, None, None, None]).astype(np.uint8)
    npz = tmp_path / "toy.npz"
    np.savez(npz, x=x, y=y)
    run = tmp_path / "run"
    proc = lifelong("run", "--benchmark", npz, "--classes-per-task", 2, "--method", "ncm", "--backbone",
                    "efficientnet-lite0", "--out", run, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    store = ModelStore.from_run(tmp_path / "model", run, device="cpu")
    stream = load_stream(str(npz), classes_per_task=2)
    want = norm_statistics(store.backbone(store.manifest()),
                           [_read(im) for task in stream.tasks for im in task.train.inputs])
    got = load_file(store.version_dir(1) / "learner" / "norm.safetensors")
    assert all(torch.allclose(got[k], want[k], rtol=1e-9, atol=1e-6) for k in want)
    assert store.adapt(list(torch.from_numpy(x[:8])), "bn", batch_size=4)["version"] == 2

    npz.rename(tmp_path / "moved.npz")  # the run's data is gone: the import records no statistics
    other = ModelStore.from_run(tmp_path / "model2", run, device="cpu")
    assert "norm.safetensors" not in other.entry()["files"]
    with pytest.raises(LifelongError, match="has no source statistics"):
        other.adapt([str(tmp_path / "nothing.png")], "bn")
