"""Model-predictive path integral (MPPI) planning over the world model's imagination.

The same loop as :mod:`cwworld.agents.cem` (sample candidates, imagine them all in one batched
call, score, refit, warm-start the next decision from the plan shifted by one step), with the
refit TD-MPC2 uses: the ``elites`` best candidates are averaged with weights
``softmax(temperature * (score - best))`` instead of equally, so a slightly better candidate
counts for more. Discrete spaces: the weighted frequencies of the elites' one-hot actions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cem import CEMConfig, CEMPlanner, _floor

__all__ = ["MPPIConfig", "MPPIPlanner"]


@dataclass
class MPPIConfig(CEMConfig):
    temperature: float = 0.5  # inverse scale of score differences in the elites' weights (per unit of return)

    def validate(self) -> None:
        super().validate()
        if not self.temperature > 0:
            raise ValueError(f"MPPIConfig.temperature must be > 0, found {self.temperature}")


class MPPIPlanner(CEMPlanner):
    """MPPI over :meth:`CWVAE.imagine`: CEM with score-weighted elites (see the module docstring)."""

    config_class = MPPIConfig

    def refit(self, dist: dict, candidates: torch.Tensor, scores: torch.Tensor) -> dict:
        cfg = self.config
        top_scores, top = scores.topk(cfg.elites, dim=1)  # (B, E)
        elites = candidates.gather(1, top[..., None, None].expand(-1, -1, *candidates.shape[2:]))  # (B, E, H, A)
        weight = torch.softmax(cfg.temperature * (top_scores - top_scores[:, :1]), dim=1)[..., None, None]
        mean = (weight * elites).sum(1)  # (B, H, A)
        if self.spec.discrete:
            probs = cfg.momentum * dist["probs"] + (1 - cfg.momentum) * mean
            return {"probs": _floor(probs, cfg.min_prob)}
        std = (weight * (elites - mean[:, None]).square()).sum(1).sqrt()
        mean = cfg.momentum * dist["mean"] + (1 - cfg.momentum) * mean
        std = cfg.momentum * dist["std"] + (1 - cfg.momentum) * std
        return {"mean": mean, "std": std.clamp(min=cfg.min_std)}
