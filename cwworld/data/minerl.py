"""MineRL Navigate demonstrations: the v0 dataset format, the CW-VAE authors' processed
release, one action codec for both, and a converter into replay chunks.

**MineRL v0 format** (``ROOT/<EnvName>/<stream>/``): ``recording.mp4``, ``rendered.npz`` and
``metadata.json``. The npz pairs each of the N-1 actions with the reward paid for it:
``action$forward, back, left, right, jump, sneak, sprint, attack`` (int 0/1, ``[N-1]``),
``action$camera`` (float32 ``[N-1, 2]``: pitch and yaw deltas in degrees),
``action$place`` (``'none'`` / ``'dirt'``), ``reward`` (float32 ``[N-1]``), and the N
observations' vectors ``observation$compass$angle`` (v4 data; ``observation$compassAngle``
in v3 data) and ``observation$inventory$dirt``. N = len(reward) + 1. The video may hold
extra leading frames: the first ``true_video_frame_count - N`` (metadata.json) are skipped.

**Step layout.** Readers shift this into the DreamerV3 layout of DESIGN.md: step ``t`` holds
frame ``t``, ``action[t]`` = the v0 action ``t`` (taken after seeing frame ``t``; zero at the
last step, after which nothing was done), ``reward[t]`` = the v0 reward ``t-1`` (paid on
arriving at frame ``t``; 0 at ``t = 0``), ``compass`` and ``inventory_dirt`` of frame ``t``,
``is_first`` at 0, ``is_last`` at N-1, ``is_terminal`` at N-1 when metadata.json says the
demonstration succeeded (reaching the goal ends a Navigate episode; a timeout does not).

**Action codec.** An 11-dim float32 vector in sorted key order
``[attack, back, camera_0, camera_1, forward, jump, left, place, right, sneak, sprint]``:
binary keys as 0/1, camera in degrees / 180, place 1 for ``'dirt'``.
:func:`decode_actions` gives back a MineRL action dict.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Union

import numpy as np

from ..utils import atomic_write_text, npz_member
from .video import VideoError, read_video

__all__ = [
    "ACTION_KEYS",
    "MineRLDemos",
    "MineRLRelease",
    "convert_minerl",
    "decode_actions",
    "encode_actions",
    "read_v0_stream",
    "write_v0_stream",
]

ACTION_KEYS = ("attack", "back", "camera_0", "camera_1", "forward", "jump", "left", "place", "right", "sneak", "sprint")
BINARY_KEYS = ("attack", "back", "forward", "jump", "left", "right", "sneak", "sprint")
CORRUPTED_STREAMS = ("tempting_capers_shapeshifter-14",)
COMPASS_KEYS = ("observation$compass$angle", "observation$compassAngle")  # v4, v3
STREAM_FILES = ("recording.mp4", "rendered.npz", "metadata.json")
CAMERA_SCALE = 180.0


class MineRLFormatError(ValueError):
    """A MineRL stream that does not hold what the format promises; names the stream and field."""


# -- the action codec -----------------------------------------------------------------------


def encode_actions(actions: dict) -> np.ndarray:
    """MineRL action dict (single or batched; keys with or without the ``action$`` prefix)
    -> float32 ``[..., 11]`` in :data:`ACTION_KEYS` order. Missing keys encode as 0."""
    actions = {k.removeprefix("action$"): v for k, v in actions.items()}
    lead = None
    for key in BINARY_KEYS + ("place",):
        if key in actions:
            lead = np.shape(actions[key])
            break
    if lead is None and "camera" in actions:
        lead = np.shape(actions["camera"])[:-1]
    if lead is None:
        raise ValueError(f"encode_actions: no MineRL action keys in {sorted(actions)}")
    out = np.zeros(lead + (len(ACTION_KEYS),), np.float32)
    for key in BINARY_KEYS:
        if key in actions:
            out[..., ACTION_KEYS.index(key)] = np.asarray(actions[key], dtype=np.float32)
    if "camera" in actions:
        camera = np.asarray(actions["camera"], dtype=np.float32)
        if camera.shape[-1:] != (2,):
            raise ValueError(f"encode_actions: camera must be [..., 2] (pitch, yaw), found {list(camera.shape)}")
        out[..., 2:4] = camera / CAMERA_SCALE
    if "place" in actions:
        place = np.asarray(actions["place"])
        out[..., ACTION_KEYS.index("place")] = (place == "dirt") if place.dtype.kind in "US" else place.astype(bool)
    return out


def decode_actions(vector) -> dict:
    """float ``[..., 11]`` -> MineRL action dict: binary keys as int (threshold 0.5),
    ``camera`` float32 ``[..., 2]`` in degrees, ``place`` ``'dirt'`` or ``'none'``."""
    vector = np.asarray(vector, dtype=np.float32)
    if vector.shape[-1:] != (len(ACTION_KEYS),):
        raise ValueError(f"decode_actions: expected [..., {len(ACTION_KEYS)}], found {list(vector.shape)}")
    out = {key: (vector[..., ACTION_KEYS.index(key)] > 0.5).astype(np.int64) for key in BINARY_KEYS}
    out["camera"] = vector[..., 2:4] * CAMERA_SCALE
    out["place"] = np.where(vector[..., ACTION_KEYS.index("place")] > 0.5, "dirt", "none")
    if vector.ndim == 1:
        out = {k: (v.item() if v.ndim == 0 else v) for k, v in out.items()}
    return out


# -- MineRL v0 streams ----------------------------------------------------------------------


def read_v0_stream(stream_dir: Union[str, os.PathLike], image_size: int = 64) -> dict:
    """One v0 stream folder -> an episode dict in the step layout (see the module docstring):
    ``image`` uint8 ``[N, S, S, 3]``, ``action`` float32 ``[N, 11]``, ``reward`` ``[N]``,
    ``compass`` and ``inventory_dirt`` float32 ``[N, 1]``, ``is_first/is_last/is_terminal`` ``[N]``."""
    stream = Path(stream_dir)
    for name in STREAM_FILES:
        if not (stream / name).is_file():
            raise FileNotFoundError(f"MineRL stream {stream}: missing {name}")
    try:
        with np.load(stream / "rendered.npz", allow_pickle=False) as npz:
            data = {key: npz_member(npz, key) for key in npz.files}  # decoded in a thread
    except ValueError as err:  # e.g. object arrays, which would need pickle
        raise MineRLFormatError(f"MineRL stream {stream.name}: rendered.npz cannot be read without pickle "
                                f"(refused): {err}") from err
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError) as err:
        raise MineRLFormatError(f"MineRL stream {stream.name}: rendered.npz is truncated or corrupted "
                                f"({type(err).__name__}: {err})") from err
    metadata = _read_json_object(stream / "metadata.json", f"MineRL stream {stream.name}")
    for key, value in data.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise MineRLFormatError(f"MineRL stream {stream.name}: rendered.npz {key!r} holds NaN or inf")

    def need(key):
        if key not in data:
            raise MineRLFormatError(f"MineRL stream {stream.name}: rendered.npz has no {key!r} "
                                    f"(keys: {', '.join(sorted(data))})")
        return data[key]

    reward = need("reward").astype(np.float32).reshape(-1)
    N = len(reward) + 1
    actions = {}
    for key in BINARY_KEYS + ("camera", "place"):
        value = need(f"action${key}")
        expected = (N - 1, 2) if key == "camera" else (N - 1,)
        if value.shape != expected:
            raise MineRLFormatError(f"MineRL stream {stream.name}: action${key} has shape {list(value.shape)}, "
                                    f"expected {list(expected)} (one per reward)")
        actions[key] = value
    compass_key = next((k for k in COMPASS_KEYS if k in data), None)
    if compass_key is None:
        need(COMPASS_KEYS[0])
    vectors = {"compass": data[compass_key], "inventory_dirt": need("observation$inventory$dirt")}
    for name, value in vectors.items():
        if len(value) != N:
            raise MineRLFormatError(f"MineRL stream {stream.name}: {name} has {len(value)} values, expected N = {N} "
                                    f"(len(reward) + 1)")

    frames = read_video(stream / "recording.mp4", image_size, 3)
    true_count = metadata.get("true_video_frame_count", len(frames))
    if isinstance(true_count, bool) or not isinstance(true_count, int):
        raise MineRLFormatError(f"MineRL stream {stream.name}: metadata.json 'true_video_frame_count' must be a "
                                f"whole number, found {true_count!r}")
    offset = true_count - N
    if offset < 0:
        raise MineRLFormatError(f"MineRL stream {stream.name}: metadata true_video_frame_count {true_count} "
                                f"is smaller than N = {N} states")
    if len(frames) < offset + N:
        raise MineRLFormatError(f"MineRL stream {stream.name}: recording.mp4 has {len(frames)} frames, "
                                f"fewer than the {N} states (+ {offset} leading frames) the npz describes")
    action = np.zeros((N, len(ACTION_KEYS)), np.float32)
    action[:-1] = encode_actions(actions)
    shifted = np.zeros(N, np.float32)
    shifted[1:] = reward
    flags = np.zeros((3, N), bool)
    flags[0, 0] = flags[1, -1] = True
    flags[2, -1] = bool(metadata.get("success", False))
    return {
        "image": np.ascontiguousarray(frames[offset : offset + N]),
        "action": action,
        "reward": shifted,
        "is_first": flags[0], "is_last": flags[1], "is_terminal": flags[2],
        **{name: np.asarray(v, np.float32).reshape(N, 1) for name, v in vectors.items()},
    }


def _read_json_object(path: Path, what: str) -> dict:
    """A JSON file holding an object, or :class:`MineRLFormatError` naming the file and what was found."""
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise MineRLFormatError(f"{what}: {path.name} is not valid JSON ({err})") from None
    except UnicodeDecodeError:
        raise MineRLFormatError(f"{what}: {path.name} is not UTF-8 text") from None
    if not isinstance(value, dict):
        raise MineRLFormatError(f"{what}: {path.name} must hold a JSON object, found {type(value).__name__}")
    return value


def _stream_dirs(root: Path) -> list[Path]:
    """Stream folders under a dataset root (``ROOT/<EnvName>/<stream>``) or an env folder."""
    if not root.is_dir():
        raise FileNotFoundError(f"MineRL data folder {root} does not exist")
    children = sorted(p for p in root.iterdir() if p.is_dir())
    if any((p / name).exists() for p in children for name in STREAM_FILES):
        return children  # an env folder: every sub-folder is a stream (incomplete ones are skipped later)
    return sorted(p for env in children for p in env.iterdir() if p.is_dir())


class MineRLDemos:
    """Iterate ``(stream_name, episode)`` over the MineRL v0 streams under ``root`` (a dataset
    root holding ``<EnvName>/`` folders, or one env folder). A stream missing a file, and the
    known corrupted stream, and a stream whose files cannot be read as MineRL's (truncated npz,
    malformed metadata, wrong shapes: :class:`MineRLFormatError`, or an undecodable video) are
    skipped with a warning naming the stream and the reason, listed in ``skipped``, and the
    later streams are still read, as MineRL's own loader does. ``read_v0_stream`` raises."""

    def __init__(self, root: Union[str, os.PathLike], image_size: int = 64):
        self.root, self.image_size = Path(root), image_size
        self.streams = _stream_dirs(self.root)
        if not self.streams:
            raise FileNotFoundError(f"MineRL data folder {self.root} holds no stream folders")
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.streams)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.streams]

    def only(self, names) -> None:
        """Keep only the streams named in ``names``."""
        self.streams = [p for p in self.streams if p.name in set(names)]

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        for stream in self.streams:
            if any(bad in stream.name for bad in CORRUPTED_STREAMS):
                self._skip(stream, "known corrupted stream in the MineRL v0 release")
                continue
            missing = [name for name in STREAM_FILES if not (stream / name).is_file()]
            if missing:
                self._skip(stream, f"missing {', '.join(missing)}")
                continue
            try:
                episode = read_v0_stream(stream, self.image_size)
            except (MineRLFormatError, VideoError) as err:
                self._skip(stream, str(err).removeprefix(f"MineRL stream {stream.name}: "))
                continue
            yield stream.name, episode

    def _skip(self, stream: Path, reason: str) -> None:
        self.skipped.append((stream.name, reason))
        warnings.warn(f"MineRL: skipping stream {stream}: {reason}", stacklevel=3)


