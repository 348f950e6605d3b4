"""World model v2: causal windows, carried windows (composition), full resets, tick alignment."""

import pytest
import torch

from cwworld import CWState
from cwworld.states import FilterMemory, PendingFrames
from cwworld.clock import forward_window_sums, pending_sum, segment_starts, window_sums

from conftest import squares_video, tiny_model


def _assert_same_state(a: CWState, b: CWState, atol=1e-5, exact=False):
    assert a.step == b.step
    for level in range(len(a.h)):
        for name, x, y in (("h", a.h[level], b.h[level]), ("z", a.z[level], b.z[level])):
            ok = torch.equal(x, y) if exact else torch.allclose(x, y, atol=atol)
            assert ok, f"{name}[{level}] at step {a.step}: max diff {(x - y).abs().max():.3g}"
        for name, xs, ys in (("action_sum", a.action_sum, b.action_sum), ("embed_sum", a.embed_sum, b.embed_sum)):
            x, y = xs[level], ys[level]
            assert (x is None) == (y is None), f"{name}[{level}]"
            if x is not None:
                ok = torch.equal(x, y) if exact else torch.allclose(x, y, atol=atol * 10)
                assert ok, f"{name}[{level}] at step {a.step}: max diff {(x - y).abs().max():.3g}"


def _model(factor, windows="causal", **kw):
    return tiny_model(factor=factor, action_dim=2, action_levels="all", windows=windows, **kw)  # 3 levels


