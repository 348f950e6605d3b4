"""Gymnasium environments and wrappers for cwworld (installed as ``cwworld.envs``).

Wrappers, the built-in pixel environments and the MineRL adapter arrive with
the experience-and-demonstrations work; this package is their import path.
"""

__all__: list[str] = []
