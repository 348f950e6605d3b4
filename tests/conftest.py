import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cwworld import CWVAE, ModelConfig
from cwworld.data.squares import bouncing_squares


def tiny_config(**overrides) -> ModelConfig:
    """A model small enough for fast CPU tests: 3 levels, k = 2, narrow layers."""
    fields = dict(channels=1, levels=3, factor=2, stoch=4, deter=8, hidden=8, embed=16,
                  cnn_depth=4, enc_dense_layers=2)
    fields.update(overrides)
    return ModelConfig(**fields)


def tiny_model(seed: int = 0, **overrides) -> CWVAE:
    torch.manual_seed(seed)
    return CWVAE(tiny_config(**overrides))


def squares_video(batch: int, length: int, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """uint8 [batch, length, 64, 64, channels] bouncing-square videos."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([bouncing_squares(rng, length, 2, 64, channels) for _ in range(batch)]))


@pytest.fixture
def video():
    return squares_video(2, 10)


def train_on(model: CWVAE, make_batch, updates: int, lr: float = 3e-3, seed: int = 0) -> CWVAE:
    """``updates`` Adam steps (the official eps 1e-4) on ``make_batch(rng)`` batches, rng seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-4)
    for _ in range(updates):
        loss, _ = model.loss(make_batch(rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def load_benchmark(name: str):
    """The script ``benchmarks/<name>.py`` as a module (registered in ``sys.modules``, where
    dataclasses look their module up)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
