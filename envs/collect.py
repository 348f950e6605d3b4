"""Collecting experience: run a policy in an environment and stream the steps into a replay buffer."""

from __future__ import annotations

from typing import Callable, Optional

import gymnasium as gym
import numpy as np

from .wrappers import OneHot, Recorder

__all__ = ["RandomPolicy", "collect", "run_episodes"]


class RandomPolicy:
    """Random actions from ``action_space`` (seeded): uniform, or for discrete actions
    (``Discrete``, or one-hot as :class:`~cwworld.envs.OneHotActions` gives them) drawn with
    ``probs``, one probability per action.

    For a vector env pass its batched ``action_space`` and, with ``probs``, its
    ``single_space`` too: a batch of one draw per environment comes back. ``probs`` is a prior a
    user brings to random exploration, e.g. ``[0.6, 0.2, 0.2]`` for a corridor that must be
    walked (action 0) before anything happens; without it the draws are exactly
    ``action_space.sample()``'s.
    """

    def __init__(self, action_space: gym.Space, seed: Optional[int] = None, probs: Optional[list] = None,
                 single_space: Optional[gym.Space] = None):
        self.action_space = action_space
        self.action_space.seed(seed)
        self.probs = None
        if probs is None:
            return
        single = single_space if single_space is not None else action_space
        if isinstance(single, gym.spaces.Discrete):
            n, self.one_hot = int(single.n), False
        elif isinstance(single, OneHot):
            n, self.one_hot = int(single.shape[0]), True
        else:
            raise ValueError(f"RandomPolicy: action probabilities need Discrete (or one-hot) actions, found {single}")
        p = np.asarray(probs, np.float64)
        if p.shape != (n,) or not np.all(np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1) > 1e-6:
            raise ValueError(f"RandomPolicy: action probabilities must be {n} non-negative numbers summing to 1 "
                             f"(one per action of {single}), found {list(probs)}")
        self.probs = p / p.sum()
        self.start = int(getattr(single, "start", 0))
        self.batch = None if single_space is None else int(action_space.shape[0])
        self.rng = np.random.default_rng(seed)

    def __call__(self, observation):
        if self.probs is None:
            return self.action_space.sample()
        n = len(self.probs)
        index = self.rng.choice(n, size=self.batch or 1, p=self.probs)
        if self.one_hot:
            out = np.eye(n, dtype=np.float32)[index]
        else:
            out = (self.start + index).astype(np.int64)
        return out if self.batch is not None else out[0]


def collect(env: gym.Env, policy: Callable, steps: int, buffer=None, worker: int = 0, seed: Optional[int] = None,
            progress: bool = True) -> dict:
    """Run ``policy(observation) -> action`` for ``steps`` environment steps, resetting at episode
    ends (and calling ``policy.reset()`` there when the policy has one, as a
    :class:`cwworld.agents.Agent` does); with a ``buffer`` every step is recorded (see
    :class:`cwworld.envs.Recorder`). ``env`` may be a vector env of ``num_envs`` environments
    (:func:`cwworld.envs.make_vector_env`, which records each into its own replay stream): the
    policy then gets their observations stacked, and an agent's ``act`` gets ``is_first`` for the
    environments that just started an episode.

    Returns ``{"steps", "episodes", "returns": [...], "lengths": [...]}`` for the episodes that ended.
    """
    if steps < 1:
        raise ValueError(f"collect: steps must be >= 1, found {steps}")
    if isinstance(env, gym.vector.VectorEnv):
        if buffer is not None:
            raise ValueError("collect: a vector env records in its sub-environments; build it with "
                             "make_vector_env(env_id, num_envs, buffer=...) and pass buffer=None here")
        return _collect_vector(env, policy, steps, seed, progress)
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


def _act(policy: Callable, obs, is_first: np.ndarray):
    """A batch of actions: an :class:`cwworld.agents.Agent` is told which environments just reset."""
    act = getattr(policy, "act", None)
    return act(obs, is_first=is_first) if act is not None else policy(obs)


