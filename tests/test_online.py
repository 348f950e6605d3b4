"""Online filtering (observe_step), imagination with a policy, per-level rollout lengths."""

import pytest
import torch

from cwworld import CWState

from conftest import squares_video, tiny_model


def _assert_same_state(a: CWState, b: CWState, atol=1e-5):
    assert a.step == b.step
    for level in range(len(a.h)):
        assert torch.allclose(a.h[level], b.h[level], atol=atol), f"h[{level}] at step {a.step}"
        assert torch.allclose(a.z[level], b.z[level], atol=atol), f"z[{level}] at step {a.step}"


def test_observe_step_noise_is_drawn_once_per_tick():
    torch.manual_seed(0)
    model = tiny_model()  # k = 2, 3 levels: the top window spans 4 frames
    video = squares_video(1, 6)
    state = model.initial(1)
    states = []
    with torch.no_grad():
        for t in range(6):
            state = model.observe_step(state, video[:, t])
            states.append(state)
    # the bottom state of step 1 is final once step 4 starts a new top window: it never changes
    # afterwards, and recomputing inside a window reuses the noise drawn for each tick
    assert len(states[3].memory.noise[0]) == 4 and len(states[4].memory.noise[0]) == 1
    assert torch.equal(states[2].memory.noise[0][1], states[3].memory.noise[0][1])


def test_observe_step_bad_input():
    model = tiny_model(action_dim=2)
    state = model.initial(2)
    frame = squares_video(2, 1)[:, 0]
    with pytest.raises(ValueError, match=r"action_prev.*expected \[2, 2\].*found None"):
        model.observe_step(state, frame)
    with pytest.raises(ValueError, match=r"expected shape \[2, >= 1, 2\]|expected shape \[2, 1, 2\]"):
        model.observe_step(state, frame, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"expected \[2, H, W, C\]"):
        model.observe_step(state, squares_video(3, 1)[:, 0], torch.zeros(3, 2))


def test_state_helpers_keep_the_memory():
    model = tiny_model()
    video = squares_video(4, 3)
    state = model.initial(4)
    with torch.no_grad():
        for t in range(3):
            state = model.observe_step(state, video[:, t])
    half = state[:2]
    assert half.batch_size == 2 and half.memory.embeds[0][0].shape[0] == 2
    joined = CWState.cat([state[:2], state[2:]])
    assert torch.equal(joined.h[0], state.h[0]) and len(joined.memory.is_first) == 3
    with torch.no_grad():  # continuing from the re-joined state gives the same next state
        a = model.observe_step(state, video[:, 2], sample=False)
        b = model.observe_step(joined, video[:, 2], sample=False)
    _assert_same_state(a, b, atol=0)
    assert state.detach().memory is not None
    causal = tiny_model(action_dim=2, windows="causal")
    state = causal.initial(4)
    with torch.no_grad():
        state = causal.observe_step(state, video[:, 0], torch.zeros(4, 2))
        state = causal.observe_step(state, video[:, 1], torch.ones(4, 2))
    joined = CWState.cat([state[:1], state[1:]])  # the frames pending in the causal windows come along
    assert torch.equal(joined.memory.frames[2], state.memory.frames[2]) and joined.memory.frames[2].shape[1] == 1
    assert torch.equal(joined.action_sum[1], state.action_sum[1]) and state.embed_sum[0] is None
    with torch.no_grad():
        a = causal.observe_step(joined, video[:, 2], torch.ones(4, 2), sample=False)
        b = causal.observe_step(state, video[:, 2], torch.ones(4, 2), sample=False)
    _assert_same_state(a, b, atol=0)
    with pytest.raises(ValueError, match="settle them first"):
        CWState.cat([state[:1], causal.settle(state[1:])])


def test_imagine_with_a_policy_equals_imagine_with_its_actions():
    torch.manual_seed(0)
    model = tiny_model(action_dim=3, action_levels="all")
    state = model.observe(squares_video(2, 5), torch.randn(2, 5, 3)).last  # mid-window start (step 5)
    planned = torch.randn(2, 11, 3)
    calls = []

    def policy(s):
        calls.append(s.step)
        return planned[:, len(calls) - 1]

    with torch.no_grad():
        by_policy = model.imagine(state, 11, policy=policy, sample=False)
        by_actions = model.imagine(state, 11, actions=planned, sample=False)
    assert calls == list(range(5, 16))
    for level in range(3):
        assert torch.allclose(by_policy.levels[level].h, by_actions.levels[level].h, atol=1e-5)
        assert torch.allclose(by_policy.levels[level].z, by_actions.levels[level].z, atol=1e-5)
    assert torch.equal(by_policy.actions, planned)
    _assert_same_state(by_policy.last, by_actions.last)


def test_policy_errors():
    model = tiny_model(action_dim=3)
    state = model.initial(2)
    with pytest.raises(ValueError, match=r"policy returned shape \(2, 4\) at step 0, expected \[2, 3\]"):
        model.imagine(state, 3, policy=lambda s: torch.zeros(2, 4))
    with pytest.raises(ValueError, match="either policy or actions"):
        model.imagine(state, 3, policy=lambda s: torch.zeros(2, 3), actions=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="needs an action-conditioned model"):
        tiny_model().imagine(tiny_model().initial(1), 2, policy=lambda s: torch.zeros(1, 1))


@pytest.mark.parametrize("phase", range(9))
@pytest.mark.parametrize("horizon", [9, 10, 13])
def test_imagine_lengths_for_every_clock_phase_of_a_3_level_k3_model(phase, horizon):
    model = tiny_model(factor=3)  # periods 1, 3, 9
    state = model.initial(1)
    state.step = phase
    rollout = model.imagine(state, horizon)
    for level, period in enumerate((1, 3, 9)):
        expected = sum(1 for t in range(phase, phase + horizon) if t % period == 0)
        assert len(rollout.levels[level]) == expected, (level, phase, horizon)
    assert rollout.last.step == phase + horizon
    jumpy = model.imagine(state, horizon, levels=[1, 2])
    assert jumpy.levels[0] is None and len(jumpy.levels[1]) == len(rollout.levels[1])
