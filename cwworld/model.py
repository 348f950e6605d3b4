"""Clockwork VAE world model.

Saxena, Ba, Hafner (2021), "Clockwork Variational Autoencoders",
arXiv:2102.09532. A hierarchy of L recurrent state-space models (RSSM):

* **The clock.** Level ``l`` ticks every ``k**l`` steps: with steps counted from
  0, it is active at ``t % k**l == 0`` and holds its state in between (eq. 2).
  ``T`` frames give level ``l`` exactly ``ceil(T / k**l)`` active steps. A
  :class:`CWState` carries the step counter, so a later call continues the
  clock wherever the previous one stopped.
* **Inputs.** Frames are encoded by a conv net; level ``l > 0`` passes the
  embedding through its own MLP and *sums* it over the ``k**l`` frames of its
  window (a window cut short by the end of the data sums what is there).
* **Cells.** Each level is an :class:`~cwworld.nn.rssm.RSSMCell` (GRU state
  ``h``, Gaussian state ``z``) whose prior is conditioned on the full state
  ``[z, h]`` of the level above, held over that level's ``k`` children; the
  top level gets no context.
* **Loss.** Negative ELBO per frame: Gaussian NLL of the frames (fixed std)
  plus, per level, KL(q || p) summed over that level's active steps.

Context flows only downward, so an unroll runs level by level, top first:
each level is one scan over its own active steps, and everything that does
not depend on the recurrence is computed for the whole sequence at once.

Conventions: images cross the public API channels-last, ``uint8 [B, T, H, W, C]``
or float in [0, 1]; inside the model frames are float in [0, 1], ``[N, C, H, W]``.
Step ``t`` holds ``image[t]`` and ``action[t]``, the action taken *after*
seeing ``image[t]``; the transition into step ``t`` conditions on
``action[t-1]`` (zero at ``t = 0`` and where ``is_first[t]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig
from .nn.conv import MLP, ConvDecoder, ConvEncoder
from .nn.rssm import RSSMCell

__all__ = ["CWVAE", "CWState", "LevelStates", "Rollout", "Trajectory", "tick_offsets", "level_lengths"]


# ----------------------------------------------------------------------------- the clock


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


# ----------------------------------------------------------------------------- states


@dataclass
class CWState:
    """The recurrent carry of all levels after ``step`` steps.

    Attributes:
        h: per level, the GRU state ``[B, deter_l]`` at that level's last tick.
        z: per level, the stochastic state ``[B, stoch_l]`` at that level's last tick.
        step: global clock, the number of steps seen since the start of the
            sequence; level ``l`` next ticks at the first multiple of ``k**l`` >= step.
    """

    h: list[torch.Tensor]
    z: list[torch.Tensor]
    step: int = 0

    @property
    def batch_size(self) -> int:
        return self.h[0].shape[0]

    def features(self, level: int = 0) -> torch.Tensor:
        """``[z, h]`` of a level, ``[B, stoch_l + deter_l]``."""
        return torch.cat([self.z[level], self.h[level]], dim=-1)

    def detach(self) -> "CWState":
        return CWState([h.detach() for h in self.h], [z.detach() for z in self.z], self.step)

    def to(self, *args, **kwargs) -> "CWState":
        return CWState([h.to(*args, **kwargs) for h in self.h], [z.to(*args, **kwargs) for z in self.z], self.step)

    def __getitem__(self, index) -> "CWState":
        """Batch indexing: ``state[2:5]``, ``state[mask]``."""
        return CWState([h[index] for h in self.h], [z[index] for z in self.z], self.step)

    @staticmethod
    def cat(states: Sequence["CWState"]) -> "CWState":
        """Concatenate states along the batch; all must be at the same clock step."""
        steps = {s.step for s in states}
        if len(steps) != 1:
            raise ValueError(f"CWState.cat: states must share the clock step, found steps {sorted(steps)}")
        levels = len(states[0].h)
        return CWState(
            [torch.cat([s.h[l] for s in states]) for l in range(levels)],
            [torch.cat([s.z[l] for s in states]) for l in range(levels)],
            steps.pop(),
        )


@dataclass
class LevelStates:
    """One level's states at its own active steps: every field is ``[B, n_l, dim]``."""

    mean: torch.Tensor
    std: torch.Tensor
    z: torch.Tensor  # a sample of N(mean, std)
    h: torch.Tensor  # deterministic GRU state

    @property
    def features(self) -> torch.Tensor:
        """``[z, h]``, ``[B, n_l, stoch + deter]``: what the level below and the decoder read."""
        return torch.cat([self.z, self.h], dim=-1)

    def __len__(self) -> int:
        return self.h.shape[1]


