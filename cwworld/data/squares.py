"""Bouncing squares: a generated video dataset that needs no files.

Each video shows ``num_objects`` filled squares moving at constant velocity
(uniform in [2, 6] pixels per frame per axis, like Moving MNIST) and
bouncing off the frame edges. Video ``i`` is a pure function of
``(seed, i)``, so a dataset is reproducible without storing it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


def bouncing_squares(
    rng: np.random.Generator,
    length: int,
    num_objects: int = 2,
    image_size: int = 64,
    channels: int = 1,
    speed: tuple[float, float] = (2.0, 6.0),
) -> np.ndarray:
    """One video, ``uint8 [length, image_size, image_size, channels]``."""
    sizes = rng.integers(8, 15, size=num_objects)  # side in pixels
    pos = rng.uniform(0, image_size - sizes[:, None], size=(num_objects, 2))  # top-left (y, x)
    vel = rng.uniform(*speed, size=(num_objects, 2)) * rng.choice([-1.0, 1.0], size=(num_objects, 2))
    colours = rng.integers(128, 256, size=(num_objects, channels))
    video = np.zeros((length, image_size, image_size, channels), dtype=np.uint8)
    for t in range(length):
        for i in range(num_objects):
            y, x = np.round(pos[i]).astype(int)
            s = sizes[i]
            video[t, y : y + s, x : x + s] = np.maximum(video[t, y : y + s, x : x + s], colours[i])
        pos += vel
        high = image_size - sizes[:, None]
        # reflect off the edges
        over, under = pos > high, pos < 0
        pos = np.where(over, 2 * high - pos, np.where(under, -pos, pos))
        vel = np.where(over | under, -vel, vel)
    return video


class BouncingSquares(Dataset):
    """Torch dataset of ``{"image": uint8 [seq_len, H, W, C]}`` bouncing-square videos,
    generated on access (nothing is stored).

    Args:
        num_videos: dataset size.
        seq_len: frames per video.
        num_objects: squares per video.
        image_size: frame side in pixels.
        channels: 1 (grey) or 3 (each square gets a random colour).
        seed: dataset seed; video ``i`` depends only on ``(seed, i)``.
    """

    def __init__(
        self,
        num_videos: int,
        seq_len: int,
        num_objects: int = 2,
        image_size: int = 64,
        channels: int = 1,
        seed: int = 0,
    ):
        self.num_videos, self.seq_len = num_videos, seq_len
        self.num_objects, self.image_size, self.channels, self.seed = num_objects, image_size, channels, seed

    def video(self, index: int) -> np.ndarray:
        """Video ``index`` as ``uint8 [seq_len, H, W, C]``."""
        if not 0 <= index < self.num_videos:
            raise IndexError(f"BouncingSquares: index {index} out of range for {self.num_videos} videos")
        rng = np.random.default_rng([self.seed, index])
        return bouncing_squares(rng, self.seq_len, self.num_objects, self.image_size, self.channels)

    def __len__(self) -> int:
        return self.num_videos

    def __getitem__(self, index: int) -> dict:
        return {"image": torch.from_numpy(self.video(int(index)))}
