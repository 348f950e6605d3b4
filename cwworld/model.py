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
from .nn.init import tf_init_

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


def _map_tensors(obj, fn):
    """Apply ``fn`` to every tensor in nested lists/tuples (None and ints pass through)."""
    if torch.is_tensor(obj):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(x, fn) for x in obj)
    return obj


_MEMORY_FIELDS = ("carry_action", "carry_first", "embeds", "action_prev", "is_first", "noise")


@dataclass
class FilterMemory:
    """What :meth:`CWVAE.observe_step` keeps since the top level's latest tick, so that it can
    recompute the windows still open (their posteriors change as frames arrive) exactly as
    :meth:`CWVAE.observe` on the whole prefix would. All tensors have the batch first."""

    start: "CWState"  # the carry at the top level's latest tick (before that step)
    carry_action: list  # per level: sum of action_prev in its first window before `start` ([B, A]) or None
    carry_first: list  # per level: an episode started in that part ([B] bool) or None
    embeds: list  # per level, per step since start: [B, 1, E]
    action_prev: list  # per step: [B, A] (empty without actions)
    is_first: list  # per step: [B] bool
    noise: list  # per level, per tick since start: [B, stoch]

    def map(self, fn) -> "FilterMemory":
        return FilterMemory(self.start.map(fn), *(_map_tensors(getattr(self, name), fn) for name in _MEMORY_FIELDS))


@dataclass
class CWState:
    """The recurrent carry of all levels after ``step`` steps.

    Attributes:
        h: per level, the GRU state ``[B, deter_l]`` at that level's last tick.
        z: per level, the stochastic state ``[B, stoch_l]`` at that level's last tick.
        step: global clock, the number of steps seen since the start of the
            sequence; level ``l`` next ticks at the first multiple of ``k**l`` >= step.
        memory: what :meth:`CWVAE.observe_step` needs to continue exactly (None otherwise).
    """

    h: list[torch.Tensor]
    z: list[torch.Tensor]
    step: int = 0
    memory: Optional[FilterMemory] = None

    @property
    def batch_size(self) -> int:
        return self.h[0].shape[0]

    def features(self, level: int = 0) -> torch.Tensor:
        """``[z, h]`` of a level, ``[B, stoch_l + deter_l]``."""
        return torch.cat([self.z[level], self.h[level]], dim=-1)

    def map(self, fn) -> "CWState":
        """The state with ``fn`` applied to every tensor (its memory's too)."""
        return CWState([fn(h) for h in self.h], [fn(z) for z in self.z], self.step,
                       None if self.memory is None else self.memory.map(fn))

    def detach(self) -> "CWState":
        return self.map(lambda t: t.detach())

    def to(self, *args, **kwargs) -> "CWState":
        return self.map(lambda t: t.to(*args, **kwargs))

    def __getitem__(self, index) -> "CWState":
        """Batch indexing: ``state[2:5]``, ``state[mask]``."""
        return self.map(lambda t: t[index])

    @staticmethod
    def cat(states: Sequence["CWState"]) -> "CWState":
        """Concatenate states along the batch; all must be at the same clock step.
        Their ``observe_step`` memories are concatenated when all have one, else dropped."""
        steps = {s.step for s in states}
        if len(steps) != 1:
            raise ValueError(f"CWState.cat: states must share the clock step, found steps {sorted(steps)}")
        levels = len(states[0].h)
        memory = None
        if all(s.memory is not None for s in states):
            memory = FilterMemory(CWState.cat([s.memory.start for s in states]),
                                  *(_cat_nested([getattr(s.memory, name) for s in states]) for name in _MEMORY_FIELDS))
        return CWState(
            [torch.cat([s.h[l] for s in states]) for l in range(levels)],
            [torch.cat([s.z[l] for s in states]) for l in range(levels)],
            steps.pop(),
            memory,
        )


