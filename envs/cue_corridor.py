"""CueCorridor: a pixel environment whose reward depends on a cue seen long before.

The episode starts with a coloured cue (red or blue, chosen at random) filling the
top band of the frame for ``cue_steps`` steps; then the band turns grey. The agent
walks along a corridor (drawn as a bar that fills up) of ``length`` cells with the
``forward`` action; at its end two exits appear, red on the left and blue on the
right. Choosing the exit of the cue's colour pays +1, the other -1; either ends the
episode (terminal). Turning left or right before the end does nothing, and the
episode is truncated after ``max_steps`` steps.

With ``show_outcome=True`` (the ``...Outcome-v0`` ids) the frame the exit leads to, the episode's
last, shows the outcome: the top band turns green after the right exit and black after the
wrong one. The memory the task asks for is the same (at the junction the cue was seen
``length`` steps before), but a world model now has to predict *frames* that depend on the cue,
not only a reward: the pixel loss, much larger than the reward loss, pushes the model to carry
the cue, as video prediction does. Without it the last frame equals the one before.

So the reward at the end depends on something only visible ``length`` steps earlier:
the kind of long-range memory the slow levels of a CW-VAE are for.

Observations: ``uint8 [64, 64, 3]``; actions: ``Discrete(3)`` (0 forward, 1 left, 2 right).
``info``: ``cue`` (0 red, 1 blue) and ``position`` (cells walked; ``length`` at the junction),
for diagnosing agents (an agent acts on the frames only).
"""

from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np

RED, BLUE, GREY, GREEN, BLACK = (220, 40, 40), (40, 80, 230), (110, 110, 110), (40, 200, 60), (0, 0, 0)
FORWARD, LEFT, RIGHT = 0, 1, 2


class CueCorridor(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, length: int = 24, cue_steps: int = 3, max_steps: int = 100,
                 render_mode: Optional[str] = "rgb_array", show_outcome: bool = False):
        if length < 1 or cue_steps < 1 or max_steps < length + 1:
            raise ValueError(f"CueCorridor: need length >= 1, cue_steps >= 1, max_steps > length; "
                             f"found {length}, {cue_steps}, {max_steps}")
        self.length, self.cue_steps, self.max_steps = length, cue_steps, max_steps
        self.render_mode = render_mode
        self.show_outcome = bool(show_outcome)
        self._outcome = None  # after an exit: True (right exit) or False
        self.observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(3)
        self._cue = 0  # 0 red, 1 blue
        self._pos = 0
        self._t = 0

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(2))
        self._pos, self._t, self._outcome = 0, 0, None
        return self._frame(), self._info()

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"CueCorridor: action must be 0, 1 or 2 (forward, left, right), found {action!r}")
        self._t += 1
        reward, terminated = 0.0, False
        if action == FORWARD:
            self._pos = min(self._pos + 1, self.length)
        elif self._pos == self.length:  # at the junction: left = red exit, right = blue exit
            chosen = 0 if action == LEFT else 1
            reward, terminated = (1.0 if chosen == self._cue else -1.0), True
            self._outcome = chosen == self._cue
        truncated = not terminated and self._t >= self.max_steps
        return self._frame(), reward, terminated, truncated, self._info()

    def _info(self) -> dict:
        """``cue`` (0 red, 1 blue) and ``position`` (cells walked, ``length`` at the junction)."""
        return {"cue": self._cue, "position": self._pos}

    def render(self):
        return self._frame()

    def _frame(self) -> np.ndarray:
        frame = np.zeros((64, 64, 3), np.uint8)
        band = (RED, BLUE)[self._cue] if self._t < self.cue_steps else GREY
        if self.show_outcome and self._outcome is not None:
            band = GREEN if self._outcome else BLACK
        frame[:12] = band
        frame[30:38, 4:60] = 50  # the corridor
        filled = 4 + int(round(56 * self._pos / self.length))
        frame[30:38, 4:filled] = 200  # progress along it
        if self._pos == self.length:  # the junction: both exits visible
            frame[44:60, 4:24] = RED
            frame[44:60, 40:60] = BLUE
        return frame
