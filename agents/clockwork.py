"""Multi-timescale planning: the near window step by step, the far future one window at a time.

A flat planner imagines every step of its horizon with every level, so looking 100 steps
ahead costs 100 steps of the whole hierarchy per candidate. :class:`ClockworkPlanner` splits
the horizon at the next tick ``o1`` of an upper level ``l`` (period ``p = k**l``):

* **near part**: the steps from now up to and including ``o1`` (1 to ``p`` steps), imagined
  with all levels and per-step candidate actions, scored by the bottom reward head (weighted by
  the continue head's probability that the episode is still running);
* **far part**: ``windows`` further windows of level ``l``, imagined jumpily (levels ``l`` and
  above only, one evaluation per tick) from the state the near part ends in, with one action
  summary per window (the sum of its per-step actions, the input level ``l`` is trained on),
  scored by level ``l``'s window-reward head: the predicted reward of the steps
  ``(o - p, o]``, discounted at the window's end.

The score of a candidate is the near part's discounted return plus the discounted far windows'
predicted rewards. How the near part is refitted is ``near_value``:

* ``"plan"`` (default): every near candidate is followed by the SAME far windows, the current
  far plan's expected summaries (its action probabilities, or Gaussian means, times ``p``), so
  two near candidates differ in score only by what they do: their own rewards plus the upper
  plan's value of the state they lead to, not by the noise of their own far samples. The far
  part is refitted to its own candidates, each after its near candidate. (Measured on the
  tests' PushSquare task: a small gain over ``"sample"``, see the README.)
* ``"sample"``: near and far are refitted to the same elites of the joint candidates (the
  first version).

``far_imagination="full"`` is a diagnostic: the same far candidates, each window's summary spread
over its ``p`` steps (:meth:`ClockworkPlanner.window_steps`) and imagined step by step with every
level, scored by the bottom reward and continue heads like a flat planner's; it tells whether
the window heads or the search cost a plan (the README's CueCorridor rows), at flat imagination's
cost.

The first near action is executed. So the effective horizon is ``p * windows`` steps longer
than the near part, at a cost of ``windows`` upper-level steps per candidate instead of
``p * windows`` full steps.
Two batched :meth:`CWVAE.imagine` calls per iteration (near, then far), each over all
candidates of all environments (with ``near_value="plan"`` the far call holds each candidate
twice: after its near part with its own far windows and with the plan's).

What it assumes: the model has a reward head, window-reward heads
(``model.level_reward_heads``) and actions at every level (``model.action_levels: all``), and
was trained with the same window alignment it plans with (``windows: causal`` for agents).
Episode ends: with ``model.level_continue_heads`` a far window's reward counts only as far as
the episode is predicted to be running when the window begins; without them the far part
ignores episode ends, and its value is optimistic in tasks that terminate early. Models trained
without ``model.window_ends`` never saw a window an episode ended in (between two ticks) in
their window heads: in CueCorridor 24% of the exits reach level 1's heads (``k = 4``; see the
README).

Far candidates. For a ``Box`` space a window's summary is ``p`` times one per-step action sample
(a constant action over the window), so the search is over summaries already. For a discrete
space, ``far_search`` says what each far window's categorical is over:

* ``"steps"`` (default): the actions of one step; a candidate window is ``p`` draws from it
  and its summary their counts, refitted to the elites' action frequencies;
* ``"compositions"``: the window summaries themselves, every count vector of ``p`` steps over
  ``A`` actions (:func:`window_compositions`; 15 at ``p = 4``, ``A = 3``), refitted to the
  elites' compositions, so a plan can settle on "four ``forward``" without every step having to.

Drawn from a uniform start, per-step windows are mostly mixed (with ``p = 4`` and 3 actions, 1
in 81 is four of one action), so a far plan that pays only after several windows of mostly one
action (CueCorridor: walk forward for 5-6 windows, then turn) is rarely among the candidates.
``initial_probs`` (a prior over the actions for fresh steps and windows; with compositions, the
multinomial probabilities of the counts) makes it likelier; ``initial_probs: replay`` in the
agent config takes it from the replay instead (:mod:`cwworld.agents.replay_prior`), per window
with compositions; and the far part must reach past the reward (``windows``). See the README
for what each buys on CueCorridor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import gymnasium as gym
import torch

from cwworld.config import check_probabilities

from .base import discounted_return
from .cem import CEMConfig, CEMPlanner

__all__ = ["ClockworkConfig", "ClockworkPlanner", "window_compositions"]

MAX_COMPOSITIONS = 4096  # far_search="compositions" refuses action spaces and periods with more


@dataclass
class ClockworkConfig(CEMConfig):
    level: int = 1  # the upper level that plans the far future (period k**level)
    windows: int = 4  # far windows of that level after the near part
    horizon: int = 0  # unused: the near part runs to the level's next tick
    near_value: Literal["plan", "sample"] = "plan"  # what follows a near candidate when it is scored (above)
    # discrete: what a far window's distribution is over: "steps", a categorical per step whose p
    # draws give the window's summary, or "compositions", a categorical over the window summaries
    # themselves (the action counts, C(p + A - 1, A - 1) of them)
    far_search: Literal["steps", "compositions"] = "steps"
    # far_search="compositions": a fresh far window's probability of each composition, in the order
    # of window_compositions(p, A) (None: from initial_probs, or uniform)
    window_probs: Optional[Sequence[float]] = None
    # how the far windows are scored: "jumpy" (the planner's point: level l and above, one step per
    # tick, the window heads) or "full", a diagnostic: every far step imagined with every level and
    # scored by the bottom reward and continue heads, each window's summary spread over its p steps
    # in a random order (the same search, flat imagination's cost)
    far_imagination: Literal["jumpy", "full"] = "jumpy"

    def validate(self) -> None:
        self.horizon = max(self.horizon, 1)
        super().validate()
        if self.level < 1 or self.windows < 1:
            raise ValueError(f"ClockworkConfig: level and windows must be >= 1, found {self.level}, {self.windows}")
        if self.near_value not in ("plan", "sample"):
            raise ValueError(f"ClockworkConfig.near_value must be 'plan' or 'sample', found {self.near_value!r}")
        if self.far_search not in ("steps", "compositions"):
            raise ValueError(f"ClockworkConfig.far_search must be 'steps' or 'compositions', found {self.far_search!r}")
        if self.far_imagination not in ("jumpy", "full"):
            raise ValueError(f"ClockworkConfig.far_imagination must be 'jumpy' or 'full', found {self.far_imagination!r}")


class ClockworkPlanner(CEMPlanner):
    """CEM over a near window at the bottom level and far windows at an upper level (see above)."""

    config_class = ClockworkConfig

    def __init__(self, model, action_space: gym.Space, config: Optional[ClockworkConfig] = None,
                 num_envs: int = 1, observation_space: Optional[gym.Space] = None, seed: Optional[int] = None):
        config = config or ClockworkConfig()
        if model is not None:
            cfg = model.config
            if not 1 <= config.level < cfg.levels:
                raise ValueError(f"ClockworkPlanner: level must be an upper level in [1, {cfg.levels - 1}], "
                                 f"found {config.level}")
            if model.heads.level_rewards is None or cfg.action_levels != "all":
                raise ValueError("ClockworkPlanner: needs window-reward heads (model.level_reward_heads: true) "
                                 "and actions at every level (model.action_levels: all)")
        self.period = None if model is None else model.periods[config.level]
        config.horizon = self.period or 1
        super().__init__(model, action_space, config, num_envs, observation_space, None, seed)
        self.compositions = None  # far_search="compositions": every window summary [C, A]
        if config.far_search == "compositions":
            p, A = self.period, self.spec.dim
            if not self.spec.discrete:
                raise ValueError(f"ClockworkPlanner: far_search='compositions' needs a discrete action space, found "
                                 f"{action_space} (a Box window is already searched as its summary, p x one action)")
            count = math.comb(p + A - 1, A - 1)
            if count > MAX_COMPOSITIONS:
                raise ValueError(f"ClockworkPlanner: far_search='compositions' with {A} actions and windows of {p} "
                                 f"steps has {count} compositions, more than {MAX_COMPOSITIONS}: use far_search='steps'")
            self.compositions = window_compositions(p, A).to(self.device)  # (C, A)
        self._far_prior = self._window_prior(config.window_probs)
        self.far = self._initial_far(num_envs, config.windows)

    def _window_prior(self, probs) -> Optional[torch.Tensor]:
        """A fresh far window's distribution over :attr:`compositions` ``[C]`` (None without
        them): ``probs`` (checked), else with a step prior the multinomial probability of each
        composition (what ``p`` draws from it give, as in ``"steps"``), else uniform."""
        if self.compositions is None:
            return None
        C, p = len(self.compositions), self.period
        if probs is not None:
            if len(probs) != C:
                raise ValueError(f"ClockworkPlanner: window_probs has {len(probs)} values, expected one per "
                                 f"composition of {p} steps over {self.spec.dim} actions ({C})")
            check_probabilities("ClockworkConfig.window_probs", probs, positive=True)
            return torch.tensor([float(q) for q in probs], device=self.device)
        if self._prior is None:
            return torch.full((C,), 1.0 / C, device=self.device)
        counts = self.compositions
        log_pmf = (math.lgamma(p + 1) - torch.lgamma(counts + 1).sum(1)
                   + (counts * self._prior.log()).sum(1))  # multinomial log-probability of each count vector
        return log_pmf.softmax(0)  # sums to 1 up to rounding; softmax renormalises

    def set_prior(self, step_probs=None, window_probs=None) -> None:
        """From now on, start fresh near steps from ``step_probs`` and, with compositions, fresh far
        windows from ``window_probs`` (None: as :meth:`_window_prior` derives it); plans under way
        keep theirs."""
        super().set_prior(step_probs)
        self._far_prior = self._window_prior(window_probs)

    def _initial_far(self, B: int, W: int) -> dict:
        """A fresh far plan of ``W`` windows: per-step distributions (``"steps"``, like a near
        plan) or ``"probs"`` ``[B, W, C]`` over :attr:`compositions`."""
        if self.compositions is None:
            return self._initial_plan(B, W)
        return {"probs": self._far_prior.expand(B, W, -1).clone()}

    def _far_as_steps(self, far: dict) -> dict:
        """The far plan as per-step distributions ``[B, W, A]``: with compositions, a step's action
        probabilities are the expected counts over ``p``."""
        if self.compositions is None:
            return far
        return {"probs": far["probs"] @ self.compositions / self.period}

    def choose(self, state, is_first=None) -> torch.Tensor:
        if state.batch_size != self.num_envs:
            near, far = self._initial_plan(state.batch_size, self.period), \
                self._initial_far(state.batch_size, self.config.windows)
            return self._first_action(self.optimise_both(state, near, far)[0])
        near_steps = self._near_steps(state)
        self.plan, self.far = self.optimise_both(state, self.plan, self.far)
        action = self._first_action(self.plan)
        if near_steps == 1:  # the tick is executed now: the first far window becomes the near part
            self.plan = {k: v[:, :1].expand(-1, self.period, -1).clone()
                         for k, v in self._far_as_steps(self.far).items()}
            fresh = self._initial_far(self.num_envs, 1)
            self.far = {k: torch.cat([v[:, 1:], fresh[k]], 1) for k, v in self.far.items()}
        else:
            self.plan = self._shifted(self.plan)
        return action

    def _near_steps(self, state) -> int:
        """Imagined steps up to and including the upper level's next tick: ``o1 - step + 1``."""
        return (-state.step) % self.period + 1

    @torch.no_grad()
    def optimise_both(self, state, near: dict, far: dict):
        cfg, model, p = self.config, self.model, self.period
        B, N, W = state.batch_size, cfg.population, cfg.windows
        n_near = self._near_steps(state)
        start = model.settle(state)[torch.arange(B, device=self.device).repeat_interleave(N)]  # (B*N) states
        levels = list(range(cfg.level, model.levels))
        full = cfg.far_imagination == "full"
        for _ in range(cfg.iterations):
            near_cands = self._sample({k: v[:, :n_near] for k, v in near.items()}, N)  # (B, N, n_near, A)
            far_cands, summaries = self._sample_windows(far, N)  # (B, N, W, A) each
            head = model.imagine(start, n_near, actions=near_cands.reshape(B * N, n_near, -1), sample=False,
                                 validate=False)
            tails = summaries.reshape(B * N, W, -1)  # what the far call reads: window summaries, or their steps
            tails = self.window_steps(tails) if full else tails
            ends = head.last
            if cfg.near_value == "plan":  # each candidate again, followed by the far plan's windows
                if full and self.spec.discrete:  # one draw of the plan per environment (steps it can read)
                    planned = self._sample_windows(far, 1)[1][:, 0]  # (B, W, A)
                else:
                    planned = self._expected_summaries(far)  # (B, W, A)
                planned = self.window_steps(planned) if full else planned
                planned = planned[:, None].expand(-1, N, -1, -1).reshape(B * N, *tails.shape[1:])
                tails = torch.cat([tails, planned])  # (2*B*N, W | W*p, A)
                ends = ends[torch.arange(B * N, device=self.device).repeat(2)]
            alive = torch.ones(B * N, device=self.device) if head.cont is None else head.cont.prod(1)
            if full:
                tail = model.imagine(ends, W * p, actions=tails, sample=False, validate=False)
                far_values = self.full_far_values(tail, n_near)
            else:
                tail = model.imagine(ends, W * p, actions=tails, levels=levels, sample=False, validate=False)
                far_values = self.far_values(tail, n_near)
            self.imagine_calls += 2
            far_values = far_values.view(-1, B * N) * alive  # (1|2, B*N)
            near_return = discounted_return(head.reward, head.cont, cfg.discount)
            scores = (near_return + far_values[0]).view(B, N)  # each candidate with its own far windows
            near_scores = (near_return + far_values[-1]).view(B, N)  # "plan": with the plan's far windows
            refitted = self.refit({k: v[:, :n_near] for k, v in near.items()}, near_cands, near_scores)
            near = {k: torch.cat([refitted[k], v[:, n_near:]], 1) for k, v in near.items()}
            far = self.refit(far, far_cands, scores, self._far_min_prob)
        return near, far

    def far_values(self, tail, n_near: int) -> torch.Tensor:
        """The far windows' value ``[N]`` from their jumpy rollout: ``sum_w gamma**(n_near + p * w)
        * r_w * prod_{j < w} c_j``, ``r_w`` the window-reward head's prediction for window ``w`` (1
        to ``windows``) and ``c_j`` the window-continue head's probability that the episode still
        runs after window ``j`` (1 without ``model.level_continue_heads``): a window's reward counts
        if the episode was running when it began."""
        level, p = self.config.level, self.period
        rewards = tail.level_rewards[level]  # (N, W)
        W = rewards.shape[1]
        discount = self.config.discount ** (n_near + p * torch.arange(1, W + 1, device=rewards.device))  # (W,)
        weight = discount.expand_as(rewards)
        if tail.level_conts is not None:
            running = torch.cumprod(tail.level_conts[level], 1)  # (N, W): after window w
            weight = weight * torch.cat([torch.ones_like(running[:, :1]), running[:, :-1]], 1)
        return (rewards * weight).sum(1)

    def full_far_values(self, tail, n_near: int) -> torch.Tensor:
        """``far_imagination="full"``: the far steps' value ``[N]``, ``sum_j gamma**(n_near + j) *
        r_j * prod_{i < j} c_i`` over the bottom level's predicted rewards ``r`` and continue
        probabilities ``c`` of the ``windows * p`` steps after the near part (``j`` from 0)."""
        return self.config.discount**n_near * discounted_return(tail.reward, tail.cont, self.config.discount)

    def window_steps(self, summaries: torch.Tensor) -> torch.Tensor:
        """Far window summaries ``[M, W, A]`` -> per-step actions ``[M, W * p, A]`` that sum to them
        (``far_imagination="full"``). Discrete: a window's counts as one-hot steps in a uniformly
        random order (for ``far_search="steps"`` that is what its ``p`` draws were, in law; a
        fractional summary is spread evenly instead: every step ``summary / p``; with ``near_value=
        "plan"`` the near candidates are all followed by one draw of the far plan per environment,
        the same steps, rather than its expected windows). Box: the window's constant action
        ``summary / p`` at each step."""
        p = self.period
        M, W, A = summaries.shape
        steps = (summaries / p).repeat_interleave(p, dim=1)  # (M, W*p, A): spread evenly
        if not self.spec.discrete:
            return steps
        whole = (summaries == summaries.round()).flatten(1).all(1)  # (M,) rows of whole counts
        counts = summaries[whole].long().reshape(-1, A)  # (M'*W, A)
        if len(counts):
            order = torch.arange(A, device=summaries.device).expand(len(counts), A)
            index = order.flatten().repeat_interleave(counts.flatten()).view(len(counts), p)  # sorted actions
            keys = torch.rand(len(counts), p, generator=self.generator, device=summaries.device)
            index = index.gather(1, keys.argsort(1))  # each window's steps in a random order
            steps[whole] = torch.nn.functional.one_hot(index, A).to(steps.dtype).view(-1, W * p, A)
        return steps

    def _expected_summaries(self, far: dict) -> torch.Tensor:
        """The far plan's expected action summary per window, ``[B, W, A]``: ``p`` times the
        action probabilities (discrete) or the Gaussian means (Box)."""
        steps = self._far_as_steps(far)
        return self.period * (steps["probs"] if self.spec.discrete else steps["mean"])

    @property
    def _far_min_prob(self) -> float:
        """The far refit's floor per category: ``min_prob`` per action, or with compositions the
        same total mass (``min_prob * A``) spread over the ``C`` compositions."""
        if self.compositions is None:
            return self.config.min_prob
        return self.config.min_prob * self.spec.dim / len(self.compositions)

    def _sample_windows(self, far: dict, N: int):
        """Per window what the far plan is refitted to (``"steps"``: the window's action
        frequencies; ``"compositions"``: a one-hot over the compositions) and the window's summary
        (``[B, N, W, A]``)."""
        p, g = self.period, self.generator
        if self.compositions is not None:
            probs = far["probs"]  # (B, W, C)
            B, W, C = probs.shape
            index = torch.multinomial(probs.reshape(B * W, C), N, replacement=True, generator=g)  # (B*W, N)
            index = index.view(B, W, N).transpose(1, 2)  # (B, N, W)
            return torch.nn.functional.one_hot(index, C).float(), self.compositions[index]
        if self.spec.discrete:
            probs = far["probs"]  # (B, W, A)
            B, W, A = probs.shape
            draws = torch.multinomial(probs.reshape(B * W, A), N * p, replacement=True, generator=g)  # (B*W, N*p)
            counts = torch.nn.functional.one_hot(draws.view(B, W, N, p), A).float().sum(3)  # (B, W, N, A)
            counts = counts.transpose(1, 2)  # (B, N, W, A)
            return counts / p, counts
        step = self._sample(far, N)  # (B, N, W, A)
        return step, step * p

    def reset_plans(self, mask: torch.Tensor) -> None:
        super().reset_plans(mask)
        fresh = self._initial_far(self.num_envs, self.config.windows)
        self.far = {k: torch.where(mask[:, None, None], fresh[k], v) for k, v in self.far.items()}


def window_compositions(steps: int, actions: int) -> torch.Tensor:
    """Every action count vector of a window of ``steps`` discrete steps over ``actions`` actions,
    ``[C, actions]`` floats, ``C = comb(steps + actions - 1, actions - 1)``; the first action's
    count descending (for ``steps = 2, actions = 2``: ``[[2, 0], [1, 1], [0, 2]]``)."""
    if actions == 1:
        return torch.tensor([[float(steps)]])
    rows = [torch.cat([torch.full((len(rest), 1), float(first)), rest], 1)
            for first in range(steps, -1, -1) for rest in [window_compositions(steps - first, actions - 1)]]
    return torch.cat(rows)
