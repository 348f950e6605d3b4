"""LPIPS (Zhang et al. 2018), AlexNet variant, from weight files the user supplies.

cwworld downloads nothing. LPIPS needs two local files:

* the AlexNet backbone as torchvision saves it (``alexnet-owt-7be5be79.pth``: keys
  ``features.0.weight`` ... ``features.10.bias``);
* the LPIPS linear layers, v0.1 (``alex.pth`` from the ``lpips`` package: keys
  ``lin0.model.1.weight`` ... ``lin4.model.1.weight``, each ``[1, C, 1, 1]``).

Both are loaded with ``torch.load(..., weights_only=True)``. The distance follows the
reference implementation: inputs scaled to [-1, 1] and normalised by the LPIPS scaling
layer, the five ReLU feature maps unit-normalised over channels, squared differences
weighted by the linear layers, averaged over positions and summed over layers.
"""

from __future__ import annotations

import os
from typing import Union

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

# (in, out, kernel, stride, padding) of AlexNet's five convolutions; max-pool after 1 and 2
_CONVS = [(3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1)]
_TORCHVISION_INDEX = [0, 3, 6, 8, 10]  # where they sit in torchvision's alexnet.features
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    """``LPIPS(alexnet_path, lpips_path)(pred, truth)``: frames ``[..., H, W, 3]`` in [0, 1] -> ``[...]``."""

    def __init__(self, alexnet_path: Union[str, os.PathLike], lpips_path: Union[str, os.PathLike]):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, p) for i, o, k, s, p in _CONVS)
        self.lins = nn.ModuleList(nn.Conv2d(o, 1, 1, bias=False) for _, o, _, _, _ in _CONVS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        backbone = _load(alexnet_path, "AlexNet weights")
        lins = _load(lpips_path, "LPIPS linear weights")
        for conv, index in zip(self.convs, _TORCHVISION_INDEX):
            for part in ("weight", "bias"):
                key = f"features.{index}.{part}"
                getattr(conv, part).data.copy_(_take(backbone, key, getattr(conv, part).shape, alexnet_path))
        for i, lin in enumerate(self.lins):
            lin.weight.data.copy_(_take(lins, f"lin{i}.model.1.weight", lin.weight.shape, lpips_path))
        self.requires_grad_(False)
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            out.append(x)
            if i < 2:
                x = F.max_pool2d(x, 3, 2)
        return out

    @torch.no_grad()
    def forward(self, pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        if pred.shape != truth.shape or pred.shape[-1] != 3:
            raise ValueError(f"LPIPS: expected two [..., H, W, 3] tensors of one shape, found "
                             f"{list(pred.shape)} and {list(truth.shape)}")
        lead = pred.shape[:-3]
        x, y = (rearrange(v.float(), "... h w c -> (...) c h w") * 2 - 1 for v in (pred, truth))
        x, y = (x - self.shift) / self.scale, (y - self.shift) / self.scale
        total = 0.0
        for lin, fx, fy in zip(self.lins, self.features(x), self.features(y)):
            fx = fx / (fx.square().sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((fx - fy).square()).mean(dim=(1, 2, 3))
        return total.reshape(lead)


def _load(path, what: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: {path} does not exist (LPIPS reads local weight files only)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{what}: {path} holds a {type(state).__name__}, expected a state dict")
    return state


def _take(state: dict, key: str, shape, path) -> torch.Tensor:
    if key not in state:
        raise KeyError(f"{path}: no {key!r} (found {len(state)} keys, e.g. {sorted(state)[:3]})")
    value = state[key]
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{path}: {key!r} has shape {list(value.shape)}, expected {list(shape)}")
    return value
