"""Video files -> fixed-length uint8 sequences: :func:`read_video` and :class:`VideoFolder`.

Videos are decoded with PyAV (FFmpeg), once: each decoded video is cached as an
``uint8 [T, H, W, C]`` ``.npy`` file (written to a temporary name, then renamed)
and later read through a memory map, so training reads no codec at all.
The cache key covers the file's path, size and modification time and the
decoding settings, so a changed file or setting is decoded again.

Frames are brought to ``image_size x image_size``: a non-square frame is first
cropped to its centred square (``crop=True``) or squashed (``crop=False``), then
resized with Pillow's antialiased bilinear filter. A frame smaller than
``image_size`` is upscaled the same way when ``smaller="resize"`` and the video is
rejected when ``smaller="reject"``: never silently mis-shaped.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..utils import atomic_output, load_npy, npz_member

VIDEO_EXTENSIONS = (".mp4", ".avi", ".gif", ".mkv", ".webm", ".mov", ".npz")
CACHE_VERSION = 1


class VideoError(ValueError):
    """A video file that cannot be used; the message names the file."""


def find_videos(root: Union[str, os.PathLike], extensions=VIDEO_EXTENSIONS) -> list[Path]:
    """Video files under ``root``, searched recursively, sorted. Errors name the path."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"video folder {root} does not exist")
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise FileNotFoundError(f"video folder {root} holds no video files ({', '.join(extensions)})")
    return files


def resize_frames(frames: np.ndarray, size: int, crop: bool = True) -> np.ndarray:
    """``uint8 [T, H, W, C]`` -> ``uint8 [T, size, size, C]`` (centre crop to square first when ``crop``)."""
    from PIL import Image

    T, H, W, C = frames.shape
    if crop and H != W:
        side = min(H, W)
        top, left = (H - side) // 2, (W - side) // 2
        frames = frames[:, top : top + side, left : left + side]
    if frames.shape[1:3] == (size, size):
        return np.ascontiguousarray(frames)
    out = np.empty((T, size, size, C), np.uint8)
    for t in range(T):
        image = Image.fromarray(frames[t, ..., 0] if C == 1 else frames[t])
        resized = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
        out[t] = resized[..., None] if C == 1 else resized
    return out


def _decode_av(path: Path, channels: int) -> np.ndarray:
    import av
    from av.video.reformatter import VideoReformatter

    fmt = "gray" if channels == 1 else "rgb24"
    # one reformatter for the whole video: same pixels as frame.to_ndarray(format=fmt),
    # about 3x faster at 64x64 because the swscale context is set up once
    reformatter = VideoReformatter()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = [reformatter.reformat(frame, format=fmt).to_ndarray() for frame in container.decode(stream)]
    except VideoError:
        raise
    except (av.FFmpegError, OSError, EOFError, ValueError) as err:
        raise VideoError(f"{path}: cannot decode ({type(err).__name__}: {err})") from err
    if not frames:
        raise VideoError(f"{path}: no frames could be decoded")
    video = np.stack(frames)
    return video[..., None] if video.ndim == 3 else video


def _decode_npz(path: Path, channels: int) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = [k for k in ("image", "video", "frames") if k in data.files]
            if not keys and len(data.files) != 1:
                raise VideoError(f"{path}: expected an array named image, video or frames "
                                 f"(or a single array), found keys {sorted(data.files)}")
            key = keys[0] if keys else data.files[0]
            video = npz_member(data, key)
    except VideoError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise VideoError(f"{path}: cannot read npz, truncated or corrupted ({type(err).__name__}: {err})") from err
    if video.dtype != np.uint8 or video.ndim not in (3, 4) or (video.ndim == 4 and video.shape[-1] not in (1, 3)):
        raise VideoError(f"{path}: '{key}' must be uint8 [T, H, W] or [T, H, W, 1 or 3], "
                         f"found {video.dtype} {list(video.shape)}")
    if video.ndim == 3:
        video = video[..., None]
    if video.shape[-1] != channels:  # convert like FFmpeg's rgb24 <-> gray (BT.601 luma)
        if channels == 1:
            luma = video.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            video = np.rint(luma)[..., None].astype(np.uint8)
        else:
            video = np.repeat(video, 3, axis=-1)
    return video


