"""Evaluate the agents of trained online runs again, with how they act changed: one table.

    python benchmarks/agent_eval.py runs/cue_corridor_plan                     # repeat its final evaluation
    python benchmarks/agent_eval.py runs/a runs/b --variant agent.plan_discount=0.97 \\
        --variant agent.plan_discount=0.5 --variant "agent.plan_discount=0.5 agent.plan_horizon=16"

Each run's checkpoint (``latest.pt``) gives the world model and what the agent learned; each
``--variant`` (space-separated ``agent.key=value`` settings; none: the run's own) changes only how
it acts (:func:`cwworld.agents.load_agent`). By default the evaluation is the one ``cwworld
train`` ends with (:meth:`cwworld.train.Trainer.evaluate_agent`, the same
:func:`cwworld.train.evaluation_episodes`): ``agent.eval_episodes`` greedy
episodes in ``agent.eval_envs`` environments side by side, environment seeds ``10,000 + step``
on, the agent's generator and torch seeded with the checkpoint's step, so the run's own variant
reproduces the success it logged. Columns: success (episodes with a positive return), mean
return, mean length, wrong exits (episodes with a negative return), seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from cwworld.agents import load_agent
from cwworld.config import load_config
from cwworld.train import eval_env_count, evaluation_episodes, make_eval_env, run_checkpoint


def evaluate(run: str, settings: list[str], episodes: int = 0, envs: int = 0) -> dict:
    step = int(run_checkpoint(run)[1]["step"])
    config = load_config(Path(run) / "config.yaml", settings)  # the run's settings (its checkpoint's too)
    config.agent.eval_episodes = episodes or config.agent.eval_episodes
    config.agent.eval_envs = envs or config.agent.eval_envs
    env = make_eval_env(config)
    agent, _ = load_agent(run, num_envs=eval_env_count(config), overrides=settings, seed=step)
    started = time.perf_counter()
    stats = evaluation_episodes(env, agent, config.agent.eval_episodes, step)
    env.close()
    return {"run": run, "variant": " ".join(settings) or "(as trained)", "step": step, "episodes": config.agent.eval_episodes,
            "success": stats["success"], "return": stats["mean_return"], "length": stats["mean_length"],
            "wrong": sum(r < 0 for r in stats["returns"]), "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories of online runs (cwworld train with data.env)")
    parser.add_argument("--variant", action="append", default=None,
                        help="space-separated agent.key=value settings (repeatable; default: as trained)")
    parser.add_argument("--episodes", type=int, default=0, help="episodes per row (0: the run's agent.eval_episodes)")
    parser.add_argument("--envs", type=int, default=0, help="environments side by side (0: the run's agent.eval_envs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v.split() for v in args.variant] if args.variant else [[]]
    print("| run | step | acting | episodes | success | mean return | mean length | wrong exits | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        for settings in variants:
            r = evaluate(run, settings, args.episodes, args.envs)
            print(f"| {r['run']} | {r['step']} | {r['variant']} | {r['episodes']} | {r['success']:.0%} | "
                  f"{r['return']:.2f} | {r['length']:.1f} | {r['wrong']} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
