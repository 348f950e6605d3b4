"""FVD (Unterthiner et al. 2018) from an I3D network the user supplies as a local file.

cwworld downloads nothing. FVD needs the TorchScript port of the I3D used by the original
TensorFlow FVD, ``i3d_torchscript.pt`` (from the StyleGAN-V / fvd-comparison projects; its
features were checked against the TensorFlow Hub I3D there). It is loaded with
``torch.jit.load`` and called as ``detector(videos, rescale=False, resize=False,
return_features=True)``: the mode in which it reproduces the original embedding. So, as
the original ``preprocess`` does, frames are first resized to 224x224 (bilinear) and
scaled from [0, 1] to [-1, 1] here.

FVD is the Fréchet distance between Gaussians fitted to the features of real and of
generated clips: ``|mu_r - mu_g|^2 + tr(C_r + C_g - 2 (C_r C_g)^(1/2))``; the matrix square
root's trace is computed from symmetric eigendecompositions (no scipy needed).
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch
from einops import rearrange
from torch.nn import functional as F

__all__ = ["I3DFeatures", "frechet_distance"]


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of features ``[N, D]``."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"frechet_distance: expected [N >= 2, D] feature arrays of one width, "
                         f"found {list(a.shape)} and {list(b.shape)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    vals, vecs = np.linalg.eigh(cov_a)
    sqrt_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    middle = sqrt_a @ cov_b @ sqrt_a  # symmetric PSD, same eigenvalues as cov_a @ cov_b
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


class I3DFeatures:
    """``I3DFeatures(path)(videos)``: ``[B, T, H, W, C]`` in [0, 1] (C = 1 or 3) -> I3D features ``[B, D]``."""

    def __init__(self, path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu", batch_size: int = 16):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"I3D network: {path} does not exist (FVD reads a local i3d_torchscript.pt only)")
        self.detector = torch.jit.load(str(path), map_location=device).eval()
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def __call__(self, videos: torch.Tensor) -> np.ndarray:
        if videos.ndim != 5 or videos.shape[-1] not in (1, 3):
            raise ValueError(f"I3D: expected videos [B, T, H, W, 1 or 3], found {list(videos.shape)}")
        out = []
        for start in range(0, len(videos), self.batch_size):
            x = videos[start : start + self.batch_size].float().to(self.device)
            B, T = x.shape[:2]
            x = rearrange(x, "b t h w c -> (b t) c h w")
            x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
            x = x.expand(-1, 3, -1, -1) * 2.0 - 1.0  # grey repeated to RGB; [0, 1] -> [-1, 1]
            x = rearrange(x, "(b t) c h w -> b c t h w", b=B)
            out.append(self.detector(x, rescale=False, resize=False, return_features=True).float().cpu())
        return torch.cat(out).numpy()
