"""World-model additions to the paper's CW-VAE: prediction heads and vector observations.

None of these exist in the paper's model; each is off unless configured.

* ``reward`` (``model.reward_head``): predicts ``reward[t]`` from the bottom state at ``t``
  (Gaussian, unit std).
* ``cont`` (``model.continue_head``): predicts ``1 - is_terminal[t]`` (Bernoulli logit).
* with ``model.reward_gate``, the reward head outputs a gate logit and a value: the
  prediction is ``sigmoid(gate) * value``; the gate learns whether a reward arrives at all
  (binary cross-entropy on ``reward != 0``), the value its size (Gaussian NLL on those steps
  only). With sparse rewards a plain head's small errors on the many zero-reward steps add up
  over an imagined horizon (an actor can harvest them); the gate drives them to ~0.
* with ``model.head_action``, both also read ``action[t-1]``, the action leading into step
  ``t`` (zero at episode starts), next to the bottom state: the reward of an exit depends on
  the exit taken, which otherwise reaches them only through the GRU's update.
* ``level_rewards[l - 1]`` (``model.level_reward_heads``), levels ``l > 0``: predicts from
  level ``l``'s state at tick ``o`` the reward summed over its window
  ``reward[o-p+1] ... reward[o]`` (``p = k**l``): the same window whose actions its transition
  into ``o`` conditions on (see :mod:`cwworld.clock`), so a jumpy plan's predicted return
  depends on the plan. With ``model.level_reward_gate`` it is a gate times a value, as
  ``reward_gate``.
* ``level_conts[l - 1]`` (``model.level_continue_heads``): predicts from level ``l``'s state at
  tick ``o`` whether the episode still runs at ``o``: ``1 - `` "a terminal step in ``(o-p, o]``".
* ``model.window_ends``: an episode ending at ``t`` between two ticks of level ``l`` leaves its
  window ``(o, t]`` unclosed (the next episode restarts every level), so without it the window
  heads never see the rewards there, in CueCorridor the exits: level ``l``'s prior, one tick on
  from ``o``, closes it and the window heads learn that window too (see
  :meth:`cwworld.model.CWVAE._closing_windows`).
* :class:`VectorObservations` (``model.vectors``): named vectors next to the frame
  (MineRL's compass, inventory), symlog-encoded into the embedding and reconstructed from
  the bottom state.

Rewards at episode starts (``is_first``) are not predicted: a sequence's first reward
arrives with an action the model never saw, so it is masked out of the losses (the data
keeps it).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .clock import open_window_sums, segment_starts, tick_offsets, window_sums
from .config import ModelConfig
from .nn.conv import MLP

__all__ = ["VectorObservations", "WorldModelHeads", "symlog", "symexp"]


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


class VectorObservations(nn.Module):
    """Encodes ``{name: [B, T, size]}`` next to the frame embedding; decodes them from the bottom state.

    Values are symlog-squashed (``sign(x) log(1 + |x|)``, as DreamerV3), so raw units
    (degrees, item counts) need no hand-set scale; :meth:`decode` undoes it.
    """

    def __init__(self, sizes: dict[str, int], embed: int, feature_dim: int, hidden: int, layers: int):
        super().__init__()
        self.keys, self.dims = list(sizes), list(sizes.values())
        self.embed_dim = embed
        self.encoder = MLP(sum(self.dims), embed, embed, 2)
        self.decoder = MLP(feature_dim, hidden, sum(self.dims), layers + 1)

    def target(self, vectors, B: int, T: int, device, name: str = "vectors") -> torch.Tensor:
        """The vectors as one float tensor ``[B, T, sum of sizes]`` in symlog space, checked."""
        if not isinstance(vectors, dict):
            raise ValueError(f"{name}: this model reads vector observations {dict(zip(self.keys, self.dims))}; "
                             f"pass them as a dict {{name: [B, T, size]}} (batch fields of the same names), "
                             f"found {type(vectors).__name__}")
        parts = []
        for key, size in zip(self.keys, self.dims):
            if key not in vectors:
                raise ValueError(f"{name}: missing {key!r} (expected [{B}, {T}, {size}]; found keys {sorted(vectors)})")
            value = torch.as_tensor(vectors[key], device=device).float()
            if value.ndim == 2 and size == 1:
                value = value[..., None]
            if tuple(value.shape) != (B, T, size):
                raise ValueError(f"{name}: {key!r}: expected shape [{B}, {T}, {size}], found {tuple(value.shape)}")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name}: {key!r}: expected finite values, found NaN or inf")
            parts.append(value)
        return symlog(torch.cat(parts, dim=-1))

    def encode(self, vectors, B: int, T: int, device) -> torch.Tensor:
        return self.encoder(self.target(vectors, B, T, device))  # (B, T, embed)

    def decode(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Bottom features ``[B, T, F]`` -> ``{name: [B, T, size]}`` in the data's units."""
        out = symexp(self.decoder(features))
        return dict(zip(self.keys, out.split(self.dims, dim=-1)))

    def loss(self, features: torch.Tensor, batch: dict, B: int, T: int) -> torch.Tensor:
        """Gaussian NLL (unit std, constant dropped) in symlog space, summed over time, per sequence."""
        target = self.target({k: batch[k] for k in self.keys if k in batch}, B, T, features.device)
        return 0.5 * (self.decoder(features) - target).square().sum() / B


