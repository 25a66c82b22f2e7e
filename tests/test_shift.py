"""Corruption shift streams on tiny random images: every corruption, reproducibility, the cache, the four
protocols, and bad input. The smallest size the corruption package accepts is 32 x 32."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from lifelong.data import shift
from lifelong.data.shift import (CORRUPTIONS, PROTOCOLS, check_corruptions, check_protocol, check_severity,
                                 corrupt_images, shift_benchmark, shift_stream, stack)
from lifelong.errors import LifelongError

N, SIZE = 6, 32


@pytest.fixture(scope="module")
def images():
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (N, SIZE, SIZE, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def labels():
    return torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("shift-cache")


def test_the_fifteen_corruptions_in_the_standard_order():
    from imagecorruptions import get_corruption_names

    assert CORRUPTIONS == tuple(get_corruption_names("common")) and len(CORRUPTIONS) == 15
    assert PROTOCOLS == ("continual", "reset", "gradual", "mixed")


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_every_corruption_keeps_the_shape_and_changes_the_images(images, corruption):
    for severity in (1, 5):
        out = corrupt_images(images, corruption, severity)
        assert out.dtype == torch.uint8 and out.shape == (N, SIZE, SIZE, 3)
    changed = (out != images).flatten(1).any(1)
    assert changed.all(), f"{corruption}@5 left images {torch.flatnonzero(~changed).tolist()} unchanged"


def test_reproducible_per_seed_and_the_global_random_state_is_left_alone(images):
    np.random.seed(123)
    before = np.random.get_state()
    for corruption in ("gaussian_noise", "impulse_noise", "glass_blur"):  # the last two seed themselves
        a, b = corrupt_images(images, corruption, 3), corrupt_images(images, corruption, 3)
        assert torch.equal(a, b), corruption
        assert not torch.equal(a, corrupt_images(images, corruption, 3, seed=1)), corruption
    after = np.random.get_state()
    assert after[0] == before[0] and np.array_equal(after[1], before[1]) and after[2:] == before[2:]
    # an image's corruption does not depend on the others in its batch
    assert torch.equal(corrupt_images(images[:2], "shot_noise", 4), corrupt_images(images, "shot_noise", 4)[:2])


def test_the_same_bits_in_another_process(images):
    code = ("import sys, hashlib, numpy as np; from lifelong.data.shift import corrupt_images;"
            "x = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8);"
            "np.random.seed(99);"
            "print(*[hashlib.sha256(corrupt_images(x, c, 5, seed=2).numpy().tobytes()).hexdigest()"
            " for c in ('gaussian_noise', 'impulse_noise', 'snow')])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import hashlib

    here = [hashlib.sha256(corrupt_images(images, c, 5, seed=2).numpy().tobytes()).hexdigest()
            for c in ("gaussian_noise", "impulse_noise", "snow")]
    assert proc.stdout.split() == here


def test_grey_images_become_three_channels(images):
    grey = images[..., 0]
    out = corrupt_images(grey.numpy(), "brightness", 2)
    assert out.shape == (N, SIZE, SIZE, 3)
    assert torch.equal(out, corrupt_images(grey[..., None].expand(-1, -1, -1, 3).contiguous(), "brightness", 2))


def test_the_cache_is_written_and_read_back(images, tmp_path, monkeypatch):
    first = corrupt_images(images, "fog", 4, cache_dir=tmp_path)
    files = list((tmp_path / "shift").glob("*.npy"))
    assert len(files) == 1 and not list((tmp_path / "shift").glob(".*"))  # no temporary file left behind

    import imagecorruptions

    def refuse(*args, **kwargs):
        raise AssertionError("corrupted again instead of reading the cache")

    monkeypatch.setattr(imagecorruptions, "corrupt", refuse)
    assert torch.equal(corrupt_images(images, "fog", 4, cache_dir=tmp_path), first)
    with pytest.raises(AssertionError, match="instead of reading"):  # another seed is another file
        corrupt_images(images, "fog", 4, seed=1, cache_dir=tmp_path)
    monkeypatch.undo()
    files[0].write_bytes(b"damaged")  # a damaged file is recomputed and replaced
    assert torch.equal(corrupt_images(images, "fog", 4, cache_dir=tmp_path), first)
    assert np.array_equal(np.load(files[0]), first.numpy())


def test_continual_and_reset(images, labels, cache):
    continual = shift_stream(images, labels, "continual", severity=5, cache_dir=cache)
    assert [s.name for s in continual] == [f"{c}@5" for c in CORRUPTIONS]
    assert not any(s.reset for s in continual)
    for k, s in enumerate(continual):
        assert s.images.shape == (N, SIZE, SIZE, 3) and torch.equal(s.labels, labels)
        assert s.corruption.tolist() == [k] * N and s.severity.tolist() == [5] * N
        assert torch.equal(s.images, corrupt_images(images, CORRUPTIONS[k], 5, cache_dir=cache))
    reset = shift_stream(images, labels, "reset", severity=5, cache_dir=cache)
    assert [s.name for s in reset] == [s.name for s in continual] and all(s.reset for s in reset)
    assert all(torch.equal(a.images, b.images) for a, b in zip(reset, continual))


def test_gradual_walks_severity_up_and_down_per_corruption(images, labels, cache):
    segments = shift_stream(images, labels, "gradual", severity=2, cache_dir=cache)
    assert len(segments) == 9 * 15 and not any(s.reset for s in segments)
    for k, c in enumerate(CORRUPTIONS):
        part = segments[9 * k : 9 * (k + 1)]
        assert [s.name for s in part] == [f"{c}@{v}" for v in (1, 2, 3, 4, 5, 4, 3, 2, 1)]
        assert [s.severity.unique().tolist() for s in part] == [[v] for v in (1, 2, 3, 4, 5, 4, 3, 2, 1)]
        assert all(s.corruption.tolist() == [k] * N for s in part)
        assert torch.equal(part[1].images, part[7].images) and not torch.equal(part[0].images, part[4].images)


def test_mixed_is_one_shuffled_segment_of_every_corruption(images, labels, cache):
    (mixed,) = shift_stream(images, labels, "mixed", severity=3, cache_dir=cache)
    assert mixed.name == "mixed@3" and not mixed.reset
    assert mixed.images.shape == (N * 15, SIZE, SIZE, 3) and mixed.severity.tolist() == [3] * (N * 15)
    tags = mixed.corruption.tolist()
    assert sorted(tags) == [k for k in range(15) for _ in range(N)]
    assert tags != sorted(tags)
    for k, c in enumerate(CORRUPTIONS):  # each corruption's images and labels, in some order
        mine = mixed.corruption == k
        want = corrupt_images(images, c, 3, cache_dir=cache)
        rows = sorted(zip(mixed.images[mine].flatten(1).tolist(), mixed.labels[mine].tolist()))
        assert rows == sorted(zip(want.flatten(1).tolist(), labels.tolist()))
    (again,) = shift_stream(images, labels, "mixed", severity=3, cache_dir=cache)
    (other,) = shift_stream(images, labels, "mixed", severity=3, seed=1, cache_dir=cache)
    assert torch.equal(again.corruption, mixed.corruption) and not torch.equal(other.corruption, mixed.corruption)


def test_a_subset_of_corruptions(images, labels, cache):
    segments = shift_stream(images, labels, corruptions=["fog", "gaussian_noise"], cache_dir=cache)
    assert [s.name for s in segments] == ["fog@5", "gaussian_noise@5"]
    assert [s.corruption[0].item() for s in segments] == [9, 0]


def test_stack_and_a_benchmark_from_an_npz(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (12, SIZE, SIZE), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", x=x, y=np.array(["b", "a", "c"] * 4))
    data = shift_benchmark(str(tmp_path / "tiny.npz"))
    assert data.name == "tiny" and len(data.train) + len(data.test) == 12
    images, y, names = stack(data.test, classes=["a", "b", "c"])
    assert images.shape == (len(data.test), SIZE, SIZE, 3) and images.dtype == torch.uint8 and y.dtype == torch.long
    assert names == ["a", "b", "c"] and [names[i] for i in y] == [label for _, label in data.test]
    assert torch.equal(images[..., 1], images[..., 0])
    _, _, order = stack(data.train)
    assert order == data.class_names()
    with pytest.raises(LifelongError, match="'c'"):
        stack(data.train, classes=["a", "b"])


def test_a_folder_benchmark_found_by_its_name_with_or_without_c(tmp_path):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (SIZE, SIZE), (i * 40, 0, 0)).save(tmp_path / "pets" / label / f"{i}.png")
    for name in ("pets", "pets-c"):
        data = shift_benchmark(str(tmp_path / name))
        assert data.name == "pets" and set(data.class_names()) == {"cat", "dog"}


def test_bad_input_names_the_bad_value(images, labels):
    with pytest.raises(LifelongError, match="'gaussian_nois'.*gaussian_noise"):
        check_corruptions(["gaussian_nois"])
    with pytest.raises(LifelongError, match="'blur'"):
        corrupt_images(images, "blur", 3)
    for bad in (0, 6):
        with pytest.raises(LifelongError, match=f"severity {bad}: must be 1 to 5"):
            check_severity(bad)
        with pytest.raises(LifelongError, match=f"severity {bad}"):
            shift_stream(images, labels, severity=bad)
    assert check_severity(np.int64(5)) == 5
    with pytest.raises(LifelongError, match="'episodic'.*continual, reset, gradual, mixed"):
        check_protocol("episodic")
    with pytest.raises(LifelongError, match="'episodic'"):
        shift_stream(images, labels, protocol="episodic")
    with pytest.raises(LifelongError, match="'cifar10-c'.*fashion-mnist-c"):
        shift_benchmark("cifar10-c")
    with pytest.raises(LifelongError, match="16 x 16.*32 x 32"):
        corrupt_images(images[:, :16, :16], "fog", 1)
    with pytest.raises(LifelongError, match="float32"):
        corrupt_images(images.float(), "fog", 1)
    with pytest.raises(LifelongError, match="labels"):
        shift_stream(images, labels[:3])


def test_a_missing_package_says_how_to_install_it(images, monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecorruptions", None)  # makes `import imagecorruptions` fail
    with pytest.raises(LifelongError, match=r"imagecorruptions-imaug \(pip install imagecorruptions-imaug==1.1.5\)"):
        shift.corrupt_images(images, "fog", 1)
