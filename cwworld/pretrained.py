"""Pretrained models shipped with the package, and exporting a run as one.

A pretrained model is a small checkpoint file (``{"model", "config", "step", "train_minutes",
"source"}``, weights stored as float16 to halve the size, read with ``weights_only=True`` and
cast back to float32) under ``cwworld/data/assets/pretrained/``. Wherever the CLI or
:func:`cwworld.load_model` take a run directory, ``pretrained:NAME`` names one of these:

    cwworld eval pretrained:NAME           # writes runs/pretrained_NAME/eval/
    cwworld predict pretrained:NAME --video clip.mp4 --out pred.gif

``cwworld export RUN_DIR OUT.pt`` (:func:`export_pretrained`) writes such a file from any run;
the CLI and :func:`cwworld.load_model` also take the file's path in place of a run directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import torch

PREFIX = "pretrained:"
FOLDER = Path(__file__).resolve().parent / "data" / "assets" / "pretrained"

# name -> what it is. Empty: a model ships once one beats the evaluation's baselines (README,
# "Reduced-scale reproduction"); the 45-minute CPU and 8.5-minute H200 mmnist_small runs do not yet.
PRETRAINED: dict[str, str] = {}


def is_pretrained(run_dir: Union[str, os.PathLike]) -> bool:
    return str(run_dir).startswith(PREFIX)


def pretrained_path(name: Union[str, os.PathLike]) -> Path:
    """The file of a shipped model, ``name`` with or without the ``pretrained:`` prefix."""
    name = str(name)[len(PREFIX):] if is_pretrained(name) else str(name)
    if name not in PRETRAINED:
        raise ValueError(f"pretrained:{name}: no such pretrained model; shipped: "
                         + (", ".join(f"{key} ({text})" for key, text in PRETRAINED.items()) or "none yet"))
    path = FOLDER / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: the pretrained model's file is missing from this installation "
                                "(reinstall cwworld)")
    return path


def default_run_dir(run_dir: Union[str, os.PathLike]) -> Path:
    """Where outputs for ``run_dir`` go: the run directory itself; ``runs/pretrained_NAME`` for a
    shipped model (the package's own folder is not written to); ``runs/STEM`` for a model file."""
    if is_pretrained(run_dir):
        return Path("runs") / f"pretrained_{str(run_dir)[len(PREFIX):]}"
    if Path(run_dir).is_file():
        return Path("runs") / Path(run_dir).stem
    return Path(run_dir)


def export_pretrained(run_dir: Union[str, os.PathLike], out: Union[str, os.PathLike],
                      dtype: torch.dtype = torch.float16) -> Path:
    """Write a run's newest checkpoint as a pretrained file: the model's weights in ``dtype``, its
    config, step and training minutes; no optimizer or random state (it is not for resuming).
    Written to a temporary name and renamed."""
    from .train import run_checkpoint
    from .utils import atomic_output, check_writable

    out = Path(out)
    check_writable(out.parent, "the exported file's folder", hint="choose another path for the file")
    path, state = run_checkpoint(run_dir)
    seconds = state.get("train_seconds")  # absent in checkpoints older than train.max_minutes
    minutes = None if seconds is None else seconds / 60
    weights = {key: value.to(dtype) if value.is_floating_point() else value for key, value in state["model"].items()}
    record = {"model": weights, "config": state["config"], "step": int(state["step"]),
              "train_minutes": minutes, "source": str(path)}
    with atomic_output(out, suffix=".pt") as tmp:
        torch.save(record, tmp)
    return out