@dataclass
class Trajectory:
    """Result of :meth:`CWVAE.observe` on ``T`` frames.

    ``posterior[l]`` and ``prior[l]`` have time length ``n_l`` = the number of
    level ``l``'s ticks in the ``T`` steps (``ceil(T / k**l)`` from step 0).
    ``features`` is the bottom posterior ``[z, h]``, ``[B, T, F]``.
    """

    posterior: list[LevelStates]
    prior: list[LevelStates]
    last: CWState

    @property
    def features(self) -> torch.Tensor:
        return self.posterior[0].features


@dataclass
class Rollout:
    """Result of :meth:`CWVAE.imagine`: prior states rolled forward ``horizon`` steps.

    ``levels[l]`` holds level ``l``'s states at its own ticks within the horizon
    (None for levels not rolled in a jumpy rollout). ``features`` is the bottom
    level's ``[z, h]``, ``[B, horizon, F]``, when the bottom level was rolled.
    ``actions`` holds the actions used, ``[B, horizon, A]``, where ``actions[:, i]``
    leads into imagined step ``i``. ``frames`` is filled when decoding was asked for.
    """

    levels: list[Optional[LevelStates]]
    last: CWState
    actions: Optional[torch.Tensor] = None
    frames: Optional[torch.Tensor] = None

    @property
    def features(self) -> Optional[torch.Tensor]:
        return None if self.levels[0] is None else self.levels[0].features