def read_video(
    path: Union[str, os.PathLike],
    image_size: Optional[int] = 64,
    channels: int = 3,
    crop: bool = True,
    smaller: Literal["resize", "reject"] = "resize",
) -> np.ndarray:
    """Decode one video file into ``uint8 [T, image_size, image_size, channels]``.

    ``.npz`` files hold one uint8 array (``image``, ``video`` or ``frames``, or the
    only array). Everything else is decoded with PyAV. ``image_size=None`` keeps
    the native size. Raises :class:`VideoError` naming the file when it cannot be
    decoded or is smaller than ``image_size`` with ``smaller="reject"``.
    """
    path = Path(path)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, found {channels}")
    video = _decode_npz(path, channels) if path.suffix.lower() == ".npz" else _decode_av(path, channels)
    if image_size is None:
        return video
    H, W = video.shape[1:3]
    if min(H, W) < image_size and smaller == "reject":
        raise VideoError(f"{path}: frames are {H}x{W}, smaller than image_size {image_size} "
                         "(data.smaller=reject; set it to resize to upscale)")
    return resize_frames(video, image_size, crop)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cwworld" / "videos"


@dataclass
class Skipped:
    path: Path
    reason: str


@dataclass
class FolderSummary:
    root: Path
    videos: int = 0
    frames: int = 0
    sequences: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def __str__(self) -> str:
        text = (f"{self.root}: {self.videos} videos, {self.frames} frames, {self.sequences} sequences; "
                f"skipped {len(self.skipped)} file(s)")
        for item in self.skipped[:10]:
            text += f"\n  skipped {item.path}: {item.reason}"
        if len(self.skipped) > 10:
            text += f"\n  ... and {len(self.skipped) - 10} more"
        return text


