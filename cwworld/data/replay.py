"""A crash-safe replay buffer of step records, in memory or as compressed npz chunks on disk.

Step records follow DESIGN.md (the DreamerV3 layout): step ``t`` holds ``image[t]``
(uint8 ``[H, W, C]``), ``action[t]`` (the action taken after seeing ``image[t]``),
``reward[t]`` (received on arriving at ``image[t]``, 0 when ``is_first[t]``),
``is_first[t]``, ``is_last[t]``, ``is_terminal[t]``, and any extra vector
observations (float32). Images are stored as uint8, booleans as bool, every other
field as float32. A sampled sequence gets ``is_first`` at its first step (the model resets
there) but keeps that step's recorded reward: the model's losses skip rewards at ``is_first``.

**Streams and chunks.** Steps arrive in streams: one per environment worker
(:meth:`ReplayBuffer.add_step` with ``worker=``) or one per added episode
(:meth:`ReplayBuffer.add_episode`). Each stream collects ``chunk_size`` steps in memory,
then writes them as one ``.npz`` chunk, to a temporary name first and renamed when
complete, so a killed writer leaves only whole chunks (and at most a hidden temp file,
which loading ignores and removes). A chunk's file name,
``<time_ns>-<stream>-<length>.npz``, orders chunks by age; stream names get a random
suffix per writer session, so the chunks of one stream are always consecutive steps.

**Capacity.** Beyond ``capacity`` steps the oldest complete chunks are evicted, from
memory and from disk. Loading a directory that holds more than ``capacity`` steps
loads the newest chunks only (older files stay until this buffer's own writes evict them).

**Sampling.** :meth:`ReplayBuffer.sample` draws ``[B, T]`` sequences from the
stored steps (including the in-progress, unsaved ones) of any one stream; a sequence
may cross an episode boundary, and ``is_first`` is set at its first step and wherever an
episode starts inside it, so the model resets its state there. Starts are uniform over
all valid positions, or partly biased to recent data (``recent_fraction``); with
``align=k**(L-1)`` a sequence starts only at steps whose index within their episode is a
multiple of ``align``, so the model's clock agrees with the episode's. The same seed
over the same data gives the same samples.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from ..utils import atomic_output, remove_stale_temporaries

__all__ = ["ReplayBuffer", "ReplaySequences", "parse_chunk_name", "validate_episode", "write_episode"]

BOOL_KEYS = ("is_first", "is_last", "is_terminal")
REQUIRED_KEYS = ("image", "is_first")


def _storage_dtype(key: str) -> np.dtype:
    if key == "image":
        return np.dtype(np.uint8)
    if key in BOOL_KEYS:
        return np.dtype(bool)
    return np.dtype(np.float32)


def _check_values(key: str, value: np.ndarray, source: str, per_step: bool) -> None:
    """Refuse what would be stored wrongly: non-uint8 or empty images (a float frame cast to uint8
    turns 0.9 into 0), non-scalar rewards and flags, and NaN or inf in float fields."""
    lead = () if per_step else value.shape[:1]
    if key == "image":
        if value.dtype != np.uint8 or value.ndim != len(lead) + 3 or 0 in value.shape:
            raise ValueError(f"{source}: 'image' must be uint8 [{'' if per_step else 'N, '}H, W, C] with H, W, C > 0, "
                             f"found {value.dtype} {list(value.shape)}")
    elif key in ("reward",) + tuple(BOOL_KEYS):
        if value.shape != lead:
            raise ValueError(f"{source}: {key!r} must be one number per step, shape {list(lead)}, "
                             f"found {list(value.shape)}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise ValueError(f"{source}: field {key!r} holds NaN or inf")


def validate_episode(episode: dict, source: str = "episode") -> dict:
    """Check an episode dict (arrays of equal length N, ``image`` uint8 ``[N, H, W, C]``) and
    return it with the storage dtypes; errors name ``source``, the field and the shapes."""
    if "image" not in episode:
        raise ValueError(f"{source}: no 'image' field (found {sorted(episode)})")
    out, length = {}, None
    for key, value in episode.items():
        value = np.asarray(value)
        if value.ndim == 0:
            raise ValueError(f"{source}: field {key!r} must be an array over steps, found a scalar")
        if length is None:
            length = len(value)
        elif len(value) != length:
            raise ValueError(f"{source}: field {key!r} has {len(value)} steps, expected {length} like the others")
        if key == "image" and (value.dtype != np.uint8 or value.ndim != 4):
            raise ValueError(f"{source}: 'image' must be uint8 [N, H, W, C], found {value.dtype} {list(value.shape)}")
        if value.dtype.kind in "OUS":
            raise ValueError(f"{source}: field {key!r} holds {value.dtype} values; only numbers are stored")
        _check_values(key, value, source, per_step=False)
        out[key] = value.astype(_storage_dtype(key), copy=False)
    if length == 0:
        raise ValueError(f"{source}: the episode has no steps")
    n = length
    out.setdefault("is_first", np.eye(1, n, dtype=bool)[0])
    out.setdefault("is_last", np.eye(1, n, n - 1, dtype=bool)[0])
    out.setdefault("is_terminal", np.zeros(n, bool))
    if "reward" in out:
        out["reward"] = np.where(out["is_first"], 0.0, out["reward"]).astype(np.float32)
    return out


@dataclass
class _Chunk:
    stream: str
    data: dict  # key -> array [n, ...]
    created: int  # time_ns: age order
    path: Optional[Path] = None  # on disk once written

    def __len__(self) -> int:
        return len(self.data["is_first"])


class _Stream:
    """Steps of one writer in time order: stored chunks, then the open (not yet chunked) steps."""

    def __init__(self, name: str):
        self.name = name
        self.chunks: list[_Chunk] = []
        self.open: dict[str, list] = {}
        self.open_count = 0
        self._open_arrays: Optional[dict] = None  # the open steps stacked, until the next add

    def __len__(self) -> int:
        return sum(len(c) for c in self.chunks) + self.open_count

    def add(self, fields: dict) -> None:
        for key, value in fields.items():
            self.open.setdefault(key, []).append(value)
        self.open_count += 1
        self._open_arrays = None

    def take_open(self) -> dict:
        data = self._parts()[-1] if self.open_count else {}
        self.open, self.open_count, self._open_arrays = {}, 0, None
        return data

    def _parts(self) -> list[dict]:
        parts = [c.data for c in self.chunks]
        if self.open_count:
            if self._open_arrays is None:
                self._open_arrays = {k: np.stack(v) for k, v in self.open.items()}
            parts.append(self._open_arrays)
        return parts

    def field(self, key: str) -> np.ndarray:
        """One field over the whole stream (concatenated)."""
        return np.concatenate([p[key] for p in self._parts()])

    def slice(self, start: int, length: int) -> dict:
        """Steps ``[start, start + length)`` as ``{key: array}``, copied across chunk borders."""
        out, pos = {}, 0
        for part in self._parts():
            n = len(part["is_first"])
            lo, hi = max(start - pos, 0), min(start + length - pos, n)
            if lo < hi:
                for key, value in part.items():
                    out.setdefault(key, []).append(value[lo:hi])
            pos += n
            if pos >= start + length:
                break
        return {k: v[0].copy() if len(v) == 1 else np.concatenate(v) for k, v in out.items()}


class ReplayBuffer:
    """Replay buffer of step records (see the module docstring).

    Args:
        directory: where chunks are written and loaded from; None keeps everything in memory.
            An existing directory is loaded (the buffer resumes).
        capacity: steps kept; the oldest chunks are evicted beyond it.
        chunk_size: steps per chunk file.
        seed: sampling seed.
        recent_fraction: share of each batch drawn from the newest ``recent_steps`` steps.
        recent_steps: what counts as recent for ``recent_fraction``.
        episode_start_fraction: share of each batch whose sequences start at an episode's first
            step (where there are such starts): for tasks whose reward depends on what the
            episode showed at its start (e.g. a cue), so that training sequences hold both.
    """

    def __init__(self, directory: Union[str, os.PathLike, None] = None, capacity: int = 1_000_000,
                 chunk_size: int = 1024, seed: int = 0, recent_fraction: float = 0.0, recent_steps: int = 10_000,
                 episode_start_fraction: float = 0.0):
        if capacity < 1 or chunk_size < 1:
            raise ValueError(f"ReplayBuffer: capacity and chunk_size must be >= 1, found {capacity} and {chunk_size}")
        if not 0.0 <= recent_fraction <= 1.0:
            raise ValueError(f"ReplayBuffer: recent_fraction must be in [0, 1], found {recent_fraction}")
        self.directory = None if directory is None else Path(directory)
        self.capacity, self.chunk_size = capacity, chunk_size
        if not 0.0 <= episode_start_fraction <= 1.0 - recent_fraction:
            raise ValueError(f"ReplayBuffer: episode_start_fraction must be in [0, 1 - recent_fraction], "
                             f"found {episode_start_fraction} (recent_fraction {recent_fraction})")
        self.recent_fraction, self.recent_steps = recent_fraction, recent_steps
        self.episode_start_fraction = episode_start_fraction
        self.rng = np.random.default_rng(seed)
        self.streams: dict[str, _Stream] = {}
        self._workers: dict[int, str] = {}
        self._schema: Optional[dict[str, tuple]] = None  # key -> (dtype, shape per step)
        self._unloaded: list[Path] = []  # older files left out by capacity at load
        self._version = 0  # bumped whenever steps are added or evicted
        self._starts_cache: dict = {}  # (seq_len, align) -> valid_starts, for the current version
        self.skipped_files: list[tuple[Path, str]] = []
        self.vanished_files = 0  # chunks another process evicted between listing and reading them
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load_directory()

    @classmethod
    def load(cls, directory: Union[str, os.PathLike], **kwargs) -> "ReplayBuffer":
        """Open ``directory`` (loading every complete chunk) to sample from it and add to it."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"replay directory {directory} does not exist")
        return cls(directory, **kwargs)

    # -- adding --------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(s) for s in self.streams.values())

    @property
    def keys(self) -> list[str]:
        return [] if self._schema is None else list(self._schema)

    @property
    def shapes(self) -> dict[str, tuple]:
        """Each field's shape per step (``{}`` before the first step)."""
        return {} if self._schema is None else {k: tuple(shape) for k, (_, shape) in self._schema.items()}

    def _check_schema(self, fields: dict, source: str, per_step: bool) -> None:
        shapes = {k: (v.dtype, v.shape if per_step else v.shape[1:]) for k, v in fields.items()}
        if self._schema is None:
            missing = [k for k in REQUIRED_KEYS if k not in fields]
            if missing:
                raise ValueError(f"{source}: missing field(s) {missing}")
            self._schema = shapes
            return
        if set(shapes) != set(self._schema):
            raise ValueError(f"{source}: fields {sorted(shapes)} differ from the buffer's {sorted(self._schema)}")
        for key, (dtype, shape) in shapes.items():
            if (dtype, shape) != self._schema[key]:
                want = self._schema[key]
                raise ValueError(f"{source}: field {key!r} is {dtype} {list(shape)} per step, "
                                 f"the buffer holds {want[0]} {list(want[1])}")

    def add_step(self, step: dict, worker: int = 0) -> None:
        """Append one step record to ``worker``'s stream (written as a chunk every ``chunk_size``)."""
        source = f"add_step (worker {worker})"
        for key, value in step.items():
            value = np.asarray(value)
            if value.dtype.kind in "OUS":
                raise ValueError(f"{source}: field {key!r} holds {value.dtype} values; only numbers are stored")
            _check_values(key, value, source, per_step=True)
        fields = {k: np.asarray(v).astype(_storage_dtype(k), copy=False) for k, v in step.items()}
        fields.setdefault("is_last", np.array(False))
        fields.setdefault("is_terminal", np.array(False))
        if "reward" in fields and fields.get("is_first", False):
            fields["reward"] = np.zeros_like(fields["reward"])
        self._check_schema(fields, source, per_step=True)
        name = self._workers.get(worker)
        if name is None:
            name = self._workers[worker] = f"w{worker}_{uuid.uuid4().hex[:8]}"
            self.streams[name] = _Stream(name)
        stream = self.streams[name]
        stream.add(fields)
        self._changed()
        if stream.open_count >= self.chunk_size:
            self._close_chunk(stream)

    def end_stream(self, worker: int = 0) -> None:
        """Close ``worker``'s stream (its unsaved steps are written); its next step starts a new
        one. Online training ends one per collection round, whose episodes restart anyway, so a
        resumed run's streams are the same as an uninterrupted run's."""
        name = self._workers.pop(worker, None)
        if name is not None and self.directory is not None:
            self._close_chunk(self.streams[name])

    def add_episode(self, episode: dict, name: Optional[str] = None) -> str:
        """Add a whole episode (dict of arrays of length N) as its own stream, written at once.
        Returns the stream name (``name`` plus a random suffix)."""
        source = f"add_episode({name or ''})"
        data = validate_episode(episode, source)
        self._check_schema(data, source, per_step=False)
        stream_name = f"{_safe(name or 'ep')}_{uuid.uuid4().hex[:8]}"
        stream = self.streams[stream_name] = _Stream(stream_name)
        n = len(data["image"])
        for start in range(0, n, self.chunk_size):
            self._store_chunk(stream, {k: v[start : start + self.chunk_size] for k, v in data.items()})
        return stream_name

    def _close_chunk(self, stream: _Stream) -> None:
        if stream.open_count:
            self._store_chunk(stream, stream.take_open())

    def _store_chunk(self, stream: _Stream, data: dict) -> None:
        chunk = _Chunk(stream.name, data, time.time_ns())
        if self.directory is not None:
            chunk.path = _write_chunk(self.directory, stream.name, data, chunk.created)
        stream.chunks.append(chunk)
        self._changed()
        self._evict()

    def _changed(self) -> None:
        self._version += 1
        self._starts_cache.clear()

    def save(self) -> None:
        """Write every stream's unsaved steps as (shorter) chunks; a no-op in memory mode."""
        if self.directory is None:
            return
        for stream in list(self.streams.values()):
            self._close_chunk(stream)

    def _evict(self) -> None:
        excess = len(self) - self.capacity
        chunks = [] if excess <= 0 else sorted((c for s in self.streams.values() for c in s.chunks), key=lambda c: c.created)
        for chunk in chunks:
            if excess <= 0:
                break
            stream = self.streams[chunk.stream]
            stream.chunks.remove(chunk)  # always the stream's oldest: streams stay contiguous
            self._changed()
            excess -= len(chunk)
            if chunk.path is not None:
                chunk.path.unlink(missing_ok=True)
            if not len(stream) and chunk.stream not in self._workers.values():
                del self.streams[chunk.stream]
        for path in self._unloaded:  # older than anything loaded: evicted first
            path.unlink(missing_ok=True)
        self._unloaded = []
        self._evict_on_disk()

    def _evict_on_disk(self) -> None:
        """Other processes may write chunks into the same directory: keep the directory's total
        within ``capacity`` too, removing its oldest complete chunk files (names only are read)."""
        if self.directory is None:
            return
        entries = sorted((*parsed, path) for path in self.directory.glob("*.npz")
                         if (parsed := parse_chunk_name(path)) is not None)
        excess = sum(length for _, _, length, _ in entries) - self.capacity
        mine = {c.path: (s, c) for s in self.streams.values() for c in s.chunks if c.path is not None}
        for _, _, length, path in entries:
            if excess <= 0:
                break
            path.unlink(missing_ok=True)
            excess -= length
            if path in mine:  # one of ours (an older in-memory view): forget it as well
                stream, chunk = mine[path]
                if chunk in stream.chunks:
                    stream.chunks.remove(chunk)
                    self._changed()

    # -- loading -------------------------------------------------------------------------

    def _load_directory(self) -> None:
        remove_stale_temporaries(self.directory)  # chunks cut short by killed writers; live writers' stay
        entries = []
        for path in self.directory.glob("*.npz"):
            parsed = parse_chunk_name(path)
            if parsed is None:
                self._skip(path, "not a chunk name (<time_ns>-<stream>-<length>.npz)")
                continue
            entries.append((*parsed, path))
        entries.sort(reverse=True)  # newest first, until the capacity is full
        total, keep = 0, []
        for created, stream, length, path in entries:
            if total + length > self.capacity and keep:
                self._unloaded.append(path)
                continue
            total += length
            keep.append((created, stream, length, path))
        for created, stream_name, length, path in sorted(keep):
            data = self._read_chunk(path, length)
            if data is None:
                continue
            stream = self.streams.setdefault(stream_name, _Stream(stream_name))
            stream.chunks.append(_Chunk(stream_name, data, created, path))

    def _read_chunk(self, path: Path, length: int) -> Optional[dict]:
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {key: npz[key] for key in npz.files}
        except FileNotFoundError:  # evicted by another writer since the listing: gone, not damaged
            self.vanished_files += 1
            return None
        except Exception as err:  # a damaged file is skipped, never half-used
            self._skip(path, f"unreadable ({type(err).__name__}: {err})")
            return None
        lengths = {key: len(v) for key, v in data.items()}
        if set(lengths.values()) != {length}:
            self._skip(path, f"field lengths {lengths} do not match the {length} steps in its name")
            return None
        try:
            validate_episode(data, str(path))  # a chunk no writer could have stored never sets the schema
            self._check_schema(data, str(path), per_step=False)
        except ValueError as err:
            self._skip(path, str(err))
            return None
        return data

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped_files.append((path, reason))
        warnings.warn(f"ReplayBuffer: skipping {path}: {reason}", stacklevel=3)

    # -- sampling ------------------------------------------------------------------------

    def valid_starts(self, seq_len: int, align: int = 1) -> list[tuple[str, np.ndarray]]:
        """Per stream, the step indices where a sequence of ``seq_len`` can start
        (cached until steps are added or evicted)."""
        cached = self._starts_cache.get((seq_len, align))
        if cached is not None:
            return cached
        out = []
        for stream in self.streams.values():
            n = len(stream)
            if n < seq_len:
                continue
            starts = np.arange(n - seq_len + 1)
            if align > 1:
                starts = starts[_index_in_episode(stream.field("is_first"))[starts] % align == 0]
            if len(starts):
                out.append((stream.name, starts))
        self._starts_cache[(seq_len, align)] = out
        return out

    def sample(self, batch_size: int, seq_len: int, align: int = 1) -> dict:
        """``batch_size`` sequences of ``seq_len`` steps: ``{key: array [B, T, ...]}`` with
        ``is_first[:, 0]`` True (see the module docstring)."""
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"sample: batch_size and seq_len must be >= 1, found {batch_size} and {seq_len}")
        starts = self.valid_starts(seq_len, align)
        if not starts:
            longest = max((len(s) for s in self.streams.values()), default=0)
            raise ValueError(f"sample: no stream holds {seq_len} steps{' at aligned starts' if align > 1 else ''} "
                             f"(the buffer holds {len(self)} steps, the longest stream {longest})")
        counts = np.array([len(s) for _, s in starts])
        total = counts.sum()
        offsets = np.concatenate([[0], np.cumsum(counts)])
        n_recent = int(round(batch_size * self.recent_fraction))
        n_first = int(round(batch_size * self.episode_start_fraction))
        firsts = self._episode_start_positions(starts, offsets) if n_first else np.zeros(0, np.int64)
        n_first = n_first if len(firsts) else 0
        picks = list(self.rng.integers(total, size=batch_size - n_recent - n_first))
        if n_recent:
            recent = self._recent_positions(starts, offsets)
            picks += list(recent[self.rng.integers(len(recent), size=n_recent)])
        if n_first:
            picks += list(firsts[self.rng.integers(len(firsts), size=n_first)])
        batch = {}
        for pick in picks:
            which = int(np.searchsorted(offsets, pick, side="right") - 1)
            name, stream_starts = starts[which]
            start = int(stream_starts[pick - offsets[which]])
            for key, value in self.streams[name].slice(start, seq_len).items():
                batch.setdefault(key, []).append(value)
        batch = {k: np.stack(v) for k, v in batch.items()}
        batch["is_first"] = batch["is_first"].copy()
        batch["is_first"][:, 0] = True  # the model resets there; the recorded reward stays (the loss masks it)
        return batch

    def _episode_start_positions(self, starts, offsets) -> np.ndarray:
        """Flat positions of the starts that are an episode's first step."""
        positions = [offsets[i] + np.flatnonzero(self.streams[name].field("is_first")[stream_starts])
                     for i, (name, stream_starts) in enumerate(starts)]
        return np.concatenate(positions) if positions else np.zeros(0, np.int64)

    def _recent_positions(self, starts, offsets) -> np.ndarray:
        """Flat positions of the starts in the newest ``recent_steps`` steps of each stream,
        weighted so the most recently written streams come first."""
        newest = sorted(range(len(starts)), key=lambda i: self._stream_age(starts[i][0]), reverse=True)
        positions, budget = [], self.recent_steps
        for i in newest:
            name, stream_starts = starts[i]
            take = stream_starts[stream_starts >= stream_starts[-1] + 1 - budget]
            positions.append(offsets[i] + np.searchsorted(stream_starts, take))
            budget -= len(take)
            if budget <= 0:
                break
        return np.concatenate(positions)

    def _stream_age(self, name: str) -> int:
        stream = self.streams[name]
        if stream.open_count:
            return time.time_ns()
        return stream.chunks[-1].created if stream.chunks else 0

    # -- torch ---------------------------------------------------------------------------

    def dataset(self, batch_size: int, seq_len: int, align: int = 1) -> "ReplayStream":
        """An endless torch ``IterableDataset`` of sampled batches (tensors), for online training
        (use it with ``batch_size=None`` in a DataLoader, in the process that adds data)."""
        return ReplayStream(self, batch_size, seq_len, align)

    def sequences(self, seq_len: int, align: int = 1) -> "ReplaySequences":
        """A map-style torch dataset of every valid sequence start, for offline training
        (fixed data: works with :class:`cwworld.data.StepBatchSampler` and worker processes)."""
        return ReplaySequences(self, seq_len, align)


