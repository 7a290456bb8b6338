"""Data sets: shapes, dtypes, seeded disjoint splits, the task registry, streamed image
statistics, CIFAR through a fake torchvision (never a download) and its errors."""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from workers import data
from workers.data import TASKS, ImageData, TextData, get_task


def _hashes(x: torch.Tensor) -> list[str]:
    return [hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in x]


def test_digits_split() -> None:
    d = data.load_digits()
    assert d.train_x.shape == (1438, 1, 8, 8) and d.val_x.shape == (359, 1, 8, 8)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert int(d.train_x.max()) <= 16 and set(d.val_y.tolist()) == set(range(10))
    # a partition of the 1797 images, fixed by the seed
    from sklearn.datasets import load_digits

    full = torch.from_numpy(load_digits().images.astype(np.uint8)[:, None])
    assert sorted(_hashes(torch.cat([d.train_x, d.val_x]))) == sorted(_hashes(full))
    assert data.load_digits() is d  # cached
    other = data.load_digits(seed=1)
    assert not torch.equal(other.val_y, d.val_y)
    x = d.normalize(d.train_x)
    assert x.dtype == torch.float32
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2


def test_shapes_generation() -> None:
    x, y = data.generate_shapes(300, seed=3)
    assert x.shape == (300, 3, 32, 32) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [30] * 10
    x2, y2 = data.generate_shapes(300, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    x3, _ = data.generate_shapes(300, seed=4)
    assert not np.array_equal(x, x3)
    assert len(set(_hashes(torch.from_numpy(x)))) == 300  # no two images alike
    assert x.std() > 20  # not blank


def test_shapes32_split() -> None:
    d = data.load_shapes32(n_train=400, n_val=100, seed=5)
    assert isinstance(d, ImageData) and d.num_classes == 10
    assert d.train_x.shape == (400, 3, 32, 32) and d.val_x.shape == (100, 3, 32, 32)
    assert not set(_hashes(d.train_x)) & set(_hashes(d.val_x))
    assert data.load_shapes32(n_train=400, n_val=100, seed=5) is d  # lru_cache
    assert len(d.mean) == len(d.std) == 3


def test_pydoc_chars() -> None:
    d = data.load_pydoc_chars()
    assert isinstance(d, TextData)
    assert d.vocab == "".join(sorted(set(d.vocab))) and "\n" in d.vocab
    assert len(d.train) > 5 * len(d.val) > 0
    assert d.train.dtype == torch.long and int(d.train.max()) < d.vocab_size
    # split by whole topics (joined by blank lines): each topic lies in one split
    from pydoc_data.topics import topics

    train_text, val_text = d.decode(d.train), d.decode(d.val)
    assert all(t in train_text or t in val_text for t in topics.values())
    assert len(d.train) + len(d.val) == sum(map(len, topics.values())) + 2 * (len(topics) - 2)
    assert data.load_pydoc_chars(seed=1).decode(data.load_pydoc_chars(seed=1).val) != val_text
    assert d.decode(d.encode("def f(x):")) == "def f(x):"
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x, y = d.batch("train", 4, 16, g1)
    x2, _ = d.batch("train", 4, 16, g2)
    assert x.shape == y.shape == (4, 16) and torch.equal(x, x2)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the next characters
    wx, wy = d.windows("val", 32, max_tokens=320)
    assert wx.shape == (10, 32) and torch.equal(wx.flatten()[1:], wy.flatten()[:-1])


def test_task_registry() -> None:
    assert set(TASKS) == {"digits", "shapes32", "pydoc_chars", "cifar10", "cifar100"}
    assert get_task("digits").input_shape == (1, 8, 8)
    assert get_task("shapes32").input_shape == (3, 32, 32)
    assert get_task("cifar100").num_classes == 100
    text = get_task("pydoc_chars")
    assert text.kind == "text" and text.num_classes == data.load_pydoc_chars().vocab_size
    assert {t.kind for t in TASKS.values()} == {"image", "text"}
    with pytest.raises(KeyError, match="unknown task"):
        get_task("imagenet")


def test_cifar_needs_a_local_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(data.CIFAR_DOWNLOAD_ENV, raising=False)
    data.load_cifar.cache_clear()
    with pytest.raises(FileNotFoundError, match="EVONORM_DATA_DIR"):
        get_task("cifar10").load()
    with pytest.raises(FileNotFoundError, match="cifar-100-python") as missing:
        get_task("cifar100").load(str(tmp_path))
    # the message names both ways out: a local copy, or an opted-in download
    assert "data_root" in str(missing.value) and "download=True" in str(missing.value)
    assert "EVONORM_CIFAR_DOWNLOAD=1" in str(missing.value)


def test_cifar_without_torchvision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails
    data.load_cifar.cache_clear()
    with pytest.raises(ImportError, match="torchvision"):
        data.load_cifar("cifar10", str(tmp_path))


def _reference_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The statistics as they were computed before streaming: one float64 copy of the set."""
    pixels = x.astype(np.float64)
    return pixels.mean(axis=(0, 2, 3)), pixels.std(axis=(0, 2, 3))


@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_channel_stats_match_the_float64_computation(chunk: int) -> None:
    rng = np.random.default_rng(0)
    # skewed per channel, so mean and variance differ between channels and are far from 0
    x = np.stack([rng.integers(0, 256, (50, 9, 11)), rng.integers(200, 256, (50, 9, 11)),
                  rng.binomial(255, 0.1, (50, 9, 11))], axis=1).astype(np.uint8)
    mean, std = data.channel_stats(x, chunk=chunk)
    ref_mean, ref_std = _reference_stats(x)
    assert mean == tuple(float(m) for m in ref_mean)  # exact integer sums: to the bit
    np.testing.assert_allclose(std, ref_std, rtol=1e-13, atol=0)
    constant = np.full((3, 2, 4, 4), 255, dtype=np.uint8)
    assert data.channel_stats(constant) == ((255.0, 255.0), (0.0, 0.0))
    with pytest.raises(TypeError, match="uint8"):
        data.channel_stats(x.astype(np.float32))


def test_image_sets_keep_their_statistics() -> None:
    d = data.load_digits()
    ref_mean, ref_std = _reference_stats(d.train_x.numpy())
    assert d.mean == tuple(float(m) for m in ref_mean)
    np.testing.assert_allclose(np.array(d.std) - 1e-6, ref_std, rtol=1e-13, atol=0)


# --- CIFAR through a fake torchvision ------------------------------------------------

class _FakeCIFAR:
    """torchvision's CIFAR10/100 interface: data (N, 32, 32, 3) uint8 HWC and targets (a list)."""

    calls: list[dict[str, Any]]
    folder: str
    classes: int
    n = 60

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        self.calls.append({"root": root, "train": train, "download": download})
        path = Path(root) / self.folder
        if not path.is_dir():
            if not download:
                raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
            path.mkdir(parents=True)  # what a download leaves behind
        rng = np.random.default_rng(self.classes)
        self.data = rng.integers(0, 256, (self.n, 32, 32, 3), dtype=np.uint8)
        self.data[..., 1] //= 2  # channels with different statistics
        self.targets = [int(t) for t in rng.integers(0, self.classes, self.n)]


@pytest.fixture
def fake_torchvision(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """A `torchvision` module whose CIFAR classes record how they were called; nothing is downloaded."""
    calls: list[dict[str, Any]] = []
    datasets = types.ModuleType("torchvision.datasets")
    datasets.CIFAR10 = type("CIFAR10", (_FakeCIFAR,),  # type: ignore[attr-defined]
                            {"calls": calls, "folder": "cifar-10-batches-py", "classes": 10})
    datasets.CIFAR100 = type("CIFAR100", (_FakeCIFAR,),  # type: ignore[attr-defined]
                             {"calls": calls, "folder": "cifar-100-python", "classes": 100})
    torchvision = types.ModuleType("torchvision")
    torchvision.datasets = datasets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)
    monkeypatch.delenv(data.CIFAR_DOWNLOAD_ENV, raising=False)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    data.load_cifar.cache_clear()
    yield calls
    data.load_cifar.cache_clear()  # no fake data left in the cache for other tests


@pytest.mark.parametrize(("name", "classes"), [("cifar10", 10), ("cifar100", 100)])
def test_cifar_reads_a_local_copy(fake_torchvision: list[dict[str, Any]], tmp_path: Path,
                                  name: str, classes: int) -> None:
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    (tmp_path / folder).mkdir()
    d = data.load_cifar(name, str(tmp_path), val_size=12, seed=3)
    assert fake_torchvision == [{"root": str(tmp_path), "train": True, "download": False}]
    assert isinstance(d, ImageData) and d.num_classes == classes
    assert d.train_x.shape == (48, 3, 32, 32) and d.val_x.shape == (12, 3, 32, 32)
    assert d.train_x.dtype == d.val_x.dtype == torch.uint8
    assert d.train_y.dtype == torch.int64 and d.train_y.shape == (48,) and d.val_y.shape == (12,)

    # a seeded partition of the official training set, images still with their labels
    datasets = sys.modules["torchvision.datasets"]
    ds = (datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100)(str(tmp_path))
    order = np.random.default_rng(3).permutation(60)
    chw = torch.from_numpy(ds.data.transpose(0, 3, 1, 2).copy())
    targets = torch.tensor(ds.targets)
    assert torch.equal(d.val_x, chw[order[:12]]) and torch.equal(d.val_y, targets[order[:12]])
    assert torch.equal(d.train_x, chw[order[12:]]) and torch.equal(d.train_y, targets[order[12:]])
    assert not set(_hashes(d.train_x)) & set(_hashes(d.val_x))
    assert data.load_cifar(name, str(tmp_path), val_size=12, seed=3) is d  # cached
    assert not torch.equal(data.load_cifar(name, str(tmp_path), val_size=12, seed=4).val_y, d.val_y)

    # normalisation: the train split's per-channel statistics (float64), standardising it
    ref_mean, ref_std = _reference_stats(d.train_x.numpy())
    assert d.mean == tuple(float(m) for m in ref_mean) and d.mean[1] < d.mean[0]
    np.testing.assert_allclose(np.array(d.std) - 1e-6, ref_std, rtol=1e-13, atol=0)
    x = d.normalize(d.train_x)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5, rtol=0)


