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
from .states import CWState, FilterMemory, PendingFrames

__all__ = ["observe_step"]


def observe_step(model, state: CWState, image_t, action_prev=None, is_first=None, sample: bool = True,
                 vectors_t: Optional[dict] = None, validate: bool = True) -> CWState:
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
    action_prev = inputs.check_actions(cfg, action_prev, B, 1, name="observe_step: action_prev", device=dev,
                                       finite=validate)
    first = torch.zeros(B, 1, dtype=torch.bool, device=dev) if is_first is None else \
        inputs.check_is_first(torch.as_tensor(is_first).reshape(-1, 1), B, 1, "observe_step: is_first", dev)
    if action_prev is not None:
        action_prev = action_prev * (~first)[..., None]
    if vectors_t is not None:
        vectors_t = {k: torch.as_tensor(v)[:, None] for k, v in vectors_t.items()}
    if cfg.windows == "causal":
        frame = model.embed_frames(image, vectors_t)[:, 0]  # (B, E)
        return _causal_step(model, state, frame, None if action_prev is None else action_prev[:, 0], first[:, 0],
                            sample)
    return _recompute_open_windows(model, state, model.encode(image, vectors_t), action_prev, first, sample)


def _causal_step(model, state: CWState, frame, action_prev, first, sample: bool) -> CWState:
    """``causal`` windows: add this frame to every level's open window; the levels that tick now
    take one step. The same arithmetic as :meth:`CWVAE._unroll` for one step, without its
    whole-sequence bookkeeping. An upper level's MLP runs once per tick, on the embeddings of the
    frames of its window kept pending until then (:class:`~cwworld.states.PendingFrames`): one
    matrix product per window rather than one matrix-vector product per frame.

    Args:
        frame: ``[B, E]`` the frame's shared embedding; action_prev: ``[B, A]`` (zero where
        ``first``) or None; first: ``[B]`` bool.
    """
    t, L = state.step, model.levels
    keep = (~first).float()[:, None]  # (B, 1): an episode start empties every held state and window
    pending = state.memory if isinstance(state.memory, PendingFrames) else PendingFrames([None] * L, [None] * L)
    h_out, z_out = [None] * L, [None] * L
    action_sum, embed_sum = [None] * L, [None] * L
    frames_out, weights_out = [None] * L, [None] * L
    for level in reversed(range(L)):
        cell = model.cells[level]
        h, z = state.h[level] * keep, state.z[level] * keep
        ticks = t % model.periods[level] == 0
        actions = action_prev
        if level and model.action_dims[level] and action_prev is not None:
            before = state.action_sum[level]
            actions = action_prev if before is None else before * keep + action_prev  # (B, A)
        settled = state.embed_sum[level]
        settled = None if settled is None else settled * keep  # (B, E) or None
        if level:  # the window's frames so far, this one included
            if pending.frames[level] is None:
                frames, weights = frame[:, None], torch.ones_like(keep)  # (B, 1, E), (B, 1)
            else:  # frames before an episode start keep their place with weight 0
                frames = torch.cat([pending.frames[level], frame[:, None]], 1)  # (B, n, E)
                weights = torch.cat([pending.weights[level] * keep, torch.ones_like(keep)], 1)  # (B, n)
        if ticks:  # one step, then the level's windows start empty
            window = frame
            if level:
                window = (model.level_mlps[level - 1](frames) * weights[..., None]).sum(1)  # (B, E)
                window = window if settled is None else settled + window
            context = None if level == L - 1 else torch.cat([z_out[level + 1], h_out[level + 1]], -1)
            summary = None
            if model.action_dims[level] and action_prev is not None:
                summary = actions if level == 0 else model.action_mlps[level - 1](actions)
            cond = cell.condition(None if context is None else context[:, None],
                                  None if summary is None else summary[:, None])
            h = cell.deter_step(h, z, None if cond is None else cond[:, 0])
            mean, std = cell.posterior(h, cell.project_embed(window))
            z = mean + std * torch.randn_like(std) if sample else mean
            actions = None if actions is None else torch.zeros_like(actions)
            if level:
                embed_sum[level] = torch.zeros_like(window)
        elif level:
            frames_out[level], weights_out[level] = frames, weights
            embed_sum[level] = torch.zeros_like(frame) if settled is None else settled
        h_out[level], z_out[level] = h, z
        if level and model.action_dims[level] and action_prev is not None:
            action_sum[level] = actions
    return CWState(h_out, z_out, t + 1, action_sum, embed_sum, None, PendingFrames(frames_out, weights_out))


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