class ReplayStream(IterableDataset):
    def __init__(self, buffer: ReplayBuffer, batch_size: int, seq_len: int, align: int = 1):
        self.buffer, self.batch_size, self.seq_len, self.align = buffer, batch_size, seq_len, align

    def __iter__(self) -> Iterator[dict]:
        while True:
            yield {k: torch.from_numpy(v) for k, v in self.buffer.sample(self.batch_size, self.seq_len,
                                                                          self.align).items()}


class ReplaySequences(Dataset):
    """Every valid ``seq_len`` window of a (fixed) replay buffer as a dataset item
    ``{key: tensor [seq_len, ...]}``, with ``is_first[0]`` True."""

    def __init__(self, buffer: ReplayBuffer, seq_len: int, align: int = 1):
        self.seq_len = seq_len
        starts = buffer.valid_starts(seq_len, align)
        if not starts:
            raise ValueError(f"replay buffer{f' {buffer.directory}' if buffer.directory else ''}: "
                             f"no sequence of {seq_len} steps ({len(buffer)} steps stored)")
        self._streams = [buffer.streams[name] for name, _ in starts]
        self.index = np.concatenate([np.stack([np.full(len(s), i), s], 1) for i, (_, s) in enumerate(starts)])
        self.summary = f"replay: {len(buffer)} steps in {len(buffer.streams)} streams, {len(self.index)} sequences"

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict:
        stream, start = self.index[index]
        item = {k: torch.from_numpy(v) for k, v in self._streams[stream].slice(int(start), self.seq_len).items()}
        item["is_first"][0] = True  # the model resets there; the recorded reward stays (the loss masks it)
        return item


