"""Clockwork VAE world model.

Saxena, Ba, Hafner (2021), "Clockwork Variational Autoencoders", arXiv:2102.09532.
A hierarchy of L recurrent state-space models (RSSM):

* **The clock.** Level ``l`` ticks every ``p = k**l`` steps: with steps counted from 0,
  it is active at ``t % p == 0`` and holds its state in between (eq. 2). ``T`` frames
  give level ``l`` exactly ``ceil(T / p)`` active steps. A :class:`CWState` carries the
  step counter, so a later call continues the clock wherever the previous one stopped.
* **Inputs.** Frames are encoded by a conv net; level ``l > 0`` passes the embedding
  through its own MLP and *sums* it over its tick's window of frames.
* **Cells.** Each level is an :class:`~cwworld.nn.rssm.RSSMCell` (GRU state ``h``,
  Gaussian state ``z``) whose prior is conditioned on the full state ``[z, h]`` of the
  level above, held over that level's ``k`` children; the top level gets no context.
* **Loss.** Negative ELBO per frame: Gaussian NLL of the frames (fixed std) plus, per
  level, KL(q || p) summed over that level's active steps.

Each tick ``o`` of level ``l`` has one alignment (see :mod:`cwworld.clock`):

==========================================  =============================================
what                                        steps
==========================================  =============================================
actions its transition conditions on        those leading into ``(o - p, o]``
rewards its window-reward head predicts     ``reward[o-p+1] ... reward[o]``
frames its posterior sums                   ``windows: paper``: ``[o, o + p)`` (the paper);
                                            ``windows: causal``: ``(o - p, o]``
==========================================  =============================================

An episode start ``is_first[t]`` resets every level at ``t``: held states become zero and
every window stops there, so no state from ``t`` on depends on anything before ``t``.

Context flows only downward, so an unroll runs level by level, top first: each level is
one scan over its own active steps, and everything that does not depend on the
recurrence (context, action summaries, window embeddings, priors) is computed for the
whole sequence at once.

Conventions: images cross the public API channels-last, ``uint8 [B, T, H, W, C]`` or
float in [0, 1]; inside the model frames are float in [0, 1], ``[N, C, H, W]``. Step
``t`` holds ``image[t]`` and ``action[t]``, the action taken *after* seeing ``image[t]``;
the transition into step ``t`` conditions on ``action[t-1]`` (zero where ``is_first[t]``).

The world-model additions live next door: heads and vector observations in
:mod:`cwworld.heads`, the windows' arithmetic in :mod:`cwworld.clock`, online filtering in
:mod:`cwworld.filter`, input checks in :mod:`cwworld.inputs`.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Callable, Optional, Sequence

import torch
from einops import rearrange
from torch import nn

from . import inputs
from .clock import (forward_window_sums, latest_ticks, level_lengths, open_window_starts, open_window_sums,
                    pending_sum, range_tensor, segment_starts, tick_offsets, window_sums)
from .config import ModelConfig
from .heads import VectorObservations, WorldModelHeads
from .nn.conv import MLP, ConvDecoder, ConvEncoder
from .nn.init import tf_init_
from .nn.rssm import RSSMCell
from .states import CWState, LevelStates, PendingFrames, Rollout, Trajectory

__all__ = ["CWVAE", "CWState", "LevelStates", "Rollout", "Trajectory", "tick_offsets", "level_lengths",
           "parameter_count", "matched_rssm"]


class CWVAE(nn.Module):
    """The Clockwork VAE. See the module docstring for the math and conventions."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        L, k = config.levels, config.factor
        self.levels, self.factor = L, k
        self.periods = [k**level for level in range(L)]
        self.stoch = config.per_level("stoch")
        self.deter = config.per_level("deter")
        hidden = config.per_level("hidden")
        self.beta = [float(b) for b in config.per_level("beta")]
        feature_dims = [s + d for s, d in zip(self.stoch, self.deter)]

        self.encoder = ConvEncoder(config.channels, config.cnn_depth)
        self.vectors = None
        if config.vectors:
            self.vectors = VectorObservations(config.vectors, config.vector_embed, feature_dims[0],
                                              config.head_hidden, config.head_layers)
        self.embed_dim = self.encoder.out_dim + (config.vector_embed if config.vectors else 0)
        # level l > 0: its own MLP on the per-frame embedding, then a sum over its window
        self.level_mlps = nn.ModuleList(
            MLP(self.embed_dim, config.embed, self.embed_dim, config.enc_dense_layers) for _ in range(1, L)
        )
        A = config.action_dim
        self.action_dims = [self._level_action_dim(level) for level in range(L)]
        # level l > 0 with actions: an embedding of the sum of the actions in its window
        self.action_mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(A, config.action_embed), nn.ELU())
            for _ in range(1, L if (A and config.action_levels == "all") else 1)
        )
        self.cells = nn.ModuleList(
            RSSMCell(
                stoch=self.stoch[level],
                deter=self.deter[level],
                hidden=hidden[level],
                context_dim=feature_dims[level + 1] if level < L - 1 else 0,
                embed_dim=self.embed_dim,
                action_dim=self.action_dims[level],
                min_stddev=config.min_stddev,
            )
            for level in range(L)
        )
        self.decoder = ConvDecoder(feature_dims[0], config.channels, config.cnn_depth, config.channels_last)
        self.heads = WorldModelHeads(config, feature_dims, self.periods)  # none by default: the paper has none
        if config.init == "tf":
            tf_init_(self)
        if config.gru_keep_bias:
            with torch.no_grad():  # torch's GRUCell: h' = (1 - u) * n + u * h, gates stacked [reset | update | new]
                for cell in self.cells:
                    cell.gru.bias_ih[cell.deter : 2 * cell.deter] += config.gru_keep_bias

    def _level_action_dim(self, level: int) -> int:
        cfg = self.config
        if not cfg.action_dim or (level > 0 and cfg.action_levels == "bottom"):
            return 0
        return cfg.action_dim if level == 0 else cfg.action_embed

    @property
    def device(self) -> torch.device:
        return self.decoder.dense.weight.device

    @property
    def vector_keys(self) -> list[str]:
        return [] if self.vectors is None else self.vectors.keys

    # -- states ----------------------------------------------------------------------

    def initial(self, batch_size: int) -> CWState:
        """The state at clock step 0: zero states (the official code's) and empty windows."""
        dev, B = self.device, batch_size
        causal = self.config.windows == "causal"
        return CWState(
            [torch.zeros(B, d, device=dev) for d in self.deter],
            [torch.zeros(B, s, device=dev) for s in self.stoch],
            0,
            [torch.zeros(B, self.config.action_dim, device=dev) if level and self.action_dims[level] else None
             for level in range(self.levels)],
            [torch.zeros(B, self.embed_dim, device=dev) if level and causal else None for level in range(self.levels)],
        )

    # -- encoding --------------------------------------------------------------------

    def encode(self, image: torch.Tensor, vectors: Optional[dict] = None) -> list[torch.Tensor]:
        """Per-frame embeddings for each level, ``[B, T, E]`` (before the window sums).

        Args:
            image: ``[B, T, H, W, C]`` uint8, or float in [0, 1] (checked by the callers).
            vectors: ``{name: [B, T, size]}`` for the configured vector observations.
        """
        e = self.embed_frames(image, vectors)
        return [e] + [mlp(e) for mlp in self.level_mlps]

    def embed_frames(self, image: torch.Tensor, vectors: Optional[dict] = None) -> torch.Tensor:
        """The shared per-frame embedding ``[B, T, E]`` (conv net, plus the vector observations),
        before the upper levels' MLPs; the bottom level reads it as it is."""
        B, T = image.shape[:2]
        e = rearrange(self.encoder(self._model_frames(image)), "(b t) e -> b t e", b=B)
        if self.vectors is not None:
            e = torch.cat([e, self.vectors.encode(vectors, B, T, self.device)], dim=-1)
        return e

    def _model_frames(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, T, H, W, C]`` -> float ``[B*T, C, H, W]`` in [0, 1], channels-last in memory when configured."""
        frames = rearrange(image, "b t h w c -> (b t) c h w")  # a view: NHWC memory
        frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
        return frames if self.config.channels_last else frames.contiguous()

    def settle(self, state: CWState) -> CWState:
        """The same state with the frames that :meth:`observe_step` left pending in its ``causal``
        windows (:class:`~cwworld.states.PendingFrames`) folded into ``embed_sum``: each level's
        MLP runs on them once. :meth:`observe` and :meth:`imagine` do this first; nothing changes
        for other states."""
        pending = state.memory
        if not isinstance(pending, PendingFrames):
            return state
        embed_sum = list(state.embed_sum)
        for level in range(1, self.levels):
            frames, weights = pending.frames[level], pending.weights[level]
            if frames is not None:
                window = (self.level_mlps[level - 1](frames) * weights[..., None]).sum(1)  # (B, E)
                embed_sum[level] = window if embed_sum[level] is None else embed_sum[level] + window
        return CWState(state.h, state.z, state.step, state.action_sum, embed_sum, state.action)

    # -- observing -------------------------------------------------------------------

    def observe(
        self,
        image,
        action=None,
        is_first=None,
        state: Optional[CWState] = None,
        sample: bool = True,
        use_obs: Optional[Sequence[bool]] = None,
        vectors: Optional[dict] = None,
    ) -> Trajectory:
        """Infer posterior states from frames.

        Args:
            image: ``[B, T, H, W, C]``, uint8 or float in [0, 1].
            action: ``[B, T, A]``; ``action[:, t]`` is taken after ``image[:, t]``
                (required when ``action_dim > 0``, refused when it is 0).
            is_first: ``[B, T]`` bool, episode starts: every level resets there.
            state: carry to continue from (default :meth:`initial`); its step counter sets
                the clock phase, its carried windows continue, and ``state.action`` (the
                previous chunk's last action) leads into this chunk's first step. With
                ``causal`` windows chunks compose exactly: observing in pieces equals
                observing in one. With ``paper`` windows, frames before an upper level's
                next tick belong to a window that ticked in an earlier call and do not enter it.
            sample: draw ``z`` from the posterior (False: use its mean).
            use_obs: per level, whether it reads the frames (False: it follows its prior);
                default: all levels.
            vectors: ``{name: [B, T, size]}`` when the config has ``vectors``.
        Returns:
            :class:`Trajectory` with per-level posteriors and priors.
        """
        cfg, dev = self.config, self.device
        image = inputs.check_image(cfg, image, device=dev)
        B, T = image.shape[:2]
        action = inputs.check_actions(cfg, action, B, T, device=dev)
        is_first = inputs.check_is_first(is_first, B, T, device=dev)
        state = self.initial(B) if state is None else inputs.check_state(self, state, B)
        return self._observe_embedded(self.encode(image, vectors), action, is_first, state,
                                      sample=sample, use_obs=use_obs)

    def _observe_embedded(self, embeds, action, is_first, state, *, sample=True, use_obs=None,
                          noise=None) -> Trajectory:
        T = embeds[0].shape[1]
        action_prev = _action_prev(action, is_first, state.action)
        posts, priors, last = self._unroll(state, T, action_prev=action_prev, is_first=is_first, embeds=embeds,
                                           use_obs=use_obs, sample=sample, noise=noise)
        last.action = None if action is None else action[:, -1]
        return Trajectory(posts, priors, last, action_prev)

    def compile_parts(self, **options) -> "CWVAE":
        """``torch.compile`` the pieces a step runs many times, not the unrolled sequence (whose
        graph grows with T and took over 12 minutes to compile on CPU): each level's cell step
        (``deter_step``, ``prior``, ``posterior``) and the conv encoder and decoder. Parameters
        and ``state_dict`` are unchanged. ``options`` go to ``torch.compile``. Returns ``self``."""
        for cell in self.cells:
            for name in ("deter_step", "prior", "posterior"):
                setattr(cell, name, torch.compile(getattr(cell, name), **options))
        self.encoder.compile(**options)
        self.decoder.compile(**options)
        return self

    def start_states(self, traj: Trajectory, action=None, is_first=None) -> list[tuple[torch.Tensor, CWState]]:
        """The posterior state after every step of a trajectory observed from clock step 0: where
        imagination starts in actor-critic training (as in Dreamer).

        A :class:`CWState` has one clock step for its whole batch, so the ``B * T`` states come
        grouped by clock phase ``(t + 1) % k**(L-1)``: a list of ``(index, state)`` with ``index``
        ``[N]`` the flat positions ``b * T + t`` and ``state`` the carry after frame ``t``. Each
        level holds its state of its latest tick ``o <= t`` (zero if an episode started after
        ``o``) and its open action window ``(o, t]``; ``embed_sum`` stays empty (imagination
        reads no frames). Detached.

        Args:
            traj: :meth:`observe` (or the training loss's) trajectory from ``initial(B)``.
            action: ``[B, T, A]`` the actions of the observed steps (``action[:, t]`` after frame ``t``).
            is_first: ``[B, T]`` episode starts, or None.
        """
        B, T = traj.posterior[0].h.shape[:2]
        dev = self.device
        seg = segment_starts(is_first, T, B, dev)  # (B, T)
        t = torch.arange(T, device=dev)
        action_prev = None
        if action is not None and self.config.action_dim:
            action_prev = _action_prev(action.float(), is_first)  # leads into each step
        hs, zs, sums = [], [], []
        for h, z, seen, _ in self._open_windows(traj, action_prev, seg):
            hs.append(h.detach().flatten(0, 1))  # (B*T, deter)
            zs.append(z.detach().flatten(0, 1))
            sums.append(None if seen is None else seen.detach().flatten(0, 1))  # (B*T, A)
        phase = ((t + 1) % self.periods[-1]).repeat(B)  # (B*T,)
        groups = []
        for p in range(self.periods[-1]):
            index = (phase == p).nonzero()[:, 0]
            if len(index):
                pick = lambda x: None if x is None else x[index]  # noqa: E731
                groups.append((index, CWState([pick(h) for h in hs], [pick(z) for z in zs], p,
                                              [pick(s) for s in sums])))
        return groups

    def _open_windows(self, traj: Trajectory, action_prev, seg: torch.Tensor) -> list:
        """Per level, after every step ``t`` of a trajectory observed from clock step 0: the
        level's state at its latest tick ``o <= t`` (zero where an episode started after ``o``)
        and its open window ``(lo, t]``, ``lo = max(o, episode start - 1)``.

        Returns per level ``(h [B, T, deter], z [B, T, stoch], action sum [B, T, A] or None, lo
        [B, T])``; the sum (levels > 0 that read actions) is of the actions leading into the
        window's steps (``action_prev [B, T, A]``; zeros when None), not detached.
        """
        B, T = traj.posterior[0].h.shape[:2]
        t = torch.arange(T, device=self.device)
        out = []
        for level in range(self.levels):
            period, post = self.periods[level], traj.posterior[level]
            alive = (seg <= (t // period) * period).float()[..., None]  # (B, T, 1): no start since the tick
            lo = open_window_starts(seg, period)  # the window seen so far is (lo, t]
            seen = None
            if level and self.action_dims[level]:
                seen = torch.zeros(B, T, self.config.action_dim, device=self.device) if action_prev is None \
                    else open_window_sums(action_prev, lo)
            out.append((post.h[:, t // period] * alive, post.z[:, t // period] * alive, seen, lo))
        return out

    def _closing_windows(self, traj: Trajectory, is_first, ends: torch.Tensor) -> list:
        """The windows episodes end in (``model.window_ends``): where an episode ends at step ``t``
        between two ticks of level ``l > 0``, no tick closes its window ``(lo, t]`` (the next
        episode restarts every level). Each is closed here by one step of level ``l``'s prior
        from its latest tick ``o <= t``, conditioned on the level above's state at its latest
        tick ``<= t`` and on the window's actions scaled to a whole window's count (``p / (t -
        lo)`` times their sum: a jumpy plan's summaries count ``p`` actions): the state jumpy
        imagination reaches at that tick, read with the prior's mean.

        Computed at every step (static shapes, no host sync) and masked.
        ``ends [B, T]`` bool: the last steps of episodes. Returns per level (index 0 None)
        ``(features [B, T, F], mask [B, T] float, lo [B, T])``.
        """
        B, T = ends.shape
        t = torch.arange(T, device=self.device)
        seg = segment_starts(is_first, T, B, self.device)
        out: list = [None]
        parts = self._open_windows(traj, traj.action_prev, seg)
        for level in range(1, self.levels):
            period, cell = self.periods[level], self.cells[level]
            h, z, seen, lo = parts[level]
            context = None
            if level + 1 < self.levels:
                up = self.periods[level + 1]
                current = (seg <= (t // up) * up).float()[..., None]  # (B, T, 1)
                context = traj.posterior[level + 1].features[:, t // up] * current
            summary = None
            if seen is not None:
                scale = period / (t - lo).clamp(min=1).float()[..., None]  # (B, T, 1)
                summary = self.action_mlps[level - 1](seen * scale)
            cond = cell.condition(context, summary)  # (B, T, hidden) or None
            h_next = cell.deter_step(h.flatten(0, 1), z.flatten(0, 1), None if cond is None else cond.flatten(0, 1))
            mean, _ = cell.prior(h_next)
            features = torch.cat([mean, h_next], dim=-1).view(B, T, -1)
            mask = (ends & (t % period != 0)).float()
            out.append((features, mask, lo))
        return out

    def observe_step(self, state: CWState, image_t, action_prev=None, is_first=None, sample: bool = True,
                     vectors_t: Optional[dict] = None, validate: bool = True) -> CWState:
        """Filter one frame online: the state after ``image_t``, for an agent acting as it goes.

        Called frame by frame from ``initial(B)`` it gives the same state as :meth:`observe`
        on the whole prefix (exactly with ``sample=False``). With ``causal`` windows each
        call costs one step of each level that ticks; with ``paper`` windows the open
        windows are recomputed (see :func:`cwworld.filter.observe_step`).

        Args:
            state: the state before this frame (``initial(B)`` at the start, then what the
                previous call returned).
            image_t: ``[B, H, W, C]`` frame, uint8 or float in [0, 1].
            action_prev: ``[B, A]``, the action taken before this frame (ignored where
                ``is_first``); required when ``action_dim > 0``.
            is_first: ``[B]`` bool, episode starts (resets every level).
            sample: sample ``z`` (False: posterior means).
            vectors_t: ``{name: [B, size]}`` when the config has ``vectors``.
            validate: check ``action_prev``'s values (NaN, bounds: host reads); an agent passes
                False for the actions it chose itself. Shapes and frames are always checked.
        """
        from .filter import observe_step

        return observe_step(self, state, image_t, action_prev, is_first, sample, vectors_t, validate)

    # -- the unroll --------------------------------------------------------------------

    def _unroll(self, state: CWState, length: int, *, action_prev=None, is_first=None, embeds=None,
                levels: Optional[Sequence[int]] = None, use_obs=None, sample: bool = True, noise=None):
        """Unroll ``levels`` (a top-aligned run, default all) ``length`` steps from ``state``, top first.

        Args:
            action_prev: ``[B, length, A]``, the action leading into each step (zero at
                episode starts), or None.
            is_first: ``[B, length]`` bool episode starts, or None.
            embeds: per level per-frame embeddings ``[B, length, E]``: levels with
                ``use_obs`` (default all) follow their posteriors; None: all follow priors.
            noise: per level ``[B, n_l, stoch]`` standard normal noise for the followed
                states (default: fresh draws).
        Returns:
            (followed, priors, last): per level the states it followed and its priors
            (None for levels not unrolled), and the carry after ``length`` steps.
        """
        L, B, dev = self.levels, state.batch_size, self.device
        state = self.settle(state)
        levels = range(L) if levels is None else levels
        causal = self.config.windows == "causal"
        reads = [embeds is not None and (use_obs is None or bool(use_obs[level])) for level in range(L)]
        seg = segment_starts(is_first, length, B, dev)  # (B, length): latest episode start, -1 = none
        followed, priors = [None] * L, [None] * L
        h_out, z_out = list(state.h), list(state.z)
        action_sum, embed_sum = list(state.action_sum), list(state.embed_sum)
        above = None  # (tick offsets of the level above, its features at them, its held features)
        for level in reversed(levels):
            period, cell = self.periods[level], self.cells[level]
            offsets = tick_offsets(state.step, length, period)
            ticks = range_tensor(offsets, dev)  # (n,)

            summary = None  # the actions leading into each tick's window
            if self.action_dims[level] and action_prev is not None:
                if level == 0:
                    summary = action_prev  # (B, length, A): period 1, the window is the step itself
                else:
                    summary = self.action_mlps[level - 1](
                        window_sums(action_prev, offsets, period, seg, action_sum[level]))  # (B, n, action_embed)
                    action_sum[level] = pending_sum(action_prev, offsets, seg, action_sum[level])
            cond = cell.condition(self._context(above, offsets, ticks, seg), summary)

            embed_proj = None  # the posterior's window embedding, projected
            if reads[level]:
                if period == 1:
                    window = embeds[level]
                elif causal:
                    window = window_sums(embeds[level], offsets, period, seg, embed_sum[level])
                    embed_sum[level] = pending_sum(embeds[level], offsets, seg, embed_sum[level])
                else:
                    window = forward_window_sums(embeds[level], offsets, period, is_first)
                embed_proj = cell.project_embed(window)  # (B, n, hidden)
            elif embed_sum[level] is not None and len(offsets):
                embed_sum[level] = torch.zeros_like(embed_sum[level])  # a tick without frames closes the window

            # a tick resets (starts from zero) when an episode started since the previous tick
            fresh = (seg[:, ticks] <= (ticks - period).clamp(min=-1)).float()[..., None]  # (B, n, 1)
            states = self._scan(level, state.h[level], state.z[level], cond, embed_proj, fresh, sample,
                                None if noise is None else noise[level])
            followed[level] = states
            if embed_proj is None:
                priors[level] = states
            else:
                mean, std = cell.prior(states.h)  # all ticks at once
                priors[level] = LevelStates(mean, std, mean, states.h)

            # the held state at the chunk's end: zero if an episode started after the last tick
            last_tick = offsets[-1] if len(offsets) else -1
            alive = (seg[:, -1] <= last_tick).float()[:, None]  # (B, 1)
            if len(offsets):
                h_out[level], z_out[level] = states.h[:, -1] * alive, states.z[:, -1] * alive
            else:
                h_out[level], z_out[level] = state.h[level] * alive, state.z[level] * alive
            above = (offsets, states.features, state.features(level))
        last = CWState(h_out, z_out, state.step + length, action_sum, embed_sum)
        return followed, priors, last

    def _scan(self, level, h, z, cond, embed_proj, fresh, sample, eps=None) -> LevelStates:
        """Run one level's cell over its ``n`` active steps.

        Args:
            h, z: the level's state before its first tick, ``[B, deter]``, ``[B, stoch]``.
            cond: projected context and actions ``[B, n, hidden]`` or None.
            embed_proj: projected window embeddings ``[B, n, hidden]`` (posterior), or
                None to follow the prior.
            fresh: ``[B, n, 1]`` float, 0 where the tick starts from the zero state.
            eps: ``[B, n, stoch]`` standard normal noise to sample with (default: fresh).
        """
        cell = self.cells[level]
        n = fresh.shape[1]
        hs, zs, means, stds = [], [], [], []
        for i in range(n):
            h, z = h * fresh[:, i], z * fresh[:, i]  # branch-free episode reset
            h = cell.deter_step(h, z, None if cond is None else cond[:, i])
            if embed_proj is None:
                mean, std = cell.prior(h)
            else:
                mean, std = cell.posterior(h, embed_proj[:, i])
            if sample:
                z = mean + std * (torch.randn_like(std) if eps is None else eps[:, i])
            else:
                z = mean
            hs.append(h), zs.append(z), means.append(mean), stds.append(std)
        if n == 0:
            B = h.shape[0]
            empty = h.new_zeros(B, 0, self.stoch[level])
            return LevelStates(empty, empty, empty, h.new_zeros(B, 0, self.deter[level]))
        return LevelStates(torch.stack(means, 1), torch.stack(stds, 1), torch.stack(zs, 1), torch.stack(hs, 1))

    def _context(self, above, offsets: range, ticks: torch.Tensor, seg: torch.Tensor) -> Optional[torch.Tensor]:
        """Context of each tick (``offsets``, and the same as a tensor, ``ticks``): the features of
        the level above at its latest tick at or before it (its held features before its first tick in this chunk), zero where an
        episode started after that tick -> ``[B, n, D]``."""
        if above is None:
            return None
        up, feats, held = above  # range, (B, n_above, D), (B, D)
        j = latest_ticks(offsets, up, feats.device)  # (n,) index into feats, -1 = held
        table = torch.cat([held[:, None], feats], dim=1)
        context = table[:, j + 1]  # (B, n, D)
        source = torch.where(j < 0, -1, up.start + j * up.step)  # the upper tick's offset (no host read)
        current = (seg[:, ticks] <= source).float()[..., None]  # (B, n, 1)
        return context * current

    # -- imagination -----------------------------------------------------------------

    def imagine(
        self,
        state: CWState,
        horizon: int,
        policy: Optional[Callable[[CWState], torch.Tensor]] = None,
        actions=None,
        levels: Optional[Sequence[int]] = None,
        sample: bool = True,
        decode: bool = False,
        validate: bool = True,
    ) -> Rollout:
        """Roll the priors forward ``horizon`` steps from ``state``, continuing its clock.

        Rollouts compose: ``imagine(s, a + b)`` equals ``imagine(imagine(s, a).last, b)``
        (with ``sample=False``, or the same noise), because the state carries every level's
        open window.

        Args:
            state: where to start (e.g. ``observe(...).last``).
            horizon: number of bottom-level steps to imagine (> 0).
            actions: ``[B, horizon, A]``; ``actions[:, i]`` is the action leading into
                imagined step ``i`` (the first one is taken in ``state``). For a jumpy
                rollout whose lowest level ``l`` reads actions: ``[B, n_l, A]``, one summary
                per tick ``o`` of level ``l`` in the horizon, the sum of the actions leading
                into ``(o - k**l, o]`` that lie in the horizon (the state's carried part is
                added by the model).
            policy: ``policy(state) -> action [B, A]``, called at every imagined step with the
                current carry (a :class:`CWState` at that step); its action leads into the
                step. Needs all levels (no ``levels``); exclusive with ``actions``.
            levels: roll only these levels (a top-aligned run such as ``[1, 2]``): "jumpy"
                imagination; each level is evaluated at its own ticks only. The rollout's
                ``last`` then carries the rolled levels; the others keep the start state's.
            sample: sample ``z`` from the priors (False: use their means).
            decode: also decode the bottom level's frames into ``Rollout.frames``.
            validate: check the actions' values (NaN, bounds: reads to the host, which stall a
                GPU); shapes are always checked. Planners pass False for the actions they drew.
        """
        if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon <= 0:
            raise ValueError(f"imagine: horizon must be a positive int, got {horizon!r}")
        state = inputs.check_state(self, state)
        B = state.batch_size
        self._check_rollout_memory(B, horizon)
        rolled = list(range(self.levels)) if levels is None else sorted(set(levels))
        if not rolled or rolled != list(range(rolled[0], self.levels)):
            raise ValueError(
                f"imagine: levels must be a top-aligned run such as [l, ..., {self.levels - 1}], got {levels}"
            )
        if policy is not None:
            if actions is not None or levels is not None:
                raise ValueError("imagine: give either policy or actions, and no levels with a policy")
            if not self.config.action_dim:
                raise ValueError("imagine: a policy needs an action-conditioned model (action_dim > 0)")
            out, last, actions = self._imagine_with_policy(state, horizon, policy, sample, validate)
            action_prev = actions
        else:
            action_prev, actions = self._imagined_actions(state, horizon, actions, rolled[0], validate)
            out, _, last = self._unroll(state, horizon, action_prev=action_prev, levels=rolled, sample=sample)
        rollout = Rollout(out, last, actions, **self.heads.predict(out, action_prev))
        if decode:
            if out[0] is None:
                raise ValueError("imagine: decode=True needs the bottom level in `levels`")
            rollout.frames = self.decode(out[0].features)
            if self.vectors is not None:
                rollout.vectors = self.vectors.decode(out[0].features)
        return rollout

    def _check_rollout_memory(self, batch: int, horizon: int, frames: bool = False, caller: str = "",
                              advice: str = "roll out in pieces instead: imagine(imagine(state, a).last, b) "
                                            "equals imagine(state, a + b)") -> None:
        """Refuse a rollout whose states (and decoded frames) would not fit in half of this machine's
        memory; the message starts with ``caller`` and ends with ``advice``."""
        per_step = sum((3 * s + d) / p for s, d, p in zip(self.stoch, self.deter, self.periods))  # floats
        if frames:
            per_step += self.config.image_size**2 * self.config.channels
        need = 4 * batch * horizon * per_step  # bytes, float32
        total = _physical_memory()
        if total is not None and need > total / 2:
            raise ValueError(f"{caller}horizon {horizon} for a batch of {batch} would hold about {need / 2**30:.1f} GiB "
                             f"of states{' and frames' if frames else ''} (this machine has {total / 2**30:.0f} GiB); "
                             f"{advice}")

    def _imagined_actions(self, state: CWState, horizon: int, actions, lowest: int, validate: bool = True):
        """Checked actions and the per-step ``action_prev [B, horizon, A]`` they amount to."""
        cfg, B = self.config, state.batch_size
        if lowest == 0:
            actions = inputs.check_actions(cfg, actions, B, horizon, name="imagine: actions", device=self.device,
                                           finite=validate)
            return actions, actions
        # jumpy: one summary per tick of the lowest rolled level, placed at its tick
        ticks = tick_offsets(state.step, horizon, self.periods[lowest])
        needed = any(self.action_dims[level] for level in range(lowest, self.levels))
        actions = inputs.check_actions(cfg, actions, B, len(ticks), name="imagine: actions (one summary per "
                                       f"tick of level {lowest})", device=self.device, required=needed,
                                       steps_per_action=self.periods[lowest], finite=validate)
        if actions is None:
            return None, None
        action_prev = actions.new_zeros(B, horizon, cfg.action_dim)
        action_prev[:, ticks.start:ticks.stop:ticks.step] = actions  # (B, horizon, A), zero between ticks
        return action_prev, actions

    def _imagine_with_policy(self, state: CWState, horizon: int, policy, sample: bool, validate: bool = True):
        """One :meth:`_unroll` step at a time, the policy choosing each action from the carry."""
        B, A = state.batch_size, self.config.action_dim
        steps = [[] for _ in range(self.levels)]
        actions = []
        start = state.step
        for i in range(horizon):
            action = torch.as_tensor(policy(state), device=self.device)
            if tuple(action.shape) != (B, A):
                raise ValueError(f"imagine: the policy returned shape {tuple(action.shape)} at step {state.step}, "
                                 f"expected [{B}, {A}]")
            actions.append(action.float())
            out, _, state = self._unroll(state, 1, action_prev=actions[-1][:, None], sample=sample)
            for level in range(self.levels):
                steps[level].append(out[level])
        actions = torch.stack(actions, 1)  # (B, horizon, A)
        if validate:  # one host read per rollout, not per step
            finite = torch.isfinite(actions).flatten(2).all(-1).all(0)  # (horizon,)
            if not bool(finite.all()):
                bad = int((~finite).nonzero()[0, 0])
                raise ValueError(f"imagine: the policy returned NaN or inf at step {start + bad}")
        levels = [LevelStates(*(torch.cat([getattr(s, name) for s in per_level], 1) for name in ("mean", "std", "z", "h")))
                  for per_level in steps]
        return levels, state, actions

    # -- decoding and prediction -------------------------------------------------------

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Bottom-level features ``[B, T, F]`` -> frames ``[B, T, H, W, C]``, float in [0, 1]."""
        B = features.shape[0]
        mean = self.decoder(rearrange(features, "b t f -> (b t) f"))  # (B*T, C, H, W)
        return rearrange(mean, "(b t) c h w -> b t h w c", b=B).clamp(0.0, 1.0)

    def decode_vectors(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Bottom-level features ``[B, T, F]`` -> predicted vector observations ``{name: [B, T, size]}``."""
        if self.vectors is None:
            raise ValueError("decode_vectors: this model has no vector observations (model.vectors)")
        return self.vectors.decode(features)

    @torch.no_grad()
    def predict(
        self,
        context,
        horizon: int,
        actions=None,
        num_samples: int = 1,
        use_obs: Optional[Sequence[bool]] = None,
        sample: bool = True,
        vectors: Optional[dict] = None,
    ) -> torch.Tensor:
        """Open-loop video prediction: observe ``context``, then roll the priors ``horizon`` steps.

        Args:
            context: ``[B, C, H, W, ch]`` frames, uint8 or float in [0, 1].
            horizon: frames to predict after the context (> 0).
            actions: ``[B, C + horizon - 1, A]`` (or longer) for action-conditioned models,
                aligned with the frames: ``actions[:, t]`` is taken after frame ``t``.
            num_samples: independent samples per context video.
            use_obs: per level, whether the context frames inform that level (the paper's
                Sec. 3.6 ablation); default: the config's ``use_obs``.
        Returns:
            ``[B, num_samples, horizon, H, W, ch]`` float in [0, 1].
        """
        if not isinstance(horizon, int) or horizon <= 0:
            raise ValueError(f"predict: horizon must be a positive int, got {horizon!r}")
        if not isinstance(num_samples, int) or num_samples <= 0:
            raise ValueError(f"predict: num_samples must be a positive int, got {num_samples!r}")
        cfg = self.config
        context = inputs.check_image(cfg, context, "predict: context", device=self.device)
        B, C = context.shape[:2]
        self._check_rollout_memory(B * num_samples, horizon, frames=True, caller="predict: ")
        actions = inputs.check_actions(cfg, actions, B, C + horizon - 1, name="predict: actions", at_least=True,
                                       device=self.device)
        if actions is not None:
            actions = actions.repeat_interleave(num_samples, dim=0)
        embeds = [e.repeat_interleave(num_samples, dim=0) for e in self.encode(context, vectors)]
        traj = self._observe_embedded(embeds, None if actions is None else actions[:, :C], None,
                                      self.initial(B * num_samples), sample=sample,
                                      use_obs=cfg.use_obs if use_obs is None else use_obs)
        future = None if actions is None else actions[:, C - 1 : C - 1 + horizon]
        rollout = self.imagine(traj.last, horizon, actions=future, sample=sample)
        features = rollout.features  # (B*S, horizon, F)
        frames = features.new_empty(*features.shape[:2], cfg.image_size, cfg.image_size, cfg.channels)
        for start in range(0, horizon, 256):  # decode in pieces: the conv activations stay small
            frames[:, start : start + 256] = self.decode(features[:, start : start + 256])
        return rearrange(frames, "(b s) t h w c -> b s t h w c", s=num_samples)

    # -- the loss ----------------------------------------------------------------------

    def loss(self, batch: dict, validate: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
        """Negative ELBO per frame of a batch, and its terms as floats.

        Args:
            batch: ``"image"`` ``[B, T, H, W, C]``, and ``"action"`` ``[B, T, A]``,
                ``"is_first"`` ``[B, T]``, ``"reward"``, ``"is_terminal"`` when used.
            validate: check the batch (:func:`cwworld.inputs.check_batch`); pass False for a
                batch already checked.
        Returns:
            ``(loss, metrics)``; metrics holds ``loss``, ``nll`` (per frame), ``mse``
            (per pixel), ``kl`` and ``kl/0`` ... ``kl/{L-1}`` (each level's KL summed
            over its active steps, per sequence, divided by T).
        """
        loss, terms = self.loss_terms(batch, validate)
        return loss, {name: float(value) for name, value in terms.items()}

    def forward(self, batch: dict, validate: bool = True, with_trajectory: bool = False, noise=None):
        """:meth:`loss_terms` (so that ``DistributedDataParallel(model)(batch)`` computes the loss)."""
        return self.loss_terms(batch, validate, with_trajectory, noise)

    def loss_terms(self, batch: dict, validate: bool = True, with_trajectory: bool = False, noise=None):
        """Like :meth:`loss` but the metrics stay 0-dim tensors (no host sync; compile-friendly).
        ``with_trajectory``: also return the posterior :class:`Trajectory` (``(loss, terms, traj)``),
        e.g. for :meth:`start_states`. ``noise``: per level the standard normal draws of the
        posterior samples, ``[B, ceil(T / k**l), stoch_l]`` (default: fresh draws)."""
        if validate:
            batch = inputs.check_batch(self, batch)
        image, action, is_first = batch["image"], batch.get("action"), batch.get("is_first")
        if not self.config.action_dim:
            action = None
        B, T = image.shape[:2]
        vectors = {k: batch[k] for k in self.vector_keys if k in batch} if self.vectors is not None else None
        # training always reads every level's frames (use_obs is for open-loop prediction)
        traj = self._observe_embedded(self.encode(image, vectors), action, is_first, self.initial(B), noise=noise)

        mean = self.decoder(rearrange(traj.features, "b t f -> (b t) f"))  # (B*T, C, H, W)
        target = self._model_frames(image)  # (B*T, C, H, W)
        sigma = self.config.dec_stddev
        sq_err = (target - mean).square().sum() / B  # per sequence
        pixels = target[0].numel()
        nll = 0.5 * sq_err / sigma**2 + T * pixels * (math.log(sigma) + 0.5 * math.log(2 * math.pi))

        terms: dict[str, torch.Tensor] = {}
        penalty = 0.0
        if self.config.prior_recon:
            # the prior's one-step prediction decoded with the decoder's weights held fixed
            frozen = {name: w.detach() for name, w in self.decoder.named_parameters()}
            predicted = torch.func.functional_call(
                self.decoder, frozen, (rearrange(traj.prior[0].features, "b t f -> (b t) f"),))  # (B*T, C, H, W)
            prior_err = (target - predicted).square().sum() / B
            penalty = penalty + self.config.prior_recon * 0.5 * prior_err / sigma**2
            terms["prior_mse"] = prior_err.detach() / (T * pixels)
        kl_total = 0.0
        for level in range(self.levels):
            post, prior = traj.posterior[level], traj.prior[level]
            kl_seq = _gaussian_kl(post.mean, post.std, prior.mean, prior.std).sum() / B
            if self.config.kl_balance is not None:
                # same value, gradient split between posterior (a) and prior (1 - a)
                a = self.config.kl_balance
                to_post = _gaussian_kl(post.mean, post.std, prior.mean.detach(), prior.std.detach())
                to_prior = _gaussian_kl(post.mean.detach(), post.std.detach(), prior.mean, prior.std)
                kl_train = (a * to_post + (1 - a) * to_prior).sum() / B
            else:
                kl_train = kl_seq
            penalty = penalty + self.beta[level] * torch.clamp(kl_train - self.config.free_nats, min=0.0)
            kl_total = kl_total + kl_seq
            terms[f"kl/{level}"] = kl_seq.detach() / T
        closing = None
        if self.config.window_ends and self.levels > 1:
            closing = self._closing_windows(traj, is_first, _episode_ends(batch, is_first, B, T, image.device))
        heads, head_terms = self.heads.losses(traj.posterior, batch, B, T, validate, traj.action_prev, closing)
        if self.vectors is not None:
            vector_loss = self.vectors.loss(traj.features, batch, B, T)
            heads = heads + self.config.vector_scale * vector_loss
            head_terms["vector_loss"] = vector_loss.detach() / T
        loss = (nll + penalty + heads) / T
        terms = {
            "loss": loss.detach(),
            "nll": nll.detach() / T,
            "mse": sq_err.detach() / (T * pixels),
            "kl": kl_total.detach() / T,
            **terms,
            **head_terms,
        }
        return (loss, terms, traj) if with_trajectory else (loss, terms)


def parameter_count(config: ModelConfig) -> int:
    """Trainable parameters of the model ``config`` describes."""
    return sum(p.numel() for p in CWVAE(config).parameters())


def matched_rssm(config: ModelConfig) -> ModelConfig:
    """The 1-level RSSM ablation of ``config`` at about its parameter count: one level (no upper
    levels, so no level reward heads), ``deter`` and ``hidden`` grown together until the count
    reaches ``config``'s (the largest width not above it)."""
    import dataclasses

    target = parameter_count(config)
    base = config.deter[0] if isinstance(config.deter, list) else config.deter
    stoch = config.stoch[0] if isinstance(config.stoch, list) else config.stoch

    def widened(width: int) -> ModelConfig:
        return dataclasses.replace(config, levels=1, level_reward_heads=False, level_continue_heads=False,
                                   level_reward_gate=False, window_ends=False, deter=width, hidden=width, stoch=stoch,
                                   beta=config.beta if not isinstance(config.beta, list) else config.beta[0],
                                   use_obs=None)

    lo, hi = base, 8 * base
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if parameter_count(widened(mid)) <= target else (lo, mid)
    return widened(lo)


@functools.lru_cache(maxsize=1)
def _physical_memory() -> Optional[int]:
    """This machine's memory in bytes (None where the OS does not say); asked once."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def _gaussian_kl(mean_q, std_q, mean_p, std_p) -> torch.Tensor:
    """KL(N(mean_q, std_q) || N(mean_p, std_p)) per dimension, elementwise."""
    var_ratio = (std_q / std_p).square()
    return 0.5 * (var_ratio + ((mean_q - mean_p) / std_p).square() - 1.0 - var_ratio.log())


def _episode_ends(batch: dict, is_first, B: int, T: int, device) -> torch.Tensor:
    """``[B, T]`` bool: the steps episodes end at: before an episode start, or marked
    ``is_terminal`` / ``is_last`` in the batch."""
    ends = torch.zeros(B, T, dtype=torch.bool, device=device)
    if is_first is not None:
        ends[:, :-1] = torch.as_tensor(is_first, device=device)[:, 1:].bool()
    for key in ("is_terminal", "is_last"):
        if batch.get(key) is not None:
            ends = ends | torch.as_tensor(batch[key], device=device).bool()
    return ends


def _action_prev(action, is_first, before=None):
    """``action [B, T, A]`` -> the action leading into each step, ``action[t-1]`` ``[B, T, A]``:
    the first step's is ``before`` (the carry's; zero if None), zero wherever ``is_first``."""
    if action is None:
        return None
    if before is None:
        before = torch.zeros_like(action[:, 0])
    action_prev = torch.cat([before[:, None], action[:, :-1]], dim=1)  # (B, T, A)
    if is_first is not None:
        action_prev = action_prev * (~is_first.bool())[..., None]
    return action_prev
