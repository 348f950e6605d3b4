"""Agents: the Agent interface, CEM / MPPI / Clockwork planners on a trained world model."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from cwworld.agents import (CEMConfig, CEMPlanner, ClockworkConfig, ClockworkPlanner, MPPIConfig, MPPIPlanner,
                            RandomAgent)

from conftest import squares_video, tiny_model, train_on

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


@pytest.mark.parametrize("planner", ["cem", "mppi", "clockwork"])
def test_every_iteration_imagines_all_candidates_of_all_envs_in_one_batch(planner):
    model = _model()
    space = PushSquare().action_space
    calls = []
    original = model.imagine

    def counting(state, horizon, **kw):
        calls.append((state.batch_size, horizon, kw.get("levels")))
        return original(state, horizon, **kw)

    model.imagine = counting
    if planner == "clockwork":
        agent = ClockworkPlanner(model, space, ClockworkConfig(level=1, windows=3, population=16, elites=4,
                                                               iterations=3), 3)
    else:
        kind, config = (CEMPlanner, CEMConfig) if planner == "cem" else (MPPIPlanner, MPPIConfig)
        agent = kind(model, space, config(horizon=4, population=16, elites=4, iterations=3), 3)
    agent.act(squares_video(3, 1)[:, 0])
    if planner == "clockwork":  # a near rollout (to level 1's next tick) and a jumpy far one per iteration
        assert calls == [(48, 2, None), (48, 6, [1])] * 3 and agent.imagine_calls == 6  # steps 1, 2; ticks 4, 6, 8
    else:
        assert calls == [(48, 4, None)] * 3 and agent.imagine_calls == 3


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
