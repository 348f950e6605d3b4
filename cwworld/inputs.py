"""Input validation: what the model accepts, checked once, with errors that name the field.

:class:`CWVAE` calls these on its public entry points; the trainer calls
:func:`check_batch` once per batch, outside the (possibly compiled) loss, so that the
loss itself has no data-dependent branches or host synchronisation
(``model.loss(batch, validate=False)``). Each function returns the value converted to
the model's device and dtype, or raises ``ValueError`` saying what was expected and what
was found.

Conventions checked: images channels-last ``[B, T, H, W, C]``, uint8 or float in [0, 1];
actions ``[B, T, A]`` float within the configured Box bounds; ``is_first`` ``[B, T]``
bool; a :class:`~cwworld.states.CWState` of the model's sizes.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .config import ModelConfig
from .states import CWState

__all__ = ["check_image", "check_actions", "check_is_first", "check_state", "check_batch"]


def check_image(config: ModelConfig, image, name: str = "image", device=None) -> torch.Tensor:
    """Frames ``[B, T, H, W, C]`` (``H = W = image_size``, ``C = channels``), uint8 or float in [0, 1]."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not torch.is_tensor(image):
        raise ValueError(f"{name}: expected a tensor or numpy array, found {type(image).__name__}")
    expected = (config.image_size, config.image_size, config.channels)
    if image.ndim != 5 or tuple(image.shape[2:]) != expected:
        raise ValueError(
            f"{name}: expected shape [B, T, {expected[0]}, {expected[1]}, {expected[2]}] "
            f"(batch, time, height, width, channels; channels-last), found {tuple(image.shape)}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name}: expected at least 1 sequence of at least 1 frame, found shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.to(device)
    if not image.is_floating_point():
        raise ValueError(f"{name}: expected dtype uint8 (0..255) or float in [0, 1], found {image.dtype}")
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{name}: expected finite values, found NaN or inf")
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name}: expected float pixels in [0, 1], found values in [{low:g}, {high:g}]")
    return image.to(device)


def check_actions(config: ModelConfig, action, B: int, T: int, name: str = "action",
                  at_least: bool = False, device=None, required: bool = True,
                  steps_per_action: int = 1, finite: bool = True) -> Optional[torch.Tensor]:
    """Actions ``[B, T, A]`` (``[B, >= T, A]`` with ``at_least``), finite and within the Box bounds
    (times ``steps_per_action`` for sums of that many actions, as jumpy imagination takes).

    None is refused for an action-conditioned model (unless ``required`` is False) and
    actions are refused for a video-only one (``action_dim: 0``). ``finite=False`` skips the
    NaN / inf and bounds checks (host reads of the values), for actions the caller made itself.
    """
    A = config.action_dim
    if action is None:
        if A and required:
            raise ValueError(f"{name}: this model is action-conditioned (action_dim={A}); expected [B, T, {A}] "
                             "actions, found None")
        return None
    if not A:
        raise ValueError(f"{name}: this model has action_dim=0 (video only) but actions were given")
    if isinstance(action, np.ndarray):
        action = torch.from_numpy(action)
    action = torch.as_tensor(action)
    length_ok = action.ndim == 3 and (action.shape[1] >= T if at_least else action.shape[1] == T)
    if not length_ok or action.shape[0] != B or action.shape[2] != A:
        want = f"[{B}, {'>= ' if at_least else ''}{T}, {A}]"
        raise ValueError(f"{name}: expected shape {want} (batch, time, action_dim), found {tuple(action.shape)}")
    action = action.to(device, torch.float32)
    if not finite:
        return action
    if not bool(torch.isfinite(action).all()):
        raise ValueError(f"{name}: expected finite values, found NaN or inf")
    if config.action_low is not None:
        low = torch.tensor(config.action_low, device=action.device) * steps_per_action
        high = torch.tensor(config.action_high, device=action.device) * steps_per_action
        outside = (action < low - 1e-6) | (action > high + 1e-6)
        if bool(outside.any()):
            dim = int(outside.nonzero()[0, -1])
            found = action[..., dim][outside[..., dim]][0]
            raise ValueError(f"{name}: dimension {dim} must lie in the action space's bounds "
                             f"[{float(low[dim]):g}, {float(high[dim]):g}], found {float(found):g}")
    return action


def check_is_first(is_first, B: int, T: int, name: str = "is_first", device=None) -> Optional[torch.Tensor]:
    """Episode starts ``[B, T]``, as bool."""
    if is_first is None:
        return None
    is_first = torch.as_tensor(is_first)
    if tuple(is_first.shape) != (B, T):
        raise ValueError(f"{name}: expected shape [{B}, {T}] (batch, time), found {tuple(is_first.shape)}")
    return is_first.to(device).bool()


def check_state(model, state: CWState, B: Optional[int] = None, name: str = "state") -> CWState:
    """A :class:`CWState` with the model's number of levels and sizes (batch ``B`` if given)."""
    if not isinstance(state, CWState):
        raise ValueError(f"{name}: expected a CWState, found {type(state).__name__}")
    if len(state.h) != model.levels or len(state.z) != model.levels:
        raise ValueError(f"{name}: expected {model.levels} levels, found {len(state.h)}")
    B = state.batch_size if B is None else B
    for level in range(model.levels):
        for part, tensor, size in (("h", state.h[level], model.deter[level]), ("z", state.z[level], model.stoch[level])):
            if tuple(tensor.shape) != (B, size):
                raise ValueError(
                    f"{name}.{part}[{level}]: expected shape [{B}, {size}], found {tuple(tensor.shape)} "
                    "(a state from a model of another size, or another batch size?)"
                )
    return state


def check_batch(model, batch: dict) -> dict:
    """The fields of a data batch the model reads, checked and on the model's device.

    Actions are dropped for a video-only model (``action_dim: 0``), which can train on
    action-labelled data. Call it before ``model.loss(batch, validate=False)``.
    """
    config, device = model.config, model.device
    image = check_image(config, batch["image"], device=device)
    B, T = image.shape[:2]
    out = {"image": image}
    if config.action_dim > 0:
        if "action" not in batch:
            raise ValueError(f"model.action_dim is {config.action_dim} but the data has no 'action' field "
                             f"(fields: {sorted(batch)}); use data with actions or model.action_dim=0")
        out["action"] = check_actions(config, torch.as_tensor(batch["action"]).float(), B, T, device=device)
    if "is_first" in batch:
        out["is_first"] = check_is_first(torch.as_tensor(batch["is_first"]).bool(), B, T, device=device)
    for key in ("reward", "is_terminal"):
        if key in batch:
            value = torch.as_tensor(batch[key]).to(device)
            if tuple(value.shape) != (B, T):
                raise ValueError(f"{key}: expected shape [{B}, {T}] (batch, time), found {tuple(value.shape)}")
            if key == "reward" and not bool(torch.isfinite(value.float()).all()):
                raise ValueError("reward: expected finite values, found NaN or inf")
            out[key] = value
    vector_keys = list(config.vectors or {})
    missing = [key for key in vector_keys if key not in batch]
    if missing:
        raise ValueError(f"model.vectors needs the fields {missing}, which the data lacks (fields: {sorted(batch)})")
    for key in vector_keys:
        out[key] = torch.as_tensor(batch[key]).to(device)
    if (config.reward_head or config.level_reward_heads) and "reward" not in out:
        raise ValueError(f"the model has reward heads but the data has no 'reward' field (fields: {sorted(batch)})")
    return out
