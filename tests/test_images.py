"""Image backbones (a tiny random ViT, the packaged EfficientNet-Lite0), adapters on them, and the image loaders on
fixtures written here: IDX files, an image folder, .npz arrays. Nothing is downloaded."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lifelong import evaluation, methods
from lifelong.adapters import AdaptedTop, AdapterConfig
from lifelong.backbones import check_modality, default_backbone, load_backbone
from lifelong.data import images as image_data
from lifelong.data import load_stream
from lifelong.data.task import LabelledData, class_incremental
from lifelong.errors import LifelongError

# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory):
    """A 2-layer, 32-wide ViT with random weights on 32 x 32 images (4 x 4 patches of 8 px)."""
    from transformers import ViTConfig, ViTModel

    path = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)
    ViTModel(config, add_pooling_layer=False).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def vit(tiny_vit):
    return load_backbone(tiny_vit)


@pytest.fixture(scope="module")
def effnet():
    return load_backbone("efficientnet-lite0")


def toy_images(n_per_class, classes=4, size=24, seed=0):
    """Grey images whose brightness tells the class: separable, so a few steps of training can learn them."""
    g = torch.Generator().manual_seed(seed)
    return [((torch.rand(size, size, generator=g) * 50 + 60 * c).to(torch.uint8), f"c{c}")
            for c in range(classes) for _ in range(n_per_class)]


@pytest.fixture
def image_stream():
    data = LabelledData("toy", toy_images(6), toy_images(3, seed=1))
    return class_incremental(data, groups=[["c0", "c1"], ["c2", "c3"]])


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.fixture
def fashion_dir(tmp_path):
    """Fashion-MNIST's four IDX files (train gzipped as Debian ships them, test plain): 3 train and 2 test
    28 x 28 images per class, each image filled with its own index so a subsample can be traced back."""
    folder = tmp_path / "fmnist"
    folder.mkdir()
    for split, per_class, gz in (("train", 3, True), ("t10k", 2, False)):
        labels = np.repeat(np.arange(10), per_class)
        images = np.stack([np.full((28, 28), i % 256) for i in range(len(labels))])
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, gz)
    return folder


def write_png(path: Path, array: np.ndarray) -> None:
    """Grey for H x W, RGB for H x W x 3, RGBA for H x W x 4."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# --- IDX and Fashion-MNIST ------------------------------------------------------------------------------------


def test_read_idx_plain_and_gzipped(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (False, True):
        write_idx(tmp_path / f"a{gz}", a, gz)
        assert np.array_equal(image_data.read_idx(tmp_path / f"a{gz}"), a)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "junk").write_bytes(b"not an idx file")
    with pytest.raises(LifelongError, match="junk: not an IDX file"):
        image_data.read_idx(tmp_path / "junk")
    write_idx(tmp_path / "short", np.zeros((2, 3), np.uint8), False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(LifelongError, match="short: IDX data has 5 bytes"):
        image_data.read_idx(tmp_path / "short")


def test_fashion_mnist_subsample_is_seeded(fashion_dir):
    data = image_data.fashion_mnist(fashion_dir, train_per_class=2, test_per_class=1, size=32, seed=0)
    assert len(data.train) == 20 and len(data.test) == 10
    x, y = data.train[0]
    assert x.shape == (32, 32) and x.dtype == torch.uint8 and y == "T-shirt/top"
    assert data.class_names() == image_data.FASHION_CLASSES
    again = image_data.fashion_mnist(fashion_dir, train_per_class=2, test_per_class=1, size=32, seed=0)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(data.train, again.train))
    kept = {int(x[0, 0]) for x, _ in data.train}
    others = [{int(x[0, 0]) for x, _ in image_data.fashion_mnist(fashion_dir, 2, 1, 28, seed=s).train}
              for s in range(1, 6)]
    assert any(o != kept for o in others)  # another seed, another subsample


def test_fashion_mnist_benchmark_from_env(fashion_dir, monkeypatch):
    monkeypatch.setenv("LIFELONG_FASHION_MNIST", str(fashion_dir))
    stream = load_stream("fashion-mnist")
    assert len(stream) == 5 and stream.class_names == image_data.FASHION_CLASSES
    assert [len(t.classes) for t in stream] == [2] * 5
    t0 = stream.tasks[0]
    assert t0.name == "T-shirt/top+Trouser"
    assert t0.train.inputs.shape == (6, 64, 64) and t0.test.inputs.shape == (4, 64, 64)
    assert default_backbone(stream) == "efficientnet-lite0"


