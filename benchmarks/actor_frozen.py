"""The actor-critic alone: trained in the imagination of a *frozen* world model, evaluated in the env.

    python benchmarks/actor_frozen.py runs/cue_memory_x/cwvae runs/cue_memory/replay --updates 600
    python benchmarks/actor_frozen.py RUN REPLAY agent.input_norm=true agent.entropy=1e-3

Separates the two halves of an agent run on CueCorridor: if the world model already predicts
which exit pays (``benchmarks/cue_memory.py`` says so), does the actor-critic learn to act on
it? Each update samples a batch of ``--batch`` x ``--seq-len`` steps from the replay (half of
them from an episode's first step), filters it with the frozen model (posterior samples, no
gradient) and runs one :meth:`ActorCritic.update` from its posterior states (as ``cwworld train``
does after a world-model update). Every ``--eval-every`` updates: the greedy policy (the actor's
mode) over ``--episodes`` fresh episodes, success rate and mean length, printed as a table.
Agent settings: the run's ``agent`` section (or the library defaults) with ``agent.key=value``
overrides.

Where the environment reports ``info["position"]`` (CueCorridor does), the table also says
where the greedy episodes end: the share that reached the junction, and the policy's mean
probabilities of (forward, left, right) in the corridor and at the junction per cue (the
right exit is left for a red cue, right for a blue one), so a timeout can be told apart:
stuck in the corridor (turning) or at the junction (walking on the spot).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch

from cwworld.agents import make_agent
from cwworld.agents.actor_critic import features
from cwworld.config import apply_overrides
from cwworld.data.replay import ReplayBuffer
from cwworld.envs import make_env, run_episodes
from cwworld.train import load_model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run directory with a trained world model (reward and continue heads)")
    parser.add_argument("replay", help="a replay directory of the same environment")
    parser.add_argument("--env", default=None, help="environment id (default: the run's data.env or CueCorridor-v0)")
    parser.add_argument("--updates", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="save the trained agent's state_dict here at the end")
    parser.add_argument("overrides", nargs="*", help="agent.key=value")
    args = parser.parse_intermixed_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, config, step = load_model(args.run)
    model.requires_grad_(False)
    config.agent.kind = "actor_critic"
    apply_overrides(config, args.overrides)
    env = make_env(args.env or config.data.env or "cwworld/CueCorridor-v0")
    learner = make_agent(config.agent, model, env.action_space, 1, env.observation_space, seed=args.seed)
    # the actor's mode; with agent.plan_horizon > 0 also the planner acting on the critic
    plain = dataclasses.replace(config.agent, plan_horizon=0)
    actors = {"actor (mode)": make_agent(plain, model, env.action_space, 1, env.observation_space,
                                         nets=learner.nets, evaluate=True, seed=args.seed)}
    if config.agent.plan_horizon > 0:
        actors[f"CEM + critic, {config.agent.plan_horizon} steps"] = make_agent(
            config.agent, model, env.action_space, 1, env.observation_space, nets=learner.nets, evaluate=True,
            seed=args.seed)
    buffer = ReplayBuffer.load(args.replay, episode_start_fraction=0.5)
    print(f"world model: {args.run} (step {step}); agent: {config.agent}", file=sys.stderr)
    print("| updates | minutes | acting | success | mean return | mean length | reached junction "
          "| actor's p(f, l, r): corridor | junction, red cue | junction, blue cue |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    started, seed = time.perf_counter(), 1_000_000
    for update in range(1, args.updates + 1):
        batch = {k: torch.as_tensor(v) for k, v in buffer.sample(args.batch, args.seq_len).items()}
        with torch.no_grad():
            _, _, traj = model.loss_terms(batch, with_trajectory=True)
        metrics = learner.update(traj, batch)
        if update % args.eval_every == 0 or update == args.updates:
            for name, actor in actors.items():
                stats = greedy_episodes(env, actor, args.episodes, seed)
                where = " | ".join(stats.get(k, "-") for k in ("junction", "corridor_probs", "red_probs",
                                                              "blue_probs"))
                print(f"| {update} | {(time.perf_counter() - started) / 60:.1f} | {name} | {stats['success']:.0%} | "
                      f"{stats['mean_return']:+.2f} | {stats['mean_length']:.0f} | {where} |", flush=True)
            print({k: round(v, 4) for k, v in metrics.items()}, file=sys.stderr, flush=True)
    if args.save:
        torch.save(learner.state_dict(), args.save)
    return 0


@torch.no_grad()
def greedy_episodes(env, actor, episodes: int, seed: int) -> dict:
    """:func:`run_episodes` plus, where ``info`` has ``position``, where the episodes went
    (formatted strings ``junction``, ``corridor_probs``, ``red_probs``, ``blue_probs``)."""
    length = getattr(env.unwrapped, "length", None)
    probs = {"corridor": [], 0: [], 1: []}  # the actor's probabilities where it acted (also when a planner acts)
    arrivals = [0, False]  # arrivals at the junction (one per episode that gets there: it never leaves), was there

    def on_step(info):
        if "position" not in info or length is None:
            return
        at_junction = info["position"] == length
        arrivals[0] += at_junction and not arrivals[1]
        arrivals[1] = at_junction
        probs[info["cue"] if at_junction else "corridor"].append(actor.distribution(features(actor.state)).probs[0])

    stats = run_episodes(env, actor, episodes, seed=seed, on_step=on_step)
    if not any(probs.values()):
        return stats
    fmt = lambda ps: "-" if not ps else " / ".join(f"{v:.2f}" for v in torch.stack(ps).mean(0).tolist())
    return {**stats, "junction": f"{arrivals[0] / episodes:.0%}", "corridor_probs": fmt(probs["corridor"]),
            "red_probs": fmt(probs[0]), "blue_probs": fmt(probs[1])}


if __name__ == "__main__":
    sys.exit(main())
