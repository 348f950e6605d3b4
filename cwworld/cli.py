"""The ``cwworld`` command.

    cwworld train [--config NAME_OR_PATH] [--run-dir DIR] [key=value ...]
    cwworld config [NAME_OR_PATH] [key=value ...]     print the resolved config
    cwworld presets                                   list the shipped presets
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from rich.console import Console

from .config import ConfigError, load_config, preset_names


def _train(args) -> int:
    from .train import NonFiniteLossError, Trainer

    console = Console(stderr=True)
    cfg = load_config(args.config, args.overrides)
    name = Path(args.config).stem if args.config else "quickstart"
    run_dir = Path(args.run_dir or Path("runs") / name)
    console.print(f"run directory: [bold]{run_dir}[/]")
    trainer = Trainer(cfg, run_dir, console=console, progress=not args.no_progress)
    try:
        metrics = trainer.train()
    except NonFiniteLossError as err:
        console.print(f"[red]{err}[/]")
        return 3
    if metrics:
        kls = ", ".join(f"kl/{l} {metrics[f'kl/{l}']:.2f}" for l in range(cfg.model.levels))
        console.print(f"step {trainer.step}: loss {metrics['loss']:.2f}, nll {metrics['nll']:.2f}, {kls}")
    console.print(f"checkpoint: {run_dir / 'checkpoints' / 'latest.pt'}")
    samples = sorted((run_dir / "samples").glob("*.gif"))
    if samples:
        console.print(f"predictions: {samples[-1]}")
    return 0


def _config(args) -> int:
    cfg = load_config(args.config, args.overrides)
    sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return 0


def _presets(args) -> int:
    for name in preset_names():
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cwworld", description="Clockwork VAE world models.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="train a model into a run directory (re-run on it to resume)",
        description="Train a CW-VAE. Without --config: the 'quickstart' preset on generated video.",
    )
    train.add_argument("--config", default=None,
                       help="preset name (see `cwworld presets`) or YAML file; default: quickstart")
    train.add_argument("--run-dir", default=None,
                       help="where checkpoints, metrics and samples go; default: runs/<config name>. "
                            "An existing run directory is resumed.")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config overrides, e.g. model.levels=2 train.batch_size=16")
    train.set_defaults(func=_train)

    config = sub.add_parser("config", help="print a resolved config as YAML")
    config.add_argument("config", nargs="?", default=None, help="preset name or YAML file")
    config.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    config.set_defaults(func=_config)

    presets = sub.add_parser("presets", help="list the shipped config presets")
    presets.set_defaults(func=_presets)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) == "train" and args.config is None:
        args.config = "quickstart"
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"cwworld: config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
