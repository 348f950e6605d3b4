"""The one interface every cwworld agent implements, and what planners share.

An :class:`Agent` acts in a batch of ``num_envs`` gymnasium environments (a
``gymnasium.vector`` env, or one env with ``num_envs = 1``):

* ``act(observation, is_first=None) -> actions``: filters the new frames into the world
  model's state with :meth:`CWVAE.observe_step` (the action it returned last time leads into
  them), then chooses the next actions with :meth:`choose`. ``observation`` is a dict with an
  ``"image"`` ``[num_envs, H, W, C]`` (or ``[H, W, C]`` for one env) or the image itself;
  ``is_first`` ``[num_envs]`` marks episode starts (a vector env's auto-reset); by default the
  first call after :meth:`reset` starts every episode.
* ``reset(mask=None)``: forget the filter state of the environments in ``mask`` (default all);
  their next frame starts an episode. The other environments are untouched.
* ``policy(state) -> action [B, A]``: the agent's choice from a model state, the callable
  :meth:`CWVAE.imagine` takes.

Actions leave ``act`` in the environment's format: ``int`` indices for ``Discrete``, one-hot
``float32`` vectors for :class:`cwworld.envs.wrappers.OneHot` (``make_env``'s wrapper), and
``float32`` vectors clipped to the bounds for ``Box``; inside the model every action is the
float vector of the step records (one-hot for discrete spaces).
"""

from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np
import torch

__all__ = ["Agent", "ActionSpec", "discounted_return"]


