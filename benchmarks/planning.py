"""Planning speed: decisions per second and imagined latent steps per second of each planner.

    python benchmarks/planning.py                      # cue_corridor_online model size, B = 1 and 16
    python benchmarks/planning.py --batches 1 --budget 6144

Every planner gets the same budget of imagined bottom-level steps per environment and
iteration (``--budget`` = population x horizon; the Clockwork planner's far windows count as
the steps they cover, its cost as the upper-level steps it evaluates). Columns: decisions per
second (``act`` calls for B environments, each one decision per environment: summed over the
batch), imagined steps per second (covered time steps, summed over candidates and batch),
level evaluations per second (cell steps actually run, summed over levels), and the effective
horizon: how far ahead each candidate looks. Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import torch
from rich.console import Console
from rich.table import Table

import cwworld
from cwworld.agents import CEMConfig, CEMPlanner, ClockworkConfig, ClockworkPlanner, MPPIConfig, MPPIPlanner
from cwworld.utils import cpu_name, keep_freed_memory, pick_device


def _planners(model, space, B, budget, iterations, windows):
    population = 64
    horizon = max(budget // population, 1)
    yield "CEM", CEMPlanner(model, space, CEMConfig(horizon=horizon, population=population, elites=8,
                                                    iterations=iterations), B), horizon, horizon
    yield "MPPI", MPPIPlanner(model, space, MPPIConfig(horizon=horizon, population=population, elites=8,
                                                       iterations=iterations), B), horizon, horizon
    # the Clockwork planner: the same population, the near window (1..k steps) at every level and
    # `windows` level-1 windows at the upper levels only
    planner = ClockworkPlanner(model, space, ClockworkConfig(level=1, windows=windows, population=population, elites=8,
                                                             iterations=iterations), B)
    yield f"Clockwork (level 1, {windows} windows)", planner, None, None


def _decide(planner, frames, steps) -> float:
    planner.reset()
    t0 = time.perf_counter()
    for t in range(steps):
        planner.act(frames[:, t])
    return time.perf_counter() - t0


@torch.no_grad()
def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cue_corridor_online")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--budget", type=int, default=768, help="population x horizon of the flat planners")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--windows", type=int, default=8, help="far windows of the Clockwork planner")
    parser.add_argument("--decisions", type=int, default=8, help="timed decisions per cell")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if device.type == "cpu":
        keep_freed_memory()
    config = cwworld.load_config(args.preset).model
    torch.manual_seed(0)
    model = cwworld.CWVAE(config).to(device).eval()
    space = gym.spaces.Discrete(config.action_dim)
    k = model.factor
    rows = []
    for B in args.batches:
        frames = torch.randint(0, 256, (B, args.decisions + 1, 64, 64, config.channels), dtype=torch.uint8)
        for name, planner, horizon, _ in _planners(model, space, B, args.budget, args.iterations, args.windows):
            _decide(planner, frames, 1)  # warm-up
            seconds = _decide(planner, frames, args.decisions)
            population, its = planner.config.population, planner.config.iterations
            if horizon is None:  # Clockwork: near steps vary with the phase (mean (k + 1) / 2), far windows of k
                near = (k + 1) / 2
                covered = near + args.windows * k
                evaluations = near * (1 + 1 / k) + args.windows * (model.levels - 1)
                effective = f"{near:.1f} + {args.windows} x {k} = {covered:.0f}"
            else:
                covered, evaluations = horizon, horizon * sum(1 / p for p in model.periods)
                effective = str(horizon)
            per_decision = seconds / args.decisions
            rows.append(dict(B=B, planner=name, decisions=B / per_decision,
                             steps=B * population * its * covered / per_decision,
                             evals=B * population * its * evaluations / per_decision, horizon=effective))
    table = Table(title=f"planning, {args.preset} model, population 64, {args.iterations} iterations "
                        f"({cpu_name() if device.type == 'cpu' else device}, torch {torch.__version__})")
    for column in ("B", "planner", "decisions/s", "imagined steps/s", "level evaluations/s", "effective horizon"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["B"]), row["planner"], f"{row['decisions']:,.1f}", f"{row['steps']:,.0f}",
                      f"{row['evals']:,.0f}", row["horizon"])
    Console().print(table)
    return rows


if __name__ == "__main__":
    main()