def _cat_nested(items: list):
    """Concatenate matching tensors of equally shaped nested lists along the batch."""
    first = items[0]
    if torch.is_tensor(first):
        return torch.cat(items)
    if isinstance(first, (list, tuple)):
        if len({len(x) for x in items}) != 1:
            raise ValueError("CWState.cat: observe_step memories of different lengths")
        return type(first)(_cat_nested(list(group)) for group in zip(*items))
    return first  # None


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
    With heads configured, ``reward`` and ``cont`` hold the bottom level's predictions
    ``[B, horizon]`` and ``level_rewards[l]`` level ``l``'s predicted reward sums over its
    windows ``[B, n_l]`` (index 0 is None), so a jumpy rollout can score a plan.
    """

    levels: list[Optional[LevelStates]]
    last: CWState
    actions: Optional[torch.Tensor] = None
    frames: Optional[torch.Tensor] = None
    reward: Optional[torch.Tensor] = None  # [B, horizon], the reward head's mean (reward_head)
    cont: Optional[torch.Tensor] = None  # [B, horizon], probability of continuing (continue_head)
    level_rewards: Optional[list] = None  # per level l > 0: [B, n_l] predicted window reward sums
    vectors: Optional[dict] = None  # decoded vector observations {name: [B, horizon, size]} (decode=True)

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
        # optional vector observations (e.g. MineRL's compass): encoded next to the image, decoded too
        self.vector_keys = list(config.vectors or {})
        self.vector_dims = [config.vectors[k] for k in self.vector_keys]
        self.vector_encoder = self.vector_decoder = None
        if self.vector_keys:
            self.vector_encoder = MLP(sum(self.vector_dims), config.vector_embed, config.vector_embed, 2)
            embed_dim += config.vector_embed
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
        # heads (off by default: the paper's model has none)
        def head(in_dim):
            return MLP(in_dim, config.head_hidden, 1, config.head_layers + 1)
        self.reward_head = head(self.stoch[0] + self.deter[0]) if config.reward_head else None
        if self.vector_keys:
            self.vector_decoder = MLP(self.stoch[0] + self.deter[0], config.head_hidden, sum(self.vector_dims),
                                      config.head_layers + 1)
        self.continue_head = head(self.stoch[0] + self.deter[0]) if config.continue_head else None
        self.level_reward_heads = nn.ModuleList(
            head(self.stoch[level] + self.deter[level]) for level in range(1, L)
        ) if config.level_reward_heads else None
        if config.init == "tf":
            tf_init_(self)

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

    def encode(self, image, vectors: Optional[dict] = None) -> list[torch.Tensor]:
        """Per-frame embeddings for each level, ``[B, T, E]`` (before window pooling).

        Args:
            image: ``[B, T, H, W, C]`` uint8, or float in [0, 1] (checked by the callers).
            vectors: ``{name: [B, T, size]}`` for the configured vector observations.
        """
        B, T = image.shape[:2]
        frames = self._to_model_frames(image)  # (B*T, C, H, W)
        e = rearrange(self.encoder(frames), "(b t) e -> b t e", b=B)
        if self.vector_encoder is not None:
            e = torch.cat([e, self.vector_encoder(self._vector_input(vectors, B, T))], dim=-1)
        return [e] + [mlp(e) for mlp in self.level_mlps]

    def _vector_input(self, vectors: Optional[dict], B: int, T: int, name: str = "vectors") -> torch.Tensor:
        """The configured vector observations as one float tensor ``[B, T, sum of sizes]``,
        symlog-squashed (``sign(x) log(1 + |x|)``, as DreamerV3) so raw units (degrees,
        item counts) need no hand-set scale; :meth:`decode_vectors` undoes it."""
        if not isinstance(vectors, dict):
            raise ValueError(f"{name}: this model reads vector observations {dict(zip(self.vector_keys, self.vector_dims))}; "
                             f"pass them as a dict {{name: [B, T, size]}} (batch fields of the same names), "
                             f"found {type(vectors).__name__}")
        parts = []
        for key, size in zip(self.vector_keys, self.vector_dims):
            if key not in vectors:
                raise ValueError(f"{name}: missing {key!r} (expected [{B}, {T}, {size}]; found keys {sorted(vectors)})")
            value = torch.as_tensor(vectors[key], device=self.device).float()
            if value.ndim == 2 and size == 1:
                value = value[..., None]
            if tuple(value.shape) != (B, T, size):
                raise ValueError(f"{name}: {key!r}: expected shape [{B}, {T}, {size}], found {tuple(value.shape)}")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name}: {key!r}: expected finite values, found NaN or inf")
            parts.append(value)
        return _symlog(torch.cat(parts, dim=-1))

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
        vectors: Optional[dict] = None,
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
            vectors: ``{name: [B, T, size]}`` when the config has ``vectors``.
        Returns:
            :class:`Trajectory` with per-level posteriors and priors.
        """
        image = self._check_image(image)
        B, T = image.shape[:2]
        action = self._check_action(action, B, T)
        is_first = self._check_is_first(is_first, B, T)
        state = self.initial(B) if state is None else self._check_state(state, B)
        return self._observe_embedded(self.encode(image, vectors), action, is_first, state, sample, use_obs)

    def _observe_embedded(self, embeds, action, is_first, state, sample=True, use_obs=None) -> Trajectory:
        B, T = embeds[0].shape[:2]
        action_prev, keep = self._prev_actions_and_resets(action, is_first, B, T)
        posts, priors, last = self._unroll(state, T, action_prev, keep, embeds, use_obs, range(self.levels), sample)
        return Trajectory(posts, priors, last)

    def observe_step(self, state: CWState, image_t, action_prev=None, is_first=None, sample: bool = True,
                     vectors_t: Optional[dict] = None) -> CWState:
        """Filter one frame online: the state after ``image_t``, for an agent acting as it goes.

        Args:
            state: the state before this frame (``initial(B)`` at the start, then what the
                previous call returned).
            image_t: ``[B, H, W, C]`` frame, uint8 or float in [0, 1].
            action_prev: ``[B, A]``, the action taken before this frame (the transition into
                this step; ignored where ``is_first``); required when ``action_dim > 0``.
            is_first: ``[B]`` bool, episode starts (resets every level's state).
            sample: sample ``z`` (False: posterior means).
            vectors_t: ``{name: [B, size]}`` when the config has ``vectors``.

        An upper level's posterior at a tick sums the embeddings of the frames in its window,
        so it changes as each frame of the window arrives. The returned state keeps (in
        ``state.memory``) the frames and noise since the top level's latest tick and
        recomputes the open windows, so that called frame by frame from ``initial(B)`` it
        gives the same state as :meth:`observe` on the whole prefix (exactly with
        ``sample=False``; with sampling, each tick's noise is drawn once and reused). Each
        call costs at most ``k**(L-1)`` steps of the bottom cell. Continuing from a state
        without memory (e.g. ``observe(...).last``) mid-window behaves like ``observe`` with
        ``state=``: frames before an upper level's next tick do not enter that level.
        """
        state = self._check_state(state)
        B = state.batch_size
        if (torch.is_tensor(image_t) or isinstance(image_t, np.ndarray)) and image_t.ndim == 4:
            image_t = image_t[:, None]
        image = self._check_image(image_t, "observe_step: image_t")
        if image.shape[:2] != (B, 1):
            raise ValueError(f"observe_step: image_t: expected [{B}, H, W, C] (one frame per batch entry), "
                             f"found {tuple(image.shape[:1]) + tuple(image.shape[2:])}")
        if action_prev is not None:
            action_prev = torch.as_tensor(action_prev)
            if action_prev.ndim != 2:
                raise ValueError(f"observe_step: action_prev: expected [{B}, {self.config.action_dim}], "
                                 f"found {tuple(action_prev.shape)}")
            action_prev = action_prev[:, None]
        elif self.config.action_dim:
            raise ValueError(f"observe_step: action_prev: this model is action-conditioned; expected "
                             f"[{B}, {self.config.action_dim}] (zeros at an episode's first frame), found None")
        action_prev = self._check_action(action_prev, B, 1, name="observe_step: action_prev")
        first = torch.zeros(B, dtype=torch.bool, device=self.device) if is_first is None else \
            self._check_is_first(torch.as_tensor(is_first).reshape(-1, 1), B, 1)[:, 0]
        if vectors_t is not None:
            vectors_t = {k: torch.as_tensor(v)[:, None] for k, v in vectors_t.items()}
        embeds = self.encode(image, vectors_t)  # per level [B, 1, E]

        K, t, old = self.periods[-1], state.step, state.memory
        if old is None or t % K == 0:  # the top level ticks now: a new window of memory
            carry_action = [None] * self.levels
            carry_first = [None] * self.levels
            if old is not None:
                for level in range(1, self.levels):
                    back = self.periods[level] - 1  # the rest of this tick's window, before it
                    if back and old.is_first:
                        carry_first[level] = torch.stack(old.is_first[-back:]).any(0)
                    if back and old.action_prev:
                        carry_action[level] = torch.stack(old.action_prev[-back:]).sum(0)
            mem = FilterMemory(CWState(state.h, state.z, t), carry_action, carry_first,
                               [[] for _ in range(self.levels)], [], [], [[] for _ in range(self.levels)])
        else:
            mem = FilterMemory(old.start, old.carry_action, old.carry_first, [list(e) for e in old.embeds],
                               list(old.action_prev), list(old.is_first), [list(n) for n in old.noise])
        for level in range(self.levels):
            mem.embeds[level].append(embeds[level])
        if action_prev is not None:
            mem.action_prev.append(action_prev[:, 0] * (~first)[:, None].float())
        mem.is_first.append(first)
        n = len(mem.is_first)
        for level in range(self.levels):  # noise for ticks that appeared with this frame
            ticks = len(tick_offsets(mem.start.step, n, self.periods[level]))
            while len(mem.noise[level]) < ticks:
                mem.noise[level].append(torch.randn(B, self.stoch[level], device=self.device))
        keep = (~torch.stack(mem.is_first, 1)).float()  # (B, n)
        action_seq = torch.stack(mem.action_prev, 1) if mem.action_prev else None
        noise = [torch.stack(n_l, 1) if n_l else None for n_l in mem.noise] if sample else None
        _, _, last = self._unroll(mem.start, n, action_seq, keep, [torch.cat(e, 1) for e in mem.embeds], None,
                                  range(self.levels), sample, noise, (mem.carry_action, mem.carry_first))
        return CWState(last.h, last.z, t + 1, mem)

    def _unroll(self, state, length, action_prev, keep, embeds, use_obs, levels, sample, noise=None, carry=None):
        """Unroll ``levels`` (a top-aligned run) for ``length`` steps from ``state``, top level first.

        Context only flows downward, so each level is one scan over its own ticks.
        With ``embeds`` (per-frame embeddings per level) a level with ``use_obs``
        follows its posterior; otherwise it follows its prior.

        ``noise`` (per level ``[B, n_l, stoch]`` or None) fixes the sampling noise of the
        followed states. ``carry`` = (actions, starts): per level the sum of ``action_prev``
        and whether an episode started in the part of its first tick's window that lies
        before this chunk (``observe_step`` knows it; a plain chunk treats it as empty).

        Returns:
            (states, priors, last): per level the states it followed and its priors
            (None for levels not unrolled), and the carry after ``length`` steps.
        """
        carry_action, carry_first = carry if carry is not None else (None, None)
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
                self._action_summary(action_prev, offsets, level,
                                     None if carry_action is None else carry_action[level]),
            )
            embed_proj = None
            if embeds is not None and use_obs[level]:
                embed_proj = cell.project_embed(self._pool_windows(embeds[level], state.step, period))
            window_keep = self._window_keep(keep, offsets, period,
                                            None if carry_first is None else carry_first[level])
            followed = self._scan(level, state.h[level], state.z[level], len(offsets), cond, embed_proj,
                                  window_keep, sample, None if noise is None else noise[level])
            states[level] = followed
            priors[level] = followed if embed_proj is None else self._prior_of(level, followed.h)
            if len(followed):
                last_h[level], last_z[level] = followed.h[:, -1], followed.z[:, -1]
            above = (followed.features, torch.cat([state.z[level], state.h[level]], dim=-1))
        return states, priors, CWState(last_h, last_z, state.step + length)

    def _scan(self, level, h, z, n, cond, embed_proj, keep, sample, eps=None) -> LevelStates:
        """Run one level's cell over its ``n`` active steps.

        Args:
            h, z: the level's state before its first tick, ``[B, deter]``, ``[B, stoch]``.
            cond: projected context and actions ``[B, n, hidden]`` or None.
            embed_proj: projected window embeddings ``[B, n, hidden]`` (posterior), or
                None to follow the prior.
            keep: ``[B, n, 1]`` float, 0 where an episode starts (state reset), or None.
            eps: ``[B, n, stoch]`` standard normal noise to sample with (default: fresh).
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
            if sample:
                z = mean + std * (torch.randn_like(std) if eps is None else eps[:, i])
            else:
                z = mean
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

    def _action_summary(self, action_prev, offsets: range, level: int, carry_in=None) -> Optional[torch.Tensor]:
        """Actions leading into each tick of ``level`` -> ``[B, n, action_dims[level]]``.

        The bottom level reads ``action[t-1]``; a level above (``action_levels: all``)
        reads an embedding of the sum of the actions taken since its previous tick,
        i.e. ``action_prev`` over ``(o - k**l, o]`` (what lies inside this chunk).
        """
        if self.action_dims[level] == 0:
            return None
        if level == 0:
            return action_prev
        sums = _sum_since_previous_tick(action_prev, offsets, self.periods[level])
        if carry_in is not None and len(offsets) and offsets[0] + 1 < self.periods[level]:
            sums = torch.cat([sums[:, :1] + carry_in[:, None], sums[:, 1:]], dim=1)
        return self.action_mlps[level - 1](sums)

    def _window_keep(self, keep, offsets: range, period: int, carry_in=None) -> Optional[torch.Tensor]:
        """Per tick: 0 if an episode starts within ``(o - period, o]``, else 1 -> ``[B, n, 1]``."""
        if keep is None:
            return None
        starts = _sum_since_previous_tick((1 - keep)[..., None], offsets, period)  # (B, n, 1)
        if carry_in is not None and len(offsets) and offsets[0] + 1 < period:
            starts = torch.cat([starts[:, :1] + carry_in.float()[:, None, None], starts[:, 1:]], dim=1)
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
            policy: ``policy(state) -> action [B, A]``, called at every imagined step with the
                current carry (a :class:`CWState` at that step); its action leads into the
                step. Needs all levels (no ``levels``); exclusive with ``actions``.
            levels: roll only these levels (a top-aligned run such as ``[1, 2]``):
                "jumpy" imagination; each level is evaluated at its own ticks only.
            sample: sample ``z`` from the priors (False: use their means).
            decode: also decode the bottom level's frames into ``Rollout.frames``.
        """
        if not isinstance(horizon, int) or horizon <= 0:
            raise ValueError(f"imagine: horizon must be a positive int, got {horizon!r}")
        state = self._check_state(state)
        B = state.batch_size
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
            out, last, actions = self._imagine_with_policy(state, horizon, policy, sample)
        else:
            actions = self._check_action(actions, B, horizon, name="imagine: actions")
            # actions[:, i] leads into imagined step i: it plays the role of action_prev
            out, _, last = self._unroll(state, horizon, actions, None, None, None, rolled, sample)
        rollout = Rollout(out, last, actions)
        self._apply_heads(rollout)
        if decode:
            if out[0] is None:
                raise ValueError("imagine: decode=True needs the bottom level in `levels`")
            rollout.frames = self.decode(out[0].features)
            if self.vector_decoder is not None:
                rollout.vectors = self.decode_vectors(out[0].features)
        return rollout

    def decode_vectors(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Bottom-level features ``[B, T, F]`` -> predicted vector observations ``{name: [B, T, size]}``."""
        if self.vector_decoder is None:
            raise ValueError("decode_vectors: this model has no vector observations (model.vectors)")
        out = _symexp(self.vector_decoder(features))
        return dict(zip(self.vector_keys, out.split(self.vector_dims, dim=-1)))

    def _apply_heads(self, rollout: Rollout) -> None:
        bottom = rollout.levels[0]
        if bottom is not None and self.reward_head is not None:
            rollout.reward = self.reward_head(bottom.features)[..., 0]
        if bottom is not None and self.continue_head is not None:
            rollout.cont = torch.sigmoid(self.continue_head(bottom.features)[..., 0])
        if self.level_reward_heads is not None:
            rollout.level_rewards = [None] + [
                None if rollout.levels[level] is None else
                self.level_reward_heads[level - 1](rollout.levels[level].features)[..., 0]
                for level in range(1, self.levels)
            ]

    def _imagine_with_policy(self, state: CWState, horizon: int, policy, sample: bool):
        """Step-by-step prior rollout, all levels, the policy choosing each action from the carry.
        The same arithmetic as :meth:`_unroll` with the policy's actions given up front."""
        B, A = state.batch_size, self.config.action_dim
        h, z = list(state.h), list(state.z)
        pending = [torch.zeros(B, A, device=self.device) for _ in range(self.levels)]  # actions since last tick
        records = [[] for _ in range(self.levels)]
        actions = []
        for i in range(horizon):
            t = state.step + i
            action = torch.as_tensor(policy(CWState(list(h), list(z), t)), device=self.device)
            if tuple(action.shape) != (B, A):
                raise ValueError(f"imagine: the policy returned shape {tuple(action.shape)} at step {t}, "
                                 f"expected [{B}, {A}]")
            action = action.float()
            if not bool(torch.isfinite(action).all()):
                raise ValueError(f"imagine: the policy returned NaN or inf at step {t}")
            actions.append(action)
            for level in range(1, self.levels):
                pending[level] = pending[level] + action
            for level in reversed(range(self.levels)):
                if t % self.periods[level]:
                    continue
                cell = self.cells[level]
                context = None if level == self.levels - 1 else torch.cat([z[level + 1], h[level + 1]], -1)
                summary = None
                if self.action_dims[level]:
                    summary = action if level == 0 else self.action_mlps[level - 1](pending[level])
                pending[level] = torch.zeros_like(pending[level])
                cond = cell.condition(None if context is None else context[:, None],
                                      None if summary is None else summary[:, None])
                h[level] = cell.deter_step(h[level], z[level], None if cond is None else cond[:, 0])
                mean, std = cell.prior(h[level])
                z[level] = mean + std * torch.randn_like(std) if sample else mean
                records[level].append((mean, std, z[level], h[level]))
        out = []
        for level, rec in enumerate(records):
            if rec:
                out.append(LevelStates(*(torch.stack(part, 1) for part in zip(*rec))))
            else:
                empty = state.h[level].new_zeros(B, 0, self.stoch[level])
                out.append(LevelStates(empty, empty, empty, state.h[level].new_zeros(B, 0, self.deter[level])))
        return out, CWState(h, z, state.step + horizon), torch.stack(actions, 1)

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
        vectors: Optional[dict] = None,
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
        embeds = [e.repeat_interleave(num_samples, dim=0) for e in self.encode(context, vectors)]
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
        vectors = {k: batch[k] for k in self.vector_keys if k in batch} if self.vector_keys else None
        traj = self._observe_embedded(self.encode(image, vectors), action, is_first, self.initial(B))

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
        heads, head_terms = self._head_losses(traj, batch, B, T, validate)
        loss = (nll + penalty + heads) / T
        terms = {
            "loss": loss.detach(),
            "nll": nll.detach() / T,
            "mse": sq_err.detach() / (T * pixels),
            "kl": kl_total.detach() / T,
            **terms,
            **head_terms,
        }
        return loss, terms

    def _head_losses(self, traj: Trajectory, batch: dict, B: int, T: int, validate: bool):
        """Reward (Gaussian NLL, unit std, constant dropped), continue (binary cross-entropy on
        ``1 - is_terminal``) and per-level window-reward losses, summed over time per sequence."""
        cfg = self.config
        total = 0.0
        terms: dict[str, torch.Tensor] = {}
        if self.vector_decoder is not None:
            target = self._vector_input({k: batch[k] for k in self.vector_keys if k in batch}, B, T)
            sq = 0.5 * (self.vector_decoder(traj.features) - target).square().sum() / B
            total = total + cfg.vector_scale * sq
            terms["vector_loss"] = sq.detach() / T
        if self.reward_head is None and self.continue_head is None and self.level_reward_heads is None:
            return total, terms
        reward = batch.get("reward")
        if (self.reward_head is not None or self.level_reward_heads is not None):
            if reward is None:
                raise ValueError("loss: the model has reward heads; the batch needs 'reward' [B, T]")
            reward = torch.as_tensor(reward, device=self.device).float()
            if validate and tuple(reward.shape) != (B, T):
                raise ValueError(f"reward: expected shape [{B}, {T}], found {tuple(reward.shape)}")
        if self.reward_head is not None:
            pred = self.reward_head(traj.features)[..., 0]
            sq = 0.5 * (pred - reward).square().sum() / B
            total = total + cfg.reward_scale * sq
            terms["reward_loss"] = sq.detach() / T
        if self.continue_head is not None:
            terminal = batch.get("is_terminal")
            target = torch.ones(B, T, device=self.device) if terminal is None else \
                1.0 - torch.as_tensor(terminal, device=self.device).float()
            logits = self.continue_head(traj.features)[..., 0]
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / B
            total = total + cfg.continue_scale * bce
            terms["continue_loss"] = bce.detach() / T
        if self.level_reward_heads is not None:
            csum = F.pad(reward.cumsum(dim=1), (1, 0))  # csum[:, t] = sum of reward[:, :t]
            for level in range(1, self.levels):
                period = self.periods[level]
                starts = torch.arange(0, T, period, device=self.device)
                ends = torch.clamp(starts + period, max=T)
                target = csum[:, ends] - csum[:, starts]  # reward summed over each window
                pred = self.level_reward_heads[level - 1](traj.posterior[level].features)[..., 0]
                sq = 0.5 * (pred - target).square().sum() / B
                total = total + cfg.reward_scale * sq
                terms[f"reward_loss/{level}"] = sq.detach() / T
        return total, terms

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
        if self.config.action_low is not None:
            low = torch.tensor(self.config.action_low, device=action.device)
            high = torch.tensor(self.config.action_high, device=action.device)
            outside = (action < low - 1e-6) | (action > high + 1e-6)
            if bool(outside.any()):
                dim = int(outside.nonzero()[0, -1])
                found = action[..., dim][outside[..., dim]][0]
                raise ValueError(f"{name}: dimension {dim} must lie in the action space's bounds "
                                 f"[{self.config.action_low[dim]:g}, {self.config.action_high[dim]:g}], found {float(found):g}")
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


def _symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def _symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def _gaussian_kl(mean_q, std_q, mean_p, std_p) -> torch.Tensor:
    """KL(N(mean_q, std_q) || N(mean_p, std_p)) per dimension, elementwise."""
    var_ratio = (std_q / std_p).square()
    return 0.5 * (var_ratio + ((mean_q - mean_p) / std_p).square() - 1.0 - var_ratio.log())
