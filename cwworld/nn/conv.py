"""Convolutional frame encoder and decoder of the Clockwork VAE.

Both follow the official CW-VAE code (and PlaNet/Dreamer before it): four
4x4 stride-2 'valid' convolutions down to a 2x2 map, and a dense layer plus
four transposed convolutions (5, 5, 6, 6) back up to 64x64. Activations are
leaky ReLU with slope 0.2, as in the official code (``tf.nn.leaky_relu``'s default; PyTorch's
default slope is 0.01).

Images inside the model are float in [0, 1], ``[N, C, H, W]``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LEAKY_SLOPE = 0.2  # tf.nn.leaky_relu's default alpha, which the official code uses


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE)


class ConvEncoder(nn.Module):
    """``[N, C, 64, 64]`` frames -> ``[N, 8 * depth * 2 * 2]`` embeddings."""

    def __init__(self, channels: int, depth: int = 32):
        super().__init__()
        widths = [channels, depth, 2 * depth, 4 * depth, 8 * depth]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=4, stride=2) for c_in, c_out in zip(widths, widths[1:])
        )
        self.out_dim = 8 * depth * 2 * 2  # 64 -> 31 -> 14 -> 6 -> 2 pixels

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames  # (N, C, 64, 64)
        for conv in self.convs:
            x = _leaky(conv(x))  # (N, 32, 31, 31) ... (N, 256, 2, 2)
        # reshape (not flatten of a .contiguous()) so channels-last input stays cheap
        return x.reshape(x.shape[0], -1)  # (N, 1024)


class ConvDecoder(nn.Module):
    """``[N, feat]`` bottom-level features -> ``[N, C, 64, 64]`` means of the pixel Gaussian."""

    def __init__(self, feat_dim: int, channels: int, depth: int = 32, channels_last: bool = True):
        super().__init__()
        self.channels_last = channels_last
        self.dense = nn.Linear(feat_dim, 32 * depth)
        self.deconvs = nn.ModuleList(
            [
                nn.ConvTranspose2d(32 * depth, 4 * depth, kernel_size=5, stride=2),  # 1 -> 5
                nn.ConvTranspose2d(4 * depth, 2 * depth, kernel_size=5, stride=2),  # 5 -> 13
                nn.ConvTranspose2d(2 * depth, depth, kernel_size=6, stride=2),  # 13 -> 30
                nn.ConvTranspose2d(depth, channels, kernel_size=6, stride=2),  # 30 -> 64
            ]
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        N = features.shape[0]
        first, *middle, last = self.deconvs
        x = self.dense(features)  # (N, 1024)
        # A transposed conv of a 1x1 map is a matmul: each output pixel gets one term.
        x = F.linear(x, first.weight.flatten(1).t())  # (N, 128 * 5 * 5)
        x = _leaky(x.view(N, first.out_channels, 5, 5) + first.bias[:, None, None])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for deconv in middle:
            x = _leaky(deconv(x))  # (N, 64, 13, 13) -> (N, 32, 30, 30)
        # Last layer as matmul + col2im (F.fold): faster than a transposed conv with
        # few output channels on CPU. Linear output: the mean of a Gaussian over [0, 1]
        # pixels (the official code puts a tanh here; the mean needs no bound).
        H = x.shape[-1]
        cols = x.permute(0, 2, 3, 1).reshape(N * H * H, -1) @ last.weight.flatten(1)  # (N*H*W, C*6*6)
        cols = cols.view(N, H * H, -1).transpose(1, 2)  # (N, C*6*6, H*W)
        out = F.fold(cols, output_size=(64, 64), kernel_size=last.kernel_size, stride=last.stride)
        return out + last.bias[:, None, None]  # (N, C, 64, 64)


class MLP(nn.Module):
    """``layers`` dense layers: ReLU on all but the last (the official encoder MLP)."""

    def __init__(self, in_dim: int, width: int, out_dim: int, layers: int):
        super().__init__()
        dims = [in_dim] + [width] * (layers - 1) + [out_dim]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear in self.linears[:-1]:
            x = F.relu(linear(x))
        return self.linears[-1](x)