def parse_chunk_name(path: Path) -> Optional[tuple[int, str, int]]:
    """``<time_ns>-<stream>-<length>.npz`` -> ``(time_ns, stream, length)``, None for other names."""
    parts = Path(path).stem.split("-")
    if len(parts) < 3 or not parts[0].isdigit() or not parts[-1].isdigit():
        return None
    return int(parts[0]), "-".join(parts[1:-1]), int(parts[-1])


def _write_chunk(directory: Path, stream: str, data: dict, created: int) -> Path:
    """One compressed chunk file, written to a temporary name and renamed when complete."""
    path = directory / f"{created:020d}-{stream}-{len(data['is_first'])}.npz"
    with atomic_output(path, suffix=".npz.tmp") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **data)
    return path


def write_episode(directory: Union[str, os.PathLike], episode: dict, name: str = "ep",
                  chunk_size: int = 1024) -> str:
    """Write an episode as chunk files of a new stream in ``directory`` without loading or holding
    a buffer (for converters of large datasets); :meth:`ReplayBuffer.load` reads them.
    Returns the stream name (``name`` plus a random suffix)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = validate_episode(episode, f"write_episode({name})")
    stream = f"{_safe(name)}_{uuid.uuid4().hex[:8]}"
    for start in range(0, len(data["image"]), chunk_size):
        _write_chunk(directory, stream, {k: v[start : start + chunk_size] for k, v in data.items()}, time.time_ns())
    return stream


def _index_in_episode(is_first: np.ndarray) -> np.ndarray:
    """Steps since the latest episode start (or the stream start) for each step."""
    idx = np.arange(len(is_first))
    last_start = np.maximum.accumulate(np.where(is_first, idx, 0))
    return idx - last_start


def _safe(name: str) -> str:
    """A stream name usable in a file name: no dashes (they separate the name's fields)."""
    return "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in name)[:80] or "stream"
