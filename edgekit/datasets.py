"""Labelled images for training and for accuracy on the device: Fashion-MNIST (Debian's dataset-fashion-mnist),
a folder with one subfolder per class, or an .npz with `x` (N, H, W[, C]) and `y` (N,), optionally `classes`.
One preprocessing for all of them, shared by training, the host reference and the board: resize to the
model's resolution, grey to 3 channels, scale to [-1, 1] (MobileNet's input range)."""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UsageError

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
HELD_OUT = 0.2  # share of a folder or .npz kept for testing (Fashion-MNIST has its own test split)
SEED = 7


@dataclass
class Dataset:
    x: np.ndarray        # (N, H, W, C) uint8 or float
    y: np.ndarray        # (N,) int64 class indices
    classes: list[str]

    def take(self, n: int | None) -> "Dataset":
        return self if n is None else Dataset(self.x[:n], self.y[:n], self.classes)


def _idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format): big-endian dims after a 4-byte magic whose last byte is the rank."""
    data = gzip.open(path).read()
    ndim = data[3]
    dims = np.frombuffer(data[4:4 + 4 * ndim], ">u4").astype(int)
    return np.frombuffer(data[4 + 4 * ndim:], np.uint8).reshape(dims)


def _fashion_mnist(split: str) -> Dataset:
    prefix = "train" if split == "train" else "t10k"
    if not (FASHION_MNIST / f"{prefix}-images-idx3-ubyte.gz").is_file():
        raise UsageError(f"Fashion-MNIST is not installed at {FASHION_MNIST}: apt-get install dataset-fashion-mnist "
                         "(make demo and make test install it)")
    x = _idx(FASHION_MNIST / f"{prefix}-images-idx3-ubyte.gz")[..., None]
    return Dataset(x, _idx(FASHION_MNIST / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64), FASHION_CLASSES)


def _folder(path: Path) -> Dataset:
    from PIL import Image
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((path / c).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if len(classes) < 2 or not files:
        raise UsageError(f"{path} holds no images in class subfolders: give DIR/<class>/<image>.png, two classes or more")
    first = Image.open(files[0][0]).convert("RGB")
    x = np.stack([np.asarray(Image.open(f).convert("RGB").resize(first.size)) for f, _ in files])
    return Dataset(x, np.array([i for _, i in files], np.int64), classes)


def _npz(path: Path) -> Dataset:
    try:
        with np.load(path) as f:
            x, y = f["x"], f["y"].astype(np.int64).reshape(-1)
            classes = [str(c) for c in f["classes"]] if "classes" in f else [str(i) for i in range(int(y.max()) + 1)]
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"cannot read {path} ({e}): give an .npz with arrays x (N, H, W[, C]) and y (N,)") from None
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or len(x) != len(y) or x.shape[-1] not in (1, 3):
        raise UsageError(f"{path}: x has shape {x.shape} and y {y.shape}; need x (N, H, W[, 1 or 3]) and y (N,)")
    return Dataset(x, y, classes)


def load(spec: str | Path, split: str) -> Dataset:
    """`spec`: "fashion-mnist", a folder or an .npz; `split`: "train" or "test". Folders and .npz files are
    split by a seeded shuffle, so the test images never were training images."""
    if str(spec) == "fashion-mnist":
        return _fashion_mnist(split)
    path = Path(spec)
    if path.is_dir():
        data = _folder(path)
    elif path.suffix == ".npz" and path.is_file():
        data = _npz(path)
    else:
        raise UsageError(f"dataset '{spec}' is neither fashion-mnist, a folder of class subfolders nor an .npz file")
    order = np.random.default_rng(SEED).permutation(len(data.y))
    cut = int(len(order) * (1 - HELD_OUT))
    part = order[:cut] if split == "train" else order[cut:]
    return Dataset(data.x[part], data.y[part], data.classes)


def preprocess(x: np.ndarray, size: tuple[int, int], layout: str = "NHWC") -> np.ndarray:
    """uint8 (or float) images (N, H, W, C) -> float32 (N, 3, *size) or (N, *size, 3) in [-1, 1]. Resizing is
    bilinear through TensorFlow, the same for training and for validation."""
    import tensorflow as tf
    x = np.asarray(x, np.float32)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if x.shape[1:3] != tuple(size):
        x = np.concatenate([tf.image.resize(x[i:i + 512], size, method="bilinear").numpy() for i in range(0, len(x), 512)])
    x = x / 127.5 - 1.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if layout == "NCHW" else x, dtype=np.float32)
