"""Agents on pixel tasks: train online from scratch, evaluate, print one table.

Each row trains a world model and its agent online with ``cwworld train``'s loop (a random
prefill, then the agent collects) for ``--steps`` updates and evaluates the agent over
``--episodes`` episodes (the planner or actor-critic without exploration noise). ``random`` is
uniform actions, no training. World models: ``cwvae`` (the preset's 2-level, k = 4 model) and
``rssm`` (one level, its width chosen so that the parameter count matches the CW-VAE's to within
a few percent).

    python benchmarks/agents.py --envs cue --models cwvae rssm --agents random actor_critic --steps 1500

Columns: success rate (episodes with a positive return; not shown for PointReach, whose every
return is positive) and mean return over the evaluation
episodes, environment steps collected, wall time of training, and agent decisions per second
while evaluating (filtering plus choosing; one environment, or ``--eval-envs`` side by side). Run alone on the machine: with
another CPU-heavy job the times mean nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from cwworld.agents import make_agent
from cwworld.config import load_config
from cwworld.envs import RandomPolicy, env_spaces, make_env, make_vector_env, run_episodes
from cwworld.model import matched_rssm, parameter_count
from cwworld.train import Trainer

ENVS = {"cue": "cwworld/CueCorridor-v0", "long": "cwworld/CueCorridorLong-v0", "reach": "cwworld/PointReach-v0",
        "cue_outcome": "cwworld/CueCorridorOutcome-v0", "long_outcome": "cwworld/CueCorridorLongOutcome-v0"}


def preset(env_key: str, agent: str) -> str:
    """The preset a row starts from (its env and agent set by overrides)."""
    if env_key == "reach":
        return "point_reach_ac"  # Box actions: action_dim 2 (the planners plan Box actions too)
    return "cue_corridor_ac" if agent == "actor_critic" else "cue_corridor_agent"


def eval_env(env_id: str, num_envs: int):
    """The evaluation environment(s) and their single action space."""
    env = make_vector_env(env_id, num_envs) if num_envs > 1 else make_env(env_id)
    return env, env_spaces(env)[0]


def row(env_key: str, model_kind: str, agent: str, steps: int, episodes: int, extra: list[str],
        eval_envs: int = 1, keep: Path | None = None, preset_name: str | None = None) -> dict:
    env_id = ENVS[env_key]
    result = {"env": env_id, "model": model_kind if agent != "random" else "-", "agent": agent}
    if agent == "random":
        env, _ = eval_env(env_id, eval_envs)
        started = time.perf_counter()
        stats = run_episodes(env, RandomPolicy(env.action_space, seed=0), episodes, seed=100_000)
        seconds = time.perf_counter() - started
        return {**result, "success": stats["success"], "return": stats["mean_return"], "env_steps": 0,
                "train_s": 0.0, "decisions_per_s": sum(stats["lengths"]) / seconds, "params": 0}
    overrides = [f"data.env={env_id}", f"agent.kind={agent}", "agent.eval_every=0", f"train.steps={steps}",
                 "train.sample_every=1000000", "train.save_every=1000000", "train.tensorboard=false", *extra]
    config = load_config(preset_name or preset(env_key, agent), overrides)
    if model_kind == "rssm":
        config.model = matched_rssm(config.model)
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = scratch if keep is None else keep / f"{env_key}_{model_kind}_{agent}"
        trainer = Trainer(config, run_dir, progress=False)
        started = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - started
        env_steps = len(trainer.buffer)
        env, space = eval_env(env_id, eval_envs)
        policy = make_agent(config.agent, trainer.model, space, eval_envs, seed=0,
                            nets=getattr(trainer.agent, "nets", None), evaluate=True)
        torch.manual_seed(0)
        started = time.perf_counter()
        with torch.no_grad():
            stats = run_episodes(env, policy, episodes, seed=100_000)
        seconds = time.perf_counter() - started
    return {**result, "success": stats["success"], "return": stats["mean_return"], "env_steps": env_steps,
            "train_s": train_s, "decisions_per_s": sum(stats["lengths"]) / seconds,
            "params": parameter_count(config.model)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["cue"], choices=sorted(ENVS))
    parser.add_argument("--models", nargs="+", default=["cwvae", "rssm"], choices=["cwvae", "rssm"])
    parser.add_argument("--agents", nargs="+", default=["random", "actor_critic"],
                        choices=["random", "cem", "mppi", "clockwork", "actor_critic"])
    parser.add_argument("--steps", type=int, default=1500, help="training steps per row")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per row")
    parser.add_argument("--eval-envs", type=int, default=1,
                        help="evaluate in this many environments side by side (a vector env; decisions/s then "
                             "counts every environment's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--keep", type=Path, help="keep each row's run directory (metrics.jsonl with the "
                        "evaluations of agent.eval_every, checkpoints) under this folder, as ENV_MODEL_AGENT")
    parser.add_argument("--preset", help="start every trained row from this preset (default: cue_corridor_ac for "
                        "the actor-critic, cue_corridor_agent for the planners, point_reach_ac on PointReach)")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every trained row")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for env_key in args.envs:
        for agent in args.agents:
            for model_kind in (["-"] if agent == "random" else args.models):
                if agent == "clockwork" and model_kind == "rssm":
                    continue  # the Clockwork planner needs an upper level
                rows.append(row(env_key, model_kind, agent, args.steps, args.episodes, args.overrides,
                                args.eval_envs, args.keep, args.preset))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| env | world model | params | agent | success | mean return | env steps | train time | decisions/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        success = "-" if r["env"] == ENVS["reach"] else f"{r['success']:.0%}"  # PointReach: every return > 0
        print(f"| {r['env']} | {r['model']} | {r['params'] / 1e6:.2f} M | {r['agent']} | {success} | "
              f"{r['return']:.2f} | {r['env_steps']} | {r['train_s'] / 60:.1f} min | {r['decisions_per_s']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
