"""Bad input gets a ValueError naming what was expected and what was found."""

import numpy as np
import pytest
import torch

from conftest import squares_video, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_wrong_image_shape(model):
    with pytest.raises(ValueError, match=r"expected shape \[B, T, 64, 64, 1\].*found \(2, 5, 64, 64, 3\)"):
        model.observe(torch.zeros(2, 5, 64, 64, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"found \(2, 1, 64, 64\)"):
        model.loss({"image": torch.zeros(2, 1, 64, 64, dtype=torch.uint8)})
    with pytest.raises(ValueError, match=r"channels-last.*found \(2, 5, 1, 64, 64\)"):
        model.observe(torch.zeros(2, 5, 1, 64, 64))


def test_wrong_dtype(model):
    with pytest.raises(ValueError, match=r"expected dtype uint8 \(0..255\) or float in \[0, 1\], found torch.int64"):
        model.observe(torch.zeros(1, 2, 64, 64, 1, dtype=torch.int64))


def test_float_out_of_range(model):
    image = torch.zeros(1, 2, 64, 64, 1)
    image[0, 1, 3, 3, 0] = 255.0
    with pytest.raises(ValueError, match=r"expected float pixels in \[0, 1\], found values in \[0, 255\]"):
        model.observe(image)


def test_sequence_length_zero(model):
    with pytest.raises(ValueError, match=r"at least 1 frame.*found shape \(1, 0, 64, 64, 1\)"):
        model.observe(torch.zeros(1, 0, 64, 64, 1, dtype=torch.uint8))


def test_nan_in_input(model):
    image = torch.rand(1, 3, 64, 64, 1)
    image[0, 1, 5, 5, 0] = float("nan")
    with pytest.raises(ValueError, match="expected finite values, found NaN"):
        model.loss({"image": image})


def test_numpy_input_is_accepted(model):
    traj = model.observe(squares_video(1, 3).numpy())
    assert traj.features.shape == (1, 3, 12)


def test_action_dimension_must_match_the_config():
    model = tiny_model(action_dim=3)
    video = squares_video(2, 4)
    with pytest.raises(ValueError, match=r"action: expected shape \[2, 4, 3\].*found \(2, 4, 5\)"):
        model.observe(video, action=torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match=r"action_dim=3.*found None"):
        model.observe(video)
    with pytest.raises(ValueError, match=r"action_dim is 3 but the data has no 'action' field"):
        model.loss({"image": video})
    with pytest.raises(ValueError, match="action_dim=0"):
        tiny_model().observe(video, action=np.zeros((2, 4, 3), np.float32))
    traj = model.observe(video, action=torch.zeros(2, 4, 3))
    assert traj.features.shape[:2] == (2, 4)


def test_state_from_another_model_is_rejected(model):
    other = tiny_model(deter=[16, 8, 8])
    state = other.initial(2)
    with pytest.raises(ValueError, match=r"state.h\[0\]: expected shape \[2, 8\], found \(2, 16\)"):
        model.imagine(state, 3)


def test_bad_horizon(model):
    with pytest.raises(ValueError, match="horizon must be a positive int, got 0"):
        model.imagine(model.initial(1), 0)
    with pytest.raises(ValueError, match="horizon must be a positive int, got -3"):
        model.predict(squares_video(1, 2), -3)
