"""The recurrent state-space cell of one CW-VAE level.

The layer layout follows the official CW-VAE ``RSSMCell``:

    prior:      x = relu(W [z_prev, context, actions]);  h = GRU(x, h_prev)
                p(z | h) = N(mean, std) from relu(W h)
    posterior:  q(z | h, e) = N(mean, std) from relu(W relu(W [h, e]))

with ``std = softplus(raw + 0.54) + min_stddev`` (softplus(0.54) ~ 1 at init).
Unlike the official code, the posterior *reuses* the prior's GRU output
instead of running the GRU a second time: the result is the same, the cost
is lower.

For speed the first dense layers are split by input: the parts that do not
depend on the recurrence (context, actions, window embedding) are applied to
a whole sequence at once before the time loop (:meth:`condition`,
:meth:`project_embed`); only the ``z_prev`` and ``h`` parts run per step.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from .init import glorot_fused_, glorot_split_


class RSSMCell(nn.Module):
    def __init__(
        self,
        stoch: int,
        deter: int,
        hidden: int,
        context_dim: int,
        embed_dim: int,
        action_dim: int = 0,
        min_stddev: float = 1e-4,
    ):
        super().__init__()
        self.stoch, self.deter, self.hidden = stoch, deter, hidden
        self.context_dim, self.action_dim = context_dim, action_dim
        self.min_stddev = min_stddev
        cond_dim = context_dim + action_dim
        # prior, first layer on [z_prev, context, actions], split by input
        self.prior_in_z = nn.Linear(stoch, hidden)
        self.prior_in_cond = nn.Linear(cond_dim, hidden, bias=False) if cond_dim else None
        self.gru = nn.GRUCell(hidden, deter)
        self.prior_hidden = nn.Linear(deter, hidden)
        self.prior_out = nn.Linear(hidden, 2 * stoch)  # mean and std layers fused: [mean | std]
        # posterior, first layer on [h, window embedding], split by input
        self.post_in_h = nn.Linear(deter, hidden)
        self.post_in_embed = nn.Linear(embed_dim, hidden, bias=False)
        self.post_hidden = nn.Linear(hidden, hidden)
        self.post_out = nn.Linear(hidden, 2 * stoch)

    def tf_init_split(self) -> None:
        """Keras init where this cell splits or fuses the official layers (see ``nn.init``): the split
        first layers are slices of one Glorot kernel; the fused mean/std output layers are two
        Keras ``Dense(stoch)`` layers, each with its own Glorot bound over ``stoch`` outputs."""
        glorot_split_([self.prior_in_z, self.prior_in_cond])
        glorot_split_([self.post_in_h, self.post_in_embed])
        glorot_fused_(self.prior_out, 2)
        glorot_fused_(self.post_out, 2)

    # -- parts applied to a whole sequence at once ---------------------------------

    def condition(
        self, context: Optional[torch.Tensor], actions: Optional[torch.Tensor]
    ) -> Optional[torch.Tensor]:
        """Project ``context [B, n, context_dim]`` and ``actions [B, n, action_dim]`` -> ``[B, n, hidden]``.

        Returns None when this cell has neither input (the top level of a video model).
        """
        if self.prior_in_cond is None:
            return None
        parts = [x for x in (context, actions) if x is not None]
        return self.prior_in_cond(torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0])

    def project_embed(self, embed: torch.Tensor) -> torch.Tensor:
        """Window embeddings ``[B, n, embed_dim]`` -> their share of the posterior's first layer."""
        return self.post_in_embed(embed)

    # -- per step ------------------------------------------------------------------

    def deter_step(
        self, h_prev: torch.Tensor, z_prev: torch.Tensor, cond: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """GRU update ``h_prev [B, deter]``, ``z_prev [B, stoch]`` -> ``h [B, deter]``."""
        x = self.prior_in_z(z_prev)  # (B, hidden)
        if cond is not None:
            x = x + cond
        return self.gru(F.relu(x), h_prev)

    def posterior(self, h: torch.Tensor, embed_proj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``h [..., deter]`` and projected embedding ``[..., hidden]`` -> (mean, std) ``[..., stoch]``."""
        x = F.relu(self.post_in_h(h) + embed_proj)
        x = F.relu(self.post_hidden(x))
        return self._stats(self.post_out(x))

    def prior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``h [..., deter]`` -> prior (mean, std) ``[..., stoch]``; any leading shape."""
        return self._stats(self.prior_out(F.relu(self.prior_hidden(h))))

    def _stats(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = out.chunk(2, dim=-1)
        return mean, F.softplus(raw + 0.54) + self.min_stddev