def test_fashion_mnist_missing_names_the_package(tmp_path, monkeypatch):
    monkeypatch.delenv("LIFELONG_FASHION_MNIST", raising=False)
    monkeypatch.setattr(image_data, "FASHION_DEBIAN", tmp_path / "nowhere")
    with pytest.raises(LifelongError) as e:
        load_stream("fashion-mnist")
    assert "apt-get install dataset-fashion-mnist" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv("LIFELONG_FASHION_MNIST", str(tmp_path))
    with pytest.raises(LifelongError, match="LIFELONG_FASHION_MNIST=.*apt-get install dataset-fashion-mnist"):
        load_stream("fashion-mnist")


@pytest.mark.skipif(not image_data.FASHION_DEBIAN.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_package(monkeypatch):
    monkeypatch.delenv("LIFELONG_FASHION_MNIST", raising=False)
    data = image_data.fashion_mnist()
    assert len(data.train) == 5000 and len(data.test) == 1000 and data.train[0][0].shape == (64, 64)


# --- image folder and .npz ------------------------------------------------------------------------------------


def test_image_folder_with_hold_out(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "owl"):  # RGB of varying sizes, grey, RGBA
        for i in range(5):
            shape = {"cat": (20 + i, 30, 3), "dog": (16, 16), "owl": (10, 12, 4)}[c]
            write_png(tmp_path / "pets" / c / f"{i}.png", rng.integers(0, 255, shape, dtype=np.uint8))
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image")
    data = image_data.load_image_folder(tmp_path / "pets", size=16, seed=0)
    assert data.name == "pets" and sorted(data.class_names()) == ["cat", "dog", "owl"]
    assert len(data.train) == 12 and len(data.test) == 3  # one of five per class held out
    assert {y for _, y in data.test} == {"cat", "dog", "owl"}
    assert all(x.shape == (16, 16, 3) and x.dtype == torch.uint8 for x, _ in data.train + data.test)
    stream = load_stream(str(tmp_path / "pets"), classes_per_task=2)
    assert len(stream) == 2 and stream.tasks[0].train.inputs.shape[1:] == (224, 224, 3)


def test_image_folder_train_test_layout_and_bad_image(tmp_path):
    for split, n in (("train", 3), ("test", 1)):
        for c in ("a", "b"):
            for i in range(n):
                write_png(tmp_path / split / c / f"{i}.png", np.full((8, 8), 40 * i, np.uint8))
    data = image_data.load_image_folder(tmp_path, size=None)
    assert len(data.train) == 6 and len(data.test) == 2 and data.train[0][0].shape == (8, 8, 3)
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(LifelongError, match="broken.png: cannot read image"):
        image_data.load_image_folder(tmp_path)


def test_npz_with_class_names_and_test_split(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (8, 6, 6), dtype=np.uint8)
    path = tmp_path / "digits.npz"
    np.savez(path, x=x, y=np.array([0, 1] * 4), x_test=x[:4], y_test=np.array([1, 0, 1, 0]),
             class_names=np.array(["zero", "one"]))
    data = image_data.load_npz(path)
    assert data.name == "digits" and len(data.train) == 8 and len(data.test) == 4
    assert data.class_names() == ["zero", "one"] and torch.equal(data.train[0][0], torch.from_numpy(x[0]))
    np.savez(tmp_path / "held.npz", x=x, y=np.array(["a", "b"] * 4))
    held = image_data.load_npz(tmp_path / "held.npz")
    assert len(held.train) == 6 and len(held.test) == 2
    assert len(load_stream(str(tmp_path / "held.npz"), classes_per_task=1)) == 2
    np.savez(tmp_path / "nolabels.npz", x=x)
    with pytest.raises(LifelongError, match="nolabels.npz: no array 'y'"):
        image_data.load_npz(tmp_path / "nolabels.npz")
    np.savez(tmp_path / "floats.npz", x=x.astype(np.float32), y=np.zeros(8))
    with pytest.raises(LifelongError, match="expected uint8"):
        image_data.load_npz(tmp_path / "floats.npz")


# --- backbones ------------------------------------------------------------------------------------------------


def test_load_backbone_picks_images_by_name(tiny_vit, vit):
    assert vit.modality == "image" and vit.dim == 32 and vit.resolution == 32
    assert load_backbone("vit:" + tiny_vit).weights_hash() == vit.weights_hash()
    bigger = load_backbone(tiny_vit + "@48")  # position embeddings interpolated to 6 x 6 patches
    hidden, pooled, levels = bigger.encode_split(torch.zeros(2, 10, 10, dtype=torch.uint8), 1)
    assert hidden[0].shape == (37, 32) and pooled.shape == (2, 32) and levels.shape == (2, 64) and bigger.weights_hash() != vit.weights_hash()
    with pytest.raises(LifelongError, match="timm backbones are not supported: timm imports torchvision"):
        load_backbone("timm:vit_tiny_patch16_224")


def test_vit_encode_shapes_and_input_kinds(vit, tmp_path):
    grey = torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8)
    f = vit.encode(grey)
    assert f.shape == (3, 32) and torch.isfinite(f).all()
    rgb = [np.repeat(g.numpy()[..., None], 3, axis=-1) for g in grey]  # grey as RGB: the same image
    assert torch.allclose(vit.encode(rgb), f, atol=1e-5)
    paths = []
    for i, g in enumerate(grey):
        write_png(tmp_path / f"{i}.png", g.numpy())
        paths.append(str(tmp_path / f"{i}.png"))
    assert torch.allclose(vit.encode(paths), f, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(vit(grey), f, atol=1e-5)
    hidden, pooled, levels = vit.encode_split(grey, 1)
    assert hidden[0].shape == (17, 32) and torch.allclose(pooled, f, atol=1e-6)  # 16 patches + [CLS]
    assert vit.level_dims == [32, 32] and levels.shape == (3, 64)  # both blocks' outputs, token-averaged
    with pytest.raises(LifelongError, match="expected H x W or H x W x C"):
        vit.encode([np.zeros((4, 4, 2), np.uint8)])


def test_efficientnet_lite0_features(effnet):
    assert effnet.dim == 1280 and effnet.resolution is None
    images = [torch.randint(0, 256, (32, 32), dtype=torch.uint8), torch.randint(0, 256, (48, 40, 3), dtype=torch.uint8)]
    f = effnet.encode(images)
    assert f.shape == (2, 1280) and (f >= 0).all()  # ReLU6 before the average pool
    assert torch.allclose(effnet.encode(images[1:]), f[1:], atol=1e-5)  # a feature depends on its image only
    hidden, pooled, levels = effnet.encode_split(images[:1], 14)
    assert hidden[0].shape == (192, 1, 1) and torch.allclose(pooled, f[:1], atol=1e-5)  # stride 32
    # every block's output channels averaged over positions: 16 + 24 * 2 + 40 * 2 + 80 * 3 + 112 * 3 + 192 * 4 + 320
    assert levels.shape == (1, 1808) and effnet.level_dims[-2:] == [192, 320]
    with torch.no_grad():
        last = effnet.model.blocks[15](effnet.model.blocks[14](hidden[0][None]))
    assert torch.allclose(levels[0, -320:], last.mean((2, 3))[0], atol=1e-5)
    assert load_backbone("efficientnet-lite0@64").weights_hash() != effnet.weights_hash()


def test_text_and_image_do_not_mix(tiny_backbone, image_stream):
    with pytest.raises(LifelongError, match="has image inputs but backbone .* is a text encoder; .* efficientnet-lite0"):
        check_modality(load_backbone(tiny_backbone), image_stream)


# --- adapters on images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("which,kind,sites", [
    ("vit", "lora", ["blocks.1.attention.q_proj", "blocks.1.attention.v_proj"]),
    ("vit", "bottleneck", ["blocks.1.mlp"]),
    ("effnet", "lora", ["blocks.15._expand_conv", "blocks.15._project_conv"]),
    ("effnet", "bottleneck", ["blocks.15"]),
])
def test_injection_leaves_frozen_path_exact(request, which, kind, sites):
    enc = request.getfixturevalue(which)
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    top = AdaptedTop(enc.model, AdapterConfig(kind=kind, rank=4, blocks=1))
    assert sorted(top.sites) == sites
    hidden, pooled, _ = enc.encode_split(x, top.split)
    with torch.no_grad():
        top.set_active(None)
        assert torch.allclose(top(torch.stack(hidden)), pooled, atol=1e-5)
        top.new_task()
        top.set_active("train")  # a fresh LoRA starts at the identity, a bottleneck near it (up ~ 1e-4)
        assert torch.allclose(top(torch.stack(hidden)), pooled, atol=1e-6 if kind == "lora" else 1e-2)
    assert "LoRA" not in repr(enc.model) and "Bottleneck" not in repr(enc.model)


