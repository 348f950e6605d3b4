"""Actor-critic learned in imagination (Dreamer-style), reading every level of the CW-VAE.

Each update (:meth:`ActorCritic.update`, called after a world-model update on the same batch):

1. **Starts.** The posterior state after every step of the batch (``B * T`` states,
   :meth:`CWVAE.start_states`), at most ``starts`` of them drawn at random; a state whose step
   ended its episode (``is_terminal``) gets weight 0.
2. **Imagination.** From each start the actor picks actions for ``horizon`` steps inside
   :meth:`CWVAE.imagine` (one batched call per clock phase, prior samples, no gradient).
   Features: every level's ``[z, h]`` concatenated, so the actor sees the slow levels' memory
   (e.g. a cue seen long before) next to the fast level's present.
3. **Targets.** λ-returns from the predicted rewards and a slowly updated target critic,
   discounted by ``discount`` times the continue head's probability::

       R_i = r_{i+1} + discount * c_{i+1} * ((1 - λ) v(s_{i+1}) + λ R_{i+1}),   R_H = v(s_H)

   Each imagined step is weighted by the probability that the episode is still running there.
4. **Critic.** Regression of ``v(s_i)`` to ``R_i``; the target critic follows it by
   ``target_tau`` per update (exponential moving average).
5. **Actor.** REINFORCE for both discrete (one-hot) and Box actions: ``-log pi(a_i|s_i) *
   (R_i - v(s_i)) / max(1, S)`` minus ``entropy`` times the policy's entropy, where ``S`` is
   a moving average of the 5th-95th percentile range of the returns (DreamerV3's return
   normalisation: large returns are scaled down, small ones are not blown up). No gradient
   flows through the world model.

Option (not Dreamer's; off by default): ``replay > 0`` adds the same critic and actor losses on
the batch's *real* steps, weighted by ``replay``: the critic regresses λ-returns of the real
rewards and continues (``1 - is_terminal``), bootstrapped by the target critic at the posterior
states, and the actor raises the log-probability of the actions actually taken in proportion to
those returns minus ``v`` (REINFORCE on replay, no importance correction: the actions came from
the collecting policy, so the actor's target is biased towards improving on that policy; a
truncated-IS correction is not implemented). Steps whose next step is another episode's first,
terminal steps and each sequence's last step carry no loss. A sequence that starts in the middle
of an episode (the replay resets the state at its first step) gives states that have not seen
that episode's beginning, unlike the state an agent acts on; they are not masked (the batch
does not say whether its first step began an episode). What it is for: a reward that the
world model's reward head has not learned yet (e.g. CueCorridor's exit, which pays by a cue seen
long before) still reaches the actor, from the posterior state where the agent acts.

Option (off by default): ``input_norm`` standardises every feature dimension before the actor
and the critic with running moments of the posterior features of the training batches (the
start states; updated in :meth:`ActorCritic.update` only, saved with the agent), as the world
model's ``head_norm`` does for its heads. A cue the slow levels carry only as a small shift of a
few low-variance dimensions is then on the scale of everything else.

Option (off by default): ``plan_horizon > 0`` acts by planning instead of reading the actor:
CEM (:class:`cwworld.agents.CEMPlanner`, ``plan_population`` candidates, ``plan_elites``,
``plan_iterations``, warm-started) over ``plan_horizon`` imagined steps, each candidate scored by
its predicted discounted rewards plus the critic's value of the state it ends in (the terminal
value of TD-MPC's planner). The actor and critic learn exactly as without it. What it is for: a
step whose only cost is time (CueCorridor's turns in the corridor, which do nothing) differs from
the useful one by ``(1 - discount)`` of the value: REINFORCE, weighing that small margin against
the entropy bonus and the return's noise, can leave the actor's mode on the useless action (a
greedy episode then never ends), while the critic ranks the states ``plan_horizon`` steps apart by
a margin ``plan_horizon`` times larger, and the planner acts on that ranking. Exploration while
collecting: a uniform action with chance ``explore`` (the planner's own ``explore``).
``plan_discount`` (default ``discount``) discounts the candidates' scores only: a lower one trusts
the rewards the world model predicts within the plan more than the critic's value of the state
after it. What it is for: a critic that values a decision point above the reward the model
predicts for the right decision (e.g. blind to the cue there: the mean over both cues) makes the
planner wait at it for ever, as waiting keeps ``discount**plan_horizon`` of that value; with
``plan_discount**plan_horizon`` small the predicted reward wins. Where the plan cannot reach a
reward, all candidates are scaled alike and the critic still ranks them.

Distributions: discrete actions are a categorical mixed with 1% uniform (every action keeps
some probability); Box actions a Gaussian whose mean is squashed into the bounds by ``tanh``
and whose std lies in ``[min_std, max_std]`` times the half-range, samples clipped to the
bounds (the actor's gradient uses the log-probability of the clipped action).

Acting: collection samples from the policy (plus ``explore``: a uniform action with that
probability, or Gaussian noise of that std on Box actions); evaluation takes its mode
(``sample_actions=False``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import torch
from torch import nn
from torch.distributions import Categorical, Normal

from cwworld.heads import RunningNorm

from .base import Agent

__all__ = ["ActorCritic", "ActorCriticConfig", "ActorCriticNets", "lambda_returns"]


@dataclass
class ActorCriticConfig:
    horizon: int = 15  # imagined steps per start state
    discount: float = 0.985  # per imagined step
    return_lambda: float = 0.95  # λ of the λ-returns
    starts: int = 256  # at most this many start states per update
    hidden: int = 256  # width of the actor's and the critic's MLPs
    layers: int = 2  # hidden layers of each
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    entropy: float = 3e-3  # weight of the policy's entropy (advantages are in normalised return units)
    target_tau: float = 0.02  # share of the critic moved into the target critic per update
    return_decay: float = 0.99  # moving average of the returns' 5-95 percentile range
    grad_clip: float = 100.0
    min_std: float = 0.1  # Box: std bounds, in half-ranges of the action
    max_std: float = 1.0
    unimix: float = 0.01  # discrete: share of the uniform distribution mixed in
    explore: float = 0.0  # acting: chance of a uniform action (Box: std of added noise, in action units)
    sample_actions: bool = True  # acting: sample from the policy (False: its mode)
    replay: float = 0.0  # weight of the critic and actor losses on the batch's real steps (0: Dreamer's)
    input_norm: bool = False  # standardise the actor's and critic's features per dimension (running moments)
    plan_horizon: int = 0  # act by CEM over this many imagined steps, the critic valuing the last (0: the actor)
    plan_population: int = 128  # planning: candidates per environment and iteration
    plan_elites: int = 16
    plan_iterations: int = 3
    plan_discount: float = 0.0  # planning: discount of the candidates' scores (0: ``discount``)

    def validate(self) -> None:
        for name in ("horizon", "starts", "hidden", "layers", "plan_population", "plan_elites", "plan_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"ActorCriticConfig.{name} must be >= 1, found {getattr(self, name)}")
        for name in ("discount", "return_lambda", "target_tau", "return_decay"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"ActorCriticConfig.{name} must lie in (0, 1], found {getattr(self, name)}")
        for name in ("actor_lr", "critic_lr", "min_std", "max_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ActorCriticConfig.{name} must be > 0, found {getattr(self, name)}")
        if not 0.0 <= self.plan_discount <= 1.0:
            raise ValueError(f"ActorCriticConfig.plan_discount must lie in [0, 1], found {self.plan_discount}")
        if self.replay < 0 or self.plan_horizon < 0:
            raise ValueError(f"ActorCriticConfig: replay and plan_horizon must be >= 0, found {self.replay}, "
                             f"{self.plan_horizon}")
        if self.entropy < 0 or not 0 <= self.explore <= 1 or not 0 <= self.unimix < 1:
            raise ValueError("ActorCriticConfig: entropy must be >= 0, explore in [0, 1], unimix in [0, 1); "
                             f"found {self.entropy}, {self.explore}, {self.unimix}")


def _mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    parts, dim = [], in_dim
    for _ in range(layers):
        parts += [nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.SiLU()]
        dim = hidden
    return nn.Sequential(*parts, nn.Linear(dim, out_dim))


class ActorCriticNets(nn.Module):
    """The actor, the critic and the target critic, reading ``feature_dim`` features."""

    def __init__(self, feature_dim: int, action_dim: int, discrete: bool, config: ActorCriticConfig):
        super().__init__()
        actor = _mlp(feature_dim, config.hidden, action_dim if discrete else 2 * action_dim, config.layers)
        critic = _mlp(feature_dim, config.hidden, 1, config.layers)
        nn.init.zeros_(actor[-1].weight), nn.init.zeros_(actor[-1].bias)  # a uniform first policy
        nn.init.zeros_(critic[-1].weight), nn.init.zeros_(critic[-1].bias)
        target = copy.deepcopy(critic).requires_grad_(False)
        # input_norm: one RunningNorm shared by all three (its moments are buffers, not parameters)
        self.input_norm = RunningNorm(feature_dim) if config.input_norm else None
        wrap = (lambda mlp: nn.Sequential(self.input_norm, mlp)) if config.input_norm else (lambda mlp: mlp)
        self.actor, self.critic, self.target_critic = wrap(actor), wrap(critic), wrap(target)
        self.register_buffer("return_scale", torch.zeros(()))  # moving 5-95 percentile range (0: none yet)


def lambda_returns(reward: torch.Tensor, cont: torch.Tensor, value: torch.Tensor, discount: float,
                   lam: float) -> torch.Tensor:
    """λ-returns ``[N, H]`` of imagined steps.

    Args:
        reward, cont: ``[N, H]``: index ``i`` is the reward on arriving at step ``i + 1`` and the
            probability that step ``i + 1`` is not terminal.
        value: ``[N, H + 1]`` the (target) critic at steps ``0 .. H``.
    """
    H = reward.shape[1]
    out = [None] * H
    last = value[:, H]
    for i in reversed(range(H)):
        last = reward[:, i] + discount * cont[:, i] * ((1 - lam) * value[:, i + 1] + lam * last)
        out[i] = last
    return torch.stack(out, 1)


def features(state) -> torch.Tensor:
    """Every level's ``[z, h]`` concatenated, ``[B, sum of stoch_l + deter_l]``."""
    return torch.cat([state.features(level) for level in range(len(state.h))], dim=-1)


