"""Agents that act with a CW-VAE world model (installed as ``cwworld.agents``).

One interface, :class:`Agent` (``reset``, ``act``, ``policy``; see :mod:`cwworld.agents.base`),
and one file per algorithm, its hyperparameters in a dataclass at the top:

* :class:`RandomAgent` - uniform actions;
* :class:`CEMPlanner` - cross-entropy-method model-predictive control over batched ``imagine``;
* :class:`MPPIPlanner` - the same with score-weighted elites (MPPI, as TD-MPC2);
* :class:`ClockworkPlanner` - the near window planned step by step, the far future one upper
  window at a time with jumpy imagination and the window-reward heads.

Not in yet: the Dreamer-style actor-critic and the RL loop in ``cwworld train``.
"""

from .base import ActionSpec, Agent, discounted_return
from .cem import CEMConfig, CEMPlanner
from .clockwork import ClockworkConfig, ClockworkPlanner
from .mppi import MPPIConfig, MPPIPlanner
from .random_agent import RandomAgent

__all__ = ["ActionSpec", "Agent", "CEMConfig", "CEMPlanner", "ClockworkConfig", "ClockworkPlanner", "MPPIConfig",
           "MPPIPlanner", "RandomAgent", "discounted_return"]