def test_adapter_placement_is_the_adapters_layers_not_the_backbones(vit):
    from torch import nn

    from lifelong.backbones.image import StagedModel

    assert vars(vit.model.config).keys() == {"modality", "model_type", "num_hidden_layers", "hidden_size", "block_dims"}
    other = StagedModel(nn.Identity(), nn.ModuleList([nn.Linear(4, 4)]), nn.Identity(), 4, "convnext", [4])
    with pytest.raises(LifelongError, match="no adapter placement for image models of type 'convnext'"):
        AdaptedTop(other, AdapterConfig(kind="lora", rank=2, blocks=1))


def test_lora_on_explicit_vit_targets(vit):
    top = AdaptedTop(vit.model, AdapterConfig(kind="lora", rank=2, blocks=0, targets=["o_proj", "fc1"]))
    assert sorted(top.sites) == ["blocks.0.attention.o_proj", "blocks.0.mlp.fc1", "blocks.1.attention.o_proj",
                                 "blocks.1.mlp.fc1"]


@pytest.mark.parametrize("which,adapter,precision", [
    ("vit", "lora", "1bit"), ("vit", "bottleneck", "ternary"), ("effnet", "lora", "1bit"),
    ("effnet", "bottleneck", "fp16"),
])
def test_adapters_learner_on_images_save_load_identical(request, image_stream, tmp_path, which, adapter, precision):
    enc = request.getfixturevalue(which)
    cfg = methods.config_from_dict(methods.get("adapters").Config,
                                   {"adapter": adapter, "precision": precision, "rank": 4, "epochs": 2, "blocks": 1})
    learner = methods.get("adapters")(enc, cfg)
    result = evaluation.run(learner, image_stream)
    assert len(result["accuracy_matrix"]) == 2
    # routing within the top k can only be as good or better than the first choice, and the final value is the
    # last task's
    assert result["routing_top_k_accuracy"] >= result["routing_accuracy"] == result["routing_accuracy_per_task"][-1]
    x = torch.cat([t.test.inputs for t in image_stream])
    before = learner.predict(x)
    assert before.shape == (len(x), 4)
    learner.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "learner.json").read_text())
    assert meta["backbone"] == enc.name and meta["backbone_sha256"] == enc.weights_hash()
    again = methods.get("adapters").load(tmp_path / "m", enc)
    again.cache = learner.cache  # same frozen inputs; the stored adapters must compute what the trained ones did
    assert torch.equal(again.predict(x), before)


