"""Cross-entropy method (CEM) planning over the world model's imagination.

Every decision, for each environment: sample ``population`` action sequences of length
``horizon`` from a distribution, imagine them all in ONE batched :meth:`CWVAE.imagine` call
(the candidates of all environments form one batch), score each by its predicted discounted
return (rewards weighted by the predicted probability that the episode is still running,
plus an optional terminal value), refit the distribution to the ``elites`` best, repeat
``iterations`` times, and execute the first action of the final plan. The plan is kept and,
shifted by one step, starts the next decision (warm start).

Distributions: a Gaussian per step and action dimension for ``Box`` spaces (samples clipped to
the bounds; the plan is its mean); for discrete spaces a categorical per step ("categorical
CEM": candidates are one-hot samples, the refit takes the elites' action frequencies; the plan
is the most probable action). A fresh step (the first plan, the step appended at each shift)
starts uniform, or from ``initial_probs``, a prior over the actions (:meth:`CEMPlanner.set_prior`
replaces it while acting: ``agent.initial_probs: replay`` keeps it at the replay's action
frequencies as the replay grows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import gymnasium as gym
import torch

from cwworld.config import check_probabilities

from .base import Agent, discounted_return

__all__ = ["CEMConfig", "CEMPlanner"]


@dataclass
class CEMConfig:
    horizon: int = 12  # imagined steps per candidate
    population: int = 256  # candidates per environment and iteration
    elites: int = 32  # best candidates the distribution is refitted to
    iterations: int = 4  # sample-score-refit rounds per decision
    discount: float = 0.99  # per imagined step
    momentum: float = 0.1  # share of the previous distribution kept at each refit
    min_std: float = 0.05  # Box: floor of the sampling std, in action units
    min_prob: float = 0.02  # discrete: every action keeps at least this probability
    explore: float = 0.0  # Box: std of Gaussian noise on the executed action; discrete: chance of a random one
    # discrete: the sampling distribution of every fresh plan step (the first plan, and the step
    # appended when the plan shifts), one positive probability per action; None: uniform. A prior
    # over actions, like the random prefill's ``data.random_probs``.
    initial_probs: Optional[Sequence[float]] = None

    def validate(self) -> None:
        for name in ("horizon", "population", "elites", "iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be >= 1, found {getattr(self, name)}")
        if self.elites > self.population:
            raise ValueError(f"{type(self).__name__}.elites ({self.elites}) must not exceed population "
                             f"({self.population})")
        if not 0.0 < self.discount <= 1.0:
            raise ValueError(f"{type(self).__name__}.discount must lie in (0, 1], found {self.discount}")
        if self.initial_probs is not None:
            check_probabilities(f"{type(self).__name__}.initial_probs", self.initial_probs, positive=True)


class CEMPlanner(Agent):
    """Model-predictive control with CEM over :meth:`CWVAE.imagine` (see the module docstring).

    Needs a model with a reward head (``model.reward_head``); uses its continue head when
    there is one. ``terminal_value(state) -> [N]`` optionally values the state after the horizon.
    """

    config_class = CEMConfig

    def __init__(self, model, action_space: gym.Space, config: Optional[CEMConfig] = None, num_envs: int = 1,
                 observation_space: Optional[gym.Space] = None, terminal_value: Optional[Callable] = None,
                 seed: Optional[int] = None):
        if model is None or model.heads.reward is None:
            raise ValueError(f"{type(self).__name__}: needs a world model with a reward head (model.reward_head: true)")
        self.config = config or self.config_class()
        self.config.validate()
        super().__init__(model, action_space, num_envs, observation_space, seed)
        self._prior = self._step_prior(self.config.initial_probs)  # a fresh discrete step's probabilities [A]
        self.terminal_value = terminal_value
        self.imagine_calls = 0
        self.plan = self._initial_plan(num_envs, self.config.horizon)  # warm start, per environment

    # -- the distribution over action sequences ------------------------------------------

    def _step_prior(self, probs) -> Optional[torch.Tensor]:
        """``probs`` (one per discrete action) as a tensor ``[A]``, checked; None stays None (uniform)."""
        if probs is None:
            return None
        if not self.spec.discrete or len(probs) != self.spec.dim:
            raise ValueError(f"{type(self).__name__}: initial_probs {list(probs)} needs a Discrete action space of "
                             f"{len(probs)} actions, found {self.spec.space}")
        check_probabilities(f"{type(self).__name__}.initial_probs", probs, positive=True)
        return torch.tensor([float(p) for p in probs], device=self.device)

    def set_prior(self, step_probs=None, window_probs=None) -> None:
        """From now on, start fresh plan steps from ``step_probs`` (one probability per discrete
        action; None: uniform), e.g. the replay's action frequencies as it grows
        (:func:`cwworld.agents.replay_prior.replay_action_priors`); plans under way keep theirs.
        ``window_probs``: for the Clockwork planner's far windows (ignored here)."""
        self._prior = self._step_prior(step_probs)

    def _initial_plan(self, B: int, H: int) -> dict:
        spec, dev = self.spec, self.device
        if spec.discrete:
            if self._prior is None:
                return {"probs": torch.full((B, H, spec.dim), 1.0 / spec.dim, device=dev)}
            return {"probs": self._prior.expand(B, H, -1).clone()}
        low, high = spec.bounds(dev)
        return {"mean": ((low + high) / 2).expand(B, H, -1).clone(), "std": ((high - low) / 2).expand(B, H, -1).clone()}

    def _sample(self, dist: dict, N: int) -> torch.Tensor:
        """``N`` candidates per environment: ``[B, N, H, A]``."""
        g = self.generator
        if self.spec.discrete:
            probs = dist["probs"]  # (B, H, A)
            B, H, A = probs.shape
            index = torch.multinomial(probs.reshape(B * H, A), N, replacement=True, generator=g)  # (B*H, N)
            index = index.view(B, H, N).transpose(1, 2)  # (B, N, H)
            return torch.nn.functional.one_hot(index, A).float()
        mean, std = dist["mean"], dist["std"]  # (B, H, A)
        noise = torch.randn((mean.shape[0], N, *mean.shape[1:]), generator=g, device=mean.device)
        low, high = self.spec.bounds(mean.device)
        return torch.maximum(torch.minimum(mean[:, None] + std[:, None] * noise, high), low)

    def refit(self, dist: dict, candidates: torch.Tensor, scores: torch.Tensor,
              min_prob: Optional[float] = None) -> dict:
        """The distribution fitted to the ``elites`` best candidates (``[B, N, H, A]``, scores
        ``[B, N]``); discrete: every category keeps ``min_prob`` (default ``config.min_prob``)."""
        cfg = self.config
        top = scores.topk(cfg.elites, dim=1).indices  # (B, E)
        elites = candidates.gather(1, top[..., None, None].expand(-1, -1, *candidates.shape[2:]))  # (B, E, H, A)
        if self.spec.discrete:
            probs = elites.mean(1)
            probs = cfg.momentum * dist["probs"] + (1 - cfg.momentum) * probs
            return {"probs": _floor(probs, cfg.min_prob if min_prob is None else min_prob)}
        mean = cfg.momentum * dist["mean"] + (1 - cfg.momentum) * elites.mean(1)
        std = cfg.momentum * dist["std"] + (1 - cfg.momentum) * elites.std(1, unbiased=False)
        return {"mean": mean, "std": std.clamp(min=cfg.min_std)}

    # -- planning -----------------------------------------------------------------------

    def choose(self, state, is_first=None) -> torch.Tensor:
        if state.batch_size != self.plan[next(iter(self.plan))].shape[0]:  # e.g. policy() inside imagine
            dist = self._initial_plan(state.batch_size, self.config.horizon)
            return self._first_action(self.optimise(state, dist))
        self.plan = self.optimise(state, self.plan)
        action = self._first_action(self.plan)
        self.plan = self._shifted(self.plan)
        return action

    @torch.no_grad()
    def optimise(self, state, dist: dict) -> dict:
        """``iterations`` rounds of sample, imagine (one batched call), score, refit."""
        cfg, model = self.config, self.model
        B, N, H = state.batch_size, cfg.population, cfg.horizon
        start = model.settle(state)[torch.arange(B, device=self.device).repeat_interleave(N)]  # (B*N) states
        for _ in range(cfg.iterations):
            candidates = self._sample(dist, N)  # (B, N, H, A)
            rollout = model.imagine(start, H, actions=candidates.reshape(B * N, H, -1), sample=False,
                                    validate=False)
            self.imagine_calls += 1
            value = None if self.terminal_value is None else self.terminal_value(rollout.last)
            scores = discounted_return(rollout.reward, rollout.cont, cfg.discount, value).view(B, N)
            dist = self.refit(dist, candidates, scores)
        return dist

    def _first_action(self, dist: dict) -> torch.Tensor:
        cfg, spec = self.config, self.spec
        if spec.discrete:
            action = torch.nn.functional.one_hot(dist["probs"][:, 0].argmax(-1), spec.dim).float()
            if cfg.explore > 0:
                B = action.shape[0]
                swap = torch.rand(B, generator=self.generator, device=self.device) < cfg.explore
                action = torch.where(swap[:, None], self.random_actions(B), action)
            return action
        action = dist["mean"][:, 0]
        if cfg.explore > 0:
            action = action + cfg.explore * torch.randn(action.shape, generator=self.generator, device=self.device)
        low, high = spec.bounds(self.device)
        return torch.maximum(torch.minimum(action, high), low)

    def _shifted(self, dist: dict) -> dict:
        """The plan one step on: drop the executed step, append a fresh one."""
        fresh = self._initial_plan(self.num_envs, 1)
        return {k: torch.cat([v[:, 1:], fresh[k]], 1) for k, v in dist.items()}

    def reset_plans(self, mask: torch.Tensor) -> None:
        fresh = self._initial_plan(self.num_envs, self.config.horizon)
        self.plan = {k: torch.where(mask[:, None, None], fresh[k], v) for k, v in self.plan.items()}


def _floor(probs: torch.Tensor, min_prob: float) -> torch.Tensor:
    """Mix with the uniform distribution so that every action keeps at least ``min_prob``."""
    A = probs.shape[-1]
    mix = min(max(min_prob * A, 0.0), 1.0)
    return (1 - mix) * probs + mix / A