def test_cifar_task_reads_the_data_dir_env(fake_torchvision: list[dict[str, Any]], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(_FakeCIFAR, "n", 5010)  # the task holds out 5000 for validation
    d = get_task("cifar10").load()
    assert isinstance(d, ImageData) and (len(d.train_y), len(d.val_y)) == (10, 5000)
    assert fake_torchvision == [{"root": str(tmp_path), "train": True, "download": False}]


def test_cifar_never_downloads_unless_asked(fake_torchvision: list[dict[str, Any]], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for off in ("", "0", "yes please"):  # only "1" opts in
        monkeypatch.setenv(data.CIFAR_DOWNLOAD_ENV, off)
        with pytest.raises(FileNotFoundError, match="EVONORM_CIFAR_DOWNLOAD=1"):
            data.load_cifar("cifar10", str(tmp_path), val_size=12)
    monkeypatch.setenv(data.CIFAR_DOWNLOAD_ENV, "1")
    with pytest.raises(FileNotFoundError, match="download=True"):  # the argument wins over the env
        data.load_cifar("cifar10", str(tmp_path), val_size=12, download=False)
    assert fake_torchvision == []  # torchvision was never asked
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_cifar_downloads_when_opted_in_by_env(fake_torchvision: list[dict[str, Any]], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(data.CIFAR_DOWNLOAD_ENV, "1")
    monkeypatch.setattr(_FakeCIFAR, "n", 5010)
    d = get_task("cifar100").load(str(tmp_path))
    assert isinstance(d, ImageData) and d.num_classes == 100 and len(d.train_y) == 10
    assert fake_torchvision == [{"root": str(tmp_path), "train": True, "download": True}]
    assert (tmp_path / "cifar-100-python").is_dir()


def test_cifar_downloads_when_opted_in_by_argument(fake_torchvision: list[dict[str, Any]],
                                                   tmp_path: Path) -> None:
    d = data.load_cifar("cifar10", str(tmp_path / "new"), val_size=12, download=True)
    assert d.train_x.shape == (48, 3, 32, 32)
    assert fake_torchvision == [{"root": str(tmp_path / "new"), "train": True, "download": True}]
    with pytest.raises(ValueError, match="no training images"):
        data.load_cifar("cifar10", str(tmp_path / "new"), val_size=60)
    # a download still needs somewhere to go
    with pytest.raises(FileNotFoundError, match="EVONORM_DATA_DIR"):
        data.load_cifar("cifar10", None, download=True)
