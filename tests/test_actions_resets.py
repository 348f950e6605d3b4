"""Action conditioning at every level and episode resets inside the unroll."""

import torch

from conftest import squares_video, tiny_model


def test_is_first_resets_every_level():
    """A second episode that starts on a top-level tick is observed as if alone."""
    model = tiny_model()  # 3 levels, k = 2: all levels tick at t = 4
    first, second = squares_video(1, 4, seed=1), squares_video(1, 4, seed=2)
    both = torch.cat([first, second], dim=1)
    is_first = torch.zeros(1, 8, dtype=torch.bool)
    is_first[0, 0] = is_first[0, 4] = True
    joined = model.observe(both, is_first=is_first, sample=False)
    alone = model.observe(second, sample=False)
    assert torch.allclose(joined.posterior[0].h[:, 4:], alone.posterior[0].h, atol=1e-6)
    assert torch.allclose(joined.posterior[1].h[:, 2:], alone.posterior[1].h, atol=1e-6)
    assert torch.allclose(joined.posterior[2].h[:, 1:], alone.posterior[2].h, atol=1e-6)
    # without the flag the past leaks in
    leaky = model.observe(both, sample=False)
    assert not torch.allclose(leaky.posterior[0].h[:, 4:], alone.posterior[0].h, atol=1e-4)


def test_bottom_level_reads_the_previous_action():
    model = tiny_model(action_dim=2, action_levels="bottom")
    assert model.action_dims == [2, 0, 0]
    action = torch.arange(12, dtype=torch.float32).view(1, 6, 2)
    captured = []
    cell = model.cells[0]
    hook = cell.prior_in_cond.register_forward_hook(lambda m, inp, out: captured.append(inp[0].clone()))
    model.observe(squares_video(1, 6), action)
    hook.remove()
    actions_read = captured[0][0, :, -2:]  # [context, action] -> the action part
    assert torch.equal(actions_read[0], torch.zeros(2)) and torch.equal(actions_read[1:], action[0, :-1])


def test_actions_change_the_prediction():
    model = tiny_model(action_dim=2)
    video = squares_video(1, 4)
    actions = torch.zeros(1, 4 + 6, 2)
    other = actions.clone()
    other[:, 4:] = 1.0
    torch.manual_seed(0)
    a = model.imagine(model.observe(video, action=actions[:, :4]).last, 6, actions=actions[:, 3:9], sample=False)
    torch.manual_seed(0)
    b = model.imagine(model.observe(video, action=actions[:, :4]).last, 6, actions=other[:, 3:9], sample=False)
    assert torch.allclose(a.levels[0].h[:, 0], b.levels[0].h[:, 0])  # actions[:, 3] is the same
    assert not torch.allclose(a.levels[0].h[:, 2:], b.levels[0].h[:, 2:])


def test_jumpy_imagination_rolls_only_the_upper_levels():
    model = tiny_model()
    state = model.observe(squares_video(2, 4)).last
    calls = {level: 0 for level in range(3)}
    hooks = [cell.gru.register_forward_hook(lambda m, i, o, level=level: calls.__setitem__(level, calls[level] + 1))
             for level, cell in enumerate(model.cells)]
    rollout = model.imagine(state, 16, levels=[1, 2])
    for h in hooks:
        h.remove()
    assert calls == {0: 0, 1: 8, 2: 4}
    assert rollout.levels[0] is None and rollout.features is None
    assert [len(rollout.levels[1]), len(rollout.levels[2])] == [8, 4]
