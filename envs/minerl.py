"""MineRL environments as gymnasium environments, with cwworld's MineRL action codec.

Needs the optional ``minerl`` package (MineRL 0.4.4 builds Minecraft with Java 8 and
Gradle on install): ``pip install "cwworld[minerl]"``. The core never imports this module.

    from cwworld.envs.minerl import MineRLEnv
    env = MineRLEnv("MineRLNavigate-v0")      # or MineRLEnv(env=an_old_gym_minerl_env)
    obs, info = env.reset(seed=0)             # {"image": uint8 [64, 64, 3], "compass": [1], "inventory_dirt": [1]}
    obs, reward, terminated, truncated, info = env.step(action)   # action: float32 [11], the codec's order

Observations and actions match :mod:`cwworld.data.minerl`'s demonstrations, so a model
trained offline on converted demonstrations acts in the environment unchanged.
"""

from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np

try:
    import minerl  # noqa: F401  (registers the MineRL environments with old gym)
except ImportError as err:  # pragma: no cover - exercised without minerl
    raise ImportError(
        "cwworld.envs.minerl needs the optional 'minerl' package: pip install \"cwworld[minerl]\" "
        "(MineRL 0.4.4 needs Java 8 and builds Minecraft with Gradle; see https://minerl.readthedocs.io). "
        "Offline MineRL demonstrations need no minerl: see cwworld.data.minerl."
    ) from err

from ..data.minerl import ACTION_KEYS, decode_actions
from ..envs.wrappers import _resize

__all__ = ["MineRLEnv"]


class MineRLEnv(gym.Env):
    """A MineRL (old gym API) environment seen through gymnasium.

    Args:
        env_id: MineRL environment id, made with ``gym.make`` of the old gym package.
        env: an already made MineRL environment instead of ``env_id``.
        size: image side in pixels (MineRL's ``pov`` is resized when it differs).
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, env_id: str = "MineRLNavigate-v0", env=None, size: int = 64):
        if env is None:
            import gym as old_gym

            env = old_gym.make(env_id)
        self._env, self.size = env, size
        self.render_mode = "rgb_array"
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (size, size, 3), np.uint8),
            "compass": gym.spaces.Box(-180.0, 180.0, (1,), np.float32),
            "inventory_dirt": gym.spaces.Box(0.0, np.inf, (1,), np.float32),
        })
        low = np.zeros(len(ACTION_KEYS), np.float32)
        low[2:4] = -1.0  # camera: degrees / 180
        self.action_space = gym.spaces.Box(low, np.ones(len(ACTION_KEYS), np.float32), dtype=np.float32)
        self._last_image = np.zeros((size, size, 3), np.uint8)

    def _observation(self, obs: dict) -> dict:
        compass = obs.get("compass", {})
        angle = compass.get("angle", 0.0) if isinstance(compass, dict) else obs.get("compassAngle", 0.0)
        dirt = obs.get("inventory", {}).get("dirt", 0)
        self._last_image = _resize(np.asarray(obs["pov"], np.uint8), self.size)
        return {"image": self._last_image, "compass": np.array([angle], np.float32).reshape(1),
                "inventory_dirt": np.array([dirt], np.float32).reshape(1)}

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        if seed is not None and hasattr(self._env, "seed"):
            self._env.seed(seed)
        return self._observation(self._env.reset()), {}

    def step(self, action):
        action = np.asarray(action, np.float32)
        if action.shape != (len(ACTION_KEYS),):
            raise ValueError(f"MineRLEnv: action must be float32 [{len(ACTION_KEYS)}] in the order "
                             f"{list(ACTION_KEYS)}, found shape {list(action.shape)}")
        obs, reward, done, info = self._env.step(decode_actions(action))
        truncated = bool(info.get("TimeLimit.truncated", False))
        return self._observation(obs), float(reward), bool(done) and not truncated, truncated, info

    def render(self):
        return self._last_image

    def close(self):
        self._env.close()
