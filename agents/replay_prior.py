"""Priors over discrete actions taken from a replay buffer: what the data the model learnt from did.

A planner's fresh plan steps and far windows start from a distribution over actions (uniform by
default). ``agent.initial_probs: replay`` starts them from the replay's own action frequencies
instead, so that candidates look like the behaviour the world model was trained on (its heads
are most trustworthy there) without a hand-given prior:

* per step: the frequency of each action over the replay's steps (a categorical ``[A]``);
* per window of a level of period ``p`` (the Clockwork planner with ``far_search:
  compositions``): the frequency of each action-count vector over the replay's windows of that
  level, in the order of :func:`window_compositions` (``[C]``).

Windows follow the clock: within an episode, the window that closes at the tick ``o`` (episode
steps ``o = p, 2p, ...``) holds ``action[o - p] ... action[o - 1]``, the actions leading into
frames ``(o - p, o]``; steps of a stream before its first episode start (a stream cut by the
replay's capacity) are left out, and so is an episode's last unfinished window. Both priors are
floored like a CEM refit (every category keeps a share of ``min_prob`` per action), so an action
or composition that the replay never holds can still be drawn.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .cem import _floor
from .clockwork import window_compositions

__all__ = ["replay_action_priors", "window_action_counts"]


def window_action_counts(action: np.ndarray, is_first: np.ndarray, period: int) -> np.ndarray:
    """The action counts of every complete window of ``period`` steps in one stream of step
    records (``action [T, A]`` one-hot, ``is_first [T]``): ``[n, A]`` (see the module docstring)."""
    starts = np.flatnonzero(is_first)
    ends = np.append(starts[1:], len(is_first))
    ticks = [np.arange(s + period, e, period) for s, e in zip(starts, ends)]  # frame index o of each closing tick
    ticks = np.concatenate(ticks) if ticks else np.zeros(0, np.int64)
    cum = np.concatenate([np.zeros((1, action.shape[1])), np.cumsum(action, 0, dtype=np.float64)])  # cum[j] = sum < j
    return np.rint(cum[ticks] - cum[ticks - period]).astype(np.int64)


def replay_action_priors(replay, actions: int, period: Optional[int] = None,
                         min_prob: float = 0.02) -> tuple[Optional[list[float]], Optional[list[float]]]:
    """``(step_probs [A], window_probs [C])`` from a :class:`cwworld.data.replay.ReplayBuffer`
    holding one-hot actions of ``actions`` discrete actions; ``window_probs`` only with
    ``period`` (over :func:`window_compositions`\\ ``(period, actions)``). ``None`` for a prior
    that the replay has no step or window for yet (the planner then starts uniform)."""
    if replay.keys:
        found = replay.shapes.get("action", "no action field")
        if found != (actions,):
            raise ValueError(f"agent.initial_probs: replay: the replay's actions have shape {found}, "
                             f"expected ({actions},): one-hot actions of a discrete space")
    step = np.zeros(actions)
    windows = {} if period else None
    for stream in replay.streams.values():
        if not len(stream):
            continue
        action, is_first = stream.field("action"), stream.field("is_first")
        step += window_action_counts(action, is_first, 1).sum(0)
        if period:
            rows, counts = np.unique(window_action_counts(action, is_first, period), axis=0, return_counts=True)
            for row, count in zip(map(tuple, rows.tolist()), counts.tolist()):
                windows[row] = windows.get(row, 0) + count
    step_probs = _floored(step, min_prob) if step.sum() > 0 else None
    window_probs = None
    if windows:
        table = window_compositions(period, actions).long().tolist()
        freq = np.array([windows.get(tuple(row), 0) for row in table], dtype=np.float64)
        window_probs = _floored(freq, min_prob * actions / len(table))
    return step_probs, window_probs


def _floored(counts: np.ndarray, min_prob: float) -> list[float]:
    """Frequencies floored like a CEM refit (:func:`cwworld.agents.cem._floor`), as a list."""
    probs = _floor(torch.as_tensor(counts / counts.sum(), dtype=torch.float64), min_prob)
    return (probs / probs.sum()).tolist()
