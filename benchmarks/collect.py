"""Collection speed: environment steps per second recorded into a replay buffer, one environment
against a ``gymnasium.vector`` env of several (``data.num_envs`` of online runs).

    python benchmarks/collect.py                          # CueCorridor, num_envs 1, 4, 16
    python benchmarks/collect.py --num-envs 1 8 --agents cem

Each cell runs ``--rounds`` batched decisions (so ``rounds x num_envs`` environment steps) with a
fresh in-memory replay buffer, after one warm-up round. Agents: ``random`` (uniform actions, no
model), ``cem`` (population 64, 3 iterations, horizon 12, the ``cue_corridor_online`` model:
every environment's candidates in one batched ``imagine``) and ``actor_critic`` (one actor
evaluation per decision, untrained). Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

import cwworld
from cwworld.agents import CEMConfig, CEMPlanner, ActorCritic, ActorCriticConfig
from cwworld.data.replay import ReplayBuffer
from cwworld.envs import RandomPolicy, collect, env_spaces, make_env, make_vector_env
from cwworld.utils import cpu_name, keep_freed_memory


def _policy(name: str, model, env, n: int):
    space, obs_space = env_spaces(env)
    if name == "random":
        return RandomPolicy(env.action_space, seed=0)
    if name == "cem":
        return CEMPlanner(model, space, CEMConfig(horizon=12, population=64, elites=8, iterations=3), n, obs_space,
                          seed=0)
    return ActorCritic(model, space, ActorCriticConfig(), n, obs_space, seed=0)


@torch.no_grad()
def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="cwworld/CueCorridor-v0")
    parser.add_argument("--preset", default="cue_corridor_online", help="the world model's size")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--agents", nargs="+", default=["random", "cem", "actor_critic"],
                        choices=["random", "cem", "actor_critic"])
    parser.add_argument("--rounds", type=int, default=24, help="batched decisions timed per cell")
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.manual_seed(0)
    model = cwworld.CWVAE(cwworld.load_config(args.preset).model).eval()
    rows = []
    for agent in args.agents:
        base = None
        for n in args.num_envs:
            buffer = ReplayBuffer(None, chunk_size=1024)
            env = make_vector_env(args.env, n, buffer=buffer) if n > 1 else make_env(args.env)
            policy = _policy(agent, None if agent == "random" else model, env, n)
            record = None if n > 1 else buffer
            collect(env, policy, n, record, seed=0, progress=False)  # warm-up
            t0 = time.perf_counter()
            stats = collect(env, policy, args.rounds * n, record, seed=1, progress=False)
            seconds = time.perf_counter() - t0
            rate = stats["steps"] / seconds
            base = base or rate
            rows.append(dict(agent=agent, n=n, steps=stats["steps"], rate=rate, speedup=rate / base))
    table = Table(title=f"collection into replay, {args.env}, {args.preset} model "
                        f"({cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads)")
    for column in ("agent", "num_envs", "env steps", "env steps/s", "vs num_envs 1"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row["agent"], str(row["n"]), str(row["steps"]), f"{row['rate']:,.1f}", f"{row['speedup']:.1f}x")
    Console().print(table)
    return rows


if __name__ == "__main__":
    main()
