"""Weight initialisation as in the official CW-VAE code.

The official code builds its layers with Keras defaults: Glorot-uniform kernels
(``U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``) and zero biases for dense,
conv and transposed-conv layers; a GRU cell's input kernel is Glorot-uniform over
all three gates at once, its recurrent kernel orthogonal, its biases zero.
PyTorch's defaults differ (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and
biases alike), which makes the initial signal several times smaller and, measured
on Moving MNIST, the first thousand updates noticeably slower.

Where this package splits one official dense layer by input (the RSSM cell's
first layers, see :mod:`cwworld.nn.rssm`), the parts share one Glorot bound
computed from the *total* fan-in, so they equal slices of a single Keras kernel. Where it
fuses several official layers into one (the mean and std heads), each part keeps the bound of
its own Keras layer (fan-out = that part's outputs).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn


def glorot_bound(fan_in: int, fan_out: int) -> float:
    return math.sqrt(6.0 / (fan_in + fan_out))


@torch.no_grad()
def glorot_split_(parts: Sequence[Optional[nn.Linear]]) -> None:
    """Initialise dense layers that together form one layer on concatenated inputs."""
    parts = [p for p in parts if p is not None]
    fan_in = sum(p.in_features for p in parts)
    bound = glorot_bound(fan_in, parts[0].out_features)
    for p in parts:
        p.weight.uniform_(-bound, bound)
        if p.bias is not None:
            p.bias.zero_()


@torch.no_grad()
def glorot_fused_(layer: nn.Linear, parts: int) -> None:
    """Initialise a dense layer that fuses ``parts`` Keras layers stacked along the outputs
    (e.g. the mean and std heads): each part's Glorot bound counts only its own outputs."""
    fan_out = layer.out_features // parts
    bound = glorot_bound(layer.in_features, fan_out)
    layer.weight.uniform_(-bound, bound)
    if layer.bias is not None:
        layer.bias.zero_()


@torch.no_grad()
def tf_init_(module: nn.Module) -> nn.Module:
    """Re-initialise every dense, conv and GRU layer of ``module`` in place, Keras style.

    Modules that define ``tf_init_split()`` (the RSSM cell) then fix up their split layers.
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            # torch's fan computation for [out, in, kh, kw] (and [in, out, kh, kw] for the
            # transposed conv, swapped but Glorot is symmetric) matches Keras' for these kernels
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.GRUCell):
            nn.init.xavier_uniform_(m.weight_ih)  # [3 * deter, in]: Keras' [in, 3 * units] kernel
            nn.init.orthogonal_(m.weight_hh)  # [3 * deter, deter]: orthonormal columns
            m.bias_ih.zero_()
            m.bias_hh.zero_()
    for m in module.modules():
        split = getattr(m, "tf_init_split", None)
        if callable(split):
            split()
    return module
