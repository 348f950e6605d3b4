"""Pictures of videos: GIF writing and side-by-side prediction grids."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

import numpy as np
import torch


def to_uint8(frames) -> np.ndarray:
    """Float in [0, 1] or uint8, tensor or array -> uint8 numpy, same shape."""
    if torch.is_tensor(frames):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def video_grid(rows: list, gap: int = 2) -> np.ndarray:
    """Stack videos side by side per row: ``rows[r][c]`` is ``[T, H, W, C]`` -> ``uint8 [T, H', W', C]``.

    Videos in a grid must share ``H, W, C``; shorter ones hold their last frame.
    """
    rows = [[to_uint8(v) for v in row] for row in rows]
    T = max(v.shape[0] for row in rows for v in row)
    H, W, C = rows[0][0].shape[1:]
    ncols = max(len(row) for row in rows)
    grid = np.full((T, len(rows) * (H + gap) - gap, ncols * (W + gap) - gap, C), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, video in enumerate(row):
            idx = np.minimum(np.arange(T), video.shape[0] - 1)
            grid[:, r * (H + gap) : r * (H + gap) + H, c * (W + gap) : c * (W + gap) + W] = video[idx]
    return grid


def save_gif(path: Union[str, os.PathLike], frames, fps: float = 10.0, scale: int = 2) -> Path:
    """Write ``[T, H, W, C]`` frames (C = 1 or 3) as a looping GIF, atomically."""
    from PIL import Image

    frames = to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"save_gif: expected frames [T, H, W, 1 or 3], found shape {frames.shape}")
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    mode = "L" if frames.shape[-1] == 1 else "RGB"
    images = [Image.fromarray(f[..., 0] if mode == "L" else f, mode=mode) for f in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".gif", dir=path.parent)
    os.close(fd)
    try:
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
