"""The data the model passes in and out: the recurrent carry and per-level trajectories."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Optional, Sequence, Union

import torch

__all__ = ["CWState", "FilterMemory", "LevelStates", "PendingFrames", "Rollout", "Trajectory"]


def _map_tensors(obj, fn):
    """Apply ``fn`` to every tensor in nested lists/tuples (None and ints pass through)."""
    if torch.is_tensor(obj):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(x, fn) for x in obj)
    return obj


def _cat_nested(items: list):
    """Concatenate matching tensors of equally shaped nested lists along the batch."""
    first = items[0]
    if any(x is None for x in items):
        if all(x is None for x in items):
            return None
        raise ValueError("CWState.cat: states disagree on which carried windows they hold")
    if torch.is_tensor(first):
        return torch.cat(items)
    if isinstance(first, (list, tuple)):
        if len({len(x) for x in items}) != 1:
            raise ValueError("CWState.cat: observe_step memories of different lengths")
        return type(first)(_cat_nested(list(group)) for group in zip(*items))
    return first


@dataclass
class FilterMemory:
    """What :meth:`CWVAE.observe_step` keeps with ``paper`` windows since the top level's latest
    tick, so that it can recompute the windows still open (their posteriors change as frames
    arrive) exactly as :meth:`CWVAE.observe` on the whole prefix would. Batch first."""

    start: "CWState"  # the carry at the top level's latest tick (before that step)
    embeds: list  # per level, per step since start: [B, 1, E]
    action_prev: list  # per step: [B, A] (empty without actions)
    is_first: list  # per step: [B] bool
    noise: list  # per level, per tick since start: [B, stoch]

    def map(self, fn) -> "FilterMemory":
        return FilterMemory(self.start.map(fn), *(_map_tensors(getattr(self, f.name), fn) for f in fields(self)[1:]))


@dataclass
class PendingFrames:
    """What :meth:`CWVAE.observe_step` keeps with ``causal`` windows: per level ``l > 0`` the
    frame embeddings (before that level's MLP) added to its open window since its last tick,
    ``[B, n_l, E]``, and their weights ``[B, n_l]`` (0 for frames before a later episode start),
    or None. The level MLP runs once per tick on the whole window (one matrix product instead of
    one per frame); :meth:`CWVAE.settle` folds them into ``CWState.embed_sum``."""

    frames: list
    weights: list

    def map(self, fn) -> "PendingFrames":
        return PendingFrames(_map_tensors(self.frames, fn), _map_tensors(self.weights, fn))


@dataclass
class CWState:
    """The recurrent carry of all levels after ``step`` steps.

    Attributes:
        h: per level, the GRU state ``[B, deter_l]`` held since that level's last tick
            (zero when an episode started after that tick).
        z: per level, the stochastic state ``[B, stoch_l]``, held likewise.
        step: global clock, the number of steps seen since the start of the sequence;
            level ``l`` next ticks at the first multiple of ``k**l`` >= step.
        action_sum: per level, the sum of the actions leading into the steps since its last
            tick, ``[B, A]`` (None for levels that read no action summary): the part of its
            next tick's window ``(o - k**l, o]`` already seen.
        embed_sum: per level (``causal`` windows), the sum of the level's frame embeddings
            since its last tick, ``[B, E]`` (None where unused).
        action: the action taken after the last observed frame, ``[B, A]``, which leads into
            the next step when :meth:`CWVAE.observe` continues from this state (None: zeros).
        memory: what :meth:`CWVAE.observe_step` keeps to continue exactly: a
            :class:`FilterMemory` (``paper`` windows) or :class:`PendingFrames` (``causal``
            windows; their embeddings are part of the open windows too), or None.
    """

    h: list[torch.Tensor]
    z: list[torch.Tensor]
    step: int = 0
    action_sum: list = field(default_factory=list)
    embed_sum: list = field(default_factory=list)
    action: Optional[torch.Tensor] = None
    memory: Union[FilterMemory, PendingFrames, None] = None

    def __post_init__(self):
        # a state built by hand (CWState(h, z, step)) carries empty windows: one None per level
        levels = len(self.h)
        self.action_sum = list(self.action_sum) + [None] * (levels - len(self.action_sum))
        self.embed_sum = list(self.embed_sum) + [None] * (levels - len(self.embed_sum))

    @property
    def batch_size(self) -> int:
        return self.h[0].shape[0]

    def features(self, level: int = 0) -> torch.Tensor:
        """``[z, h]`` of a level, ``[B, stoch_l + deter_l]``."""
        return torch.cat([self.z[level], self.h[level]], dim=-1)

    def map(self, fn) -> "CWState":
        """The state with ``fn`` applied to every tensor (carried windows and memory too)."""
        return CWState([fn(h) for h in self.h], [fn(z) for z in self.z], self.step,
                       _map_tensors(self.action_sum, fn), _map_tensors(self.embed_sum, fn),
                       None if self.action is None else fn(self.action),
                       None if self.memory is None else self.memory.map(fn))

    def detach(self) -> "CWState":
        return self.map(lambda t: t.detach())

    def to(self, *args, **kwargs) -> "CWState":
        return self.map(lambda t: t.to(*args, **kwargs))

    def without_memory(self) -> "CWState":
        return replace(self, memory=None)

    def __getitem__(self, index) -> "CWState":
        """Batch indexing: ``state[2:5]``, ``state[mask]``."""
        return self.map(lambda t: t[index])

    @staticmethod
    def cat(states: Sequence["CWState"]) -> "CWState":
        """Concatenate states along the batch; all must be at the same clock step.
        Their ``observe_step`` memories are concatenated when all have one, else dropped
        (``paper`` windows; pending ``causal`` frames are never dropped)."""
        steps = {s.step for s in states}
        if len(steps) != 1:
            raise ValueError(f"CWState.cat: states must share the clock step, found steps {sorted(steps)}")
        memory = None
        kinds = {type(s.memory) for s in states}
        if kinds == {FilterMemory}:
            memory = FilterMemory(CWState.cat([s.memory.start for s in states]),
                                  *(_cat_nested([getattr(s.memory, f.name) for s in states])
                                    for f in fields(FilterMemory)[1:]))
        elif kinds == {PendingFrames}:
            memory = PendingFrames(_cat_nested([s.memory.frames for s in states]),
                                   _cat_nested([s.memory.weights for s in states]))
        elif PendingFrames in kinds:
            raise ValueError("CWState.cat: some states hold frames pending in their causal windows and some not; "
                             "settle them first (CWVAE.settle)")
        return CWState(
            _cat_nested([s.h for s in states]),
            _cat_nested([s.z for s in states]),
            steps.pop(),
            _cat_nested([s.action_sum for s in states]),
            _cat_nested([s.embed_sum for s in states]),
            _cat_nested([s.action for s in states]),
            memory,
        )


@dataclass
class LevelStates:
    """One level's states at its own active steps: every field is ``[B, n_l, dim]``."""

    mean: torch.Tensor
    std: torch.Tensor
    z: torch.Tensor  # a sample of N(mean, std) (the mean itself where not sampled)
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
    ``prior[l].z`` is the prior mean (priors are not sampled while observing).
    ``features`` is the bottom posterior ``[z, h]``, ``[B, T, F]``. ``action_prev`` is the
    action leading into each step, ``[B, T, A]`` (None for a video-only model).
    """

    posterior: list[LevelStates]
    prior: list[LevelStates]
    last: CWState
    action_prev: Optional[torch.Tensor] = None

    @property
    def features(self) -> torch.Tensor:
        return self.posterior[0].features


@dataclass
class Rollout:
    """Result of :meth:`CWVAE.imagine`: prior states rolled forward ``horizon`` steps.

    ``levels[l]`` holds level ``l``'s states at its own ticks within the horizon
    (None for levels not rolled in a jumpy rollout). ``features`` is the bottom
    level's ``[z, h]``, ``[B, horizon, F]``, when the bottom level was rolled.
    ``actions`` holds the actions used: ``[B, horizon, A]`` where ``actions[:, i]`` leads
    into imagined step ``i``, or for a jumpy rollout one summary per tick of its lowest
    level. ``frames`` is filled when decoding was asked for. With heads configured,
    ``reward`` and ``cont`` hold the bottom level's predictions ``[B, horizon]`` and
    ``level_rewards[l]`` level ``l``'s predicted reward sums over its windows
    ``(o - k**l, o]``, ``[B, n_l]`` (index 0 is None), so a jumpy rollout can score a plan;
    ``level_conts[l]`` (``model.level_continue_heads``) the probability that the episode still
    runs at each window's end.
    """

    levels: list[Optional[LevelStates]]
    last: CWState
    actions: Optional[torch.Tensor] = None
    frames: Optional[torch.Tensor] = None
    reward: Optional[torch.Tensor] = None  # [B, horizon], the reward head's mean
    cont: Optional[torch.Tensor] = None  # [B, horizon], probability of continuing
    level_rewards: Optional[list] = None  # per level l > 0: [B, n_l] predicted window reward sums
    level_conts: Optional[list] = None  # per level l > 0: [B, n_l] probability the episode runs at the window's end
    vectors: Optional[dict] = None  # decoded vector observations {name: [B, horizon, size]} (decode=True)

    @property
    def features(self) -> Optional[torch.Tensor]:
        return None if self.levels[0] is None else self.levels[0].features