# ----------------------------------------------------------------------------- the model


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
        self.use_obs = list(config.use_obs) if config.use_obs is not None else [True] * L

        self.encoder = ConvEncoder(config.channels, config.cnn_depth)
        embed_dim = self.encoder.out_dim
        # level l > 0: its own MLP on the per-frame embedding, then a sum over its window
        self.level_mlps = nn.ModuleList(
            MLP(embed_dim, config.embed, embed_dim, config.enc_dense_layers) for _ in range(1, L)
        )
        A = config.action_dim
        self.action_dims = [self._level_action_dim(level) for level in range(L)]
        # level l > 0 with actions: an embedding of the sum of actions since its previous tick
        self.action_mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(A, config.action_embed), nn.ELU())
            for _ in range(1, L if (A and config.action_levels == "all") else 1)
        )
        self.cells = nn.ModuleList(
            RSSMCell(
                stoch=self.stoch[level],
                deter=self.deter[level],
                hidden=hidden[level],
                context_dim=(self.stoch[level + 1] + self.deter[level + 1]) if level < L - 1 else 0,
                embed_dim=embed_dim,
                action_dim=self.action_dims[level],
                min_stddev=config.min_stddev,
            )
            for level in range(L)
        )
        self.decoder = ConvDecoder(
            self.stoch[0] + self.deter[0], config.channels, config.cnn_depth, config.channels_last
        )

    def _level_action_dim(self, level: int) -> int:
        cfg = self.config
        if not cfg.action_dim or (level > 0 and cfg.action_levels == "bottom"):
            return 0
        return cfg.action_dim if level == 0 else cfg.action_embed

    @property
    def device(self) -> torch.device:
        return self.decoder.dense.weight.device

    # -- states ----------------------------------------------------------------------

    def initial(self, batch_size: int) -> CWState:
        """All-zero state at clock step 0 (the official code's zero state)."""
        dev = self.device
        return CWState(
            [torch.zeros(batch_size, d, device=dev) for d in self.deter],
            [torch.zeros(batch_size, s, device=dev) for s in self.stoch],
            0,
        )

    # -- encoding --------------------------------------------------------------------

    def encode(self, image) -> list[torch.Tensor]:
        """Per-frame embeddings for each level, ``[B, T, E]`` (before window pooling).

        Args:
            image: ``[B, T, H, W, C]`` uint8, or float in [0, 1] (checked by the callers).
        """
        B = image.shape[0]
        frames = self._to_model_frames(image)  # (B*T, C, H, W)
        e = rearrange(self.encoder(frames), "(b t) e -> b t e", b=B)
        return [e] + [mlp(e) for mlp in self.level_mlps]

    def _to_model_frames(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, T, H, W, C]`` -> float ``[B*T, C, H, W]`` in [0, 1], channels-last in memory when configured."""
        x = rearrange(image, "b t h w c -> (b t) c h w")  # a view: NHWC memory
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if not self.config.channels_last:
            x = x.contiguous()
        return x

    def _pool_windows(self, per_frame: torch.Tensor, start: int, period: int) -> torch.Tensor:
        """Sum ``[B, T, E]`` over each tick's window ``[o, o + period)`` -> ``[B, n, E]``."""
        if period == 1:
            return per_frame
        first = (-start) % period
        x = per_frame[:, first:]
        pad = (-x.shape[1]) % period  # a window cut short sums what is there
        x = F.pad(x, (0, 0, 0, pad))
        return x.unflatten(1, (-1, period)).sum(dim=2)  # (B, n, E)

    # -- unrolling -------------------------------------------------------------------

    def observe(
        self,
        image,
        action=None,
        is_first=None,
        state: Optional[CWState] = None,
        sample: bool = True,
        use_obs: Optional[Sequence[bool]] = None,
    ) -> Trajectory:
        """Infer posterior states from frames.

        Args:
            image: ``[B, T, H, W, C]``, uint8 or float in [0, 1].
            action: ``[B, T, A]``; ``action[:, t]`` is taken after ``image[:, t]``
                (required when ``action_dim > 0``, refused when it is 0).
            is_first: ``[B, T]`` bool, episode starts; resets the levels' states.
            state: carry to continue from (default :meth:`initial`); its step
                counter sets the clock phase. When it stops mid-window, the frames
                before an upper level's next tick belong to a window that ticked in an
                earlier call and do not enter that level; the transition into this
                chunk's first step uses zero actions.
            sample: draw ``z`` from the posterior (False: use its mean).
            use_obs: per level, whether to use the frames (False: that level
                follows its prior, as in the paper's Sec. 3.6). Default: the config's.
        Returns:
            :class:`Trajectory` with per-level posteriors and priors.
        """
        image = self._check_image(image)
        B, T = image.shape[:2]
        action = self._check_action(action, B, T)
        is_first = self._check_is_first(is_first, B, T)
        state = self.initial(B) if state is None else self._check_state(state, B)
        return self._observe_embedded(self.encode(image), action, is_first, state, sample, use_obs)

    def _observe_embedded(self, embeds, action, is_first, state, sample=True, use_obs=None) -> Trajectory:
        B, T = embeds[0].shape[:2]
        action_prev, keep = self._prev_actions_and_resets(action, is_first, B, T)
        posts, priors, last = self._unroll(state, T, action_prev, keep, embeds, use_obs, range(self.levels), sample)
        return Trajectory(posts, priors, last)

    def _unroll(self, state, length, action_prev, keep, embeds, use_obs, levels, sample):
        """Unroll ``levels`` (a top-aligned run) for ``length`` steps from ``state``, top level first.

        Context only flows downward, so each level is one scan over its own ticks.
        With ``embeds`` (per-frame embeddings per level) a level with ``use_obs``
        follows its posterior; otherwise it follows its prior.

        Returns:
            (states, priors, last): per level the states it followed and its priors
            (None for levels not unrolled), and the carry after ``length`` steps.
        """
        use_obs = self.use_obs if use_obs is None else list(use_obs)
        states: list = [None] * self.levels
        priors: list = [None] * self.levels
        last_h, last_z = list(state.h), list(state.z)
        above = None  # (features of the level above at its ticks, its held state before them)
        for level in reversed(levels):
            period = self.periods[level]
            offsets = tick_offsets(state.step, length, period)
            cell = self.cells[level]
            cond = cell.condition(
                self._context(above, state.step, length, level),
                self._action_summary(action_prev, offsets, level),
            )
            embed_proj = None
            if embeds is not None and use_obs[level]:
                embed_proj = cell.project_embed(self._pool_windows(embeds[level], state.step, period))
            followed = self._scan(level, state.h[level], state.z[level], len(offsets), cond, embed_proj,
                                  self._window_keep(keep, offsets, period), sample)
            states[level] = followed
            priors[level] = followed if embed_proj is None else self._prior_of(level, followed.h)
            if len(followed):
                last_h[level], last_z[level] = followed.h[:, -1], followed.z[:, -1]
            above = (followed.features, torch.cat([state.z[level], state.h[level]], dim=-1))
        return states, priors, CWState(last_h, last_z, state.step + length)

    def _scan(self, level, h, z, n, cond, embed_proj, keep, sample) -> LevelStates:
        """Run one level's cell over its ``n`` active steps.

        Args:
            h, z: the level's state before its first tick, ``[B, deter]``, ``[B, stoch]``.
            cond: projected context and actions ``[B, n, hidden]`` or None.
            embed_proj: projected window embeddings ``[B, n, hidden]`` (posterior), or
                None to follow the prior.
            keep: ``[B, n, 1]`` float, 0 where an episode starts (state reset), or None.
        """
        cell = self.cells[level]
        hs, zs, means, stds = [], [], [], []
        for i in range(n):
            if keep is not None:  # branch-free episode reset: the initial state is zero
                h, z = h * keep[:, i], z * keep[:, i]
            h = cell.deter_step(h, z, None if cond is None else cond[:, i])
            if embed_proj is None:
                mean, std = cell.prior(h)
            else:
                mean, std = cell.posterior(h, embed_proj[:, i])
            z = mean + std * torch.randn_like(std) if sample else mean
            hs.append(h), zs.append(z), means.append(mean), stds.append(std)
        if n == 0:
            B = h.shape[0]
            empty = h.new_zeros(B, 0, self.stoch[level])
            return LevelStates(empty, empty, empty, h.new_zeros(B, 0, self.deter[level]))
        # stacked once, after the loop
        return LevelStates(torch.stack(means, 1), torch.stack(stds, 1), torch.stack(zs, 1), torch.stack(hs, 1))

    def _prior_of(self, level: int, h: torch.Tensor) -> LevelStates:
        """Prior ``p(z | h)`` for a whole sequence of GRU states ``[B, n, deter]`` at once."""
        mean, std = self.cells[level].prior(h)
        return LevelStates(mean, std, mean + std * torch.randn_like(std), h)

    def _context(self, above, start: int, length: int, level: int) -> Optional[torch.Tensor]:
        """Context of each tick of ``level``: the state of the level above at its latest tick.

        Ticks of ``level`` before the first tick of the level above in this chunk
        read the state it held when the chunk began.
        """
        if above is None:
            return None
        feats, held = above  # (B, n_above, D), (B, D)
        own = tick_offsets(start, length, self.periods[level])
        up = tick_offsets(start, length, self.periods[level + 1])
        # index into [held, feats...]: number of upper ticks at or before each own tick
        idx = [0 if len(up) == 0 or o < up.start else (o - up.start) // up.step + 1 for o in own]
        table = torch.cat([held[:, None], feats], dim=1)
        return table[:, torch.as_tensor(idx, device=feats.device)]  # (B, n, D)

    def _prev_actions_and_resets(self, action, is_first, B, T):
        """``action_prev[t] = action[t-1]`` (zero at t = 0 and at episode starts), and keep = 1 - is_first."""
        keep = None if is_first is None else (~is_first).float()  # (B, T)
        if action is None:
            return None, keep
        action_prev = F.pad(action[:, :-1], (0, 0, 1, 0))  # (B, T, A)
        if keep is not None:
            action_prev = action_prev * keep[..., None]
        return action_prev, keep

    def _action_summary(self, action_prev, offsets: range, level: int) -> Optional[torch.Tensor]:
        """Actions leading into each tick of ``level`` -> ``[B, n, action_dims[level]]``.

        The bottom level reads ``action[t-1]``; a level above (``action_levels: all``)
        reads an embedding of the sum of the actions taken since its previous tick,
        i.e. ``action_prev`` over ``(o - k**l, o]`` (what lies inside this chunk).
        """
        if self.action_dims[level] == 0:
            return None
        if level == 0:
            return action_prev
        return self.action_mlps[level - 1](_sum_since_previous_tick(action_prev, offsets, self.periods[level]))

    def _window_keep(self, keep, offsets: range, period: int) -> Optional[torch.Tensor]:
        """Per tick: 0 if an episode starts within ``(o - period, o]``, else 1 -> ``[B, n, 1]``."""
        if keep is None:
            return None
        starts = _sum_since_previous_tick((1 - keep)[..., None], offsets, period)  # (B, n, 1)
        return (starts == 0).float()

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
    ) -> Rollout:
        """Roll the priors forward ``horizon`` steps from ``state``, continuing its clock.

        Args:
            state: where to start (e.g. ``observe(...).last``).
            horizon: number of bottom-level steps to imagine (> 0).
            actions: ``[B, horizon, A]``; ``actions[:, i]`` is the action leading into
                imagined step ``i`` (the first one is taken in ``state``).
            policy: not supported yet (see the roadmap in the README); pass ``actions``.
            levels: roll only these levels (a top-aligned run such as ``[1, 2]``):
                "jumpy" imagination; each level is evaluated at its own ticks only.
            sample: sample ``z`` from the priors (False: use their means).
            decode: also decode the bottom level's frames into ``Rollout.frames``.
        """
        if not isinstance(horizon, int) or horizon <= 0:
            raise ValueError(f"imagine: horizon must be a positive int, got {horizon!r}")
        if policy is not None:
            raise NotImplementedError("imagine(policy=...) is not implemented yet; pass actions=[B, H, A]")
        state = self._check_state(state)
        B = state.batch_size
        rolled = list(range(self.levels)) if levels is None else sorted(set(levels))
        if not rolled or rolled != list(range(rolled[0], self.levels)):
            raise ValueError(
                f"imagine: levels must be a top-aligned run such as [l, ..., {self.levels - 1}], got {levels}"
            )
        actions = self._check_action(actions, B, horizon, name="imagine: actions")
        # actions[:, i] leads into imagined step i: it plays the role of action_prev
        out, _, last = self._unroll(state, horizon, actions, None, None, None, rolled, sample)
        rollout = Rollout(out, last, actions)
        if decode:
            if out[0] is None:
                raise ValueError("imagine: decode=True needs the bottom level in `levels`")
            rollout.frames = self.decode(out[0].features)
        return rollout

    # -- decoding and prediction -------------------------------------------------------

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Bottom-level features ``[B, T, F]`` -> frames ``[B, T, H, W, C]``, float in [0, 1]."""
        B = features.shape[0]
        mean = self.decoder(rearrange(features, "b t f -> (b t) f"))  # (B*T, C, H, W)
        return rearrange(mean, "(b t) c h w -> b t h w c", b=B).clamp(0.0, 1.0)

    @torch.no_grad()
    def predict(
        self,
        context,
        horizon: int,
        actions=None,
        num_samples: int = 1,
        use_obs: Optional[Sequence[bool]] = None,
        sample: bool = True,
    ) -> torch.Tensor:
        """Open-loop video prediction: observe ``context``, then roll the priors ``horizon`` steps.

        Args:
            context: ``[B, C, H, W, ch]`` frames, uint8 or float in [0, 1].
            horizon: frames to predict after the context (> 0).
            actions: ``[B, C + horizon - 1, A]`` (or longer) for action-conditioned models,
                aligned with the frames: ``actions[:, t]`` is taken after frame ``t``.
            num_samples: independent samples per context video.
            use_obs: per level, whether the context frames inform that level (the
                paper's Sec. 3.6 ablation); default: the config's ``use_obs``.
        Returns:
            ``[B, num_samples, horizon, H, W, ch]`` float in [0, 1].
        """
        if not isinstance(horizon, int) or horizon <= 0:
            raise ValueError(f"predict: horizon must be a positive int, got {horizon!r}")
        if not isinstance(num_samples, int) or num_samples <= 0:
            raise ValueError(f"predict: num_samples must be a positive int, got {num_samples!r}")
        context = self._check_image(context, "predict: context")
        B, C = context.shape[:2]
        actions = self._check_action(actions, B, C + horizon - 1, name="predict: actions", at_least=True)
        if actions is not None:
            actions = actions.repeat_interleave(num_samples, dim=0)
        embeds = [e.repeat_interleave(num_samples, dim=0) for e in self.encode(context)]
        ctx_actions = None if actions is None else actions[:, :C]
        traj = self._observe_embedded(embeds, ctx_actions, None, self.initial(B * num_samples), sample, use_obs)
        future = None if actions is None else actions[:, C - 1 : C - 1 + horizon]
        rollout = self.imagine(traj.last, horizon, actions=future, sample=sample)
        frames = self.decode(rollout.features)
        return rearrange(frames, "(b s) t h w c -> b s t h w c", s=num_samples)

    # -- the loss ----------------------------------------------------------------------

    def loss(self, batch: dict, validate: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
        """Negative ELBO per frame of a batch, and its terms as floats.

        Args:
            batch: ``"image"`` ``[B, T, H, W, C]``, and ``"action"`` ``[B, T, A]``,
                ``"is_first"`` ``[B, T]`` when used.
        Returns:
            ``(loss, metrics)``; metrics holds ``loss``, ``nll`` (per frame), ``mse``
            (per pixel), ``kl`` and ``kl/0`` ... ``kl/{L-1}`` (each level's KL summed
            over its active steps, per sequence, divided by T).
        """
        loss, terms = self.loss_terms(batch, validate)
        return loss, {name: float(value) for name, value in terms.items()}

    def loss_terms(self, batch: dict, validate: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Like :meth:`loss` but the metrics stay 0-dim tensors (no host sync; compile-friendly)."""
        image, action, is_first = batch["image"], batch.get("action"), batch.get("is_first")
        if validate:
            image = self._check_image(image)
            action = self._check_action(action, image.shape[0], image.shape[1])
            is_first = self._check_is_first(is_first, image.shape[0], image.shape[1])
        B, T = image.shape[:2]
        traj = self._observe_embedded(self.encode(image), action, is_first, self.initial(B))

        mean = self.decoder(rearrange(traj.features, "b t f -> (b t) f"))  # (B*T, C, H, W)
        target = self._to_model_frames(image)  # (B*T, C, H, W)
        sigma = self.config.dec_stddev
        sq_err = (target - mean).square().sum() / B  # per sequence
        pixels = target[0].numel()
        nll = 0.5 * sq_err / sigma**2 + T * pixels * (math.log(sigma) + 0.5 * math.log(2 * math.pi))

        terms: dict[str, torch.Tensor] = {}
        penalty = 0.0
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
        loss = (nll + penalty) / T
        terms = {
            "loss": loss.detach(),
            "nll": nll.detach() / T,
            "mse": sq_err.detach() / (T * pixels),
            "kl": kl_total.detach() / T,
            **terms,
        }
        return loss, terms

    # -- input checks ------------------------------------------------------------------

    def _check_image(self, image, name: str = "image") -> torch.Tensor:
        cfg = self.config
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(image)
        if not torch.is_tensor(image):
            raise ValueError(f"{name}: expected a tensor or numpy array, found {type(image).__name__}")
        expected = (cfg.image_size, cfg.image_size, cfg.channels)
        if image.ndim != 5 or tuple(image.shape[2:]) != expected:
            raise ValueError(
                f"{name}: expected shape [B, T, {expected[0]}, {expected[1]}, {expected[2]}] "
                f"(batch, time, height, width, channels; channels-last), found {tuple(image.shape)}"
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"{name}: expected at least 1 sequence of at least 1 frame, found shape {tuple(image.shape)}")
        if image.dtype == torch.uint8:
            return image.to(self.device)
        if not image.is_floating_point():
            raise ValueError(f"{name}: expected dtype uint8 (0..255) or float in [0, 1], found {image.dtype}")
        if not bool(torch.isfinite(image).all()):
            raise ValueError(f"{name}: expected finite values, found NaN or inf")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f"{name}: expected float pixels in [0, 1], found values in [{low:g}, {high:g}]")
        return image.to(self.device)

    def _check_action(self, action, B: int, T: int, name: str = "action", at_least: bool = False):
        A = self.config.action_dim
        if action is None:
            if A:
                raise ValueError(f"{name}: this model is action-conditioned (action_dim={A}); expected [B, T, {A}] actions, found None")
            return None
        if not A:
            raise ValueError(f"{name}: this model has action_dim=0 (video only) but actions were given")
        if isinstance(action, np.ndarray):
            action = torch.from_numpy(action)
        action = torch.as_tensor(action)
        length_ok = action.ndim == 3 and (action.shape[1] >= T if at_least else action.shape[1] == T)
        if not length_ok or action.shape[0] != B or action.shape[2] != A:
            want = f"[{B}, {'>= ' if at_least else ''}{T}, {A}]"
            raise ValueError(f"{name}: expected shape {want} (batch, time, action_dim), found {tuple(action.shape)}")
        action = action.to(self.device, torch.float32)
        if not bool(torch.isfinite(action).all()):
            raise ValueError(f"{name}: expected finite values, found NaN or inf")
        return action

    def _check_is_first(self, is_first, B: int, T: int):
        if is_first is None:
            return None
        is_first = torch.as_tensor(is_first)
        if tuple(is_first.shape) != (B, T):
            raise ValueError(f"is_first: expected shape [{B}, {T}] (batch, time), found {tuple(is_first.shape)}")
        return is_first.to(self.device).bool()

    def _check_state(self, state: CWState, B: Optional[int] = None) -> CWState:
        if not isinstance(state, CWState):
            raise ValueError(f"state: expected a CWState, found {type(state).__name__}")
        if len(state.h) != self.levels or len(state.z) != self.levels:
            raise ValueError(f"state: expected {self.levels} levels, found {len(state.h)}")
        B = state.batch_size if B is None else B
        for level in range(self.levels):
            for part, tensor, size in (("h", state.h[level], self.deter[level]), ("z", state.z[level], self.stoch[level])):
                if tuple(tensor.shape) != (B, size):
                    raise ValueError(
                        f"state.{part}[{level}]: expected shape [{B}, {size}], found {tuple(tensor.shape)} "
                        "(a state from a model of another size, or another batch size?)"
                    )
        return state


def _sum_since_previous_tick(x: torch.Tensor, offsets: range, period: int) -> torch.Tensor:
    """Sum ``x [B, T, D]`` over ``(o - period, o]`` for each tick offset ``o`` -> ``[B, n, D]``.

    The part of a window that lies before the chunk (``t < 0``) is not there to sum.
    """
    csum = F.pad(x.cumsum(dim=1), (0, 0, 1, 0))  # csum[t] = sum of x[:, :t]
    hi = torch.as_tensor([o + 1 for o in offsets], device=x.device, dtype=torch.long)
    lo = torch.as_tensor([max(o + 1 - period, 0) for o in offsets], device=x.device, dtype=torch.long)
    return csum[:, hi] - csum[:, lo]


def _gaussian_kl(mean_q, std_q, mean_p, std_p) -> torch.Tensor:
    """KL(N(mean_q, std_q) || N(mean_p, std_p)) per dimension, elementwise."""
    var_ratio = (std_q / std_p).square()
    return 0.5 * (var_ratio + ((mean_q - mean_p) / std_p).square() - 1.0 - var_ratio.log())
