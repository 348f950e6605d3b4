"""PointReach: a continuous-action pixel task; steer a dot to a target.

A white 6-px dot and a grey 10-px target square lie at random places in a 64x64 frame. The
action ``[dy, dx]`` in ``[-1, 1]^2`` moves the dot by up to ``speed`` pixels per step along each
axis (clipped at the border). The reward on arriving at a frame is ``1 - distance / 64``
(``distance``: between the dot's and the target's centres, in pixels) minus ``0.01 * |a|^2``,
so the best policy heads straight for the target and stays there. Episodes last
``max_steps`` steps (no termination).

Observations: ``uint8 [64, 64, 3]``; actions: ``Box(-1, 1, (2,))``.
"""

from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np

DOT, TARGET = 6, 10


class PointReach(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, speed: float = 4.0, max_steps: int = 50, render_mode: Optional[str] = "rgb_array"):
        if speed <= 0 or max_steps < 1:
            raise ValueError(f"PointReach: need speed > 0 and max_steps >= 1, found {speed}, {max_steps}")
        self.speed, self.max_steps, self.render_mode = speed, max_steps, render_mode
        self.observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._dot = np.zeros(2)
        self._target = np.zeros(2)
        self._t = 0

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        self._dot = self.np_random.uniform(0, 64 - DOT, 2)
        self._target = self.np_random.uniform(0, 64 - TARGET, 2)
        self._t = 0
        return self._frame(), {}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (2,) or not np.all(np.isfinite(action)):
            raise ValueError(f"PointReach: action must be 2 finite numbers in [-1, 1], found {action!r}")
        action = np.clip(action, -1.0, 1.0)
        self._dot = np.clip(self._dot + self.speed * action, 0, 64 - DOT)
        self._t += 1
        distance = float(np.linalg.norm((self._dot + DOT / 2) - (self._target + TARGET / 2)))
        reward = 1.0 - distance / 64.0 - 0.01 * float(action @ action)
        return self._frame(), reward, False, self._t >= self.max_steps, {"distance": distance}

    def render(self):
        return self._frame()

    def _frame(self) -> np.ndarray:
        frame = np.zeros((64, 64, 3), np.uint8)
        y, x = np.rint(self._target).astype(int)
        frame[y:y + TARGET, x:x + TARGET] = (120, 120, 120)
        y, x = np.rint(self._dot).astype(int)
        frame[y:y + DOT, x:x + DOT] = 255
        return frame
