"""Agents: the Agent interface, CEM / MPPI / Clockwork planners on a trained world model."""

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from cwworld.agents import (ActorCritic, ActorCriticConfig, CEMConfig, CEMPlanner, ClockworkConfig, ClockworkPlanner,
                            MPPIConfig, MPPIPlanner, RandomAgent, make_agent)
from cwworld.agents.actor_critic import lambda_returns
from cwworld.config import AgentConfig, ConfigError

from conftest import load_benchmark, squares_video, tiny_model, train_on

SIDE, STEP = 12, 6


class PushSquare(gym.Env):
    """A 12-px square pushed by Box actions in [-1, 1]^2 (6 px per unit and step, clipped at the
    border); the reward on arriving at a frame is the square's x / 64: push right to earn."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0, 255, (64, 64, 1), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(0, 64 - SIDE, 2)
        return self._frame(), {}

    def step(self, action):
        self.pos = np.clip(self.pos + STEP * np.clip(action, -1, 1), 0, 64 - SIDE)
        return self._frame(), float(self.pos[1] / 64), False, False, {}

    def _frame(self):
        frame = np.zeros((64, 64, 1), np.uint8)
        y, x = self.pos.astype(int)
        frame[y : y + SIDE, x : x + SIDE] = 255
        return frame


def push_batch(rng, B, T):
    """Random-action sequences of PushSquare in the step-record layout."""
    image = np.zeros((B, T, 64, 64, 1), np.uint8)
    action = rng.uniform(-1, 1, (B, T, 2)).astype(np.float32)
    reward = np.zeros((B, T), np.float32)
    pos = rng.uniform(0, 64 - SIDE, (B, 2))
    for t in range(T):
        for b in range(B):
            y, x = pos[b].astype(int)
            image[b, t, y : y + SIDE, x : x + SIDE] = 255
        reward[:, t] = pos[:, 1] / 64
        pos = np.clip(pos + STEP * action[:, t], 0, 64 - SIDE)
    return {"image": torch.from_numpy(image), "action": torch.from_numpy(action), "reward": torch.from_numpy(reward)}


def _model(**kw):
    fields = dict(levels=2, factor=2, action_dim=2, stoch=8, deter=64, hidden=64, cnn_depth=8, dec_stddev=0.3,
                  reward_head=True, level_reward_heads=True, windows="causal", action_low=[-1.0, -1.0],
                  action_high=[1.0, 1.0])
    fields.update(kw)
    return tiny_model(**fields)


@pytest.fixture(scope="module")
def trained_model():
    """A world model of PushSquare from random play: 400 updates, about 30 s on 2 CPU cores."""
    torch.manual_seed(0)
    return train_on(_model(), lambda rng: push_batch(rng, 8, 8), 400).eval()


def _mean_reward(agent, envs: int = 8, steps: int = 10, seed: int = 0) -> float:
    env = gym.vector.SyncVectorEnv([PushSquare for _ in range(envs)])
    obs, _ = env.reset(seed=seed)
    agent.reset()
    total = 0.0
    for _ in range(steps):
        obs, reward, *_ = env.step(agent.act(obs))
        total += float(reward.mean())
    return total / steps


@pytest.mark.parametrize("planner", ["cem", "mppi", "clockwork"])
def test_a_planner_on_a_trained_world_model_beats_random_play(trained_model, planner):
    space = PushSquare().action_space
    if planner == "cem":
        agent = CEMPlanner(trained_model, space, CEMConfig(horizon=5, population=64, elites=8, iterations=3), 8, seed=0)
    elif planner == "mppi":
        agent = MPPIPlanner(trained_model, space, MPPIConfig(horizon=5, population=64, elites=8, iterations=3),
                            8, seed=0)
    else:
        agent = ClockworkPlanner(trained_model, space, ClockworkConfig(level=1, windows=3, population=64, elites=8,
                                                                       iterations=3), 8, seed=0)
    torch.manual_seed(0)
    planned = _mean_reward(agent)
    random = _mean_reward(RandomAgent(space, 8, seed=0))
    # random play stays near the middle (x / 64 about 0.4); pushing right reaches 52 / 64 = 0.81
    assert planned > random + 0.15, (planned, random)


def _recorded_imagine(model) -> list:
    """Wrap ``model.imagine`` so that every call appends ``(batch, horizon, kwargs)`` to the returned list."""
    calls, original = [], model.imagine

    def recording(state, horizon, **kw):
        calls.append((state.batch_size, horizon, kw))
        return original(state, horizon, **kw)

    model.imagine = recording
    return calls


@pytest.mark.parametrize("planner", ["cem", "mppi", "clockwork"])
def test_every_iteration_imagines_all_candidates_of_all_envs_in_one_batch(planner):
    model = _model()
    space = PushSquare().action_space
    recorded = _recorded_imagine(model)
    if planner == "clockwork":
        agent = ClockworkPlanner(model, space, ClockworkConfig(level=1, windows=3, population=16, elites=4,
                                                               iterations=3), 3)
    else:
        kind, config = (CEMPlanner, CEMConfig) if planner == "cem" else (MPPIPlanner, MPPIConfig)
        agent = kind(model, space, config(horizon=4, population=16, elites=4, iterations=3), 3)
    agent.act(squares_video(3, 1)[:, 0])
    calls = [(batch, horizon, kw.get("levels")) for batch, horizon, kw in recorded]
    if planner == "clockwork":  # a near rollout (to level 1's next tick) and a jumpy far one per iteration,
        # the far one over each candidate twice (its own far windows, the plan's: near_value "plan")
        assert calls == [(48, 2, None), (96, 6, [1])] * 3 and agent.imagine_calls == 6  # steps 1, 2; ticks 4, 6, 8
    else:
        assert calls == [(48, 4, None)] * 3 and agent.imagine_calls == 3


@pytest.mark.parametrize("near_value", ["plan", "sample"])
def test_clockwork_scores_near_candidates_with_the_far_plan_or_their_own_far_samples(near_value):
    model = _model()
    space = PushSquare().action_space
    recorded = _recorded_imagine(model)
    agent = ClockworkPlanner(model, space, ClockworkConfig(level=1, windows=3, population=8, elites=2, iterations=1,
                                                           near_value=near_value), 2, seed=0)
    plan_means = agent.far["mean"].clone()  # (B, W, A): the far plan before the decision
    agent.act(squares_video(2, 1)[:, 0])
    (actions,) = [kw["actions"] for _, _, kw in recorded if kw.get("levels")]  # the far call
    B, N, p = 2, 8, agent.period
    if near_value == "sample":  # every candidate with its own sampled windows
        assert actions.shape == (B * N, 3, 2) and actions.std(0).min() > 0
    else:  # own windows first, then every candidate followed by the plan's expected summaries
        assert actions.shape == (2 * B * N, 3, 2)
        own, planned = actions[: B * N].view(B, N, 3, 2), actions[B * N :].view(B, N, 3, 2)
        assert own.std(1).min() > 0
        assert torch.allclose(planned, p * plan_means[:, None].expand(-1, N, -1, -1))
    made = make_agent(AgentConfig(kind="clockwork", near_value=near_value, windows=3), model, space, 2)
    assert made.config.near_value == near_value
    with pytest.raises(ConfigError, match="agent.near_value: expected 'plan' or 'sample', found 'joint'"):
        AgentConfig(near_value="joint").validate()


def test_clockwork_far_windows_count_while_the_episode_is_predicted_to_run():
    agent = ClockworkPlanner(_model(level_continue_heads=True), PushSquare().action_space,
                             ClockworkConfig(level=1, windows=3, discount=0.5), 1)
    p = agent.period  # 2
    rewards = torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 4.0]])
    tail = SimpleNamespace(level_rewards=[None, rewards], level_conts=None)
    discount = 0.5 ** (1 + p * torch.arange(1.0, 4.0))  # one near step, then windows ending 2, 4, 6 steps on
    assert torch.allclose(agent.far_values(tail, 1), (rewards * discount).sum(1))
    # window w counts times the probability that the episode runs after windows 1 .. w-1
    tail.level_conts = [None, torch.tensor([[0.5, 0.5, 0.5], [0.0, 1.0, 1.0]])]
    expected = torch.stack([(torch.tensor([1.0, 0.5, 0.25]) * discount).sum(), discount[0]])
    assert torch.allclose(agent.far_values(tail, 1), expected)
    # a model with window-continue heads hands their predictions to the planner's far rollout
    model = _model(level_continue_heads=True)
    rollout = model.imagine(model.initial(2), 4, actions=torch.zeros(2, 2, 2), levels=[1], sample=False)
    assert rollout.level_conts[1].shape == (2, 2) and ((rollout.level_conts[1] > 0) & (rollout.level_conts[1] < 1)).all()


def test_clockwork_far_search_over_compositions_draws_and_refits_whole_window_summaries(monkeypatch):
    from cwworld.agents import clockwork

    counts = clockwork.window_compositions(4, 3)  # every way to spend 4 steps on 3 actions
    assert counts.shape == (15, 3) and (counts.sum(1) == 4).all() and len(counts.unique(dim=0)) == 15
    assert counts[0].tolist() == [4.0, 0.0, 0.0] and counts[-1].tolist() == [0.0, 0.0, 4.0]
    model = _model(action_low=None, action_high=None, action_dim=3)
    space = gym.spaces.Discrete(3)
    config = AgentConfig(kind="clockwork", windows=3, population=64, elites=4, iterations=1, far_search="compositions")
    agent = make_agent(config, model, space, 2, seed=0)
    p, C = agent.period, 6  # windows of 2 steps over 3 actions: 6 compositions
    assert agent.compositions.shape == (C, 3) and torch.allclose(agent.far["probs"], torch.full((2, 3, C), 1 / C))
    refit_to, summaries = agent._sample_windows(agent.far, 64)  # (B, N, W, C) one-hots, (B, N, W, A) counts
    assert torch.equal(summaries, refit_to @ agent.compositions) and (summaries.sum(-1) == p).all()
    # elites: the candidates with most steps of action 0 in their first window -> that window's plan moves to [2, 0, 0]
    far = agent.refit(agent.far, refit_to, summaries[:, :, 0, 0], agent._far_min_prob)
    assert (far["probs"][:, 0, 0] > 0.85).all() and torch.allclose(far["probs"].sum(-1), torch.ones(2, 3))
    assert far["probs"].min() >= 0.02 * 3 / C - 1e-6  # the floor keeps min_prob x A of mass, spread over the C
    steps = agent._far_as_steps(far)["probs"]  # per-step action probabilities: expected counts / p
    assert torch.allclose(steps, far["probs"] @ agent.compositions / p) and (steps[:, 0, 0] > 0.85).all()
    # acting: the far call's window summaries are whole compositions
    recorded = _recorded_imagine(model)
    agent.act(squares_video(2, 1)[:, 0])
    far_actions = [kw["actions"] for _, _, kw in recorded if kw.get("levels")][0][: 2 * 64]
    assert (far_actions.sum(-1) == p).all() and torch.equal(far_actions, far_actions.round())
    # with a prior, a fresh window's compositions are as likely as p draws from it make them
    prior = make_agent(AgentConfig(kind="clockwork", windows=3, far_search="compositions",
                                   initial_probs=[0.6, 0.2, 0.2]), model, space, 1)
    pmf = dict(zip(map(tuple, prior.compositions.tolist()), prior.far["probs"][0, 0].tolist()))
    assert pmf[(2.0, 0.0, 0.0)] == pytest.approx(0.36) and pmf[(1.0, 1.0, 0.0)] == pytest.approx(0.24)
    assert pmf[(0.0, 1.0, 1.0)] == pytest.approx(0.08)
    with pytest.raises(ValueError, match="far_search='compositions' needs a discrete action space, found Box"):
        ClockworkPlanner(_model(), PushSquare().action_space, ClockworkConfig(far_search="compositions"))
    monkeypatch.setattr(clockwork, "MAX_COMPOSITIONS", 5)
    with pytest.raises(ValueError, match="3 actions and windows of 2 steps has 6 compositions, more than 5"):
        make_agent(config, model, space, 1)
    with pytest.raises(ConfigError, match="agent.far_search: expected 'steps' or 'compositions', found 'windows'"):
        AgentConfig(far_search="windows").validate()


def _discrete_episode(actions, A=3):
    T = len(actions)
    return {"image": np.zeros((T, 4, 4, 1), np.uint8), "action": np.eye(A, dtype=np.float32)[actions],
            "reward": np.zeros(T, np.float32)}


@pytest.mark.parametrize("far_search", ["steps", "compositions"])
def test_clockwork_far_imagination_full_scores_the_same_windows_step_by_step_with_every_level(far_search):
    model = _model(action_low=None, action_high=None, action_dim=3)
    space = gym.spaces.Discrete(3)
    config = AgentConfig(kind="clockwork", windows=3, population=16, elites=4, iterations=1, far_search=far_search,
                         far_imagination="full")
    agent = make_agent(config, model, space, 2, seed=0)
    p, B, N = agent.period, 2, 16
    # window summaries -> one-hot steps that add up to them, in a random order; fractional ones spread evenly
    summaries = agent._sample_windows(agent.far, 64)[1].reshape(B * 64, 3, 3)
    steps = agent.window_steps(summaries)  # (M, 3 * p, 3)
    assert steps.shape == (B * 64, 3 * p, 3) and torch.equal(steps.sum(-1), torch.ones(B * 64, 3 * p))
    assert torch.equal(steps.view(B * 64, 3, p, 3).sum(2), summaries)
    mixed = torch.tensor([[[1.0, 1.0, 0.0]] * 3] * 200)  # one step each of actions 0 and 1: both orders occur
    firsts = agent.window_steps(mixed)[:, 0].argmax(-1)
    assert 50 < int((firsts == 0).sum()) < 150
    soft = torch.full((1, 3, 3), p / 3)
    assert torch.allclose(agent.window_steps(soft), torch.full((1, 3 * p, 3), 1 / 3))
    # acting: two imagine calls, the far one with every level over the windows' steps, one-hot
    recorded = _recorded_imagine(model)
    agent.act(squares_video(2, 1)[:, 0])
    assert len(recorded) == 2 and agent.imagine_calls == 2
    (batch, horizon, kw), = [call for call in recorded if call[1] == 3 * p]
    assert batch == 2 * B * N and kw.get("levels") is None and kw["actions"].shape == (2 * B * N, 3 * p, 3)
    assert torch.equal(kw["actions"].sum(-1), torch.ones(2 * B * N, 3 * p))  # own windows and the plan's draw
    planned = kw["actions"][B * N:].view(B, N, 3 * p, 3)
    assert torch.equal(planned, planned[:, :1].expand(-1, N, -1, -1))  # one draw per environment, shared
    # the far value: the far steps' discounted rewards, each counted while the episode is predicted to run
    agent.config.discount = 0.5
    tail = SimpleNamespace(reward=torch.tensor([[1.0, 2.0, 4.0], [1.0, 1.0, 1.0]]), cont=None)
    assert torch.allclose(agent.full_far_values(tail, 2), torch.tensor([0.25 * 3.0, 0.25 * 1.75]))
    tail.cont = torch.tensor([[0.5, 0.5, 0.5], [0.0, 1.0, 1.0]])
    assert torch.allclose(agent.full_far_values(tail, 1), torch.tensor([0.5 * (1 + 0.5 * 2 * 0.5 + 0.25 * 4 * 0.25),
                                                                        0.5]))
    # Box actions: a window's constant action at each of its steps
    box = ClockworkPlanner(_model(), PushSquare().action_space, ClockworkConfig(level=1, windows=2, population=8,
                           elites=2, iterations=1, far_imagination="full"), 2, seed=0)
    summary = torch.tensor([[[0.4, -1.0], [2.0, 0.0]]])
    assert torch.allclose(box.window_steps(summary), torch.tensor([[[0.2, -0.5]] * 2 + [[1.0, 0.0]] * 2]))
    action = box.act(squares_video(2, 1)[:, 0])
    assert action.shape == (2, 2) and np.all(np.abs(action) <= 1)
    with pytest.raises(ConfigError, match="agent.far_imagination: expected 'jumpy' or 'full', found 'flat'"):
        AgentConfig(far_imagination="flat").validate()
    with pytest.raises(ValueError, match="far_imagination must be 'jumpy' or 'full', found 'x'"):
        ClockworkConfig(far_imagination="x").validate()


def test_initial_probs_replay_starts_plans_from_the_replays_step_and_window_frequencies():
    from cwworld.agents.replay_prior import replay_action_priors, window_action_counts
    from cwworld.data.replay import ReplayBuffer

    replay = ReplayBuffer(None)
    replay.add_episode(_discrete_episode([0, 0, 1, 2, 0, 0, 0]))  # windows of 2 close at steps 2, 4, 6
    replay.add_episode(_discrete_episode([2, 2, 2, 1]))  # one window (step 4 is not in the episode)
    # windows hold the actions leading into their frames: action[o - 2], action[o - 1]; the last action leads nowhere
    episode = replay.streams[next(iter(replay.streams))]
    assert window_action_counts(episode.field("action"), episode.field("is_first"), 2).tolist() == \
        [[2, 0, 0], [0, 1, 1], [2, 0, 0]]
    cut = np.array([False, False, True, False, False])  # a stream cut by the capacity: its first steps are skipped
    assert window_action_counts(np.eye(3)[[1, 1, 0, 2, 2]], cut, 2).tolist() == [[1, 0, 1]]
    steps, windows = replay_action_priors(replay, 3, period=2)
    assert steps == pytest.approx((0.94 * np.array([4, 1, 4]) / 9 + 0.02).tolist())  # floored like a refit
    # compositions [2,0,0], [1,1,0], [1,0,1], [0,2,0], [0,1,1], [0,0,2]: seen 2, 0, 0, 0, 1, 1 times
    assert windows == pytest.approx((0.94 * np.array([2, 0, 0, 0, 1, 1]) / 4 + 0.01).tolist())
    assert replay_action_priors(ReplayBuffer(None), 3, period=2) == (None, None)  # nothing yet: uniform

    model = _model(action_low=None, action_high=None, action_dim=3)
    space = gym.spaces.Discrete(3)
    config = AgentConfig(kind="clockwork", windows=3, far_search="compositions", initial_probs="replay")
    config.validate()
    agent = make_agent(config, model, space, 2, replay=replay)
    assert torch.allclose(agent.plan["probs"], torch.tensor(steps).expand(2, 2, 3))
    assert torch.allclose(agent.far["probs"], torch.tensor(windows).expand(2, 3, 6))
    cem = make_agent(AgentConfig(kind="cem", horizon=2, initial_probs="replay"), model, space, 1, replay=replay)
    assert torch.allclose(cem.plan["probs"], torch.tensor(steps).expand(1, 2, 3))
    agent.set_prior(None, None)  # the replay had nothing yet: fresh steps and windows start uniform
    agent.reset()
    assert torch.allclose(agent.far["probs"], torch.full((2, 3, 6), 1 / 6))
    with pytest.raises(ValueError, match=r"initial_probs: replay needs the run's replay buffer"):
        make_agent(config, model, space, 1)
    with pytest.raises(ValueError, match=r"initial_probs: replay needs a discrete action space, found Box"):
        make_agent(AgentConfig(kind="cem", initial_probs="replay"), _model(), PushSquare().action_space, 1,
                   replay=replay)
    wrong = ReplayBuffer(None)
    wrong.add_episode(_discrete_episode([0, 1], A=2))
    with pytest.raises(ValueError, match=r"the replay's actions have shape \(2,\), expected \(3,\)"):
        make_agent(config, model, space, 1, replay=wrong)
    with pytest.raises(ConfigError, match="agent.initial_probs: expected a list of probabilities, 'replay' or null"):
        AgentConfig(initial_probs="buffer").validate()


def test_the_plan_is_warm_started_shifted_by_one_step():
    model = _model()
    agent = CEMPlanner(model, PushSquare().action_space, CEMConfig(horizon=4, population=8, elites=2), 2)
    known = {"mean": torch.arange(16.0).view(2, 4, 2) / 20, "std": torch.full((2, 4, 2), 0.3)}
    agent.plan = {k: v.clone() for k, v in known.items()}
    agent.optimise = lambda state, dist: dist  # keep the plan as it is: only the shift remains
    agent.starting[:] = False  # no episode start: the plan survives
    action = agent.act(squares_video(2, 1)[:, 0], is_first=[False, False])
    assert np.allclose(action, known["mean"][:, 0].numpy())
    assert torch.equal(agent.plan["mean"][:, :3], known["mean"][:, 1:])
    assert torch.equal(agent.plan["mean"][:, 3], torch.zeros(2, 2))  # a fresh last step: the middle of [-1, 1]
    assert torch.equal(agent.plan["std"][:, 3], torch.ones(2, 2))
    agent.reset([True, False])  # one environment starts over: its plan does, the other's does not
    assert torch.equal(agent.plan["mean"][0], torch.zeros(4, 2))
    assert torch.equal(agent.plan["mean"][1, :3], known["mean"][1, 1:])


def test_a_discrete_plan_starts_from_initial_probs_and_appends_them_when_it_shifts():
    model = _model(action_low=None, action_high=None, action_dim=3)
    space = gym.spaces.Discrete(3)
    prior = [0.6, 0.2, 0.2]
    agent = make_agent(AgentConfig(kind="clockwork", windows=3, population=8, elites=2, initial_probs=prior),
                       model, space, 2)
    assert torch.allclose(agent.plan["probs"], torch.tensor(prior).expand(2, agent.period, 3))
    assert torch.allclose(agent.far["probs"], torch.tensor(prior).expand(2, 3, 3))  # the far windows too
    cem = CEMPlanner(model, space, CEMConfig(horizon=4, population=8, elites=2, initial_probs=prior), 2)
    known = torch.tensor([0.1, 0.1, 0.8]).expand(2, 4, 3).clone()
    cem.plan = {"probs": known.clone()}
    cem.optimise = lambda state, dist: dist
    cem.starting[:] = False
    cem.act(squares_video(2, 1)[:, 0], is_first=[False, False])
    assert torch.equal(cem.plan["probs"][:, :3], known[:, 1:])
    assert torch.allclose(cem.plan["probs"][:, 3], torch.tensor(prior))  # the fresh step: the prior, not uniform
    assert torch.allclose(CEMPlanner(model, space, CEMConfig(horizon=2), 1).plan["probs"], torch.full((1, 2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"initial_probs \[0.5, 0.5\] needs a Discrete action space of 2 actions, "
                                         r"found Discrete\(3\)"):
        CEMPlanner(model, space, CEMConfig(initial_probs=[0.5, 0.5]))
    with pytest.raises(ValueError, match="initial_probs must be positive probabilities summing to 1"):
        CEMPlanner(model, space, CEMConfig(initial_probs=[0.6, 0.6, -0.2]))
    with pytest.raises(ConfigError, match=r"agent.initial_probs must be positive probabilities summing to 1, one per "
                                          r"action, got \[0.5, 0.6, 0.1\]"):
        AgentConfig(initial_probs=[0.5, 0.6, 0.1]).validate()


def test_resetting_one_environment_leaves_the_others_filter_state_alone():
    model = _model()
    space = PushSquare().action_space
    video = squares_video(2, 5, seed=3)
    other = video.clone()
    other[0, :3] = 255 - other[0, :3]  # env 0's old episode differs
    states = []
    for frames in (video, other):
        torch.manual_seed(0)
        agent = RandomAgent(space, 2, model=model, seed=0)
        for t in range(3):
            agent.act(frames[:, t])
        agent.reset([True, False])  # env 0 starts a new episode
        for t in range(3, 5):
            agent.act(frames[:, t])
        states.append(model.settle(agent.state))
    # env 0 forgot its old episode (bit for bit), env 1 saw the same frames in both runs
    for a, b in zip(states[0].h + states[0].z, states[1].h + states[1].z):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    plain = RandomAgent(space, 2, model=model, seed=0)
    for t in range(5):
        plain.act(video[:, t])
    plain_state = model.settle(plain.state)
    assert torch.equal(plain_state.h[0][1], states[0].h[0][1])  # env 1 as if nothing was reset
    assert not torch.equal(plain_state.h[0][0], states[0].h[0][0])


def test_agents_refuse_bad_input():
    model = _model()
    image_space = gym.spaces.Box(0, 255, (64, 64, 1), np.uint8)
    with pytest.raises(ValueError, match=r"action space Box\(-1.0, 1.0, \(3,\).*3 action dimensions.*action_dim=2"):
        CEMPlanner(model, gym.spaces.Box(-1.0, 1.0, (3,), np.float32))
    with pytest.raises(ValueError, match=r"observation space .*\(32, 32, 1\).*\[64, 64, 1\]"):
        CEMPlanner(model, PushSquare().action_space, observation_space=gym.spaces.Box(0, 255, (32, 32, 1), np.uint8))
    for bad in (dict(population=0), dict(horizon=0), dict(iterations=0), dict(elites=300)):
        with pytest.raises(ValueError, match=next(iter(bad)) if "elites" not in bad else "elites"):
            CEMPlanner(model, PushSquare().action_space, CEMConfig(**bad), observation_space=image_space)
    with pytest.raises(ValueError, match="reward head"):
        CEMPlanner(_model(reward_head=False), PushSquare().action_space)
    with pytest.raises(ValueError, match="level_reward_heads"):
        ClockworkPlanner(_model(level_reward_heads=False), PushSquare().action_space)
    with pytest.raises(ValueError, match="near_value must be 'plan' or 'sample', found 'joint'"):
        ClockworkPlanner(model, PushSquare().action_space, ClockworkConfig(near_value="joint"))
    agent = RandomAgent(PushSquare().action_space, 2, model=model)
    frames = squares_video(2, 2).float() / 255
    agent.act(frames[:, 0])
    broken = frames[:, 1].clone()
    broken[1, 5, 5] = float("nan")
    with pytest.raises(ValueError, match=r"observation at step 1 \(environments \[1\]\) holds NaN"):
        agent.act(broken)


def test_discrete_planning_returns_environment_actions():
    model = _model(action_low=None, action_high=None, action_dim=3)
    agent = CEMPlanner(model, gym.spaces.Discrete(3), CEMConfig(horizon=3, population=8, elites=2, iterations=2), 2)
    action = agent.act(squares_video(2, 1)[:, 0])
    assert action.dtype == np.int64 and action.shape == (2,) and set(action.tolist()) <= {0, 1, 2}
    probs = agent.plan["probs"]
    assert torch.allclose(probs.sum(-1), torch.ones(2, 3)) and probs.min() >= 0.02 * 0.99


def test_the_actor_critic_learns_in_imagination_to_push_right(trained_model):
    """200 updates on imagination from posterior states of random-play batches (about 12 s)."""
    space = PushSquare().action_space
    torch.manual_seed(0)
    agent = ActorCritic(trained_model, space, ActorCriticConfig(horizon=5, starts=128, actor_lr=1e-3, critic_lr=1e-3,
                                                                entropy=1e-3), 8, seed=0)
    greedy = ActorCritic(trained_model, space, ActorCriticConfig(sample_actions=False), 8, nets=agent.nets, seed=0)
    before = _mean_reward(greedy)
    rng = np.random.default_rng(1)
    for _ in range(200):
        batch = push_batch(rng, 8, 8)
        with torch.no_grad():
            _, _, traj = trained_model.loss_terms(batch, with_trajectory=True)
        metrics = agent.update(traj, batch)
    after = _mean_reward(greedy)
    random = _mean_reward(RandomAgent(space, 8, seed=0))
    assert abs(before - random) < 0.1  # the zero-initialised actor starts as a uniform policy
    assert after > before + 0.2, (before, after)  # pushing right: about 0.44 -> 0.72
    assert metrics["agent/return"] > 0 and np.isfinite(metrics["agent/critic_loss"])


def test_lambda_returns_match_their_recursion():
    reward = torch.tensor([[1.0, 0.0, 2.0]])
    cont = torch.tensor([[1.0, 0.5, 1.0]])
    value = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    d, lam = 0.9, 0.8
    r2 = 2.0 + d * 1.0 * 3.0
    r1 = 0.0 + d * 0.5 * ((1 - lam) * 2.0 + lam * r2)
    r0 = 1.0 + d * 1.0 * ((1 - lam) * 1.0 + lam * r1)
    assert torch.allclose(lambda_returns(reward, cont, value, d, lam), torch.tensor([[r0, r1, r2]]))
    # λ = 1: the discounted sum of rewards plus the last value; λ = 0: one-step TD targets
    assert torch.allclose(lambda_returns(reward, torch.ones(1, 3), value, 1.0, 1.0), torch.tensor([[6.0, 5.0, 5.0]]))
    assert torch.allclose(lambda_returns(reward, torch.ones(1, 3), value, 1.0, 0.0), torch.tensor([[2.0, 2.0, 5.0]]))


@pytest.mark.parametrize("windows", ["causal", "paper"])
def test_start_states_are_the_filter_states_after_every_step(windows):
    """The actor-critic's imagination starts equal ``observe(prefix).last`` at every step and phase
    (causal windows; with paper windows the upper posteriors have read their whole window, later
    frames included, so only the open action windows are compared)."""
    model = tiny_model(levels=3, factor=2, action_dim=2, stoch=4, deter=16, hidden=16, cnn_depth=4,
                       windows=windows).eval()
    B, T = 2, 11
    image = squares_video(B, T, seed=2)
    action = torch.randn(B, T, 2, generator=torch.Generator().manual_seed(0))
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = is_first[1, 5] = True
    traj = model.observe(image, action, is_first, sample=False)
    groups = model.start_states(traj, action, is_first)
    assert sorted(torch.cat([index for index, _ in groups]).tolist()) == list(range(B * T))
    for index, state in groups:
        for j, flat in enumerate(index.tolist()):
            b, t = divmod(flat, T)
            ref = model.observe(image[b:b + 1, :t + 1], action[b:b + 1, :t + 1], is_first[b:b + 1, :t + 1],
                                sample=False).last
            assert state.step % 4 == (t + 1) % 4
            for level in range(3) if windows == "causal" else []:
                assert torch.allclose(ref.h[level][0], state.h[level][j], atol=1e-5)
                assert torch.allclose(ref.z[level][0], state.z[level][j], atol=1e-5)
            for level in (1, 2):  # the open action windows, both kinds
                assert torch.allclose(ref.action_sum[level][0], state.action_sum[level][j], atol=1e-5)


def test_actor_critic_acts_in_every_action_space_and_refuses_a_model_without_rewards():
    model = _model(action_low=None, action_high=None, action_dim=3)
    agent = ActorCritic(model, gym.spaces.Discrete(3), ActorCriticConfig(horizon=3), 2, seed=0)
    action = agent.act(squares_video(2, 1)[:, 0])
    assert action.dtype == np.int64 and action.shape == (2,) and set(action.tolist()) <= {0, 1, 2}
    box = ActorCritic(_model(), PushSquare().action_space, ActorCriticConfig(horizon=3), 2, seed=0)
    action = box.act(squares_video(2, 1)[:, 0])
    assert action.shape == (2, 2) and np.all(np.abs(action) <= 1.0)
    with pytest.raises(ValueError, match="reward head"):
        ActorCritic(_model(reward_head=False), PushSquare().action_space)
    for bad in (dict(horizon=0), dict(starts=0), dict(discount=0.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ActorCritic(_model(), PushSquare().action_space, ActorCriticConfig(**bad))



def centre_batch(rng, B, T):
    """PushSquare random play, rewarded for pushing the square towards the centre column: the
    action after a frame pays +1 if its x push points from the square to the centre, else -1.
    The world model's reward head was trained on PushSquare's own reward (x / 64: push right)."""
    batch = push_batch(rng, B, T)
    x = (batch["image"][..., 0] > 0).float().argmax(-1).amax(-1).float()  # (B, T) left edge of the square
    toward = torch.where(x + SIDE / 2 < 32, 1.0, -1.0)
    reward = torch.zeros(B, T)
    reward[:, 1:] = torch.where(torch.sign(batch["action"][:, :-1, 1]) == toward[:, :-1], 1.0, -1.0)
    return {**batch, "reward": reward}, toward


def test_replay_losses_teach_the_actor_what_the_reward_head_does_not_know(trained_model):
    """150 actor-critic updates on real batches whose rewards (push towards the centre) the world
    model's reward head never saw (it predicts PushSquare's: push right). From imagination alone
    the actor pushes right wherever the square is; with ``replay`` it learns from the real rewards
    to push a square on the right to the left. The replay losses weigh 3x the imagined ones: at
    1x the outcome hung on the float summation order (with one thread the actor's mean saturated
    at +1 on both halves after 100 updates; with two it learned); at 3x it learns with one or two
    threads and either actor seed (measured: right half -0.88 to -0.95 after 150 updates)."""
    space = PushSquare().action_space
    push = {}
    for replay in (0.0, 3.0):
        torch.manual_seed(0)
        agent = ActorCritic(trained_model, space, ActorCriticConfig(horizon=5, starts=64, actor_lr=1e-3,
                                                                    critic_lr=1e-3, replay=replay), 8, seed=0)
        rng = np.random.default_rng(1)
        for _ in range(150):
            batch, _ = centre_batch(rng, 8, 8)
            with torch.no_grad():
                _, _, traj = trained_model.loss_terms(batch, with_trajectory=True)
            agent.update(traj, batch)
        batch, toward = centre_batch(np.random.default_rng(2), 16, 8)
        with torch.no_grad():
            _, _, traj = trained_model.loss_terms(batch, with_trajectory=True)
            real = agent._replay_targets(trained_model.start_states(traj, batch["action"]), batch)
            mean_x = agent.distribution(real["feats"]).mean[..., 1]  # (B, T-1): the policy's x push
        side = toward[:, :-1]
        push[replay] = (float(mean_x[side > 0].mean()), float(mean_x[side < 0].mean()))  # (left half, right half)
    assert push[0.0][1] > 0.3, push  # imagination only: the square on the right is pushed further right
    assert push[3.0][1] < -0.3 and push[3.0][0] > 0.3, push  # replay: towards the centre from either side

def test_replay_targets_are_lambda_returns_of_the_real_rewards_cut_at_episode_ends():
    model = _model().eval()
    agent = ActorCritic(model, PushSquare().action_space, ActorCriticConfig(discount=0.9, return_lambda=0.5,
                                                                            replay=1.0), 1, seed=0)
    batch = push_batch(np.random.default_rng(0), 1, 6)
    batch["reward"] = torch.tensor([[0.0, 1.0, 2.0, 0.0, 4.0, 8.0]])
    batch["is_terminal"] = torch.tensor([[False, False, True, False, False, False]])  # step 2 ends an episode
    batch["is_first"] = torch.tensor([[True, False, False, True, False, False]])  # step 3 starts the next
    with torch.no_grad():
        _, _, traj = model.loss_terms(batch, with_trajectory=True)
    groups = model.start_states(traj, batch["action"], batch["is_first"])
    real = agent._replay_targets(groups, batch)
    assert real["mask"].tolist() == [[1.0, 1.0, 0.0, 1.0, 1.0]]  # not the terminal step, not across the boundary
    assert real["feats"].shape == (1, 5, sum(model.stoch) + sum(model.deter))
    # the target critic starts at exactly 0 (zero-initialised last layer): returns are the λ-discounted rewards
    r4 = 8.0
    r3 = 4.0 + 0.9 * 0.5 * r4
    r1 = 2.0  # arriving at the terminal step 2: no continuation
    r0 = 1.0 + 0.9 * 0.5 * r1
    assert torch.allclose(real["returns"], torch.tensor([[r0, r1, 0.0, r3, r4]]))
    with pytest.raises(ValueError, match="replay"):
        ActorCriticConfig(replay=-1.0).validate()
    from cwworld.config import load_config

    with pytest.raises(ValueError, match="agent.replay"):
        load_config("cue_corridor_ac", ["agent.replay=-0.5"])
    assert make_agent(load_config("cue_corridor_ac", ["agent.replay=0.5"]).agent, _model(action_dim=3,
                      action_low=None, action_high=None), gym.spaces.Discrete(3)).config.replay == 0.5


def test_input_norm_standardises_the_actor_and_critic_features_with_moments_of_real_starts():
    from cwworld.agents.actor_critic import features

    model = _model().eval()
    space = PushSquare().action_space
    plain = ActorCritic(model, space, ActorCriticConfig(horizon=3), 1, seed=0)
    assert plain.nets.input_norm is None and not any("mean" in k for k in plain.nets.state_dict())
    agent = ActorCritic(model, space, ActorCriticConfig(horizon=3, input_norm=True), 1, seed=0)
    batch = push_batch(np.random.default_rng(0), 2, 6)
    with torch.no_grad():
        _, _, traj = model.loss_terms(batch, with_trajectory=True)
    agent.update(traj, batch)
    norm = agent.nets.input_norm
    starts = torch.cat([features(state) for _, state in model.start_states(traj, batch["action"])])
    assert int(norm.count) == 1  # the first update sets the moments to the start states'
    assert torch.allclose(norm.mean, starts.mean(0), atol=1e-5)
    assert torch.allclose(norm.var, starts.var(0, unbiased=False), atol=1e-5)
    x = torch.randn(3, norm.mean.numel())
    z = (x - norm.mean) * torch.rsqrt(norm.var + norm.eps)
    assert torch.allclose(agent.nets.actor(x), agent.nets.actor[1](z))
    assert torch.allclose(agent.nets.target_critic(x), agent.nets.target_critic[1](z))  # the same moments
    before = norm.mean.clone()
    agent.act(np.zeros((1, 64, 64, 1), np.uint8))  # acting never moves them
    assert torch.equal(norm.mean, before)
    copy = ActorCritic(model, space, ActorCriticConfig(horizon=3, input_norm=True), 1, seed=0)
    copy.load_state_dict(agent.state_dict())  # saved with the agent
    assert torch.equal(copy.nets.input_norm.mean, norm.mean) and int(copy.nets.input_norm.count) == 1


class _NegatedReward(torch.nn.Module):
    """A stand-in critic: minus ``scale`` times the world model's reward prediction at the features."""

    def __init__(self, model, scale):
        super().__init__()
        self.heads, self.scale, self.bottom = model.heads, scale, model.stoch[0] + model.deter[0]

    def forward(self, feats):
        return -self.scale * self.heads.reward_value(feats[..., :self.bottom])[..., None]