class VideoFolder(Dataset):
    """Torch dataset of ``{"image": uint8 [seq_len, S, S, C]}`` sequences from a folder of videos.

    Args:
        root: folder searched recursively for .mp4/.avi/.gif/.mkv/.webm/.mov/.npz files
            (or a single video file).
        seq_len: frames per sequence.
        image_size: frame side ``S`` in pixels.
        channels: 1 (grey) or 3 (RGB).
        mode: ``chunks``: non-overlapping sequences from the start of each video, the
            remainder dropped (the paper's choice); ``sliding``: windows every ``stride`` frames.
        stride: step between window starts in ``sliding`` mode.
        crop / smaller: how frames are brought to ``S x S`` (see :func:`read_video`).
        cache_dir: where decoded videos are kept (default ``~/.cache/cwworld/videos``);
            ``False`` keeps them in memory only.
        workers: threads decoding videos on first use.

    A corrupt, truncated or too-small video (or one shorter than ``seq_len``) is
    skipped with a warning naming the file; ``summary`` counts them. An empty or
    missing folder is an error naming the path.
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        seq_len: int,
        image_size: int = 64,
        channels: int = 3,
        mode: Literal["chunks", "sliding"] = "chunks",
        stride: int = 1,
        crop: bool = True,
        smaller: Literal["resize", "reject"] = "resize",
        cache_dir: Union[str, os.PathLike, None, bool] = None,
        workers: int = 2,
        progress: bool = False,
    ):
        if mode not in ("chunks", "sliding"):
            raise ValueError(f"VideoFolder mode must be 'chunks' or 'sliding', found {mode!r}")
        if seq_len < 1 or stride < 1:
            raise ValueError(f"VideoFolder: seq_len and stride must be >= 1, found {seq_len} and {stride}")
        self.root, self.seq_len, self.image_size, self.channels = Path(root), seq_len, image_size, channels
        self.mode, self.stride, self.crop, self.smaller = mode, stride, crop, smaller
        self.cache_dir = None if cache_dir is False else Path(cache_dir or default_cache_dir())
        files = find_videos(self.root)
        self.summary = FolderSummary(self.root)
        self._memory: dict[int, np.ndarray] = {}
        self._maps: dict[int, np.ndarray] = {}
        self.paths: list[Path] = []  # cached .npy per kept video (or the source when in memory)
        self.sources: list[Path] = []
        lengths = []
        for path, result in zip(files, self._load_all(files, workers, progress)):
            if isinstance(result, str):
                self.summary.skipped.append(Skipped(path, result))
                warnings.warn(f"VideoFolder: skipping {path}: {result}", stacklevel=2)
                continue
            array_or_cache, length = result
            if length < seq_len:
                reason = f"{length} frames, fewer than seq_len {seq_len}"
                self.summary.skipped.append(Skipped(path, reason))
                warnings.warn(f"VideoFolder: skipping {path}: {reason}", stacklevel=2)
                continue
            index = len(self.sources)
            if isinstance(array_or_cache, np.ndarray):
                self._memory[index] = array_or_cache
                self.paths.append(path)
            else:
                self.paths.append(array_or_cache)
            self.sources.append(path)
            lengths.append(length)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        starts = [np.arange(0, n - seq_len + 1, seq_len if mode == "chunks" else stride) for n in lengths]
        self.index = np.concatenate(
            [np.stack([np.full(len(s), i), s], axis=1) for i, s in enumerate(starts)] or [np.zeros((0, 2), int)]
        ).astype(np.int64)  # (sequence -> (video, start frame))
        self.summary.videos, self.summary.frames = len(lengths), int(self.lengths.sum())
        self.summary.sequences = len(self.index)
        if not len(self.index):
            raise ValueError(f"VideoFolder {self.root}: no usable sequence of {seq_len} frames\n{self.summary}")

    # -- decoding and cache --------------------------------------------------------------

    def _cache_path(self, path: Path) -> Path:
        stat = path.stat()
        key = f"{CACHE_VERSION}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|" \
              f"{self.image_size}|{self.channels}|{self.crop}|{self.smaller}"
        return self.cache_dir / f"{path.stem[:40]}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"

    def _load_one(self, path: Path):
        """-> (array or cache path, length), or a reason string when the video is skipped."""
        try:
            if self.cache_dir is not None:
                cached = self._cache_path(path)
                if cached.exists():
                    try:
                        return cached, len(load_npy(cached, mmap_mode="r"))
                    except (ValueError, OSError, EOFError) as err:  # a damaged cache entry: decode again
                        warnings.warn(f"{cached}: unreadable decode cache for {path} ({err}); decoding again",
                                      stacklevel=2)
                        cached.unlink(missing_ok=True)
            video = read_video(path, self.image_size, self.channels, self.crop, self.smaller)
        except VideoError as err:
            return str(err).removeprefix(f"{path}: ")
        if self.cache_dir is None:
            return video, len(video)
        _atomic_save_npy(cached, video)
        return cached, len(video)

    def _load_all(self, files: list[Path], workers: int, progress: bool):
        if progress:
            from rich.progress import track

            wrap = lambda it: track(it, total=len(files), description=f"decoding {self.root}", transient=True)  # noqa: E731
        else:
            wrap = lambda it: it  # noqa: E731
        if workers <= 1:
            return list(wrap(map(self._load_one, files)))
        with ThreadPoolExecutor(workers) as pool:
            return list(wrap(pool.map(self._load_one, files)))

    def video(self, index: int) -> np.ndarray:
        """The whole decoded video ``index`` as ``uint8 [T, S, S, C]`` (a memory map when cached)."""
        if index in self._memory:
            return self._memory[index]
        if index not in self._maps:
            self._maps[index] = load_npy(self.paths[index], mmap_mode="r")
        return self._maps[index]

    def __getstate__(self):  # memory maps are reopened in each DataLoader worker
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    # -- dataset -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict:
        video, start = self.index[index]
        frames = np.array(self.video(int(video))[start : start + self.seq_len])
        return {"image": torch.from_numpy(frames)}


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_output(path, suffix=".npy.tmp") as tmp, open(tmp, "wb") as f:
        np.save(f, array)  # through a file object: np.save would append .npy to a name