class ActorCritic(Agent):
    """Dreamer-style actor-critic trained in the world model's imagination (see the module docstring).

    Args:
        nets: share the networks (and the optimizers' targets) of another instance, e.g. to
            evaluate the agent being trained; default: new ones.
    """

    config_class = ActorCriticConfig

    def __init__(self, model, action_space: gym.Space, config: Optional[ActorCriticConfig] = None,
                 num_envs: int = 1, observation_space: Optional[gym.Space] = None,
                 nets: Optional[ActorCriticNets] = None, seed: Optional[int] = None):
        if model is None or model.heads.reward is None:
            raise ValueError(f"{type(self).__name__}: needs a world model with a reward head (model.reward_head: true)")
        self.config = config or ActorCriticConfig()
        self.config.validate()
        super().__init__(model, action_space, num_envs, observation_space, seed)
        feature_dim = sum(model.stoch) + sum(model.deter)
        self.nets = nets if nets is not None else \
            ActorCriticNets(feature_dim, self.spec.dim, self.spec.discrete, self.config).to(self.device)
        self.actor_optimizer = torch.optim.Adam(self.nets.actor.parameters(), lr=self.config.actor_lr, eps=1e-5)
        self.critic_optimizer = torch.optim.Adam(self.nets.critic.parameters(), lr=self.config.critic_lr, eps=1e-5)
        self.updates = 0
        self.planner = None
        if self.config.plan_horizon > 0:  # acting by CEM, the critic as terminal value
            from .cem import CEMConfig, CEMPlanner

            cfg = self.config
            plan = CEMConfig(horizon=cfg.plan_horizon, population=cfg.plan_population, elites=cfg.plan_elites,
                             iterations=cfg.plan_iterations, discount=cfg.plan_discount or cfg.discount,
                             explore=cfg.explore)
            self.planner = CEMPlanner(model, action_space, plan, num_envs, observation_space,
                                      terminal_value=self.value, seed=seed)

    # -- the policy -------------------------------------------------------------------

    def distribution(self, feats: torch.Tensor):
        """The policy at features ``[..., F]`` (a torch distribution over model-format actions)."""
        out = self.nets.actor(feats)
        if self.spec.discrete:
            probs = torch.softmax(out, -1)
            probs = (1 - self.config.unimix) * probs + self.config.unimix / self.spec.dim
            return Categorical(probs=probs, validate_args=False)  # validation would read values to the host
        low, high = self.spec.bounds(out.device)
        mid, half = (high + low) / 2, (high - low) / 2
        raw_mean, raw_std = out.chunk(2, -1)
        cfg = self.config
        std = (cfg.min_std + (cfg.max_std - cfg.min_std) * torch.sigmoid(raw_std + 2.0)) * half
        return Normal(mid + half * torch.tanh(raw_mean), std, validate_args=False)

    def _draw(self, feats: torch.Tensor, sample: bool) -> torch.Tensor:
        """Model-format actions ``[B, A]`` from the policy (a sample, or the mode)."""
        dist = self.distribution(feats)
        if self.spec.discrete:
            if sample:
                index = torch.multinomial(dist.probs, 1, generator=self.generator)[:, 0]
            else:
                index = dist.probs.argmax(-1)
            return nn.functional.one_hot(index, self.spec.dim).float()
        action = dist.mean
        if sample:
            action = action + dist.stddev * torch.randn(action.shape, generator=self.generator, device=action.device)
        low, high = self.spec.bounds(action.device)
        return torch.maximum(torch.minimum(action, high), low)

    def value(self, state) -> torch.Tensor:
        """The critic's value ``[B]`` of model states."""
        return self.nets.critic(features(state))[..., 0]

    def reset_plans(self, mask: torch.Tensor) -> None:
        if self.planner is not None:
            self.planner.reset_plans(mask)

    def choose(self, state, is_first=None) -> torch.Tensor:
        cfg = self.config
        if self.planner is not None:
            return self.planner.choose(state, is_first)
        action = self._draw(features(state), cfg.sample_actions)
        if cfg.explore > 0:
            B = action.shape[0]
            if self.spec.discrete:
                swap = torch.rand(B, generator=self.generator, device=self.device) < cfg.explore
                action = torch.where(swap[:, None], self.random_actions(B), action)
            else:
                action = action + cfg.explore * torch.randn(action.shape, generator=self.generator, device=self.device)
        if not self.spec.discrete:
            low, high = self.spec.bounds(self.device)
            action = torch.maximum(torch.minimum(action, high), low)
        return action

    # -- learning -----------------------------------------------------------------------

    @torch.no_grad()
    def imagine_from(self, start, horizon: int):
        """Imagine ``horizon`` steps from ``start`` with the sampled policy:
        ``(features [N, H+1, F], actions [N, H, A], reward [N, H], cont [N, H])``."""
        seen = []

        def policy(state):
            feats = features(state)
            seen.append(feats)
            return self._draw(feats, sample=True)

        rollout = self.model.imagine(start, horizon, policy=policy, sample=True, validate=False)
        seen.append(features(rollout.last))
        cont = rollout.cont if rollout.cont is not None else torch.ones_like(rollout.reward)
        return torch.stack(seen, 1), rollout.actions, rollout.reward, cont

    def update(self, traj, batch: dict, repeats: int = 1) -> dict[str, float]:
        """``repeats`` actor and critic updates on imagination started from ``traj``'s posterior
        states (the world model's trajectory on ``batch``), each from newly drawn start states.
        The start states and ``input_norm``'s moments come from the batch once. Returns the last
        update's metrics under ``agent/``."""
        if repeats < 1:
            raise ValueError(f"ActorCritic.update: repeats must be >= 1, found {repeats}")
        groups = self.model.start_states(traj, batch.get("action"), batch.get("is_first"))
        if nets_norm := self.nets.input_norm:  # the moments follow the posterior features of real data
            nets_norm.update(torch.cat([features(state) for _, state in groups]))
        total = sum(len(index) for index, _ in groups)
        terminal = batch.get("is_terminal")
        start_weight = torch.ones(total, device=self.device) if terminal is None else \
            1.0 - terminal.reshape(-1).float().to(self.device)
        for _ in range(repeats):
            metrics = self._update_once(groups, start_weight, batch)
        return metrics

    def _update_once(self, groups, start_weight: torch.Tensor, batch: dict) -> dict[str, float]:
        """One update from ``groups`` (:meth:`CWVAE.start_states`), ``start_weight [B * T]``
        (0 where a step ended its episode)."""
        cfg = self.config
        total = start_weight.shape[0]
        keep = torch.randperm(total, generator=self.generator, device=self.device)[:cfg.starts]
        chosen = torch.zeros(total, dtype=torch.bool, device=self.device)
        chosen[keep] = True
        feats, actions, rewards, conts, weights = [], [], [], [], []
        for index, state in groups:
            mine = chosen[index]
            if not bool(mine.any()):
                continue
            f, a, r, c = self.imagine_from(state[mine], cfg.horizon)
            feats.append(f), actions.append(a), rewards.append(r), conts.append(c)
            weights.append(start_weight[index[mine]])
        feats, actions = torch.cat(feats), torch.cat(actions)  # (N, H+1, F), (N, H, A)
        reward, cont, start_weight = torch.cat(rewards), torch.cat(conts), torch.cat(weights)  # (N, H), (N,)
        nets = self.nets

        with torch.no_grad():
            target = nets.target_critic(feats)[..., 0]  # (N, H+1)
            returns = lambda_returns(reward, cont, target, cfg.discount, cfg.return_lambda)  # (N, H)
            alive = torch.cumprod(torch.cat([torch.ones_like(cont[:, :1]), cont[:, :-1]], 1), 1)  # (N, H)
            weight = alive * start_weight[:, None]
            low, high = torch.quantile(returns.flatten(), returns.new_tensor([0.05, 0.95]))
            spread = high - low
            if self.updates == 0 and float(nets.return_scale) == 0.0:
                nets.return_scale.copy_(spread)
            else:
                nets.return_scale.mul_(cfg.return_decay).add_((1 - cfg.return_decay) * spread)
            scale = torch.clamp(nets.return_scale, min=1.0)

        value = nets.critic(feats[:, :-1])[..., 0]  # (N, H)
        critic_loss = 0.5 * ((value - returns).square() * weight).mean()
        if cfg.replay > 0:
            real = self._replay_targets(groups, batch)
            real_value = nets.critic(real["feats"])[..., 0]  # (B, T-1)
            critic_loss = critic_loss + cfg.replay * 0.5 * ((real_value - real["returns"]).square()
                                                              * real["mask"]).mean()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        nn.utils.clip_grad_norm_(nets.critic.parameters(), cfg.grad_clip)
        self.critic_optimizer.step()

        dist = self.distribution(feats[:, :-1])
        taken = actions.argmax(-1) if self.spec.discrete else actions
        log_prob = dist.log_prob(taken)
        entropy = dist.entropy()
        if not self.spec.discrete:
            log_prob, entropy = log_prob.sum(-1), entropy.sum(-1)
        advantage = (returns - value.detach()) / scale
        actor_loss = -((log_prob * advantage + cfg.entropy * entropy) * weight).mean()
        if cfg.replay > 0:
            real_dist = self.distribution(real["feats"])
            real_log_prob = real_dist.log_prob(real["actions"].argmax(-1) if self.spec.discrete else real["actions"])
            if not self.spec.discrete:
                real_log_prob = real_log_prob.sum(-1)
            real_advantage = (real["returns"] - real_value.detach()) / scale
            actor_loss = actor_loss - cfg.replay * (real_log_prob * real_advantage * real["mask"]).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        nn.utils.clip_grad_norm_(nets.actor.parameters(), cfg.grad_clip)
        self.actor_optimizer.step()

        with torch.no_grad():
            for slow, fast in zip(nets.target_critic.parameters(), nets.critic.parameters()):
                slow.lerp_(fast, cfg.target_tau)
        self.updates += 1
        return {"agent/actor_loss": float(actor_loss.detach()), "agent/critic_loss": float(critic_loss.detach()),
                "agent/entropy": float(entropy.detach().mean()), "agent/return": float(returns[:, 0].mean()),
                "agent/imagined_reward": float(reward.mean()), "agent/return_scale": float(nets.return_scale)}

    @torch.no_grad()
    def _replay_targets(self, groups, batch: dict) -> dict:
        """The real steps ``t < T - 1`` of ``batch`` for the ``replay`` losses: posterior features
        ``[B, T-1, F]`` (the state after frame ``t``, as when acting), the actions taken there, their
        λ-returns from the real rewards and continues (target critic bootstrap) and the mask of
        steps whose action led to a next step of the same episode."""
        cfg = self.config
        image = batch["image"]
        B, T = image.shape[:2]
        dev = self.device
        flat = None
        for index, state in groups:
            f = features(state)
            if flat is None:
                flat = f.new_zeros(B * T, f.shape[-1])
            flat[index] = f
        feats = flat.view(B, T, -1)
        reward = batch["reward"].float().to(dev)  # reward[t]: arriving at t
        terminal = batch["is_terminal"].bool().to(dev) if batch.get("is_terminal") is not None else \
            torch.zeros(B, T, dtype=torch.bool, device=dev)
        first = batch["is_first"].bool().to(dev) if batch.get("is_first") is not None else \
            torch.zeros(B, T, dtype=torch.bool, device=dev)
        valid = ~terminal[:, :-1] & ~first[:, 1:]  # (B, T-1): action t led to step t + 1 of its episode
        target = self.nets.target_critic(feats)[..., 0]  # (B, T)
        # at a boundary the return is v itself: "reward" v(s_t) with no continuation
        reward = torch.where(valid, reward[:, 1:], target[:, :-1])
        cont = torch.where(valid, 1.0 - terminal[:, 1:].float(), 0.0)
        returns = lambda_returns(reward, cont, target, cfg.discount, cfg.return_lambda)  # (B, T-1)
        return {"feats": feats[:, :-1], "actions": batch["action"].float().to(dev)[:, :-1],
                "returns": returns, "mask": valid.float()}

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict:
        state = {**super().state_dict(), "nets": self.nets.state_dict(), "updates": self.updates,
                 "actor_optimizer": self.actor_optimizer.state_dict(),
                 "critic_optimizer": self.critic_optimizer.state_dict()}
        if self.planner is not None:
            state["planner"] = self.planner.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.planner is not None and "planner" in state:
            self.planner.load_state_dict(state["planner"])
        self.nets.load_state_dict(state["nets"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.updates = int(state["updates"])
