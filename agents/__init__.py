"""Agents that plan with a CW-VAE world model (installed as ``cwworld.agents``).

Planners and imagination agents arrive with the world-model-for-agents work;
this package is the import path they will live under.
"""

__all__: list[str] = []
