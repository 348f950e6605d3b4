"""cwworld: Clockwork VAE world models in PyTorch.

Saxena, Ba, Hafner (2021), "Clockwork Variational Autoencoders", arXiv:2102.09532.
"""

from .config import Config, ConfigError, DataConfig, EvalConfig, ModelConfig, TrainConfig, load_config, save_config
from .model import CWVAE, CWState, LevelStates, Rollout, Trajectory, level_lengths, tick_offsets

__version__ = "0.1.0"

__all__ = [
    "CWVAE",
    "CWState",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LevelStates",
    "ModelConfig",
    "Rollout",
    "TrainConfig",
    "Trajectory",
    "level_lengths",
    "load_config",
    "save_config",
    "tick_offsets",
]