class ActionSpec:
    """What an action space means to the model: ``dim`` floats, one-hot (``discrete``) or bounded."""

    def __init__(self, space: gym.Space):
        from cwworld.envs.wrappers import OneHot

        self.space = space
        if isinstance(space, gym.spaces.Discrete):
            self.kind, self.dim = "discrete", int(space.n)
        elif isinstance(space, OneHot):
            self.kind, self.dim = "onehot", int(space.shape[0])
        elif isinstance(space, gym.spaces.Box):
            if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
                raise ValueError(f"agents: a Box action space needs finite bounds to plan within, found {space}")
            self.kind, self.dim = "box", int(np.prod(space.shape))
            self.low = torch.as_tensor(space.low.reshape(-1), dtype=torch.float32)
            self.high = torch.as_tensor(space.high.reshape(-1), dtype=torch.float32)
        else:
            raise ValueError(f"agents: unsupported action space {space} (Discrete, one-hot or Box)")
        self._bounds = {}

    @property
    def discrete(self) -> bool:
        return self.kind != "box"

    def bounds(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Box bounds ``(low, high)``, ``[dim]`` each, on ``device``: copied there once (a copy
        from the host at every decision would make a GPU wait)."""
        device = torch.device(device)
        if device not in self._bounds:
            self._bounds[device] = (self.low.to(device), self.high.to(device))
        return self._bounds[device]

    def to_env(self, action: torch.Tensor):
        """Model actions ``[N, dim]`` -> the environment's batch of actions."""
        action = action.detach().cpu()
        if self.kind == "discrete":
            return action.argmax(-1).numpy().astype(np.int64) + int(self.space.start)
        if self.kind == "onehot":
            return torch.nn.functional.one_hot(action.argmax(-1), self.dim).numpy().astype(np.float32)
        low, high = self.low, self.high
        return torch.maximum(torch.minimum(action, high), low).numpy().reshape((-1, *self.space.shape))


def _check_model_matches(model, spec: ActionSpec, observation_space: Optional[gym.Space]) -> None:
    config = model.config
    if config.action_dim != spec.dim:
        raise ValueError(f"agents: the environment's action space {spec.space} has {spec.dim} action dimensions "
                         f"but the model expects model.action_dim={config.action_dim}")
    if observation_space is None:
        return
    space = observation_space
    if isinstance(space, gym.spaces.Dict):
        space = space.spaces.get("image")
    expected = (config.image_size, config.image_size, config.channels)
    shape = None if space is None else tuple(space.shape[-3:])
    if shape != expected:
        raise ValueError(f"agents: the environment's observation space {observation_space} has images {shape} "
                         f"but the model expects [H, W, C] = {list(expected)}")


def discounted_return(reward: torch.Tensor, cont: Optional[torch.Tensor], discount: float,
                      terminal_value: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Score of imagined rollouts: ``sum_i discount**i * alive_i * reward_i`` (+ the discounted,
    alive-weighted ``terminal_value``), where ``alive_i`` is the predicted probability that the
    episode has not ended before step ``i`` (product of the continue head's outputs before it).

    Args:
        reward: ``[N, H]`` predicted rewards; cont: ``[N, H]`` continue probabilities or None.
        terminal_value: ``[N]`` value of the state after the last step, or None.
    Returns: ``[N]``.
    """
    N, H = reward.shape
    weight = discount ** torch.arange(H, dtype=reward.dtype, device=reward.device)  # (H,)
    alive = torch.ones_like(reward)
    if cont is not None:
        alive = torch.cumprod(torch.cat([torch.ones_like(cont[:, :1]), cont[:, :-1]], 1), 1)  # (N, H)
    score = (reward * alive * weight).sum(1)
    if terminal_value is not None:
        last_alive = alive[:, -1] * (1.0 if cont is None else cont[:, -1])
        score = score + discount**H * last_alive * terminal_value
    return score


class Agent:
    """Acts in ``num_envs`` environments with a CW-VAE world model (see the module docstring).

    Subclasses implement :meth:`choose` (and may use :meth:`reset_plans` to forget per-env
    plans). ``model`` may be None for agents that need no model (:class:`RandomAgent`).
    """

    def __init__(self, model, action_space: gym.Space, num_envs: int = 1,
                 observation_space: Optional[gym.Space] = None, seed: Optional[int] = None):
        if num_envs < 1:
            raise ValueError(f"agents: num_envs must be >= 1, found {num_envs}")
        self.model, self.num_envs = model, num_envs
        self.spec = ActionSpec(action_space)
        if model is not None:
            _check_model_matches(model, self.spec, observation_space)
        self.device = torch.device("cpu") if model is None else model.device
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0 if seed is None else seed)
        self.state = None if model is None else model.initial(num_envs)
        self.prev_action = torch.zeros(num_envs, self.spec.dim, device=self.device)
        self.starting = torch.ones(num_envs, dtype=torch.bool, device=self.device)
        self.frames_seen = 0

    # -- the interface ---------------------------------------------------------------

    def reset(self, mask=None) -> None:
        """Forget the filter state of the environments in ``mask`` (``[num_envs]`` bool; default all)."""
        mask = torch.ones(self.num_envs, dtype=torch.bool, device=self.device) if mask is None else \
            torch.as_tensor(np.asarray(mask), dtype=torch.bool, device=self.device).reshape(-1)
        if mask.shape != (self.num_envs,):
            raise ValueError(f"{type(self).__name__}.reset: mask must have {self.num_envs} entries, found {mask.shape[0]}")
        self.starting = self.starting | mask
        self.prev_action[mask] = 0.0
        self.reset_plans(mask)

    @torch.no_grad()
    def act(self, observation, is_first=None):
        """Filter the new frames, then choose the next actions (environment format)."""
        image = self._image(observation)
        first = self.starting.clone()
        if is_first is not None:
            first |= self._upload(torch.as_tensor(np.asarray(is_first), dtype=torch.bool)).reshape(-1)
        if self.model is not None:
            self.state = self.model.observe_step(self.state, image, self.prev_action, first, validate=False)
        self.reset_plans(first)  # where ``first`` (no host read of whether any environment started)
        self.starting[:] = False
        self.frames_seen += 1
        action = self.choose(self.state, first)  # (num_envs, dim)
        self.prev_action = action.float()
        actions = self.spec.to_env(action)
        return actions if self.num_envs > 1 else actions[0]

    def __call__(self, observation):
        """``act(observation)``: an agent is a policy for :func:`cwworld.envs.collect`."""
        return self.act(observation)

    def policy(self, state) -> torch.Tensor:
        """The agent's actions ``[B, A]`` for model states (e.g. inside :meth:`CWVAE.imagine`)."""
        return self.choose(state, None)

    def state_dict(self) -> dict:
        """What a checkpoint keeps to continue exactly: the agent's random generator (and, in
        subclasses, what they learn). Filter states and plans are not kept: episodes restart."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    # -- for subclasses ----------------------------------------------------------------

    def choose(self, state, is_first: Optional[torch.Tensor]) -> torch.Tensor:
        """Model actions ``[B, A]`` for the states ``state`` (``is_first``: the envs just reset)."""
        raise NotImplementedError

    def reset_plans(self, mask: torch.Tensor) -> None:
        """Forget per-environment plans where ``mask``; nothing by default."""

    def random_actions(self, batch: int) -> torch.Tensor:
        """Uniform actions ``[batch, A]`` in the model's format."""
        spec, g = self.spec, self.generator
        if spec.discrete:
            index = torch.randint(spec.dim, (batch,), generator=g, device=self.device)
            return torch.nn.functional.one_hot(index, spec.dim).float()
        low, high = spec.bounds(self.device)
        return low + (high - low) * torch.rand(batch, spec.dim, generator=g, device=self.device)

    # -- helpers ---------------------------------------------------------------------

    def _image(self, observation) -> torch.Tensor:
        image = observation["image"] if isinstance(observation, dict) else observation
        image = torch.as_tensor(np.asarray(image))
        if image.ndim == 3:
            image = image[None]
        if image.shape[0] != self.num_envs:
            raise ValueError(f"{type(self).__name__}.act: expected images for {self.num_envs} environments "
                             f"[{self.num_envs}, H, W, C], found shape {tuple(image.shape)}")
        if image.is_floating_point() and not bool(torch.isfinite(image).all()):
            bad = (~torch.isfinite(image)).flatten(1).any(1).nonzero()[:, 0].tolist()
            raise ValueError(f"{type(self).__name__}.act: the observation at step {self.frames_seen} "
                             f"(environments {bad}) holds NaN or inf")
        return self._upload(image)

    def _upload(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor on the agent's device; to a GPU through pinned memory, so that the copy
        does not make the host wait."""
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)
