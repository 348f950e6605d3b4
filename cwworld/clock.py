"""The clock and the windows of each tick.

Level ``l`` (period ``p = k**l``) ticks at the global steps that are multiples of ``p``.
For a tick at step ``o`` (DESIGN.md, "One alignment per tick"):

==========================================  =============================================
what                                        steps
==========================================  =============================================
actions its transition conditions on        those leading into ``(o - p, o]``:
                                            ``action[o-p] ... action[o-1]``
rewards its window-reward head predicts     ``reward[o-p+1] ... reward[o]``
frames its posterior sums, ``paper``        ``[o, o + p)``
frames its posterior sums, ``causal``       ``(o - p, o]``
==========================================  =============================================

Every window stops at an episode start: a window that contains ``is_first[t]`` keeps
only its steps from ``t`` on (``(o - p, o]`` windows) or before ``t`` (``[o, o + p)``
windows), so nothing before an episode start reaches a state from it on.

Sequences are processed in chunks; a chunk starts at global step ``start`` and its
offsets are chunk-relative. The part of a ``(o - p, o]`` window that lies before the
chunk arrives as a *carry* (the running sums a :class:`~cwworld.states.CWState` keeps).
Everything here is branch-free tensor arithmetic (gathers and masks).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.nn import functional as F

__all__ = ["tick_offsets", "level_lengths", "segment_starts", "window_sums", "pending_sum",
           "forward_window_sums", "open_window_starts", "open_window_sums", "latest_ticks", "range_tensor"]


def tick_offsets(start: int, length: int, period: int) -> range:
    """Offsets ``t`` in ``[0, length)`` at which a level of ``period`` ticks, the clock being at ``start``.

    A level ticks at global steps that are multiples of its period, so the first
    tick of a chunk that starts at global step ``start`` is at offset ``(-start) % period``.
    """
    return range((-start) % period, length, period)


def level_lengths(length: int, factor: int, levels: int, start: int = 0) -> list[int]:
    """Active steps of each level in ``length`` steps starting at global step ``start``.

    >>> level_lengths(100, 6, 3)
    [100, 17, 3]
    """
    return [len(tick_offsets(start, length, factor**level)) for level in range(levels)]


def segment_starts(is_first: Optional[torch.Tensor], length: int, batch: int, device) -> torch.Tensor:
    """``[B, T]`` long: the latest offset ``t' <= t`` with ``is_first[:, t']``, or -1 if none in the chunk."""
    if is_first is None:
        return torch.full((batch, length), -1, dtype=torch.long, device=device)
    index = torch.arange(length, device=device).expand(batch, length)
    return torch.where(is_first, index, torch.full_like(index, -1)).cummax(dim=1).values


def open_window_starts(seg: torch.Tensor, period: int) -> torch.Tensor:
    """``[B, T]`` long: after each step ``t`` of a chunk starting at clock step 0, the level of
    ``period`` holds the open window ``(lo, t]``, ``lo = max(latest tick o <= t, episode start - 1)``
    (``seg`` from :func:`segment_starts`)."""
    B, T = seg.shape
    tick = (torch.arange(T, device=seg.device) // period) * period  # (T,)
    return torch.maximum(tick.expand(B, T), seg - 1)


def open_window_sums(x: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
    """Sum ``x [B, T, D]`` over ``(lo, t]`` for every step ``t`` (``lo [B, T]``, e.g. from
    :func:`open_window_starts`) -> ``[B, T, D]``."""
    cum = F.pad(x.cumsum(1), (0, 0, 1, 0))  # (B, T+1, D): cum[:, j] = sum of steps < j
    return cum[:, 1:] - cum.gather(1, (lo + 1)[..., None].expand(-1, -1, x.shape[-1]))


def _masked_window_sums(x: torch.Tensor, first: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                        width: int) -> torch.Tensor:
    """Sum ``x [B, T, D]`` over the steps ``first + j`` (``j < width``) that lie in ``[lo, hi)``;
    ``first``, ``lo``, ``hi`` ``[B, n]`` -> ``[B, n, D]``.

    Steps outside are multiplied by zero rather than subtracted from a running sum, so a
    window's value does not depend on (finite) values outside it, bit for bit: what keeps an
    episode's states independent of the episode before it.
    """
    B, T, D = x.shape
    steps = first[..., None] + torch.arange(width, device=x.device)  # (B, n, width)
    inside = (steps >= lo[..., None]) & (steps < hi[..., None])
    picked = x.gather(1, steps.clamp(0, T - 1).flatten(1)[..., None].expand(-1, -1, D))  # (B, n*width, D)
    picked = picked.view(B, *steps.shape[1:], D) * inside[..., None].to(x.dtype)
    return picked.sum(dim=2)


def window_sums(x: torch.Tensor, ends: range, period: int, seg: torch.Tensor,
                carry: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sum ``x [B, T, D]`` over each window ``(o - period, o]``, ``o`` in ``ends`` -> ``[B, n, D]``.

    A window keeps only its steps from the latest episode start in it (``seg`` from
    :func:`segment_starts`). ``carry [B, D]`` is the part of the first window that lies
    before the chunk; it is added where the window reaches before the chunk and no
    episode starts between the chunk's start and the window's end.
    """
    B, device = x.shape[0], x.device
    if len(ends) == 0:
        return x.new_zeros(B, 0, x.shape[-1])
    o = range_tensor(ends, device).expand(B, -1)  # (B, n)
    lo = torch.maximum((o + 1 - period).clamp(min=0), seg.gather(1, o))
    width = min(period, ends[-1] + 1)
    sums = _masked_window_sums(x, o + 1 - width, lo, o + 1, width)
    if carry is not None and ends[0] + 1 - period < 0:
        fresh = (seg[:, ends[0]] < 0).to(x.dtype)[:, None]  # (B, 1): no episode start before the tick
        sums = torch.cat([sums[:, :1] + (carry * fresh)[:, None], sums[:, 1:]], dim=1)
    return sums


