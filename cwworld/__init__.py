"""cwworld: Clockwork VAE world models in PyTorch.

Saxena, Ba, Hafner (2021), "Clockwork Variational Autoencoders", arXiv:2102.09532.
"""

from .config import Config, ConfigError, DataConfig, EvalConfig, ModelConfig, TrainConfig, load_config, save_config
from .clock import level_lengths, tick_offsets
from .model import CWVAE
from .states import CWState, LevelStates, Rollout, Trajectory


def load_model(run_dir, checkpoint=None, device="cpu"):
    """A trained model from a run directory: ``(model in eval mode, config, step)``
    (see :func:`cwworld.train.load_model`)."""
    from .train import load_model as _load_model

    return _load_model(run_dir, checkpoint, device)


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
    "load_model",
    "save_config",
    "tick_offsets",
]
