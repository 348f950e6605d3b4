"""Pictures of videos: GIF and mp4 writing, side-by-side prediction grids."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import torch

from .utils import atomic_output


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
    with atomic_output(path, suffix=".gif") as tmp:
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return Path(path)


def save_mp4(path: Union[str, os.PathLike], frames, fps: float = 10.0, scale: int = 1, crf: int = 18) -> Path:
    """Write ``[T, H, W, C]`` frames (C = 1 or 3) as an H.264 mp4 with PyAV, atomically.

    H and W (after ``scale``) must be even (yuv420p); ``crf`` 0 is lossless luma.
    """
    import av

    frames = to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"save_mp4: expected frames [T, H, W, 1 or 3], found shape {frames.shape}")
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    if frames.shape[-1] == 1:
        frames = frames.repeat(3, axis=-1)
    T, H, W, _ = frames.shape
    if H % 2 or W % 2:
        raise ValueError(f"save_mp4: frame height and width must be even for yuv420p, found {H}x{W}")
    with atomic_output(path, suffix=".mp4") as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def save_video(path: Union[str, os.PathLike], frames, fps: float = 10.0, scale: int = 2) -> Path:
    """Write frames as a GIF or an mp4, chosen by the file extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        return save_gif(path, frames, fps=fps, scale=scale)
    if suffix == ".mp4":
        return save_mp4(path, frames, fps=fps, scale=scale)
    raise ValueError(f"{path}: unsupported video extension {suffix!r} (use .gif or .mp4)")
