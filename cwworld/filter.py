"""Online filtering: one frame at a time, the same state as observing the whole prefix.

``causal`` windows (``model.windows: causal``): a tick's window ``(o - p, o]`` is complete
when its own frame arrives, and the state carries every level's running sums (actions,
embeddings) since its last tick, so one frame costs one step of each level that ticks.

``paper`` windows: a tick's posterior sums the frames ``[o, o + p)``, so it changes with
every frame until its window closes. The state keeps a :class:`~cwworld.states.FilterMemory`
(the frames' embeddings, actions, episode starts and one noise draw per tick since the top
level's latest tick) and recomputes the open windows: up to ``k**(L-1)`` bottom steps per
frame.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from . import inputs
from .clock import tick_offsets
from .states import CWState, FilterMemory

__all__ = ["observe_step"]


def observe_step(model, state: CWState, image_t, action_prev=None, is_first=None, sample: bool = True,
                 vectors_t: Optional[dict] = None) -> CWState:
    """See :meth:`cwworld.model.CWVAE.observe_step`."""
    cfg, dev = model.config, model.device
    state = inputs.check_state(model, state)
    B = state.batch_size
    if (torch.is_tensor(image_t) or isinstance(image_t, np.ndarray)) and image_t.ndim == 4:
        image_t = image_t[:, None]
    image = inputs.check_image(cfg, image_t, "observe_step: image_t", device=dev)
    if image.shape[:2] != (B, 1):
        raise ValueError(f"observe_step: image_t: expected [{B}, H, W, C] (one frame per batch entry), "
                         f"found {tuple(image.shape[:1]) + tuple(image.shape[2:])}")
    if action_prev is not None:
        action_prev = torch.as_tensor(action_prev)
        if action_prev.ndim != 2:
            raise ValueError(f"observe_step: action_prev: expected [{B}, {cfg.action_dim}], "
                             f"found {tuple(action_prev.shape)}")
        action_prev = action_prev[:, None]
    elif cfg.action_dim:
        raise ValueError(f"observe_step: action_prev: this model is action-conditioned; expected "
                         f"[{B}, {cfg.action_dim}] (zeros at an episode's first frame), found None")
    action_prev = inputs.check_actions(cfg, action_prev, B, 1, name="observe_step: action_prev", device=dev)
    first = torch.zeros(B, 1, dtype=torch.bool, device=dev) if is_first is None else \
        inputs.check_is_first(torch.as_tensor(is_first).reshape(-1, 1), B, 1, "observe_step: is_first", dev)
    if action_prev is not None:
        action_prev = action_prev * (~first)[..., None]
    if vectors_t is not None:
        vectors_t = {k: torch.as_tensor(v)[:, None] for k, v in vectors_t.items()}
    embeds = model.encode(image, vectors_t)  # per level (B, 1, E)

    if cfg.windows == "causal":
        _, _, last = model._unroll(state.without_memory(), 1, action_prev=action_prev, is_first=first,
                                   embeds=embeds, sample=sample)
        return last
    return _recompute_open_windows(model, state, embeds, action_prev, first, sample)


def _recompute_open_windows(model, state: CWState, embeds, action_prev, first, sample: bool) -> CWState:
    """``paper`` windows: re-run the steps since the top level's latest tick with this frame added."""
    B, K, t, old = state.batch_size, model.periods[-1], state.step, state.memory
    if old is None or t % K == 0:  # the top level ticks now: every earlier window is complete
        mem = FilterMemory(state.without_memory(), [[] for _ in range(model.levels)], [], [],
                           [[] for _ in range(model.levels)])
    else:
        mem = FilterMemory(old.start, [list(e) for e in old.embeds], list(old.action_prev), list(old.is_first),
                           [list(n) for n in old.noise])
    for level in range(model.levels):
        mem.embeds[level].append(embeds[level])
    if action_prev is not None:
        mem.action_prev.append(action_prev[:, 0])
    mem.is_first.append(first[:, 0])
    n = len(mem.is_first)
    for level in range(model.levels):  # noise for the ticks that appeared with this frame, drawn once
        ticks = len(tick_offsets(mem.start.step, n, model.periods[level]))
        while len(mem.noise[level]) < ticks:
            mem.noise[level].append(torch.randn(B, model.stoch[level], device=model.device))
    noise = [torch.stack(n_l, 1) if n_l else None for n_l in mem.noise] if sample else None
    _, _, last = model._unroll(
        mem.start, n,
        action_prev=torch.stack(mem.action_prev, 1) if mem.action_prev else None,
        is_first=torch.stack(mem.is_first, 1),
        embeds=[torch.cat(e, 1) for e in mem.embeds],
        sample=sample, noise=noise,
    )
    last.memory = mem
    return last