def test_plan_horizon_acts_by_cem_with_the_critic_as_terminal_value(trained_model):
    """An untrained actor that plans pushes right like CEM; a critic that values states by minus
    their reward turns the same planner around (it pushes left): the critic steers the plan."""
    space = PushSquare().action_space
    config = ActorCriticConfig(plan_horizon=3, plan_population=64, plan_elites=8, plan_iterations=3)
    agent = ActorCritic(trained_model, space, config, 8, seed=0)
    assert agent.planner is not None and agent.planner.terminal_value == agent.value
    torch.manual_seed(0)
    random = _mean_reward(RandomAgent(space, 8, seed=0))
    planned = _mean_reward(agent)  # the critic is zero at first: the plan follows the rewards alone
    assert planned > random + 0.15, (planned, random)
    mode = ActorCritic(trained_model, space, ActorCriticConfig(sample_actions=False), 8, nets=agent.nets, seed=0)
    assert abs(_mean_reward(mode) - random) < 0.1  # the actor itself is still the uniform policy
    agent.nets.critic = _NegatedReward(trained_model, 100.0)
    against = _mean_reward(agent)
    assert against < random - 0.1, (against, random)
    # plan_discount scales the critic's term by plan_discount**3 and the rewards' by less: at 0.05 the
    # rewards the world model predicts within the plan outweigh the same critic, and it pushes right again
    trusting = ActorCritic(trained_model, space, ActorCriticConfig(plan_horizon=3, plan_population=64, plan_elites=8,
                                                                   plan_iterations=3, plan_discount=0.05),
                           8, nets=agent.nets, seed=0)
    assert trusting.planner.config.discount == 0.05 and agent.planner.config.discount == config.discount
    assert _mean_reward(trusting) > random + 0.15
    assert make_agent(AgentConfig(kind="actor_critic", plan_horizon=3, plan_discount=0.8), trained_model, space,
                      2, evaluate=True).planner.config.discount == 0.8
    with pytest.raises(ConfigError, match="agent.plan_discount"):
        AgentConfig(plan_discount=1.5).validate()
    restored = ActorCritic(trained_model, space, config, 8, seed=1)
    restored.load_state_dict(ActorCritic(trained_model, space, config, 8, seed=0).state_dict())
    assert torch.equal(restored.planner.generator.get_state(), torch.Generator().manual_seed(0).get_state())
    with pytest.raises(ValueError, match="plan_horizon"):
        ActorCriticConfig(plan_horizon=-1).validate()


