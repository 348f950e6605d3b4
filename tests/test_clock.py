"""The clock: level l ticks every k**l steps and holds its state in between."""

import pytest
import torch

from cwworld import level_lengths, tick_offsets
from conftest import squares_video, tiny_model


def test_paper_clock_gives_100_17_3_active_steps():
    assert level_lengths(100, 6, 3) == [100, 17, 3]


@pytest.mark.parametrize("T, k, L, expected", [(40, 6, 3, [40, 7, 2]), (1, 6, 3, [1, 1, 1]),
                                               (37, 6, 3, [37, 7, 2]), (10, 1, 3, [10, 10, 10]),
                                               (9, 3, 3, [9, 3, 1]), (10, 3, 3, [10, 4, 2])])
def test_active_steps_are_ceil_T_over_k_to_the_l(T, k, L, expected):
    assert level_lengths(T, k, L) == expected


def test_clock_phase_continues_from_start_step():
    # level with period 6, chunk of 10 steps starting at global step 4: ticks at global 6 and 12
    assert list(tick_offsets(4, 10, 6)) == [2, 8]
    # level 2 (period 36) next ticks at global step 36, offset 32: not in these 10 steps
    assert list(tick_offsets(4, 10, 36)) == []
    assert level_lengths(10, 6, 3, start=4) == [10, 2, 0]
    assert level_lengths(40, 6, 3, start=4) == [40, 7, 1]  # level 2 only at offset 32


def test_observe_gives_each_level_its_number_of_ticks():
    model = tiny_model()  # 3 levels, k = 2
    traj = model.observe(squares_video(2, 9))
    assert [len(p) for p in traj.posterior] == [9, 5, 3]
    assert [len(p) for p in traj.prior] == [9, 5, 3]
    assert traj.last.step == 9


def test_upper_state_is_held_over_its_children():
    model = tiny_model()
    T, k = 12, 2
    feats = torch.arange(6, dtype=torch.float32).view(1, 6, 1)  # level-1 features at its 6 ticks
    held = torch.full((1, 1), -1.0)
    seg = torch.full((1, T), -1)  # no episode start
    ctx = model._context((range(0, T, k), feats, held), range(T), torch.arange(T), seg)
    # bottom step t reads level 1's state from its tick at floor(t / k)
    assert ctx[0, :, 0].tolist() == [t // k for t in range(T)]


def test_context_before_the_first_upper_tick_is_the_held_state():
    model = tiny_model()
    # chunk starts at global step 3: level 1 (period 2) next ticks at offset 1
    feats = torch.tensor([[[10.0], [11.0]]])  # its ticks at offsets 1 and 3
    held = torch.tensor([[-1.0]])
    ctx = model._context((range(1, 4, 2), feats, held), range(4), torch.arange(4), torch.full((1, 4), -1))
    assert ctx[0, :, 0].tolist() == [-1.0, 10.0, 10.0, 11.0]


def test_last_state_holds_each_level_at_its_last_tick():
    model = tiny_model()
    traj = model.observe(squares_video(2, 7))
    for level in range(3):
        assert torch.equal(traj.last.h[level], traj.posterior[level].h[:, -1])
        assert torch.equal(traj.last.z[level], traj.posterior[level].z[:, -1])


def test_frames_after_t_do_not_change_bottom_states_up_to_the_window_start():
    """Causality at the bottom: frame t only enters the states of its windows."""
    model = tiny_model()
    video = squares_video(1, 8)
    changed = video.clone()
    changed[:, 4:] = 255 - changed[:, 4:]
    a = model.observe(video, sample=False)
    b = model.observe(changed, sample=False)
    # steps 0..3 lie in level-2 window [0, 4) and level-1 windows [0,2), [2,4): untouched
    assert torch.allclose(a.posterior[0].h[:, :4], b.posterior[0].h[:, :4])
    assert not torch.allclose(a.posterior[0].h[:, 4:], b.posterior[0].h[:, 4:])