def pending_sum(x: torch.Tensor, ends: range, seg: torch.Tensor,
                carry: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sum ``x [B, T, D]`` over the steps after the last tick in ``ends`` (all steps and the
    carry if there is none), from the latest episode start on -> ``[B, D]``: the open window
    the next chunk continues."""
    T = x.shape[1]
    last = ends[-1] if len(ends) else None
    period = T + 1 if last is None else T - 1 - last  # the window (last, T-1]
    if period == 0:
        return torch.zeros_like(x[:, 0])
    return window_sums(x, range(T - 1, T), period, seg, carry if last is None else None)[:, 0]


def forward_window_sums(x: torch.Tensor, starts: range, period: int,
                        is_first: Optional[torch.Tensor]) -> torch.Tensor:
    """Sum ``x [B, T, D]`` over each window ``[o, o + period)``, ``o`` in ``starts`` -> ``[B, n, D]``
    (the paper's encoder windows), cut short by the chunk's end and by the next episode start."""
    B, T = x.shape[:2]
    if len(starts) == 0:
        return x.new_zeros(B, 0, x.shape[-1])
    o = range_tensor(starts, x.device).expand(B, -1)  # (B, n)
    hi = (o + period).clamp(max=T)
    if is_first is not None:
        # the earliest episode start after each step: flip, running min, flip back
        index = torch.arange(T, device=x.device).expand(B, T)
        marked = torch.where(is_first, index, torch.full_like(index, T))
        after = F.pad(marked[:, 1:], (0, 1), value=T)  # starts strictly after t
        next_start = after.flip(1).cummin(dim=1).values.flip(1)
        hi = torch.minimum(hi, next_start.gather(1, o))
    return _masked_window_sums(x, o, o, hi, period)


def range_tensor(r: range, device=None) -> torch.Tensor:
    """``torch.tensor(list(r))`` made on ``device`` itself (a copy from the host would make a GPU wait)."""
    return torch.arange(len(r), dtype=torch.long, device=device) * r.step + r.start


def latest_ticks(own: range, above: range, device=None) -> torch.Tensor:
    """For each tick in ``own``, the index in ``above`` of the latest tick at or before it,
    or -1 where the level above has not ticked yet in this chunk -> ``[n_own]`` long."""
    o = range_tensor(own, device)
    if len(above) == 0:
        return torch.full_like(o, -1)
    return torch.where(o < above.start, -1, torch.div(o - above.start, above.step, rounding_mode="floor"))