class RunningNorm(nn.Module):
    """Standardises each input dimension with running moments (``model.head_norm``).

    The moments are an exponential moving average (``momentum``) of the posterior features of
    the training batches, updated by :meth:`update` in the loss only (never by imagination, so
    training and acting normalise alike); the first update sets them. They are buffers: saved in
    checkpoints, so resume stays exact. No gradient flows through them.
    """

    def __init__(self, dim: int, momentum: float = 0.01, eps: float = 1e-4):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1, x.shape[-1]).float()
        mean, var = flat.mean(0), flat.var(0, unbiased=False)
        rate = 1.0 if int(self.count) == 0 else self.momentum
        self.mean.lerp_(mean, rate)
        self.var.lerp_(var, rate)
        self.count += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * torch.rsqrt(self.var + self.eps)


class WorldModelHeads(nn.Module):
    """Reward, continue and per-level window-reward heads (see the module docstring).

    Args:
        config: the model config (which heads, widths, loss scales).
        feature_dims: per level, ``stoch_l + deter_l``.
        periods: per level, ``k**l``.
    """

    def __init__(self, config: ModelConfig, feature_dims: list[int], periods: list[int]):
        super().__init__()
        self.config, self.periods = config, periods

        def head(in_dim, out_dim=1):
            mlp = MLP(in_dim, config.head_hidden, out_dim, config.head_layers + 1)
            return nn.Sequential(RunningNorm(in_dim), mlp) if config.head_norm else mlp

        bottom = feature_dims[0] + (config.action_dim if config.head_action else 0)
        self.reward = head(bottom, 2 if config.reward_gate else 1) if config.reward_head else None
        self.cont = head(bottom) if config.continue_head else None
        self.level_rewards = nn.ModuleList(head(d, 2 if config.level_reward_gate else 1) for d in feature_dims[1:]) \
            if config.level_reward_heads else None
        self.level_conts = nn.ModuleList(head(d) for d in feature_dims[1:]) if config.level_continue_heads else None

    @property
    def window_heads(self) -> list:
        """Per level ``l > 0``: ``(window-reward head or None, window-continue head or None)``."""
        n = len(self.periods) - 1
        rewards = list(self.level_rewards) if self.level_rewards is not None else [None] * n
        conts = list(self.level_conts) if self.level_conts is not None else [None] * n
        return list(zip(rewards, conts))

    @property
    def reads_reward(self) -> bool:
        return self.reward is not None or self.level_rewards is not None

    def _bottom_inputs(self, features: torch.Tensor, action_prev) -> torch.Tensor:
        """The reward and continue heads' input: bottom features ``[B, T, F]``, with
        ``model.head_action`` followed by ``action_prev [B, T, A]`` (the action leading into each step)."""
        if not self.config.head_action:
            return features
        if action_prev is None or tuple(action_prev.shape) != (*features.shape[:-1], self.config.action_dim):
            found = None if action_prev is None else tuple(action_prev.shape)
            raise ValueError(f"heads: model.head_action needs the actions leading into each step, "
                             f"[{', '.join(map(str, features.shape[:-1]))}, {self.config.action_dim}]; found {found}")
        return torch.cat([features, action_prev.to(features.dtype)], dim=-1)

    def reward_value(self, x: torch.Tensor) -> torch.Tensor:
        """The reward head's prediction on its input ``[..., D]`` -> ``[...]`` (gate times value
        with ``model.reward_gate``)."""
        return _gated(self.reward(x), self.config.reward_gate)

    def predict(self, levels: list, action_prev=None) -> dict:
        """Predictions on per-level states (:class:`~cwworld.states.LevelStates` or None):
        ``reward``, ``cont`` ``[B, n_0]`` and ``level_rewards`` (per level ``[B, n_l]``, index 0 None).
        ``action_prev [B, n_0, A]``: the action leading into each bottom step (``model.head_action``)."""
        bottom = levels[0]
        out: dict = {}
        if bottom is not None and (self.reward is not None or self.cont is not None):
            x = self._bottom_inputs(bottom.features, action_prev)
            if self.reward is not None:
                out["reward"] = self.reward_value(x)
            if self.cont is not None:
                out["cont"] = torch.sigmoid(self.cont(x)[..., 0])
        if self.level_rewards is not None:
            out["level_rewards"] = [None] + [
                None if levels[level] is None
                else _gated(self.level_rewards[level - 1](levels[level].features), self.config.level_reward_gate)
                for level in range(1, len(levels))
            ]
        if self.level_conts is not None:
            out["level_conts"] = [None] + [
                None if levels[level] is None else torch.sigmoid(self.level_conts[level - 1](levels[level].features)[..., 0])
                for level in range(1, len(levels))
            ]
        return out

    def losses(self, posterior: list, batch: dict, B: int, T: int, validate: bool = True, action_prev=None,
               closing=None):
        """Head losses on a trajectory observed from step 0: ``(sum of scaled losses, terms per frame)``.

        ``posterior``: per-level :class:`~cwworld.states.LevelStates`; ``batch``: ``reward``
        ``[B, T]``, optional ``is_terminal`` and ``is_first`` ``[B, T]``; ``action_prev``
        ``[B, T, A]``: the action leading into each step (``model.head_action``); ``closing``
        (``model.window_ends``): per level ``l > 0`` the states that close the windows episodes
        end in, ``(features [B, T, F], mask [B, T], lo [B, T])`` (see
        :meth:`CWVAE._closing_windows`): the window heads also learn ``(lo, t]`` there.
        """
        cfg, device = self.config, posterior[0].h.device
        total = 0.0
        terms: dict[str, torch.Tensor] = {}
        if not self.reads_reward and self.cont is None and self.level_conts is None:
            return total, terms
        is_first = batch.get("is_first")
        is_first = None if is_first is None else torch.as_tensor(is_first, device=device).bool()
        counted = torch.ones(B, T, device=device) if is_first is None else (~is_first).float()
        features = self._bottom_inputs(posterior[0].features, action_prev)
        if cfg.head_norm:  # the running moments follow the posterior features of training data
            for module, level_features in ([(self.reward, features), (self.cont, features)]
                                           + [(h, posterior[l + 1].features) for l, pair in enumerate(self.window_heads)
                                              for h in pair]):
                if module is not None:
                    module[0].update(level_features)
        if self.reads_reward:
            reward = batch.get("reward")
            if reward is None:
                raise ValueError("loss: the model has reward heads; the batch needs 'reward' [B, T]")
            reward = torch.as_tensor(reward, device=device).float()
            if validate and tuple(reward.shape) != (B, T):
                raise ValueError(f"reward: expected shape [{B}, {T}], found {tuple(reward.shape)}")
        if self.reward is not None:
            out = self.reward(features)
            if cfg.reward_gate:  # gate: does a reward arrive; value: its size, where one does
                arrives = (reward != 0).float()
                sq = (F.binary_cross_entropy_with_logits(out[..., 0], arrives, reduction="none") * counted).sum() / B
                sq = sq + 0.5 * ((out[..., 1] - reward).square() * counted * arrives).sum() / B
            else:
                sq = 0.5 * ((out[..., 0] - reward).square() * counted).sum() / B
            total = total + cfg.reward_scale * sq
            terms["reward_loss"] = sq.detach() / T
        if self.cont is not None:
            terminal = batch.get("is_terminal")
            target = torch.ones(B, T, device=device) if terminal is None else \
                1.0 - torch.as_tensor(terminal, device=device).float()
            bce = F.binary_cross_entropy_with_logits(self.cont(features)[..., 0], target, reduction="sum") / B
            total = total + cfg.continue_scale * bce
            terms["continue_loss"] = bce.detach() / T
        if self.level_rewards is not None or self.level_conts is not None:
            seg = segment_starts(is_first, T, B, device)
            terminal = batch.get("is_terminal")
            terminal = torch.zeros(B, T, device=device) if terminal is None else \
                torch.as_tensor(terminal, device=device).float()
            series = torch.stack([terminal, reward * counted if self.level_rewards is not None
                                  else torch.zeros_like(terminal)], -1)  # (B, T, 2)
            for level, (reward_head, cont_head) in enumerate(self.window_heads, start=1):
                period = self.periods[level]
                sums = window_sums(series, tick_offsets(0, T, period), period, seg)  # (B, n_l, 2)
                # (x, window sums, weights): the ticks' posteriors, then the windows episodes end in
                cases = [(posterior[level].features, sums, None)]
                if closing is not None and closing[level] is not None:
                    x, mask, lo = closing[level]
                    cases.append((x, open_window_sums(series, lo), mask))  # sums over (lo, t]
                if reward_head is not None:
                    sq = sum(_window_reward_loss(reward_head(x), s[..., 1], w, cfg.level_reward_gate)
                             for x, s, w in cases) / B
                    total = total + cfg.reward_scale * sq
                    terms[f"reward_loss/{level}"] = sq.detach() / T
                if cont_head is not None:
                    bce = sum(_weighted(F.binary_cross_entropy_with_logits(
                        cont_head(x)[..., 0], (s[..., 0] == 0).float(), reduction="none"), w) for x, s, w in cases) / B
                    total = total + cfg.continue_scale * bce
                    terms[f"continue_loss/{level}"] = bce.detach() / T
        return total, terms


def _gated(out: torch.Tensor, gate: bool) -> torch.Tensor:
    """A reward head's prediction from its output ``[..., 1 | 2]``: the value, or with a gate
    ``sigmoid(gate) * value``."""
    return torch.sigmoid(out[..., 0]) * out[..., 1] if gate else out[..., 0]


def _weighted(x: torch.Tensor, weight) -> torch.Tensor:
    """``x`` summed, each element times ``weight`` (None: all ones)."""
    return x.sum() if weight is None else (x * weight).sum()


def _window_reward_loss(out: torch.Tensor, target: torch.Tensor, weight, gate: bool) -> torch.Tensor:
    """A window-reward head's summed loss: Gaussian NLL (unit std) on the value, or with a gate
    binary cross-entropy on whether the window pays at all plus the NLL where it does."""
    if not gate:
        return _weighted(0.5 * (out[..., 0] - target).square(), weight)
    arrives = (target != 0).float()
    bce = F.binary_cross_entropy_with_logits(out[..., 0], arrives, reduction="none")
    return _weighted(bce + 0.5 * (out[..., 1] - target).square() * arrives, weight)
