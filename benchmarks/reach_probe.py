"""Does a PointReach world model move the dot in imagination? One table per run.

    python benchmarks/reach_probe.py runs/point_reach_ac [runs/other ...] --episodes 50
    python benchmarks/reach_probe.py runs/point_reach_ac --steps 1000 2000 3000   # its checkpoints

For each episode (environment seeds 0, 1, ...): ``--context`` steps of uniform random actions
are filtered with ``observe_step`` (posterior means), then ``--horizon`` steps of the action
pointing straight at the target (unit length, clipped to the Box) are imagined with the prior
means and decoded, and taken in the real environment. The dot's centre is located in each
decoded frame as the centroid of its bright pixels (mean channel value above 0.75; the target
square is grey, 0.47) and compared with the environment's. Columns, in pixels (frames are 64 x
64; the dot moves up to 4 px per step):

* ``recon err``: the dot in the decoded *posterior* frame of the last context step;
* ``err @ i``: the dot in the imagined frame ``i`` steps on;
* ``moved``: the imagined dot's displacement over the horizon divided by the true one (1 = the
  model moves the dot as far as the environment does; 0 = it stays put);
* ``reward ratio``: the reward head's predicted sum over the horizon, towards the target
  against away from it (the environment's ratio is in the last row);
* ``lost``: imagined frames with no bright pixel (dot gone), share.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from cwworld.train import model_from_checkpoint, run_checkpoint
from cwworld.envs.point_reach import DOT, PointReach


def dot_centre(frame: np.ndarray) -> np.ndarray:
    """``[H, W, C]`` float in [0, 1] -> ``[y, x]`` centroid of the bright pixels (NaN if none)."""
    bright = frame.mean(-1) > 0.75
    if not bright.any():
        return np.full(2, np.nan)
    ys, xs = np.nonzero(bright)
    return np.array([ys.mean(), xs.mean()]) + 0.5


@torch.no_grad()
def probe(run: str, episodes: int, context: int, horizon: int, step: int = 0) -> dict:
    checkpoint = Path(run) / "checkpoints" / f"step_{step:06d}.pt" if step else None
    path, contents = run_checkpoint(run, checkpoint)
    model, _, _ = model_from_checkpoint(path, contents)
    model.eval()
    errors, recon, moved, lost = [], [], [], []
    predicted = {+1: [], -1: []}
    true_reward = {+1: [], -1: []}
    rng = np.random.default_rng(0)
    for episode in range(episodes):
        env = PointReach()
        frame, _ = env.reset(seed=episode)
        state = model.initial(1)
        prev = torch.zeros(1, 2)
        first = torch.ones(1, dtype=torch.bool)
        for _ in range(context):
            state = model.observe_step(state, torch.as_tensor(frame)[None], prev, first, sample=False)
            action = rng.uniform(-1, 1, 2).astype(np.float32)
            frame, *_ = env.step(action)
            prev, first = torch.as_tensor(action)[None], torch.zeros(1, dtype=torch.bool)
        state = model.observe_step(state, torch.as_tensor(frame)[None], prev, first, sample=False)
        posterior = model.decode(state.features(0)[:, None])[0, 0].numpy()
        start_seen = dot_centre(posterior)
        recon.append(np.linalg.norm(start_seen - (env._dot + DOT / 2)))
        direction = (env._target + 5) - (env._dot + DOT / 2)
        direction = direction / max(np.linalg.norm(direction), 1e-6)
        for sign in (+1, -1):
            act = np.clip(sign * direction, -1, 1).astype(np.float32)
            actions = torch.as_tensor(np.tile(act, (1, horizon, 1)))
            roll = model.imagine(state, horizon, actions=actions, sample=False, decode=sign == +1)  # frames: towards only
            predicted[sign].append(float(roll.reward.sum()))
            sim = copy.deepcopy(env)  # the environment where the imagination starts
            start = sim._dot + DOT / 2
            truth, rewards = [], []
            for _ in range(horizon):
                _, r, *_ = sim.step(act)
                truth.append(sim._dot + DOT / 2)
                rewards.append(r)
            true_reward[sign].append(sum(rewards))
            if sign == +1:
                imagined = [dot_centre(f) for f in roll.frames[0].numpy()]
                errors.append([np.linalg.norm(p - t) for p, t in zip(imagined, truth)])
                lost.append(np.mean([np.isnan(p).any() for p in imagined]))
                true_move = np.linalg.norm(truth[-1] - start)
                if true_move > 4 and not np.isnan(imagined[-1]).any() and not np.isnan(start_seen).any():
                    moved.append(np.linalg.norm(imagined[-1] - start_seen) / true_move)
    errors = np.array(errors)
    return {"run": run, "step": int(contents["step"]), "recon": np.nanmean(recon), "errors": np.nanmean(errors, 0), "moved": np.mean(moved) if moved else np.nan,
            "ratio": np.mean(predicted[+1]) / np.mean(predicted[-1]),
            "true_ratio": np.mean(true_reward[+1]) / np.mean(true_reward[-1]), "lost": float(np.mean(lost))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories of PointReach online runs")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--context", type=int, default=5, help="filtered steps before imagining")
    parser.add_argument("--horizon", type=int, default=10, help="imagined steps")
    parser.add_argument("--steps", type=int, nargs="+", default=[0],
                        help="checkpoints to probe, by update (default: the newest)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = sorted({1, max(1, args.horizon // 2), args.horizon})
    print("| run | update | recon err | " + " | ".join(f"err @ {i}" for i in steps) + " | moved | reward ratio | lost |")
    print("|---|---|---|" + "---|" * len(steps) + "---|---|---|")
    for run in args.runs:
        for step in args.steps:
            r = probe(run, args.episodes, args.context, args.horizon, step)
            print(f"| {run} | {r['step']} | {r['recon']:.1f} | " + " | ".join(f"{r['errors'][i - 1]:.1f}" for i in steps)
                  + f" | {r['moved']:.2f} | {r['ratio']:.2f} (env {r['true_ratio']:.2f}) | {r['lost']:.0%} |", flush=True)


if __name__ == "__main__":
    main()