def _collect_vector(env: gym.vector.VectorEnv, policy: Callable, steps: int, seed: Optional[int],
                    progress: bool) -> dict:
    """:func:`collect` in a vector env (same-step autoreset, see :func:`cwworld.envs.make_vector_env`):
    ``ceil(steps / num_envs)`` batched steps; ``steps`` in the result counts every environment's."""
    _check_same_step(env, "collect")
    n = env.num_envs
    stats = {"steps": 0, "episodes": 0, "returns": [], "lengths": []}
    getattr(policy, "reset", lambda: None)()
    obs, _ = env.reset(seed=seed)
    first = np.ones(n, bool)
    ret, length = np.zeros(n), np.zeros(n, int)
    for _ in range(-(-steps // n)):
        obs, reward, terminated, truncated, _ = env.step(_act(policy, obs, first))
        ret += reward
        length += 1
        stats["steps"] += n
        first = np.logical_or(terminated, truncated)  # those environments already show their next episode
        for i in np.nonzero(first)[0]:
            stats["episodes"] += 1
            stats["returns"].append(float(ret[i]))
            stats["lengths"].append(int(length[i]))
        ret[first], length[first] = 0.0, 0
    stats["mean_return"] = float(np.mean(stats["returns"])) if stats["returns"] else float("nan")
    return stats


def _check_same_step(env: gym.vector.VectorEnv, what: str) -> None:
    mode = env.metadata.get("autoreset_mode")
    if mode is not None and mode != gym.vector.AutoresetMode.SAME_STEP:
        raise ValueError(f"{what}: the vector env resets finished environments in mode {mode}; cwworld records "
                         "and filters episodes with AutoresetMode.SAME_STEP (make_vector_env builds one)")


def _run_episodes_vector(env: gym.vector.VectorEnv, policy: Callable, episodes: int, seed: Optional[int],
                         max_steps: int) -> dict:
    """:func:`run_episodes` in a vector env: environment ``i`` runs its share of the episodes
    (``episodes // n``, one more for the first ``episodes % n``) and the rest of what it plays is
    dropped, so short episodes are not over-counted by finishing first."""
    _check_same_step(env, "run_episodes")
    n = env.num_envs
    quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    getattr(policy, "reset", lambda: None)()
    obs, _ = env.reset(seed=seed)
    first = np.ones(n, bool)
    ret, length = np.zeros(n), np.zeros(n, int)
    returns, lengths, steps = [], [], 0
    while (quota > 0).any():
        obs, reward, terminated, truncated, _ = env.step(_act(policy, obs, first))
        ret += reward
        length += 1
        steps += int((quota > 0).sum())
        first = np.logical_or(terminated, truncated)
        for i in np.nonzero(first & (quota > 0))[0]:
            returns.append(float(ret[i]))
            lengths.append(int(length[i]))
            quota[i] -= 1
        ret[first], length[first] = 0.0, 0
        if steps >= max_steps:
            raise RuntimeError(f"run_episodes: {steps} steps without finishing {episodes} episodes "
                               "(an environment without a time limit?)")
    return _episode_summary(returns, lengths)


def _episode_summary(returns: list, lengths: list) -> dict:
    return {"mean_return": float(np.mean(returns)), "success": float(np.mean(np.array(returns) > 0)),
            "mean_length": float(np.mean(lengths)), "returns": returns, "lengths": lengths}


def run_episodes(env: gym.Env, policy: Callable, episodes: int, seed: Optional[int] = None,
                 max_steps: int = 100_000, on_step: Optional[Callable[[dict], None]] = None) -> dict:
    """Run ``episodes`` whole episodes (no recording) and summarise them: ``mean_return``,
    ``success`` (the fraction of episodes with a positive return), ``mean_length``, and the
    per-episode ``returns`` and ``lengths``. ``max_steps`` bounds the total work. ``env`` may be
    a vector env (:func:`cwworld.envs.make_vector_env`): its environments share the episodes.
    ``on_step(info)`` (one environment only): called after each action is chosen, with the
    ``info`` of the observation it was chosen on (e.g. to inspect the agent where it acted)."""
    if episodes < 1:
        raise ValueError(f"run_episodes: episodes must be >= 1, found {episodes}")
    if isinstance(env, gym.vector.VectorEnv):
        if on_step is not None:
            raise ValueError("run_episodes: on_step needs a single environment, not a vector env")
        return _run_episodes_vector(env, policy, episodes, seed, max_steps)
    reset_policy = getattr(policy, "reset", lambda: None)
    returns, lengths, steps = [], [], 0
    for episode in range(episodes):
        obs, info = env.reset(seed=None if seed is None else seed + episode)
        reset_policy()
        ret, length, done = 0.0, 0, False
        while not done:
            action = policy(obs)
            if on_step is not None:
                on_step(info)
            obs, reward, terminated, truncated, info = env.step(action)
            ret, length, steps = ret + float(reward), length + 1, steps + 1
            done = terminated or truncated
            if steps >= max_steps:
                raise RuntimeError(f"run_episodes: {steps} steps without finishing {episodes} episodes "
                                   "(an environment without a time limit?)")
        returns.append(ret)
        lengths.append(length)
    return _episode_summary(returns, lengths)