def test_agent_runs_table_reads_each_runs_last_evaluation(tmp_path, capsys):
    """benchmarks/agent_runs.py: the last eval record of each run, the run's model and seed from its
    config; a run without an evaluation gets dashes; a broken metrics line is named."""
    import json
    from cwworld.config import load_config, save_config
    table = load_benchmark("agent_runs")
    for name, levels, seed, evals in (("cw", 2, 3, [(800, 0.25), (1600, 0.97)]), ("flat", 1, 5, [])):
        run = tmp_path / name
        run.mkdir()
        save_config(load_config("cue_corridor_plan", [f"model.levels={levels}", f"train.seed={seed}"]), run / "config.yaml")
        with open(run / "metrics.jsonl", "w") as f:
            f.write(json.dumps({"step": 25, "loss": 1.0}) + "\n")
            for step, success in evals:
                f.write(json.dumps({"step": step, "eval/success": success, "eval/return": 2 * success - 1,
                                    "eval/length": 30.0, "replay_steps": 20_000 + step, "train_minutes": step / 60}) + "\n")
    rows = [table.run_row(tmp_path / name) for name in ("cw", "flat")]
    assert (rows[0]["levels"], rows[0]["seed"], rows[0]["step"], rows[0]["success"]) == (2, 3, 1600, 0.97)
    assert rows[0]["return"] == pytest.approx(0.94) and rows[0]["env_steps"] == 21_600
    assert (rows[1]["levels"], rows[1]["factor"], rows[1]["seed"], rows[1]["success"]) == (1, None, 5, None)
    assert table.main([str(tmp_path / "cw"), str(tmp_path / "flat")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "| 97% | 0.94 | 30.0 | 21,600 | 26.7 |" in out[2] and out[3].count("| - ") >= 5
    with open(tmp_path / "cw" / "metrics.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 4 is not JSON"):
        table.run_row(tmp_path / "cw")
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        table.run_row(tmp_path)


def test_cue_exits_finds_each_first_episodes_exit_and_its_cue():
    """benchmarks/cue_exits.py: an exit counts only in a sequence that starts at an episode's first
    step with the cue in view, and only before the next episode starts; the cue is read from the band."""
    from cwworld.envs.cue_corridor import BLUE, GREY, RED
    exits_in_batch = load_benchmark("cue_exits").exits_in_batch
    B, T = 5, 10
    image = np.zeros((B, T, 64, 64, 3), np.uint8)
    reward, is_first = np.zeros((B, T), np.float32), np.zeros((B, T), bool)
    for row, band in enumerate((RED, RED, BLUE, BLUE, GREY)):
        image[row, :, :12] = band
    is_first[[0, 2, 3, 4], 0] = True
    reward[0, 6] = -1.0                           # red cue, exit at step 6
    reward[1, 3] = 1.0                            # starts mid-episode: skipped
    is_first[2, 4], reward[2, 7] = True, 1.0      # the exit belongs to the next episode: skipped
    reward[3, 8], is_first[3, 9] = 1.0, True      # blue cue, exit at step 8
    reward[4, 2] = 1.0                            # no cue in view: skipped
    assert exits_in_batch({"image": image, "reward": reward, "is_first": is_first}) == [(0, 6, 0), (3, 8, 1)]
