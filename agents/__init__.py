"""Agents that act with a CW-VAE world model (installed as ``cwworld.agents``).

One interface, :class:`Agent` (``reset``, ``act``, ``policy``; see :mod:`cwworld.agents.base`),
and one file per algorithm, its hyperparameters in a dataclass at the top:

* :class:`RandomAgent` - uniform actions;
* :class:`CEMPlanner` - cross-entropy-method model-predictive control over batched ``imagine``;
* :class:`MPPIPlanner` - the same with score-weighted elites (MPPI, as TD-MPC2);
* :class:`ClockworkPlanner` - the near window planned step by step, the far future one upper
  window at a time with jumpy imagination and the window-reward heads;
* :class:`ActorCritic` - a Dreamer-style actor and critic learned in imagination, reading every
  level's features.
"""

from .actor_critic import ActorCritic, ActorCriticConfig, ActorCriticNets
from .base import ActionSpec, Agent, discounted_return
from .cem import CEMConfig, CEMPlanner
from .clockwork import ClockworkConfig, ClockworkPlanner
from .mppi import MPPIConfig, MPPIPlanner
from .random_agent import RandomAgent

__all__ = ["ActionSpec", "ActorCritic", "ActorCriticConfig", "ActorCriticNets", "Agent", "CEMConfig", "CEMPlanner", "ClockworkConfig", "ClockworkPlanner", "MPPIConfig",
           "MPPIPlanner", "RandomAgent", "discounted_return", "make_agent"]


def make_agent(config, model, action_space, num_envs: int = 1, observation_space=None, seed=None,
               explore: float = 0.0, nets: ActorCriticNets = None, evaluate: bool = False) -> Agent:
    """The agent a :class:`cwworld.config.AgentConfig` describes, acting with ``model``.

    ``nets``: an actor-critic's networks to share (e.g. those being trained); ``evaluate``: act
    by the actor-critic's mode instead of sampling."""
    if config.kind == "random":
        return RandomAgent(action_space, num_envs, model=None, seed=seed)
    if config.kind == "actor_critic":
        ac = ActorCriticConfig(horizon=config.horizon, discount=config.discount, return_lambda=config.return_lambda,
                               entropy=config.entropy, actor_lr=config.actor_lr, critic_lr=config.critic_lr,
                               starts=config.starts, hidden=config.hidden, explore=explore,
                               sample_actions=not evaluate)
        return ActorCritic(model, action_space, ac, num_envs, observation_space, nets=nets, seed=seed)
    common = dict(population=config.population, elites=config.elites, iterations=config.iterations,
                  discount=config.discount, explore=explore)
    if config.kind == "clockwork":
        planner_config = ClockworkConfig(level=config.level, windows=config.windows, **common)
        return ClockworkPlanner(model, action_space, planner_config, num_envs, observation_space, seed)
    kind, config_class = {"cem": (CEMPlanner, CEMConfig), "mppi": (MPPIPlanner, MPPIConfig)}[config.kind]
    return kind(model, action_space, config_class(horizon=config.horizon, **common), num_envs, observation_space,
                seed=seed)