def test_adapters_on_images_class_model_reads_every_block(effnet, image_stream):
    from lifelong.methods.topblock import class_features

    cfg = methods.config_from_dict(methods.get("adapters").Config, {"rank": 2, "epochs": 1, "blocks": 1})
    learner = methods.get("adapters")(effnet, cfg)
    task = image_stream.tasks[0]
    learner.learn(task)
    _, pooled, levels = effnet.encode_split(task.train.inputs, learner.top.split)
    # 1280 pooled + 1808 block outputs = 3088 wide, randomly projected to the 768 that keep the covariance < 1 MB
    # and a task's class means and directions within its budget
    assert learner.classes.dim == 768 and learner.classes.projection.shape == (3088, 768)
    feats = class_features(pooled, levels, effnet.level_dims)
    assert feats.shape == (len(pooled), 3088) and torch.allclose(learner.cache.class_input(task.train.inputs), feats)
    assert torch.allclose(feats.norm(dim=1), torch.full((len(pooled),), 17 ** 0.5))  # 17 parts, each unit-normalised
    x = task.test.inputs  # the out-of-scope confidence measures distance in the class model's feature
    assert learner.confidence(x, learner.predict(x)).shape == (len(x),)


def test_ncm_on_images_through_the_feature_cache(effnet, image_stream, tmp_path):
    from lifelong.backbones import FeatureCache

    cache = FeatureCache(effnet, tmp_path / "cache")
    learner = methods.get("ncm")(effnet, None, cache)
    result = evaluation.run(learner, image_stream)
    assert result["accuracy_matrix"][-1][0] is not None
    cache.save()
    assert len(list((tmp_path / "cache").glob("features-*.safetensors"))) == 1
    assert len(cache.rows) == sum(len(t.train) + len(t.test) for t in image_stream)


def test_inflora_on_efficientnet_keeps_a_basis_per_convolution(effnet, image_stream, tmp_path):
    """EfficientNet's expand and project 1x1 convolutions in one block read different inputs (widths differ): each
    keeps its own protected subspace, where grouping them by block mixed a 1152- and a 192-wide input."""
    cfg = methods.config_from_dict(methods.get("inflora").Config, {"rank": 2, "epochs": 1, "blocks": 1})
    learner = methods.get("inflora")(effnet, cfg)
    result = evaluation.run(learner, image_stream)
    assert len(result["accuracy_matrix"]) == 2
    widths = {g: b.shape[0] for g, b in learner.basis.items()}
    assert len(widths) == len(learner.top.sites) and len(set(widths.values())) == 2
    x = torch.cat([t.test.inputs for t in image_stream])
    learner.save(tmp_path / "m")
    again = methods.get("inflora").load(tmp_path / "m", effnet)
    assert torch.allclose(again.predict(x), learner.predict(x), atol=1e-5)
