"""Host reads: the recorder finds them, and acting and imagination make none but the action's."""

import inspect

import gymnasium as gym
import numpy as np
import pytest
import torch

from cwworld.agents import ActionSpec, ActorCritic, ActorCriticConfig, CEMConfig, CEMPlanner, ClockworkConfig, ClockworkPlanner
from cwworld.clock import latest_ticks, range_tensor, tick_offsets
from cwworld.syncs import record_syncs

from conftest import tiny_model


def test_the_recorder_names_each_value_read_and_skips_the_optimizers_cpu_step_counters():
    x = torch.randn(5, requires_grad=True)
    with record_syncs() as reads:
        y = x * 2  # no read
        float(y.sum())
        if y.detach().max() > 100:  # __bool__
            pass
        y[y > 0]  # a boolean mask: data-dependent size
        y.detach().nonzero()
        y.detach().tolist()
    ops = [site.split()[-1] for site in reads.sites]
    assert ops == ["__float__", "__bool__", "__getitem__", "nonzero", "tolist"]
    assert all("test_syncs.py" in site for site in reads.sites)
    optimizer = torch.optim.Adam([x])
    x.grad = torch.ones(5)
    with record_syncs() as reads:
        optimizer.step()  # reads its CPU step counter: no device is waited for
    assert len(reads) == 0


def test_range_tensors_and_latest_ticks_match_their_lists():
    for start in range(13):
        for period in (1, 2, 4, 6):
            own = tick_offsets(start, 17, period)
            assert range_tensor(own).tolist() == list(own)
            for above_period in (period * 2, period * 3):
                above = tick_offsets(start, 17, above_period)
                want = [-1 if o < above.start else (o - above.start) // above.step for o in own] if len(above) \
                    else [-1] * len(own)
                assert latest_ticks(own, above).tolist() == want
    assert range_tensor(range(5, 3)).tolist() == []


def _agents(model, space):
    yield CEMPlanner(model, space, CEMConfig(population=16, elites=4, iterations=2, horizon=4), num_envs=3)
    yield ClockworkPlanner(model, space, ClockworkConfig(population=16, elites=4, iterations=2, windows=2),
                           num_envs=3)
    yield ActorCritic(model, space, ActorCriticConfig(horizon=4), num_envs=3)


def test_acting_reads_only_its_actions_back():
    """The filter step, the planners' batched imagination and the actor read no value to the host:
    the only reads of ``act`` are the actions going to the environments (``ActionSpec.to_env``)."""
    model = tiny_model(levels=2, factor=2, action_dim=2, reward_head=True, level_reward_heads=True,
                       windows="causal", action_low=[-1.0, -1.0], action_high=[1.0, 1.0]).eval()
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    frames = np.random.default_rng(0).integers(0, 256, (5, 3, 64, 64, 1), dtype=np.uint8)
    lines, first = inspect.getsourcelines(ActionSpec.to_env)
    to_env = tuple(f"agents/base.py:{n}" for n in range(first, first + len(lines)))  # installed or not
    for agent in _agents(model, space):
        agent.act(frames[0])
        with record_syncs() as reads:
            for t in range(1, 5):
                agent.act(frames[t], is_first=np.array([t == 3, False, False]))
        assert reads.sites and all(site.split()[0].endswith(to_env) for site in reads.sites), \
            (type(agent).__name__, reads.summary())
        assert {site.split()[-1] for site in reads.sites} <= {"cpu", "numpy"}


def test_imagine_checks_a_policys_actions_once_per_rollout_and_names_the_bad_step():
    model = tiny_model(action_dim=3)
    state = model.initial(2)
    calls = []

    def policy(s):
        calls.append(s.step)
        action = torch.zeros(2, 3)
        if s.step == 5:
            action[1, 2] = float("nan")
        return action

    with pytest.raises(ValueError, match="policy returned NaN or inf at step 5"):
        model.imagine(state, 8, policy=policy)
    with record_syncs() as reads:
        model.imagine(state, 4, policy=lambda s: torch.zeros(2, 3))
    assert len(reads) == 1  # the one finiteness check at the end
    with record_syncs() as reads:
        model.imagine(state, 4, policy=lambda s: torch.zeros(2, 3), validate=False)
    assert len(reads) == 0
