"""Gymnasium environments and wrappers for cwworld (installed as ``cwworld.envs``).

* wrappers: :class:`ImageObservation`, :class:`ActionRepeat`, :class:`NormalizeActions`,
  :class:`OneHotActions`, ``TimeLimit``, :class:`Recorder` (steps into a replay buffer);
* :func:`collect` with a :class:`RandomPolicy`;
* built-in environments, registered with gymnasium on import:
  ``cwworld/CueCorridor-v0`` (a colour cue at the start decides which exit pays at the end of a
  24-step corridor), ``cwworld/CueCorridorLong-v0`` (the same with 96 steps, 400 at most), their
  ``...Outcome-v0`` variants (``CueCorridorOutcome-v0``, ``CueCorridorLongOutcome-v0``: the last
  frame shows whether the exit was right) and
  ``cwworld/PointReach-v0`` (steer a dot to a target with Box actions: a continuous pixel task);
* :func:`make_env`: an id plus the wrappers cwworld's models expect; :func:`make_vector_env`:
  ``num_envs`` of them in a ``gymnasium.vector.SyncVectorEnv``, each recording its own stream;
* ``cwworld.envs.minerl``: the MineRL adapter (needs the optional ``minerl`` package;
  not imported here).
"""

from __future__ import annotations

import gymnasium as gym

from .collect import RandomPolicy, collect, run_episodes
from .cue_corridor import CueCorridor
from .point_reach import PointReach
from .wrappers import ActionRepeat, ImageObservation, NormalizeActions, OneHotActions, Recorder, TimeLimit, action_vector

__all__ = ["ActionRepeat", "CueCorridor", "ImageObservation", "NormalizeActions", "OneHotActions", "PointReach",
           "RandomPolicy",
           "Recorder", "TimeLimit", "action_vector", "collect", "env_spaces", "make_env", "make_vector_env",
           "run_episodes"]

if "cwworld/CueCorridor-v0" not in gym.registry:
    gym.register("cwworld/CueCorridor-v0", entry_point="cwworld.envs.cue_corridor:CueCorridor",
                 max_episode_steps=100)
if "cwworld/CueCorridorLong-v0" not in gym.registry:
    gym.register("cwworld/CueCorridorLong-v0", entry_point="cwworld.envs.cue_corridor:CueCorridor",
                 max_episode_steps=400, kwargs={"length": 96, "max_steps": 400})
if "cwworld/CueCorridorOutcome-v0" not in gym.registry:
    gym.register("cwworld/CueCorridorOutcome-v0", entry_point="cwworld.envs.cue_corridor:CueCorridor",
                 max_episode_steps=100, kwargs={"show_outcome": True})
if "cwworld/CueCorridorLongOutcome-v0" not in gym.registry:
    gym.register("cwworld/CueCorridorLongOutcome-v0", entry_point="cwworld.envs.cue_corridor:CueCorridor",
                 max_episode_steps=400, kwargs={"length": 96, "max_steps": 400, "show_outcome": True})
if "cwworld/PointReach-v0" not in gym.registry:
    gym.register("cwworld/PointReach-v0", entry_point="cwworld.envs.point_reach:PointReach", max_episode_steps=50)


def make_env(env_id: str, size: int = 64, action_repeat: int = 1, time_limit=None, **kwargs) -> gym.Env:
    """``gym.make(env_id)`` wrapped for cwworld: dict observations with a ``size x size`` image,
    one-hot actions for Discrete spaces, ``[-1, 1]`` actions for bounded Box spaces."""
    if "render_mode" not in kwargs:
        kwargs["render_mode"] = "rgb_array"
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        ours = sorted(name for name in gym.registry if name.startswith("cwworld/"))
        raise ValueError(f"make_env: no gymnasium environment {env_id!r} ({err}); cwworld's own: "
                         f"{', '.join(ours)}") from None
    if time_limit:
        env = TimeLimit(env, time_limit)
    if action_repeat > 1:
        env = ActionRepeat(env, action_repeat)
    env = ImageObservation(env, size)
    if isinstance(env.action_space, gym.spaces.Discrete):
        env = OneHotActions(env)
    elif isinstance(env.action_space, gym.spaces.Box):
        env = NormalizeActions(env)
    return env


def make_vector_env(env_id: str, num_envs: int, buffer=None, **kwargs) -> gym.vector.SyncVectorEnv:
    """``num_envs`` copies of :func:`make_env` (same ``kwargs``) in a ``gymnasium.vector.SyncVectorEnv``
    that resets a finished environment in the same step (``AutoresetMode.SAME_STEP``: the step
    returns its next episode's first observation, as :func:`collect` and the agents expect).
    With a ``buffer`` environment ``i`` records every step into the buffer's worker-``i`` stream
    (:class:`Recorder`). ``reset(seed=s)`` seeds environment ``i`` with ``s + i``."""
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"make_vector_env: num_envs must be a whole number >= 1, found {num_envs!r}")

    def one(worker: int):
        def build():
            env = make_env(env_id, **kwargs)
            return env if buffer is None else Recorder(env, buffer, worker)
        return build

    return gym.vector.SyncVectorEnv([one(i) for i in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def env_spaces(env) -> tuple[gym.Space, gym.Space]:
    """``(action_space, observation_space)`` of one environment: an env's own, a vector env's single ones."""
    if isinstance(env, gym.vector.VectorEnv):
        return env.single_action_space, env.single_observation_space
    return env.action_space, env.observation_space
