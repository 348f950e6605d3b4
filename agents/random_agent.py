"""Uniformly random actions, behind the same :class:`~cwworld.agents.base.Agent` interface."""

from __future__ import annotations

from typing import Optional

import gymnasium as gym
import torch

from .base import Agent

__all__ = ["RandomAgent"]


class RandomAgent(Agent):
    """Uniform actions (one-hot for discrete spaces, uniform within a Box's bounds).

    With a ``model`` it also keeps the filter state (``self.state``), e.g. to watch what the
    model makes of the episodes it collects; without one it needs no model at all.
    """

    def __init__(self, action_space: gym.Space, num_envs: int = 1, model=None,
                 observation_space: Optional[gym.Space] = None, seed: Optional[int] = None):
        super().__init__(model, action_space, num_envs, observation_space, seed)

    def choose(self, state, is_first=None) -> torch.Tensor:
        batch = self.num_envs if state is None else state.batch_size
        return self.random_actions(batch)
