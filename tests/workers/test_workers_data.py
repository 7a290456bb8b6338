"""Data sets: shapes, dtypes, seeded disjoint splits, the task registry, CIFAR errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
    data.load_cifar.cache_clear()
    with pytest.raises(FileNotFoundError, match="EVONORM_DATA_DIR"):
        get_task("cifar10").load()
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        get_task("cifar100").load(str(tmp_path))


def test_cifar_without_torchvision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    monkeypatch.setitem(__import__("sys").modules, "torchvision", None)  # import fails
    data.load_cifar.cache_clear()
    with pytest.raises(ImportError, match="torchvision"):
        data.load_cifar("cifar10", str(tmp_path))