def write_v0_stream(stream_dir: Union[str, os.PathLike], frames: np.ndarray, actions: dict, reward: np.ndarray,
                    compass: np.ndarray, inventory_dirt: np.ndarray, leading_frames: int = 0,
                    version: str = "v4", success: bool = False, crf: int = 0) -> Path:
    """Write a stream folder in the MineRL v0 format (for tests, benchmarks and examples):
    ``frames`` uint8 ``[N, H, W, 3]`` (H.264 mp4 via PyAV, after ``leading_frames`` extra
    frames), ``actions`` {binary key: int [N-1], camera: float32 [N-1, 2], place: str [N-1]},
    ``reward`` [N-1], ``compass`` and ``inventory_dirt`` [N]; ``version`` v3 or v4 picks the
    compass key."""
    from ..viz import save_mp4

    stream = Path(stream_dir)
    stream.mkdir(parents=True, exist_ok=True)
    N = len(frames)
    lead = np.repeat(frames[:1] // 2, leading_frames, axis=0)
    save_mp4(stream / "recording.mp4", np.concatenate([lead, frames]), fps=20, scale=1, crf=crf)
    arrays = {f"action${k}": np.asarray(v) for k, v in actions.items()}
    arrays["action$place"] = np.asarray(actions["place"]).astype("<U4")
    arrays["reward"] = np.asarray(reward, np.float32)
    arrays[COMPASS_KEYS[0] if version == "v4" else COMPASS_KEYS[1]] = np.asarray(compass, np.float32)
    arrays["observation$inventory$dirt"] = np.asarray(inventory_dirt, np.int64)
    np.savez_compressed(stream / "rendered.npz", **arrays)
    metadata = {"success": success, "duration_steps": N - 1, "total_reward": float(np.sum(reward)),
                "true_video_frame_count": N + leading_frames, "stream_name": stream.name}
    atomic_write_text(stream / "metadata.json", json.dumps(metadata))
    return stream


# -- the CW-VAE authors' processed release -------------------------------------------------


RELEASE_KEYS = ("attack", "back", "camera_x", "camera_y", "forward", "jump", "left", "place", "right", "sneak", "sprint")


class MineRLRelease:
    """Iterate ``(name, episode)`` over a folder of the CW-VAE authors' processed MineRL
    Navigate release (500-frame 64x64 mp4s, optionally a ``metadata.json`` mapping
    ``"<file>.mp4"`` to per-frame lists of ``attack, back, camera_x, camera_y, ...``).

    With actions, ``action[t]`` is the per-frame entry ``t`` (taken after seeing frame ``t``),
    encoded with the shared codec (``camera_x`` -> ``camera_0``, ``camera_y`` -> ``camera_1``,
    in degrees); keys missing from the metadata encode as 0 and are listed in
    ``missing_keys``. Without metadata the episodes hold video only. The release has no rewards.
    """

    def __init__(self, folder: Union[str, os.PathLike], image_size: int = 64):
        self.folder, self.image_size = Path(folder), image_size
        if not self.folder.is_dir():
            raise FileNotFoundError(f"MineRL release folder {self.folder} does not exist")
        self.videos = sorted(self.folder.glob("*.mp4"))
        if not self.videos:
            raise FileNotFoundError(f"MineRL release folder {self.folder} holds no .mp4 files")
        meta_path = self.folder / "metadata.json"
        self.metadata = _read_json_object(meta_path, "MineRL release") if meta_path.exists() else None
        present = set()
        for entry in (self.metadata or {}).values():
            present |= set(entry)
        self.missing_keys = [k for k in RELEASE_KEYS if k not in present] if self.metadata else list(RELEASE_KEYS)

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def names(self) -> list[str]:
        return [p.stem for p in self.videos]

    def only(self, names) -> None:
        """Keep only the videos named (by stem) in ``names``."""
        self.videos = [p for p in self.videos if p.stem in set(names)]

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        for path in self.videos:
            frames = read_video(path, self.image_size, 3)
            N = len(frames)
            episode = {"image": frames, "is_first": np.eye(1, N, dtype=bool)[0],
                       "is_last": np.eye(1, N, N - 1, dtype=bool)[0], "is_terminal": np.zeros(N, bool)}
            if self.metadata is not None:
                entry = self.metadata.get(path.name)
                if entry is None:
                    raise MineRLFormatError(f"{self.folder / 'metadata.json'}: no entry for {path.name}")
                per_frame = {}
                for key, values in entry.items():
                    values = np.asarray(values)
                    if len(values) != N:
                        raise MineRLFormatError(f"{self.folder / 'metadata.json'}: {path.name}: {key!r} has "
                                                f"{len(values)} entries, the video {N} frames")
                    per_frame[key] = values
                if "camera_x" in per_frame or "camera_y" in per_frame:
                    zero = np.zeros(N, np.float32)
                    per_frame["camera"] = np.stack([per_frame.pop("camera_x", zero), per_frame.pop("camera_y", zero)], -1)
                episode["action"] = encode_actions(per_frame) if per_frame else np.zeros((N, 11), np.float32)
            yield path.stem, episode


# -- conversion into replay chunks ----------------------------------------------------------


@dataclass
class ConvertSummary:
    streams: int = 0  # converted in this run
    steps: int = 0
    already: int = 0  # converted by an earlier run, skipped
    skipped: list = field(default_factory=list)  # (stream, reason)

    def __str__(self) -> str:
        return (f"converted {self.streams} streams ({self.steps} steps); {self.already} already converted; "
                f"skipped {len(self.skipped)}")


def _is_release(folder: Path) -> bool:
    """A release split folder: mp4 clips side by side (with or without the release's
    ``metadata.json``), not a v0 stream folder (``recording.mp4`` next to ``rendered.npz``)."""
    return any(p.name != "recording.mp4" for p in folder.glob("*.mp4")) and not (folder / "rendered.npz").exists()


def convert_minerl(src: Union[str, os.PathLike], dst: Union[str, os.PathLike], image_size: int = 64,
                   chunk_size: int = 1000, progress: bool = True) -> ConvertSummary:
    """Convert MineRL demonstrations into replay chunks under ``dst``, one stream per demonstration.

    ``src``: a v0 dataset root or env folder, a release split folder (mp4s), or a release
    root with ``train/`` and ``test/`` (written to ``dst/train`` and ``dst/test``). Streams
    listed in ``dst/converted.json`` are skipped, so an interrupted conversion resumes; a
    stream cut short by an interruption is removed and converted again. Episodes are written
    straight to chunk files: neither ``dst`` nor the converted data is held in memory.
    """
    from .replay import _safe, parse_chunk_name, write_episode

    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise FileNotFoundError(f"MineRL source {src} does not exist")
    if (src / "train").is_dir() and _is_release(src / "train"):
        total = ConvertSummary()
        for split in ("train", "test"):
            if (src / split).is_dir():
                part = convert_minerl(src / split, dst / split, image_size, chunk_size, progress)
                total.streams += part.streams
                total.steps += part.steps
                total.already += part.already
                total.skipped += part.skipped
        return total
    source = MineRLRelease(src, image_size) if _is_release(src) else MineRLDemos(src, image_size)
    dst.mkdir(parents=True, exist_ok=True)
    manifest_path = dst / "converted.json"
    done = set(json.loads(manifest_path.read_text())) if manifest_path.exists() else set()
    summary = ConvertSummary()
    todo = [n for n in source.names if n not in done]
    summary.already = len(source) - len(todo)
    source.only(todo)
    # chunk files of streams not in the manifest: an interrupted earlier attempt (names only, nothing loaded)
    partial: dict[str, list[Path]] = {}
    for path in dst.glob("*.npz"):
        parsed = parse_chunk_name(path)
        if parsed is not None:
            partial.setdefault(parsed[1], []).append(path)

    def episodes():
        # read the next stream (decoding) in a thread while this one is compressed and written
        with ThreadPoolExecutor(1) as pool:
            items = iter(source)
            ahead = pool.submit(next, items, None)
            while True:
                item = ahead.result()
                if item is None:
                    return
                ahead = pool.submit(next, items, None)
                yield item

    iterator = episodes()
    if progress:
        from rich.progress import track

        iterator = track(iterator, total=len(todo), description=f"converting {src}")
    for name, episode in iterator:
        own = re.compile(re.escape(_safe(name)) + r"_[0-9a-f]{8}")
        for stream in [s for s in partial if own.fullmatch(s)]:
            for path in partial.pop(stream):
                path.unlink(missing_ok=True)
        write_episode(dst, episode, name=name, chunk_size=chunk_size)
        done.add(name)
        atomic_write_text(manifest_path, json.dumps(sorted(done)))
        summary.streams += 1
        summary.steps += len(episode["image"])
    summary.skipped = list(getattr(source, "skipped", []))
    return summary
