"""Latent imagination speed: `imagine` over batch sizes and horizons, full against jumpy rollouts.

    python benchmarks/imagine.py                           # mmnist and minerl_navigate sizes
    python benchmarks/imagine.py --presets mmnist --batches 1 64 --horizons 15 100

"steps/s" counts imagined time steps covered per second, summed over the batch
(batch x horizon / seconds), whatever levels are rolled: a jumpy rollout of levels
[1, 2] covers the same horizon evaluating level 1 every k steps and level 2 every
k**2 steps. A cell is skipped when the horizon-100 time extrapolates past
``--max-seconds`` (the table says so).
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

import cwworld
from cwworld.utils import cpu_name, keep_freed_memory, pick_device


def _time(model, state, horizon, levels, repeats) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.imagine(state, horizon, levels=levels)
        if state.h[0].is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["mmnist", "minerl_navigate"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--horizons", type=int, nargs="+", default=[15, 100, 1000])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per cell (the best is kept)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="skip cells predicted to take longer")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", default=None, choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
                        help="torch.compile the cell steps and conv stacks (CWVAE.compile_parts) in this mode; "
                             "reduce-overhead replays CUDA graphs")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if device.type == "cpu":
        keep_freed_memory()
    rows = []
    for preset in args.presets:
        config = cwworld.load_config(preset).model
        model = cwworld.CWVAE(config).to(device).eval()
        if args.compile:
            model.compile_parts(mode=args.compile)
        L = model.levels
        variants = [("full", None)] + [(f"jumpy {list(range(l, L))}", list(range(l, L))) for l in range(1, L)]
        for batch in args.batches:
            state = model.initial(batch)
            for name, levels in variants:
                _time(model, state, 15, levels, 1)  # warm-up
                per_step = _time(model, state, 100, levels, 1) / 100
                for horizon in args.horizons:
                    if per_step * horizon * args.repeats > args.max_seconds:
                        rows.append((preset, batch, horizon, name, None))
                        continue
                    seconds = _time(model, state, horizon, levels, args.repeats)
                    rows.append((preset, batch, horizon, name, batch * horizon / seconds))
    where = cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device)
    table = Table(title=f"imagine: time steps/s (batch x horizon / s), {where}, torch {torch.__version__}"
                        f"{', compiled: ' + args.compile if args.compile else ''}")
    for column in ("preset", "batch", "horizon", "rollout", "steps/s", "x full"):
        table.add_column(column, justify="left" if column in ("preset", "rollout") else "right")
    full = {(p, b, h): v for p, b, h, n, v in rows if n == "full"}
    for preset, batch, horizon, name, value in rows:
        base = full.get((preset, batch, horizon))
        ratio = f"{value / base:.1f}" if value and base else "-"
        table.add_row(preset, str(batch), str(horizon), name, f"{value:,.0f}" if value else "skipped", ratio)
    Console().print(table)
    return rows


if __name__ == "__main__":
    main()