def _episode_data(factor, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    video = squares_video(2, T, seed=seed)
    action = torch.rand(2, T, 2, generator=g) * 2 - 1
    is_first = torch.zeros(2, T, dtype=torch.bool)
    is_first[:, 0] = True
    if T > factor + 1:
        is_first[1, factor + 1] = True  # a new episode inside windows of levels 1 and 2
    return video, action, is_first


# ----------------------------------------------------------------------------- the window arithmetic


def test_window_sums_follow_the_tick_alignment_and_stop_at_episode_starts():
    x = torch.arange(1.0, 9.0).view(1, 8, 1)  # x[t] = t + 1
    seg = segment_starts(None, 8, 1, "cpu")
    # period 4 ticks at 0 and 4: windows (-4, 0] and (0, 4]
    assert window_sums(x, range(0, 8, 4), 4, seg)[0, :, 0].tolist() == [1.0, 2 + 3 + 4 + 5]
    # the part before the chunk arrives as a carry and is added to the first window only
    assert window_sums(x, range(0, 8, 4), 4, seg, carry=torch.tensor([[10.0]]))[0, :, 0].tolist() == [11.0, 14.0]
    # an episode start at t = 2 cuts the window (0, 4] to [2, 4] and drops the carry
    is_first = torch.zeros(1, 8, dtype=torch.bool)
    is_first[0, 2] = True
    seg = segment_starts(is_first, 8, 1, "cpu")
    assert seg[0].tolist() == [-1, -1, 2, 2, 2, 2, 2, 2]
    assert window_sums(x, range(0, 8, 4), 4, seg)[0, :, 0].tolist() == [1.0, 3 + 4 + 5]
    # the open window after the last tick (4): steps 5..7
    assert pending_sum(x, range(0, 8, 4), seg)[0, 0].item() == 6 + 7 + 8
    # paper windows [o, o + 4) stop before the next episode start
    assert forward_window_sums(x, range(0, 8, 4), 4, is_first)[0, :, 0].tolist() == [1 + 2, 5 + 6 + 7 + 8]


# ----------------------------------------------------------------------------- composition


@pytest.mark.parametrize("factor", [2, 3])
def test_imagination_composes_across_any_cut_from_every_phase(factor):
    torch.manual_seed(0)
    model = _model(factor)
    K = factor**2
    horizon = K + 2
    with torch.no_grad():
        for phase in range(K + 1):
            video, action, _ = _episode_data(factor, phase + 1, seed=phase)
            state = model.observe(video, action, sample=False).last
            plan = torch.rand(2, horizon, 2) * 2 - 1
            whole = model.imagine(state, horizon, actions=plan, sample=False)
            for cut in range(1, horizon):
                first = model.imagine(state, cut, actions=plan[:, :cut], sample=False)
                second = model.imagine(first.last, horizon - cut, actions=plan[:, cut:], sample=False)
                _assert_same_state(second.last, whole.last)
                for level in range(3):
                    joined = torch.cat([first.levels[level].h, second.levels[level].h], 1)
                    assert torch.allclose(joined, whole.levels[level].h, atol=1e-5), (phase, cut, level)
            # with a policy: one step at a time is the same rollout
            calls = []

            def policy(s):
                calls.append(s.step)
                return plan[:, len(calls) - 1]

            by_policy = model.imagine(state, horizon, policy=policy, sample=False)
            _assert_same_state(by_policy.last, whole.last)
            assert calls == list(range(state.step, state.step + horizon))
            one = model.imagine(state, 1, actions=plan[:, :1], sample=False)  # works at every phase
            assert one.last.step == state.step + 1


@pytest.mark.parametrize("factor", [2, 3])
def test_chunked_observe_equals_one_piece_with_causal_windows(factor):
    torch.manual_seed(0)
    model = _model(factor)
    T = 2 * factor**2 + 3
    video, action, is_first = _episode_data(factor, T)
    with torch.no_grad():
        whole = model.observe(video, action, is_first, sample=False)
        for cut in range(1, T):  # cuts in the middle of every level's window
            a = model.observe(video[:, :cut], action[:, :cut], is_first[:, :cut], sample=False)
            b = model.observe(video[:, cut:], action[:, cut:], is_first[:, cut:], state=a.last, sample=False)
            _assert_same_state(b.last, whole.last)
            for level in range(3):
                joined = torch.cat([a.posterior[level].h, b.posterior[level].h], 1)
                assert torch.allclose(joined, whole.posterior[level].h, atol=1e-5), (cut, level)


@pytest.mark.parametrize("windows", ["paper", "causal"])
@pytest.mark.parametrize("factor", [2, 3])
def test_observe_step_frame_by_frame_equals_observe_on_every_prefix(factor, windows):
    torch.manual_seed(0)
    model = _model(factor, windows)
    T = 2 * factor**2 + 3  # past two top-level windows, ending mid-window of every level
    video, action, is_first = _episode_data(factor, T, seed=4)
    state = model.initial(2)
    with torch.no_grad():
        for t in range(T):
            prev = torch.zeros(2, 2) if t == 0 else action[:, t - 1]
            state = model.observe_step(state, video[:, t], prev, is_first[:, t], sample=False)
            prefix = model.observe(video[:, : t + 1], action[:, : t + 1], is_first[:, : t + 1], sample=False)
            _assert_same_state(model.settle(state), prefix.last)
    assert state.step == T and isinstance(state.memory, PendingFrames if windows == "causal" else FilterMemory)


# ----------------------------------------------------------------------------- resets


@pytest.mark.parametrize("windows", ["paper", "causal"])
@pytest.mark.parametrize("factor", [2, 3])
def test_an_episode_start_cuts_every_level_off_the_past_at_every_phase(factor, windows):
    """Change everything before the start: every state from it on is bit-identical."""
    torch.manual_seed(0)
    model = _model(factor, windows)
    K = factor**2
    T = 2 * K + 1
    g = torch.Generator().manual_seed(1)
    video = squares_video(1, T, seed=2)
    action = torch.rand(1, T, 2, generator=g)
    with torch.no_grad():
        for start in range(1, K + 2):  # every phase of the top level's window
            is_first = torch.zeros(1, T, dtype=torch.bool)
            is_first[0, start] = True
            other_video, other_action = video.clone(), action.clone()
            other_video[:, :start] = 255 - other_video[:, :start]
            other_action[:, :start] = torch.rand(1, start, 2, generator=g) * 5
            a = model.observe(video, action, is_first, sample=False)
            b = model.observe(other_video, other_action, is_first, sample=False)
            for level, period in enumerate(model.periods):
                first_tick = -(-start // period)  # ticks at or after the start
                assert torch.equal(a.posterior[level].h[:, first_tick:], b.posterior[level].h[:, first_tick:]), \
                    (start, level)
                assert torch.equal(a.posterior[level].z[:, first_tick:], b.posterior[level].z[:, first_tick:])
            _assert_same_state(a.last, b.last, exact=True)
            # the same online, frame by frame
            sa, sb = model.initial(1), model.initial(1)
            for t in range(T):
                prev = torch.zeros(1, 2) if t == 0 else action[:, t - 1]
                other_prev = torch.zeros(1, 2) if t == 0 else other_action[:, t - 1]
                sa = model.observe_step(sa, video[:, t], prev, is_first[:, t], sample=False)
                sb = model.observe_step(sb, other_video[:, t], other_prev, is_first[:, t], sample=False)
                if t >= start:  # (frames pending before the start weigh exactly 0)
                    _assert_same_state(model.settle(sa), model.settle(sb), exact=True)
            if windows == "causal":  # and in chunks cut before the start
                cut = max(start - 1, 1)
                pieces = []
                for v, act in ((video, action), (other_video, other_action)):
                    first = model.observe(v[:, :cut], act[:, :cut], is_first[:, :cut], sample=False)
                    pieces.append(model.observe(v[:, cut:], act[:, cut:], is_first[:, cut:], state=first.last,
                                                sample=False))
                _assert_same_state(pieces[0].last, pieces[1].last, exact=True)


def test_an_episode_start_resets_the_loss_terms_after_it():
    torch.manual_seed(0)
    model = _model(2, reward_head=True, level_reward_heads=True)
    T, start = 12, 5
    video = squares_video(1, T, seed=3)
    action, reward = torch.rand(1, T, 2), torch.rand(1, T)
    is_first = torch.zeros(1, T, dtype=torch.bool)
    is_first[0, start] = True
    batch = {"image": video, "action": action, "reward": reward, "is_first": is_first}
    other = {"image": 255 - video, "action": action * 0, "reward": reward * 3, "is_first": is_first}
    for key in ("image", "action", "reward"):
        other[key] = torch.cat([other[key][:, :start], batch[key][:, start:]], 1)
    # the level-2 (period 4) head at tick 8 sums rewards 5..8; the one at tick 4 sums 1..4
    with torch.no_grad():
        a = model.observe(batch["image"], batch["action"], is_first, sample=False)
        b = model.observe(other["image"], other["action"], is_first, sample=False)
    pa = model.heads.predict(a.posterior)
    pb = model.heads.predict(b.posterior)
    assert torch.equal(pa["reward"][:, start:], pb["reward"][:, start:])
    assert torch.equal(pa["level_rewards"][2][:, 2:], pb["level_rewards"][2][:, 2:])
    assert not torch.equal(pa["reward"][:, :start], pb["reward"][:, :start])


# ----------------------------------------------------------------------------- alignment


def test_upper_levels_read_the_actions_leading_into_their_window():
    model = tiny_model(action_dim=1, action_levels="all")  # periods 1, 2, 4
    action = torch.arange(1, 9, dtype=torch.float32).view(1, 8, 1)  # action[t] = t + 1
    captured = []
    hook = model.action_mlps[0].register_forward_hook(lambda m, inp, out: captured.append(inp[0].clone()))
    model.observe(squares_video(1, 8), action)
    hook.remove()
    # level 1 tick o conditions on action[o-2] + action[o-1]: o=0 -> 0, o=2 -> 1+2, o=4 -> 3+4, o=6 -> 5+6
    assert captured[0][0, :, 0].tolist() == [0.0, 3.0, 7.0, 11.0]


def test_jumpy_imagination_takes_one_summary_per_window_and_scores_the_plan():
    torch.manual_seed(0)
    model = tiny_model(action_dim=2, action_levels="all", windows="causal", level_reward_heads=True)
    state = model.observe(squares_video(2, 4), torch.rand(2, 4, 2)).last  # step 4: levels 1, 2 tick next at 4
    plan = torch.rand(2, 12, 2)
    full = model.imagine(state, 12, actions=plan, sample=False)
    # level 1 ticks at global 4, 6, ..., 14; the action leading into step 4 is plan[:, 0]
    summaries = torch.stack([plan[:, 0]] + [plan[:, i - 1] + plan[:, i] for i in range(2, 12, 2)], 1)
    jumpy = model.imagine(state, 12, actions=summaries, levels=[1, 2], sample=False)
    for level in (1, 2):
        assert torch.allclose(jumpy.levels[level].h, full.levels[level].h, atol=1e-5)
    # the window-reward head sees the plan: another plan, another predicted return
    other = model.imagine(state, 12, actions=summaries + 1, levels=[1, 2], sample=False)
    assert not torch.allclose(other.level_rewards[1], jumpy.level_rewards[1])
    with pytest.raises(ValueError, match=r"one summary per tick of level 1.*expected shape \[2, 6, 2\]"):
        model.imagine(state, 12, actions=plan, levels=[1, 2])
