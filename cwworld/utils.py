"""Small runtime helpers shared by the trainer, the CLI and the benchmarks."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import io
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_output(path: Union[str, os.PathLike], suffix: str = ".tmp") -> Iterator[Path]:
    """Write a file atomically: yields a temporary path in the same folder, which replaces
    ``path`` when the block succeeds (with the usual permissions of a new file) and is
    removed when it fails, so ``path`` is never seen half-written. ``suffix`` lets writers
    that pick the format from the extension (PIL, matplotlib) see the right one. The temporary
    name carries the writer's pid (``.NAME.pidPID.XXXX.tmp``), so that a process cleaning up
    after a killed writer removes only the temporaries of processes that are gone
    (:func:`remove_stale_temporaries`), never the file another live process is writing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.pid{os.getpid()}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)) and _disk_full(path.parent):
            # torch.save says "unexpected pos ..." when the disk fills: say what happened
            raise OSError(errno.ENOSPC, f"no space left on the device of {path.parent}: could not write "
                                        f"{path.name} (nothing was replaced)") from err
        raise


def _disk_full(folder: Path, margin: int = 1 << 20) -> bool:
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def check_writable(folder: Union[str, os.PathLike], what: str, hint: str = "choose another folder (e.g. --out)") -> Path:
    """``folder``, created if needed, after checking that a file can be written there (before
    any long computation whose results go there): ``PermissionError`` naming it otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise PermissionError(f"{what}: cannot write into {folder} ({err.strerror or err}); {hint}") from None
    return folder


def remove_stale_temporaries(folder: Union[str, os.PathLike], pattern: str = ".*.tmp") -> list[Path]:
    """Delete the temporaries of :func:`atomic_output` in ``folder`` whose writing process is gone
    (a write cut short by a kill); those of live processes stay. Returns what was deleted."""
    import re

    removed = []
    for path in Path(folder).glob(pattern):
        match = re.search(r"\.pid(\d+)\.", path.name)
        if match and _process_alive(int(match.group(1))):
            continue  # another process is writing it right now
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory instead of handing it back to the OS.

    By default glibc serves blocks over 32 MiB with ``mmap`` and unmaps them on
    free, so every training step page-faults its large activations afresh; on
    the 2-core CPU used for the README figures this alone made a Moving MNIST
    training step about 1.7x slower. Same effect as the environment variables
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>``. Process-wide, so the
    library never calls it on import: the trainer and benchmarks do, on CPU.

    Returns True when applied (Linux with glibc), False elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok = (mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1) and ok
    return ok


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device: {name!r} requested but CUDA is not available here")
    return device


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (Linux/macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def cpu_name() -> str:
    """A short description of this machine's CPU, for benchmark tables."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


class RunDirectoryBusy(ValueError):
    """Another process is training in this run directory."""


class RunLock:
    """An exclusive lock on a run directory (``RUN_DIR/.lock``, ``flock``), holding the owner's pid.

    The operating system drops the lock when its holder exits, however it exits (a SIGKILL
    included), so a stale lock file never blocks a later run.
    """

    def __init__(self, run_dir: Union[str, os.PathLike]):
        import fcntl

        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise ValueError(f"{run_dir}: a run directory must be a folder, found a file")
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / ".lock"
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise RunDirectoryBusy(f"{run_dir} is in use: process {holder} is training in it (it holds {self.path}); "
                                   "wait for it to finish or stop it, or choose another --run-dir") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()

    @property
    def held(self) -> bool:
        return not self._file.closed

    def release(self) -> None:
        if not self._file.closed:
            self._file.close()  # closing the descriptor drops the flock


NPY_HEADER_LOCK = threading.Lock()
"""Held while numpy parses a ``.npy`` header. numpy parses headers with ``ast.literal_eval``, and
CPython 3.11 can fail that with a spurious ``SystemError: AST constructor recursion depth
mismatch`` when several threads parse at once (CPython gh-106905); the readers that decode in
threads (:class:`cwworld.data.VideoFolder`, the MineRL converter) go through the two helpers below."""


def npz_member(npz, key: str) -> np.ndarray:
    """``npz[key]`` of an open ``np.load(..., allow_pickle=False)`` archive, safe from several
    threads at once: the member is decompressed outside :data:`NPY_HEADER_LOCK`, parsed inside it."""
    name = key if key in npz.zip.namelist() else f"{key}.npy"
    raw = npz.zip.read(name)  # zlib releases the GIL: threads still decompress side by side
    with NPY_HEADER_LOCK:
        return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)


def load_npy(path, mmap_mode=None) -> np.ndarray:
    """``np.load(path, mmap_mode=mmap_mode, allow_pickle=False)`` of a ``.npy`` file, its header parsed
    under :data:`NPY_HEADER_LOCK` (safe from several threads at once)."""
    with NPY_HEADER_LOCK:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
