"""How many of a replay's rewards and terminals do the window heads of each level learn from?

A level ``l > 0`` tick ``o`` learns the rewards and terminals of its window ``(o - k**l, o]``,
counted from the latest episode start in it (an episode start restarts every level). An episode
ending at ``t`` between two ticks leaves its window ``(o, t]`` to no tick, so without
``model.window_ends`` its rewards never reach the window heads: in CueCorridor these are the
exits. This samples training batches from a run's replay as ``cwworld train`` does (the run's
batch size, sequence length and ``data.episode_starts``) and prints, per level, the share of
the non-zero rewards (not at episode starts, whose rewards no head predicts) and of the terminal
steps that fall in some tick's window, and the share that ``model.window_ends`` adds.

    python benchmarks/window_coverage.py runs/cue_corridor_plan --batches 300

No model is read; a few seconds on one CPU core.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cwworld.clock import open_window_starts, open_window_sums, segment_starts, tick_offsets, window_sums
from cwworld.config import load_config
from cwworld.data.replay import ReplayBuffer


def coverage(batch: dict, periods: list[int]) -> dict:
    """Counts in one batch: ``rewards``, ``terminals`` and per level ``(rewards, terminals)``
    in tick windows and in the windows episodes end in."""
    first = torch.as_tensor(batch["is_first"]).bool()
    B, T = first.shape
    paid = (torch.as_tensor(batch["reward"]) != 0) & ~first
    terminal = torch.as_tensor(batch["is_terminal"]).bool() if "is_terminal" in batch else torch.zeros_like(first)
    series = torch.stack([paid, terminal], -1).float()  # (B, T, 2)
    seg = segment_starts(first, T, B, "cpu")
    ends = torch.zeros_like(first)
    ends[:, :-1] = first[:, 1:]
    ends |= terminal
    t = torch.arange(T)
    out = {"rewards": paid.sum().item(), "terminals": terminal.sum().item()}
    for level, period in enumerate(periods):
        if level == 0:
            continue
        ticked = window_sums(series, tick_offsets(0, T, period), period, seg).sum((0, 1))
        # an unclosed window (o, t] holds an episode's last steps: those after the latest tick o
        ended = open_window_sums(series, open_window_starts(seg, period))
        closing = (ends & (t % period != 0)).float()[..., None]
        out[level] = (ticked.tolist(), (ended * closing).sum((0, 1)).tolist())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a run directory with config.yaml and replay/")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = load_config(str(args.run / "config.yaml"))
    periods = [cfg.model.factor**level for level in range(cfg.model.levels)]
    buffer = ReplayBuffer(args.run / "replay", episode_start_fraction=cfg.data.episode_starts, seed=args.seed)
    totals: dict = {}
    for _ in range(args.batches):
        for key, value in coverage(buffer.sample(cfg.train.batch_size, cfg.train.seq_len), periods).items():
            if isinstance(value, tuple):
                old = totals.get(key, ([0.0, 0.0], [0.0, 0.0]))
                totals[key] = tuple([a + b for a, b in zip(o, v)] for o, v in zip(old, value))
            else:
                totals[key] = totals.get(key, 0) + value
    print(f"{args.run}: {args.batches} batches of {cfg.train.batch_size} x {cfg.train.seq_len} steps, "
          f"{int(totals['rewards'])} non-zero rewards, {int(totals['terminals'])} terminals")
    print("| level | period | rewards in tick windows | terminals in tick windows | "
          "added by window_ends (rewards / terminals) |")
    print("|---|---|---|---|---|")
    share = lambda x, n: f"{x / n:.0%}" if n else "-"  # noqa: E731
    for level in range(1, len(periods)):
        ticked, closing = totals[level]
        print(f"| {level} | {periods[level]} | {share(ticked[0], totals['rewards'])} | "
              f"{share(ticked[1], totals['terminals'])} | {share(closing[0], totals['rewards'])} / "
              f"{share(closing[1], totals['terminals'])} |")


if __name__ == "__main__":
    main()
