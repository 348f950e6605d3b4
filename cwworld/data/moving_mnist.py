"""Moving MNIST: handwritten digits bouncing in a 64x64 frame, generated on the fly.

Each video shows ``num_digits`` 28x28 MNIST digits moving at constant speed
(uniform in [2, 6] pixels per frame, times ``speed``, in a uniformly random
direction) and bouncing off the frame edges; overlapping digits combine with
``max``. Video ``i`` of a split is a pure function of ``(seed, split, i)``, so a
dataset of any size costs no storage and is reproducible.

Digits come from real MNIST files when given (``data.path``: the standard IDX
files, gzipped or not, a folder holding them, or an npz such as Keras'
``mnist.npz``), otherwise from the 2,000 MNIST digits shipped with the package
(``cwworld/data/assets/mnist_digits.npz``, CC BY-SA 3.0, see its README).
Training videos use the training digits, test videos the test digits.
"""

from __future__ import annotations

import contextlib
import gzip
import os
from importlib import resources
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

DIGIT_SIZE = 28
_SPLITS = {"train": 0, "test": 1}
_IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
}


def read_idx(path: Union[str, os.PathLike]) -> np.ndarray:
    """An IDX file (the MNIST distribution format; ``.gz`` or plain) as a numpy array.

    Only unsigned-byte data (type code 0x08) is accepted, which is what the
    MNIST image and label files hold.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (expected magic bytes 00 00, found {raw[:2].hex() or 'nothing'})")
    if raw[2] != 0x08:
        raise ValueError(f"{path}: IDX data type 0x{raw[2]:02x}, expected 0x08 (unsigned byte)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) if dims else 0
    found = len(raw) - header
    if found != expected:
        raise ValueError(f"{path}: IDX header says shape {dims} ({expected} bytes of data), found {found} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_digits(path: Optional[Union[str, os.PathLike]] = None, split: str = "train") -> np.ndarray:
    """MNIST digit images ``uint8 [N, 28, 28]`` (white on black) for ``split`` (train | test).

    ``path``: None (the shipped digits), an IDX file, a folder holding the
    standard IDX files (``train-images-idx3-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``),
    or an npz with ``x_train``/``x_test`` (Keras) or ``train_images``/``test_images``.
    """
    _check_split(split)
    if path is None:
        return _digits_from_npz(None, split)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"MNIST digits: {path} does not exist")
    if path.is_dir():
        for name in _IDX_NAMES[split]:
            for candidate in (path / name, path / f"{name}.gz"):
                if candidate.exists():
                    return _check_digits(read_idx(candidate), candidate)
        if (path / "mnist.npz").exists():
            return _digits_from_npz(path / "mnist.npz", split)
        raise FileNotFoundError(
            f"MNIST digits: {path} holds neither {_IDX_NAMES[split][0]}[.gz] nor mnist.npz"
        )
    if path.suffix == ".npz":
        return _digits_from_npz(path, split)
    return _check_digits(read_idx(path), path)


_LABEL_NAMES = {
    "train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def load_labels(path: Optional[Union[str, os.PathLike]] = None, split: str = "train") -> np.ndarray:
    """The classes ``uint8 [N]`` of :func:`load_digits`' digits (same ``path`` and ``split``): the
    shipped npz's ``train_labels``/``test_labels``, Keras' ``y_train``/``y_test``, or the IDX label
    files next to the image files."""
    _check_split(split)
    if path is None:
        return _labels_from_npz(None, split)
    path = Path(path)
    if path.is_dir() and (path / "mnist.npz").exists():
        return _labels_from_npz(path / "mnist.npz", split)
    if path.suffix == ".npz":
        return _labels_from_npz(path, split)
    folder = path if path.is_dir() else path.parent
    for name in _LABEL_NAMES[split]:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.exists():
                return read_idx(candidate)
    raise FileNotFoundError(f"MNIST labels: {folder} holds no {_LABEL_NAMES[split][0]}[.gz]")


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', found {split!r}")


def _npz_array(path: Optional[Path], split: str, what: str, keys: tuple[str, str]) -> tuple[np.ndarray, Path, str]:
    """The first of ``keys`` in an npz (``path`` None: the shipped digits) -> ``(array, path, key)``."""
    with contextlib.ExitStack() as stack:
        if path is None:
            path = stack.enter_context(resources.as_file(resources.files("cwworld.data") / "assets" / "mnist_digits.npz"))
        with np.load(path, allow_pickle=False) as data:
            for key in keys:
                if key in data:
                    return data[key], path, key
            raise KeyError(f"{path}: no digit {what} for split {split!r}: expected key {' or '.join(keys)}, "
                           f"found keys {sorted(data.files)}")


def _labels_from_npz(path: Optional[Path], split: str) -> np.ndarray:
    labels, _, _ = _npz_array(path, split, "labels", (f"y_{split}", f"{split}_labels"))
    return np.asarray(labels).astype(np.uint8)


def _digits_from_npz(path: Optional[Path], split: str) -> np.ndarray:
    return _check_digits(*_npz_array(path, split, "images", (f"x_{split}", f"{split}_images")))


def _check_digits(images: np.ndarray, path, key: str = "images") -> np.ndarray:
    if images.ndim != 3 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE) or images.dtype != np.uint8 or len(images) == 0:
        raise ValueError(f"{path}: {key} must be uint8 [N, 28, 28] with N > 0, "
                         f"found {images.dtype} {list(images.shape)}")
    return images


def bounce(start: np.ndarray, velocity: np.ndarray, length: int, high: float) -> np.ndarray:
    """Positions ``[length, ...]`` of points moving from ``start`` at ``velocity`` per frame,
    reflected off 0 and ``high`` (a triangle wave, exact for any speed)."""
    t = np.arange(length, dtype=np.float64).reshape(-1, *([1] * start.ndim))
    phase = np.mod(start + velocity * t, 2.0 * high)
    return high - np.abs(high - phase)


def moving_mnist_layout(
    rng: np.random.Generator,
    available: int,
    length: int,
    num_digits: int = 2,
    image_size: int = 64,
    speed: float = 1.0,
    velocity_range: tuple[float, float] = (2.0, 6.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``available`` digits a video shows ``[num_digits]``, and their top-left corners
    ``[length, num_digits, 2]`` (y, x), without drawing anything."""
    high = float(image_size - DIGIT_SIZE)
    which = rng.integers(available, size=num_digits)
    start = rng.uniform(0.0, high, size=(num_digits, 2))  # (y, x) of the top-left corner
    magnitude = rng.uniform(*velocity_range, size=num_digits) * speed
    angle = rng.uniform(0.0, 2.0 * np.pi, size=num_digits)
    velocity = np.stack([np.sin(angle), np.cos(angle)], axis=-1) * magnitude[:, None]
    return which, np.rint(bounce(start, velocity, length, high)).astype(np.int64)  # [T, n, 2]


