"""Offline data sets as in-memory tensors, and the task registry.

Nothing here downloads unless asked to: CIFAR is read from a local copy, and
torchvision fetches it only on an explicit opt-in (`download=True` or
$EVONORM_CIFAR_DOWNLOAD=1). Every split is fixed by a seed that does not depend
on the training seed, so all candidates are scored on the same examples.
Images are kept as uint8 (N, C, H, W) and normalized per batch with the
train set's per-channel mean and std (`ImageData.normalize`); that keeps
CIFAR at 150 MB instead of 600 MB and lets a GPU hold a whole set.

Data sets:
    digits       scikit-learn's bundled 8x8 digits (1,797 images, 10 classes)
    shapes32     procedurally generated 32x32 RGB shapes and textures, 10 classes
    pydoc_chars  characters of CPython's bundled `pydoc_data.topics`
    cifar10/100  torchvision's CIFAR from a local directory (a download only on opt-in;
                 needs the `cifar` extra, torchvision)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

SPLIT_SEED = 0  # the one seed every split uses unless a caller asks otherwise
DATA_DIR_ENV = "EVONORM_DATA_DIR"
CIFAR_DOWNLOAD_ENV = "EVONORM_CIFAR_DOWNLOAD"  # "1": torchvision may download a missing CIFAR


@dataclass(frozen=True)
class ImageData:
    """Train/val images (uint8, N x C x H x W) and int64 labels, plus normalization."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    mean: tuple[float, ...]  # per channel, in raw uint8 units, of the train images
    std: tuple[float, ...]
    num_classes: int

    def normalize(self, x: Tensor) -> Tensor:
        """A uint8 batch -> float32, standardized per channel."""
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x.float() - mean) / std

    def to(self, device: torch.device | str) -> ImageData:
        return ImageData(self.train_x.to(device), self.train_y.to(device), self.val_x.to(device),
                         self.val_y.to(device), self.mean, self.std, self.num_classes)


