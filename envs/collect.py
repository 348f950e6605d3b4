"""Collecting experience: run a policy in an environment and stream the steps into a replay buffer."""

from __future__ import annotations

from typing import Callable, Optional

import gymnasium as gym
import numpy as np

from .wrappers import Recorder

__all__ = ["RandomPolicy", "collect", "run_episodes"]


class RandomPolicy:
    """Uniformly random actions from ``action_space`` (seeded)."""

    def __init__(self, action_space: gym.Space, seed: Optional[int] = None):
        self.action_space = action_space
        self.action_space.seed(seed)

    def __call__(self, observation):
        return self.action_space.sample()


def collect(env: gym.Env, policy: Callable, steps: int, buffer=None, worker: int = 0, seed: Optional[int] = None,
            progress: bool = True) -> dict:
    """Run ``policy(observation) -> action`` for ``steps`` environment steps, resetting at episode
    ends (and calling ``policy.reset()`` there when the policy has one, as a
    :class:`cwworld.agents.Agent` does); with a ``buffer`` every step is recorded (see
    :class:`cwworld.envs.Recorder`).

    Returns ``{"steps", "episodes", "returns": [...], "lengths": [...]}`` for the episodes that ended.
    """
    if steps < 1:
        raise ValueError(f"collect: steps must be >= 1, found {steps}")
    if buffer is not None:
        env = Recorder(env, buffer, worker)
    stats = {"steps": 0, "episodes": 0, "returns": [], "lengths": []}
    reset_policy = getattr(policy, "reset", lambda: None)
    obs, _ = env.reset(seed=seed)
    reset_policy()
    ret, length = 0.0, 0
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task("collecting", total=steps)
        bar.start()
    try:
        for _ in range(steps):
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            ret += float(reward)
            length += 1
            stats["steps"] += 1
            if terminated or truncated:
                stats["episodes"] += 1
                stats["returns"].append(ret)
                stats["lengths"].append(length)
                ret, length = 0.0, 0
                obs, _ = env.reset()
                reset_policy()
            if bar is not None:
                bar.update(task, advance=1)
    finally:
        if bar is not None:
            bar.stop()
    stats["mean_return"] = float(np.mean(stats["returns"])) if stats["returns"] else float("nan")
    return stats


def run_episodes(env: gym.Env, policy: Callable, episodes: int, seed: Optional[int] = None,
                 max_steps: int = 100_000) -> dict:
    """Run ``episodes`` whole episodes (no recording) and summarise them: ``mean_return``,
    ``success`` (the fraction of episodes with a positive return), ``mean_length``, and the
    per-episode ``returns`` and ``lengths``. ``max_steps`` bounds the total work."""
    if episodes < 1:
        raise ValueError(f"run_episodes: episodes must be >= 1, found {episodes}")
    reset_policy = getattr(policy, "reset", lambda: None)
    returns, lengths, steps = [], [], 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=None if seed is None else seed + episode)
        reset_policy()
        ret, length, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            ret, length, steps = ret + float(reward), length + 1, steps + 1
            done = terminated or truncated
            if steps >= max_steps:
                raise RuntimeError(f"run_episodes: {steps} steps without finishing {episodes} episodes "
                                   "(an environment without a time limit?)")
        returns.append(ret)
        lengths.append(length)
    return {"mean_return": float(np.mean(returns)), "success": float(np.mean(np.array(returns) > 0)),
            "mean_length": float(np.mean(lengths)), "returns": returns, "lengths": lengths}
