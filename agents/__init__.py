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
from .replay_prior import replay_action_priors

__all__ = ["ActionSpec", "ActorCritic", "ActorCriticConfig", "ActorCriticNets", "Agent", "CEMConfig", "CEMPlanner", "ClockworkConfig", "ClockworkPlanner", "MPPIConfig",
           "MPPIPlanner", "RandomAgent", "discounted_return", "load_agent", "make_agent", "planner_priors",
           "replay_action_priors"]


def make_agent(config, model, action_space, num_envs: int = 1, observation_space=None, seed=None,
               explore: float = 0.0, nets: ActorCriticNets = None, evaluate: bool = False, replay=None) -> Agent:
    """The agent a :class:`cwworld.config.AgentConfig` describes, acting with ``model``.

    ``nets``: an actor-critic's networks to share (e.g. those being trained); ``evaluate``: act
    by the actor-critic's mode instead of sampling, or with ``plan_horizon`` by planning (which
    collecting agents do only with ``plan_collect``). ``replay``: the
    :class:`cwworld.data.replay.ReplayBuffer` that ``initial_probs: replay`` takes its priors from
    (:func:`planner_priors`)."""
    if config.kind == "random":
        return RandomAgent(action_space, num_envs, model=None, seed=seed)
    if config.kind == "actor_critic":
        ac = ActorCriticConfig(horizon=config.horizon, discount=config.discount, return_lambda=config.return_lambda,
                               entropy=config.entropy, actor_lr=config.actor_lr, critic_lr=config.critic_lr,
                               starts=config.starts, hidden=config.hidden, explore=explore,
                               sample_actions=not evaluate, replay=config.replay,
                               input_norm=config.input_norm,
                               plan_horizon=config.plan_horizon if evaluate or config.plan_collect else 0,
                               plan_population=config.population, plan_elites=config.elites,
                               plan_iterations=config.iterations, plan_discount=config.plan_discount)
        return ActorCritic(model, action_space, ac, num_envs, observation_space, nets=nets, seed=seed)
    step_probs, window_probs = planner_priors(config, model, action_space, replay)
    common = dict(population=config.population, elites=config.elites, iterations=config.iterations,
                  discount=config.discount, explore=explore, initial_probs=step_probs)
    if config.kind == "clockwork":
        planner_config = ClockworkConfig(level=config.level, windows=config.windows, near_value=config.near_value,
                                         far_search=config.far_search, window_probs=window_probs,
                                         far_imagination=config.far_imagination, **common)
        return ClockworkPlanner(model, action_space, planner_config, num_envs, observation_space, seed)
    kind, config_class = {"cem": (CEMPlanner, CEMConfig), "mppi": (MPPIPlanner, MPPIConfig)}[config.kind]
    return kind(model, action_space, config_class(horizon=config.horizon, **common), num_envs, observation_space,
                seed=seed)


def planner_priors(config, model, action_space, replay=None):
    """A planner's ``(initial_probs, window_probs)`` for :class:`cwworld.config.AgentConfig`
    ``config``: its own ``initial_probs`` (and no window prior), or with ``initial_probs:
    replay`` the replay's action frequencies per step and, for ``far_search: compositions``, per
    window of the planning level (:func:`replay_action_priors`; None where the replay has none
    yet, e.g. before the prefill)."""
    if config.initial_probs != "replay":
        return config.initial_probs, None
    spec = ActionSpec(action_space)
    if not spec.discrete:
        raise ValueError(f"agent.initial_probs: replay needs a discrete action space, found {action_space}")
    if replay is None:
        raise ValueError("agent.initial_probs: replay needs the run's replay buffer (make_agent(..., replay=...))")
    period = model.periods[config.level] if config.kind == "clockwork" and config.far_search == "compositions" \
        else None
    return replay_action_priors(replay, spec.dim, period)


def load_agent(run_dir, num_envs: int = 1, checkpoint=None, evaluate: bool = True, device="cpu", overrides=(),
               seed=None):
    """The agent of a trained online run, ready to act: ``(agent, config)``.

    The world model and (for ``agent.kind: actor_critic``) the actor and critic come from the
    run's checkpoint (default ``latest.pt``); the action and observation spaces from
    ``config.data.env``. ``evaluate``: act without exploration (the actor's mode).
    ``overrides``: ``agent.key=value`` strings that change how the agent acts (e.g.
    ``agent.plan_discount=0.5``); what it learned is the checkpoint's. ``seed``: the agent's
    random generator (planner samples).
    """
    from cwworld.config import ConfigError, apply_overrides
    from cwworld.envs import make_env
    from cwworld.train import model_from_checkpoint, run_checkpoint

    bad = [o for o in overrides if not str(o).startswith("agent.")]
    if bad:
        raise ConfigError(f"load_agent: only agent.* settings change how a trained agent acts, found {bad}")
    path, state = run_checkpoint(run_dir, checkpoint)  # read once: the world model and the actor
    model, config, _ = model_from_checkpoint(path, state, device=device)
    config = apply_overrides(config, overrides)
    if not config.data.env:
        raise ValueError(f"load_agent: {run_dir} is not an online run (its config has no data.env)")
    env = make_env(config.data.env)
    replay = None
    if config.agent.initial_probs == "replay":  # the run's replay, as its training ended
        from pathlib import Path

        from cwworld.data.replay import ReplayBuffer

        replay = ReplayBuffer.load(Path(run_dir) / "replay", capacity=config.data.capacity)
    agent = make_agent(config.agent, model, env.action_space, num_envs, env.observation_space,
                       explore=0.0 if evaluate else config.agent.explore, evaluate=evaluate, seed=seed,
                       replay=replay)
    if "agent" in state and hasattr(agent, "nets"):
        agent.nets.load_state_dict(state["agent"]["nets"])
    env.close()
    return agent, config