@dataclass(frozen=True)
class TextData:
    """A character vocabulary and int64 train/val token streams."""

    vocab: str
    train: Tensor
    val: Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> Tensor:
        index = {ch: i for i, ch in enumerate(self.vocab)}
        return torch.tensor([index[ch] for ch in text], dtype=torch.long)

    def decode(self, ids: Tensor | list[int]) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def batch(self, split: str, batch_size: int, block_size: int,
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Random windows: x = tokens [i, i+T), y = tokens [i+1, i+T+1)."""
        data = self.train if split == "train" else self.val
        starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
        idx = starts.to(data.device)[:, None] + torch.arange(block_size, device=data.device)
        return data[idx], data[idx + 1]

    def windows(self, split: str, block_size: int, max_tokens: int | None = None
                ) -> tuple[Tensor, Tensor]:
        """Consecutive non-overlapping windows from the start of a split (for evaluation)."""
        data = self.train if split == "train" else self.val
        n = (len(data) - 1) // block_size
        if max_tokens is not None:
            n = max(1, min(n, max_tokens // block_size))
        x = data[: n * block_size].view(n, block_size)
        y = data[1: n * block_size + 1].view(n, block_size)
        return x, y

    def to(self, device: torch.device | str) -> TextData:
        return TextData(self.vocab, self.train.to(device), self.val.to(device))


def channel_stats(x: np.ndarray, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (biased) std of uint8 images (N, C, H, W), a chunk of images at a time.

    The sums of pixels and of their squares are integers, exact in int64, so no
    float copy of the whole set is made (CIFAR's would be 1.1 GB in float64):
    the mean is numpy's float64 mean to the bit, and the variance is exact
    before its one rounding (numpy's float64 std differs by an ulp or so).
    """
    if x.dtype != np.uint8:
        raise TypeError(f"channel_stats takes uint8 images, got {x.dtype}")
    n, c = x.shape[0], x.shape[1]
    count = n * int(np.prod(x.shape[2:]))
    if count == 0:
        raise ValueError(f"channel_stats needs at least one pixel, got images of shape {x.shape}")
    s1 = np.zeros(c, dtype=np.int64)
    s2 = np.zeros(c, dtype=np.int64)
    for i in range(0, n, chunk):
        block = x[i: i + chunk].astype(np.int64)
        s1 += block.sum(axis=(0, 2, 3))
        s2 += (block * block).sum(axis=(0, 2, 3))
    # Python ints: count * s2 overflows int64 on CIFAR; int / int is correctly rounded.
    mean = tuple(int(a) / count for a in s1)
    var = [(count * int(b) - int(a) ** 2) / count**2 for a, b in zip(s1, s2, strict=True)]
    return mean, tuple(float(np.sqrt(v)) for v in var)


def _image_data(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                num_classes: int) -> ImageData:
    train = np.ascontiguousarray(train_x, dtype=np.uint8)
    mean, std = channel_stats(train)
    return ImageData(
        torch.from_numpy(train),
        torch.from_numpy(np.asarray(train_y, dtype=np.int64)),
        torch.from_numpy(np.ascontiguousarray(val_x, dtype=np.uint8)),
        torch.from_numpy(np.asarray(val_y, dtype=np.int64)),
        mean, tuple(s + 1e-6 for s in std), num_classes,
    )


# --- digits ---------------------------------------------------------------

@lru_cache(maxsize=4)
def load_digits(val_fraction: float = 0.2, seed: int = SPLIT_SEED) -> ImageData:
    """scikit-learn's 8x8 digits (pixel values 0..16), a seeded stratified-free split."""
    from sklearn.datasets import load_digits as sk_load_digits

    digits = sk_load_digits()
    x = digits.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), values 0..16
    y = digits.target
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = round(len(y) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    return _image_data(x[train], y[train], x[val], y[val], 10)


# --- shapes32 -------------------------------------------------------------

SHAPE_CLASSES = ("disk", "square", "triangle", "ring", "plus", "diamond", "bar",
                 "stripes", "checker", "dots")


def _shape_masks(label: int, u: np.ndarray, v: np.ndarray, period: np.ndarray) -> np.ndarray:
    """Foreground masks for one class; u, v are rotated coordinates in shape radii."""
    r2 = u * u + v * v
    au, av = np.abs(u), np.abs(v)
    name = SHAPE_CLASSES[label]
    if name == "disk":
        return r2 < 1.0
    if name == "square":
        return np.maximum(au, av) < 0.8
    if name == "triangle":  # apex up
        return (v < 0.7) & (au < (0.7 - v) * 0.62)
    if name == "ring":
        return (r2 < 1.0) & (r2 > 0.4)
    if name == "plus":
        return ((au < 0.28) & (av < 1.0)) | ((av < 0.28) & (au < 1.0))
    if name == "diamond":
        return au + av < 1.1
    if name == "bar":
        return (av < 0.22) & (au < 1.1)
    # textures, inside a square patch of the same size as the shapes
    patch = np.maximum(au, av) < 1.0
    p = period[:, None, None]
    if name == "stripes":
        return patch & (np.sin(2 * np.pi * u / p) > 0)
    if name == "checker":
        return patch & (np.sin(2 * np.pi * u / p) * np.sin(2 * np.pi * v / p) > 0)
    # dots: a grid of small spots
    return patch & (np.cos(2 * np.pi * u / p) * np.cos(2 * np.pi * v / p) > 0.45)


@dataclass(frozen=True)
class ShapesStyle:
    """Ranges of the nuisances in `generate_shapes` (uniform draws; contrast log-uniform)."""

    radius: tuple[float, float] = (0.35, 0.7)       # shape size, in image half-widths
    contrast: tuple[float, float] = (0.4, 1.4)      # per-image contrast factor
    brightness: tuple[float, float] = (-0.25, 0.25)
    noise: tuple[float, float] = (0.0, 0.1)         # pixel noise std, in [0, 1] units
    gradient: float = 0.25                          # max background slope per half-width
    distractor: bool = True                         # a random spot of a random colour


def generate_shapes(n: int, seed: int, size: int = 32, style: ShapesStyle = ShapesStyle()
                    ) -> tuple[np.ndarray, np.ndarray]:
    """n seeded RGB images (uint8, N x 3 x size x size) and their labels (balanced).

    Each image: a light random-coloured shape or textured patch at a random
    place, size and (small) rotation on a dark random-coloured background
    with a colour gradient and a distractor spot, then a random contrast and
    brightness and pixel noise. The label is the shape only, so colour, contrast and
    position are nuisances a good network (and a good normalizer) must
    discount. Vectorised numpy, about 0.1-0.2 s per 1,000 images.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(SHAPE_CLASSES))
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    yy, xx = np.meshgrid(grid, grid, indexing="ij")

    cx, cy = rng.uniform(-0.4, 0.4, (2, n)).astype(np.float32)
    radius = rng.uniform(*style.radius, n).astype(np.float32)
    # Small rotations keep square/diamond and plus/x-like shapes apart; bars
    # and textures take any orientation.
    angle = rng.uniform(-0.25, 0.25, n)
    free = np.isin(labels, [SHAPE_CLASSES.index(c) for c in ("bar", "stripes", "checker")])
    angle[free] = rng.uniform(0, np.pi, int(free.sum()))
    cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
    # Texture periods of 4 to 7 pixels, well above the 2-pixel aliasing limit.
    period = (rng.uniform(4.0, 7.0, n) / (radius * size / 2)).astype(np.float32)  # in radii

    dx = xx[None] - cx[:, None, None]
    dy = yy[None] - cy[:, None, None]
    r = radius[:, None, None]
    u = (cos[:, None, None] * dx + sin[:, None, None] * dy) / r
    v = (-sin[:, None, None] * dx + cos[:, None, None] * dy) / r
    mask = np.zeros((n, size, size), dtype=bool)
    for label in range(len(SHAPE_CLASSES)):
        sel = labels == label
        mask[sel] = _shape_masks(label, u[sel], v[sel], period[sel])

    # Random colours, a light shape on a dark background: colour says nothing
    # about the class. (With random polarity too, a small network spends
    # its first few hundred steps on a plateau, which a short search budget
    # cannot afford.)
    fg = rng.uniform(0.55, 1.0, (n, 3)).astype(np.float32)
    bg = rng.uniform(0.0, 0.45, (n, 3)).astype(np.float32)
    slope = rng.uniform(-style.gradient, style.gradient, (n, 2, 1)).astype(np.float32)
    gradient = slope[:, 0, :, None, None] * xx + slope[:, 1, :, None, None] * yy  # (n, 1, H, W)
    images = bg[:, :, None, None] + gradient
    images = np.where(mask[:, None], fg[:, :, None, None], images)

    # A distractor spot of a random colour somewhere in the image.
    sx, sy = rng.uniform(-0.9, 0.9, (2, n, 1, 1)).astype(np.float32)
    spot = (xx - sx) ** 2 + (yy - sy) ** 2 < rng.uniform(0.08, 0.16, (n, 1, 1)) ** 2
    spot_colour = rng.uniform(0, 1, (n, 3, 1, 1)).astype(np.float32)
    if style.distractor:
        images = np.where(spot[:, None], spot_colour, images)

    # Photometric nuisances, folded into one multiply-add in 0..255 units.
    low, high = np.log(style.contrast)
    contrast = np.exp(rng.uniform(low, high, (n, 1, 1, 1))).astype(np.float32)
    brightness = rng.uniform(*style.brightness, (n, 1, 1, 1)).astype(np.float32)
    sigma = rng.uniform(*style.noise, (n, 1, 1, 1)).astype(np.float32)
    noise = rng.standard_normal(images.shape, dtype=np.float32)
    scale = 255 * contrast
    offset = 255 * (0.5 - 0.5 * contrast + brightness) + 0.5
    pixels = images * scale + offset + noise * (255 * sigma)
    pixels = np.clip(pixels, 0, 255, out=pixels).astype(np.uint8)
    return pixels, labels.astype(np.int64)


@lru_cache(maxsize=4)
def load_shapes32(n_train: int = 5000, n_val: int = 1000, seed: int = SPLIT_SEED,
                  style: ShapesStyle = ShapesStyle()) -> ImageData:
    """The shapes32 set: one seeded stream, the first n_train images train, the rest val."""
    x, y = generate_shapes(n_train + n_val, seed, style=style)
    return _image_data(x[:n_train], y[:n_train], x[n_train:], y[n_train:], len(SHAPE_CLASSES))


# --- pydoc characters ------------------------------------------------------

@lru_cache(maxsize=4)
def load_pydoc_chars(val_fraction: float = 0.1, seed: int = SPLIT_SEED) -> TextData:
    """Characters of `pydoc_data.topics`, split by topic so val text is unseen text.

    Topics are shuffled with the seed and go to val until it holds at least
    val_fraction of the characters. The vocabulary covers both splits. The
    corpus ships with CPython, so its size and vocabulary follow the
    interpreter's version (about 465k characters and 103 symbols on 3.11).
    """
    from pydoc_data.topics import topics

    keys = sorted(topics)
    order = np.random.default_rng(seed).permutation(len(keys))
    total = sum(len(topics[k]) for k in keys)
    val_keys: list[str] = []
    val_chars = 0
    for i in order:
        if val_chars >= val_fraction * total:
            break
        val_keys.append(keys[i])
        val_chars += len(topics[keys[i]])
    train_keys = [k for k in keys if k not in set(val_keys)]
    train_text = "\n\n".join(topics[k] for k in train_keys)
    val_text = "\n\n".join(topics[k] for k in sorted(val_keys))
    vocab = "".join(sorted(set(train_text) | set(val_text)))
    index = {ch: i for i, ch in enumerate(vocab)}

    def encode(text: str) -> Tensor:
        return torch.tensor([index[ch] for ch in text], dtype=torch.long)

    return TextData(vocab, encode(train_text), encode(val_text))


# --- CIFAR ----------------------------------------------------------------

def cifar_download_allowed(download: bool | None = None) -> bool:
    """An explicit `download` wins; None reads $EVONORM_CIFAR_DOWNLOAD ("1" allows a download)."""
    if download is not None:
        return download
    return os.environ.get(CIFAR_DOWNLOAD_ENV, "").strip() == "1"


@lru_cache(maxsize=2)
def load_cifar(name: str, root: str | None = None, val_size: int = 5000,
               seed: int = SPLIT_SEED, download: bool | None = None) -> ImageData:
    """CIFAR-10/100 from a local torchvision-format directory; downloads only on opt-in.

    root (or $EVONORM_DATA_DIR) must hold `cifar-10-batches-py/` or
    `cifar-100-python/`, unless `download=True` (or, with download None,
    $EVONORM_CIFAR_DOWNLOAD=1) lets torchvision fetch a missing copy into root
    (a machine with internet). Validation is a seeded val_size hold-out of the
    official training set; the official test set stays untouched for final
    reporting, as in the paper's search.
    """
    root = root or os.environ.get(DATA_DIR_ENV)
    download = cifar_download_allowed(download)
    if name not in ("cifar10", "cifar100"):
        raise ValueError(f"name must be cifar10 or cifar100, got {name!r}")
    folder_name = _CIFAR_DIRS[name]
    how_to_download = (f"or allow torchvision to download it there with download=True or "
                       f"{CIFAR_DOWNLOAD_ENV}=1 (needs internet)")
    if not root:
        raise FileNotFoundError(
            f"{name} is read from a local directory: pass data_root=/path/to/dir (or set "
            f"${DATA_DIR_ENV}) pointing at a directory that holds torchvision's {folder_name}/ "
            f"folder, {how_to_download}")
    folder = Path(root) / folder_name
    if not folder.is_dir() and not download:
        raise FileNotFoundError(
            f"{name}: no {folder}; point data_root (or ${DATA_DIR_ENV}) at a directory that holds "
            f"torchvision's extracted {folder_name}/ folder, {how_to_download}; nothing was downloaded")
    try:
        from torchvision import datasets
    except ImportError as exc:
        raise ImportError(f"{name} needs the 'torchvision' package (the `cifar` extra, or the build "
                          f"matching your torch: `pip install torchvision`)") from exc
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    ds = cls(str(root), train=True, download=download)
    x = np.asarray(ds.data).transpose(0, 3, 1, 2)  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    y = np.asarray(ds.targets)
    if val_size >= len(y):
        raise ValueError(f"{name}: val_size {val_size} leaves no training images of {len(y)}")
    order = np.random.default_rng(seed).permutation(len(y))
    val, train = order[:val_size], order[val_size:]
    return _image_data(x[train], y[train], x[val], y[val], 10 if name == "cifar10" else 100)


_CIFAR_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


# --- tasks ----------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """A data set by name.

    kind: "image" (classification, input_shape (C, H, W)) or "text" (next
    character, input_shape (block_size,), the default context length).
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    classes: int | None  # None: the vocabulary, known once the text is read
    loader: Callable[[str | None], ImageData | TextData] = field(repr=False)
    description: str = ""

    @property
    def num_classes(self) -> int:
        """Number of classes, or the vocabulary size for text."""
        if self.classes is not None:
            return self.classes
        data = self.load()
        assert isinstance(data, TextData)
        return data.vocab_size

    def load(self, root: str | None = None) -> ImageData | TextData:
        """The data (cached in-process); root is only read by the CIFAR tasks."""
        return self.loader(root)


TASKS: dict[str, Task] = {
    "digits": Task("digits", "image", (1, 8, 8), 10, lambda root: load_digits(),
                   "scikit-learn 8x8 digits, 1437 train / 360 val"),
    "shapes32": Task("shapes32", "image", (3, 32, 32), 10, lambda root: load_shapes32(),
                     "procedural 32x32 RGB shapes and textures, 5000 train / 1000 val"),
    "pydoc_chars": Task("pydoc_chars", "text", (64,), None, lambda root: load_pydoc_chars(),
                        "characters of CPython's pydoc_data.topics, split by topic"),
    "cifar10": Task("cifar10", "image", (3, 32, 32), 10, lambda root: load_cifar("cifar10", root),
                    "CIFAR-10 from a local directory, 45000 train / 5000 val"),
    "cifar100": Task("cifar100", "image", (3, 32, 32), 100,
                     lambda root: load_cifar("cifar100", root),
                     "CIFAR-100 from a local directory, 45000 train / 5000 val"),
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None
