"""Datasets and data sources for cwworld.

Video datasets yield ``{"image": uint8 [T, H, W, C]}`` sequences (channels-last);
replay sequences add the other step-record fields (``action``, ``reward``, ``is_first``, ...).
:func:`make_dataset` builds the one a config names.
"""

from __future__ import annotations

from pathlib import Path

from .loader import StepBatchSampler, make_loader
from .minerl import MineRLDemos, MineRLRelease, convert_minerl, decode_actions, encode_actions
from .moving_mnist import MovingMNIST, load_digits
from .replay import ReplayBuffer
from .squares import BouncingSquares
from .video import VideoError, VideoFolder, find_videos, read_video

__all__ = [
    "BouncingSquares",
    "MineRLDemos",
    "MineRLRelease",
    "MovingMNIST",
    "ReplayBuffer",
    "StepBatchSampler",
    "VideoError",
    "VideoFolder",
    "convert_minerl",
    "decode_actions",
    "encode_actions",
    "find_videos",
    "load_digits",
    "make_dataset",
    "make_loader",
    "read_video",
]

_EVAL_SEED_OFFSET = 1_000_003


def make_dataset(config, split: str = "train", progress: bool = False):
    """The dataset a config names. ``split="train"``: sequences of ``train.seq_len``;
    ``split="eval"``: held-out sequences of ``eval.context + eval.horizon`` frames."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', found {split!r}")
    data, model, ev = config.data, config.model, config.eval
    train = split == "train"
    length = config.train.seq_len if train else ev.context + ev.horizon
    if data.kind == "squares":
        return BouncingSquares(data.num_videos if train else ev.num_videos, length, data.num_objects,
                               model.image_size, model.channels,
                               seed=data.seed if train else data.seed + _EVAL_SEED_OFFSET)
    if data.kind == "mmnist":
        if model.channels != 1:
            raise ValueError(f"data.kind=mmnist makes grey videos: set model.channels=1 (found {model.channels})")
        return MovingMNIST(data.num_videos if train else ev.num_videos, length, "train" if train else "test",
                           data.num_objects, data.speed, data.path, model.image_size, data.seed)
    if data.kind == "video":
        return VideoFolder(_split_folder(data, train, "the video folder: data.path=/path/to/videos"), length, model.image_size, model.channels,
                           mode=data.mode if train else "chunks", stride=data.stride, crop=data.crop,
                           smaller=data.smaller, cache_dir=data.cache, progress=progress)
    if data.kind == "replay":
        from .replay import ReplayBuffer

        folder = _split_folder(data, train, "the replay directory: data.path=/path/to/replay")
        align = model.factor ** (model.levels - 1) if data.align else 1
        return ReplayBuffer.load(folder, capacity=2**62).sequences(length, align)
    raise ValueError(f"data.kind {data.kind!r} has no dataset")


def _split_folder(data, train: bool, what: str) -> Path:
    """``data.path`` (or its ``train/``) for training; ``data.eval_path``, else ``data.path/test``,
    else ``data.path`` for evaluation."""
    if not data.path:
        raise ValueError(f"data.kind={data.kind} needs {what}")
    root = Path(data.path)
    if train:
        return root / "train" if (root / "train").is_dir() else root
    if data.eval_path:
        return Path(data.eval_path)
    return root / "test" if (root / "test").is_dir() else root
