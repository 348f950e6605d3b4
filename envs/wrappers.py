"""Gymnasium wrappers that turn an environment into cwworld's step records.

* :class:`ImageObservation`: observations become ``{"image": uint8 [S, S, 3], **vectors}``,
  the image taken from an image observation (or a dict entry ``image``/``pov``) or from
  ``render()``, resized to ``S x S``; other Box entries of a dict observation become
  float32 vectors.
* :class:`ActionRepeat`: repeats each action ``repeat`` times, summing rewards.
* :class:`NormalizeActions`: a bounded Box action space seen as ``[-1, 1]``.
* :class:`OneHotActions`: a Discrete space seen as one-hot float vectors.
* ``TimeLimit``: gymnasium's own (re-exported).
* :class:`Recorder`: streams every step into a :class:`cwworld.data.ReplayBuffer` in the
  step layout: ``action[t]`` is the action taken after ``image[t]``, ``reward[t]`` was
  received on arriving at ``image[t]``; the final observation gets a zero action.
"""

from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TimeLimit

__all__ = ["ActionRepeat", "ImageObservation", "NormalizeActions", "OneHot", "OneHotActions", "Recorder", "TimeLimit",
           "action_vector"]


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if image.shape[:2] == (size, size):
        return np.ascontiguousarray(image, dtype=np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(image.astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR))


class ImageObservation(gym.ObservationWrapper):
    """Observations as ``{"image": uint8 [size, size, 3], <vector name>: float32 [d]}``."""

    IMAGE_KEYS = ("image", "pov", "pixels", "rgb")

    def __init__(self, env: gym.Env, size: int = 64, from_render: Optional[bool] = None):
        super().__init__(env)
        self.size = size
        space = env.observation_space
        self._key = None
        self._vectors: dict[str, gym.spaces.Box] = {}
        if from_render is None:
            from_render = not (_is_image_space(space) or (isinstance(space, gym.spaces.Dict)
                                                          and any(k in space.spaces for k in self.IMAGE_KEYS)))
        if from_render and getattr(env, "render_mode", None) != "rgb_array":
            raise ValueError(f"ImageObservation: {env} has no image observation and render_mode "
                             f"{getattr(env, 'render_mode', None)!r}; create it with render_mode='rgb_array'")
        self.from_render = from_render
        if isinstance(space, gym.spaces.Dict):
            self._key = None if from_render else next(k for k in self.IMAGE_KEYS if k in space.spaces)
            for name, sub in space.spaces.items():
                if name != self._key and isinstance(sub, gym.spaces.Box):
                    self._vectors[name] = sub
        spaces = {"image": gym.spaces.Box(0, 255, (size, size, 3), np.uint8)}
        for name, sub in self._vectors.items():
            spaces[name] = gym.spaces.Box(-np.inf, np.inf, (int(np.prod(sub.shape)) or 1,), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)

    def observation(self, observation):
        if self.from_render:
            image = self.env.render()
        elif self._key is not None:
            image = observation[self._key]
        else:
            image = observation
        out = {"image": _resize(np.asarray(image), self.size)}
        for name in self._vectors:
            out[name] = np.asarray(observation[name], np.float32).reshape(-1)
        return out


def _is_image_space(space) -> bool:
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) in (2, 3)


class ActionRepeat(gym.Wrapper):
    """Repeat each action ``repeat`` times (stopping at the episode's end); rewards are summed."""

    def __init__(self, env: gym.Env, repeat: int):
        if repeat < 1:
            raise ValueError(f"ActionRepeat: repeat must be >= 1, found {repeat}")
        super().__init__(env)
        self.repeat = repeat

    def step(self, action):
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class NormalizeActions(gym.ActionWrapper):
    """A Box action space with finite bounds seen as ``[-1, 1]`` per dimension."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.Box) or not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
            raise ValueError(f"NormalizeActions: needs a Box action space with finite bounds, found {space}")
        self._low, self._high = space.low.astype(np.float32), space.high.astype(np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, space.shape, np.float32)

    def action(self, action):
        action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        return self._low + (action + 1.0) / 2.0 * (self._high - self._low)


class OneHot(gym.spaces.Box):
    """Box(0, 1, (n,)) whose samples are one-hot vectors (the action space of :class:`OneHotActions`)."""

    def __init__(self, n: int, seed=None):
        super().__init__(0.0, 1.0, (n,), np.float32, seed=seed)

    def __repr__(self) -> str:
        return f"OneHot({self.shape[0]})"

    def sample(self, mask=None, probability=None):
        out = np.zeros(self.shape, np.float32)
        out[self.np_random.integers(self.shape[0])] = 1.0
        return out


class OneHotActions(gym.ActionWrapper):
    """A Discrete action space seen as one-hot float32 vectors (any vector: its argmax is taken)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ValueError(f"OneHotActions: needs a Discrete action space, found {env.action_space}")
        self.n = int(env.action_space.n)
        self.start = int(env.action_space.start)
        self.action_space = OneHot(self.n)

    def action(self, action):
        action = np.asarray(action)
        if action.shape != (self.n,):
            raise ValueError(f"OneHotActions: expected a vector of {self.n}, found shape {list(action.shape)}")
        return self.start + int(np.argmax(action))


def action_vector(action, space: gym.Space) -> np.ndarray:
    """An action as the float32 vector stored in step records."""
    if isinstance(space, gym.spaces.Discrete):
        out = np.zeros(int(space.n), np.float32)
        out[int(action) - int(space.start)] = 1.0
        return out
    if isinstance(space, OneHot):  # what the environment executes: the argmax
        out = np.zeros(space.shape, np.float32)
        out[int(np.argmax(action))] = 1.0
        return out
    return np.asarray(action, np.float32).reshape(-1)


class Recorder(gym.Wrapper):
    """Streams steps into ``buffer`` (a :class:`cwworld.data.ReplayBuffer`) as ``worker``'s stream.

    Expects dict observations with ``image`` (wrap with :class:`ImageObservation` first).
    Step ``t`` is written once its action is known (at the next ``step``); the last
    observation of an episode is written with a zero action and ``is_last`` (and
    ``is_terminal`` when the episode terminated rather than being truncated).
    """

    def __init__(self, env: gym.Env, buffer, worker: int = 0):
        super().__init__(env)
        self.buffer, self.worker = buffer, worker
        self._pending: Optional[dict] = None
        self.episodes = 0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._pending = {**obs, "reward": np.float32(0.0), "is_first": True}
        return obs, info

    def step(self, action):
        if self._pending is None:
            raise RuntimeError("Recorder: step() before reset()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._write(self._pending, action_vector(action, self.env.action_space), False, False)
        self._pending = {**obs, "reward": np.float32(reward), "is_first": False}
        if terminated or truncated:
            zero = np.zeros_like(action_vector(action, self.env.action_space))
            self._write(self._pending, zero, True, bool(terminated))
            self._pending = None
            self.episodes += 1
        return obs, reward, terminated, truncated, info

    def _write(self, pending: dict, action: np.ndarray, is_last: bool, is_terminal: bool) -> None:
        self.buffer.add_step({**pending, "action": action, "is_last": is_last, "is_terminal": is_terminal},
                             worker=self.worker)