def draw_digits(chosen: np.ndarray, corners: np.ndarray, image_size: int = 64) -> np.ndarray:
    """Digits ``chosen [n, 28, 28]`` drawn at ``corners [T, n, 2]`` (overlaps combine with ``max``)
    -> ``uint8 [T, image_size, image_size, 1]``."""
    video = np.zeros((len(corners), image_size, image_size, 1), dtype=np.uint8)
    for t in range(len(corners)):
        for i in range(len(chosen)):
            y, x = corners[t, i]
            window = video[t, y : y + DIGIT_SIZE, x : x + DIGIT_SIZE, 0]
            np.maximum(window, chosen[i], out=window)
    return video


def moving_mnist_video(
    rng: np.random.Generator,
    digits: np.ndarray,
    length: int,
    num_digits: int = 2,
    image_size: int = 64,
    speed: float = 1.0,
    velocity_range: tuple[float, float] = (2.0, 6.0),
    with_layout: bool = False,
):
    """One video ``uint8 [length, image_size, image_size, 1]``; with ``with_layout`` also the
    chosen digits' indices and corners (:func:`moving_mnist_layout`)."""
    which, corners = moving_mnist_layout(rng, len(digits), length, num_digits, image_size, speed, velocity_range)
    video = draw_digits(digits[which], corners, image_size)
    return (video, which, corners) if with_layout else video


class MovingMNIST(Dataset):
    """Torch dataset of ``{"image": uint8 [seq_len, 64, 64, 1]}`` Moving MNIST videos.

    Args:
        num_videos: dataset size (videos are generated on access, nothing is stored).
        seq_len: frames per video (the paper: 100 for training, 1000 for testing).
        split: ``train`` or ``test``: which digits, and an independent stream of videos.
        num_digits: digits per video (2 in the paper).
        speed: multiplier on the [2, 6] pixels-per-frame speed range (the paper's
            Sec. 3.9 slower/faster variants use e.g. 0.5 and 2).
        digits: MNIST files to read digits from (see :func:`load_digits`); None: shipped digits.
        image_size: frame side in pixels.
        seed: dataset seed; video ``i`` depends only on ``(seed, split, i)``.
    """

    def __init__(
        self,
        num_videos: int,
        seq_len: int,
        split: str = "train",
        num_digits: int = 2,
        speed: float = 1.0,
        digits: Optional[Union[str, os.PathLike]] = None,
        image_size: int = 64,
        seed: int = 0,
    ):
        if num_videos < 1 or seq_len < 1 or num_digits < 1 or speed < 0:
            raise ValueError(f"MovingMNIST: need num_videos, seq_len, num_digits >= 1 and speed >= 0, found "
                             f"{num_videos}, {seq_len}, {num_digits}, {speed}")
        if image_size < DIGIT_SIZE:
            raise ValueError(f"MovingMNIST: image_size must be at least {DIGIT_SIZE}, found {image_size}")
        self.num_videos, self.seq_len, self.split = num_videos, seq_len, split
        self.num_digits, self.speed, self.image_size, self.seed = num_digits, speed, image_size, seed
        self.digits = load_digits(digits, split)
        self.digits_path, self.labels = digits, None  # labels are read when a layout is asked for

    def __len__(self) -> int:
        return self.num_videos

    def video(self, index: int) -> np.ndarray:
        """Video ``index`` as ``uint8 [seq_len, H, W, 1]``."""
        if not 0 <= index < self.num_videos:
            raise IndexError(f"MovingMNIST: index {index} out of range for {self.num_videos} videos")
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], index])
        return moving_mnist_video(rng, self.digits, self.seq_len, self.num_digits, self.image_size, self.speed)

    def layout(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Video ``index``'s digit classes ``[num_digits]`` and top-left corners ``[seq_len,
        num_digits, 2]`` (y, x), for the digit-identity metric (:mod:`cwworld.digits`)."""
        if not 0 <= index < self.num_videos:
            raise IndexError(f"MovingMNIST: index {index} out of range for {self.num_videos} videos")
        if self.labels is None:
            self.labels = load_labels(self.digits_path, self.split)
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], index])  # the video's own draws
        which, corners = moving_mnist_layout(rng, len(self.digits), self.seq_len, self.num_digits, self.image_size,
                                             self.speed)
        return self.labels[which], corners

    def __getitem__(self, index: int) -> dict:
        return {"image": torch.from_numpy(self.video(int(index)))}
