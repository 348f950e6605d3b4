"""Find host synchronisations: the places where Python waits for a tensor's value.

On a GPU every such read (``float(loss)``, ``if x.any():``, ``x.item()``, ``x.nonzero()``,
boolean-mask indexing, ``x.cpu()``) stalls the host until the device has finished all queued
work, so a training or acting step with them cannot run ahead of the GPU. :func:`record_syncs`
lists them on ANY device, the CPU included, by watching the tensor operations that need a value
on the host (through :class:`torch.overrides.TorchFunctionMode`); on CUDA,
:func:`record_cuda_syncs` additionally asks the driver-level check
(``torch.cuda.set_sync_debug_mode``) to report the synchronisations that really happened.

    with record_syncs() as syncs:
        trainer.train_step(batch)
    print(syncs.summary())   # e.g. {"cwworld/train.py:331 __float__": 12, ...}
"""

from __future__ import annotations

import collections
import contextlib
import os
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode

# operations that need a tensor's value (or its data-dependent size) on the host
_READS_VALUE = {"__bool__", "__float__", "__int__", "__index__", "__complex__", "item", "tolist", "numpy",
                "nonzero", "masked_select", "unique", "unique_consecutive", "argwhere", "cpu"}
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HERE = os.path.abspath(__file__)
_SKIP = (_HERE, os.path.dirname(torch.__file__), os.path.abspath(warnings.__file__))
_OPTIM = os.path.join(os.path.dirname(torch.__file__), "optim")


@dataclass
class SyncLog:
    """Where values were read: one ``"file:line op"`` entry per read (file relative to the project)."""

    sites: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sites)

    def summary(self) -> dict[str, int]:
        """``{"file:line op": count}``, most frequent first."""
        return dict(collections.Counter(self.sites).most_common())


def _caller(skip_optimizers: bool = False):
    """The innermost line of the stack outside torch and this module; None when ``skip_optimizers``
    and the read comes straight from ``torch.optim`` (non-capturable optimizers read their step
    counters, which live on the CPU by design: no device is waited for)."""
    frames = [f for f in traceback.extract_stack()[:-2]
              if os.path.abspath(f.filename) != _HERE and "contextlib" not in f.filename]
    if skip_optimizers and frames and os.path.abspath(frames[-1].filename).startswith(_OPTIM):
        return None
    for frame in reversed(frames):  # past torch and the warnings module reporting
        path = os.path.abspath(frame.filename)
        if not path.startswith(_SKIP):
            return f"{os.path.relpath(path, _PACKAGE) if path.startswith(_PACKAGE) else path}:{frame.lineno}"
    return "?"


def _is_host_read(name: str, args, kwargs) -> bool:
    if name in _READS_VALUE:
        return True
    if name == "__getitem__" and len(args) > 1:  # boolean-mask indexing has a data-dependent size
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)
    if name == "to":  # a copy from a device to the host
        targets = [a for a in (*args[1:], *kwargs.values()) if isinstance(a, (str, torch.device))]
        return _on_device(args[0]) and any(torch.device(t).type == "cpu" for t in targets)
    if name == "copy_":  # into a host tensor, from a device one
        return len(args) > 1 and _on_device(args[1]) and args[0].device.type == "cpu"
    return False


def _on_device(x) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type != "cpu"


class _Recorder(TorchFunctionMode):
    def __init__(self, log: SyncLog):
        super().__init__()
        self.log = log

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if _is_host_read(name, args, kwargs):
            where = _caller(skip_optimizers=True)
            if where is not None:
                self.log.sites.append(f"{where} {name}")
        return func(*args, **kwargs)


@contextlib.contextmanager
def record_syncs() -> Iterator[SyncLog]:
    """Record every tensor operation in the block that reads a value (or a data-dependent size)
    back to the host; yields a :class:`SyncLog`. Works on CPU tensors too (where such a read costs
    nothing, but the same line would stall a GPU). Copies from the host to a device are not seen
    (on CPU they are no copies at all), though one from pageable memory makes CUDA wait:
    :func:`record_cuda_syncs` reports those."""
    log = SyncLog()
    with _Recorder(log):
        yield log


@contextlib.contextmanager
def record_cuda_syncs() -> Iterator[SyncLog]:
    """CUDA only: the synchronisations the CUDA caching allocator and kernels really performed in
    the block (``torch.cuda.set_sync_debug_mode("warn")``), with the Python line that caused each."""
    log = SyncLog()
    previous = torch.cuda.get_sync_debug_mode()

    def note(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message).lower():
            log.sites.append(f"{_caller()} {str(message).splitlines()[0][:60]}")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = note
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield log
        finally:
            torch.cuda.set_sync_debug_mode(previous)
