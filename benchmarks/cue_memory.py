"""Does the world model remember the cue? CueCorridor world models, CW-VAE against the 1-level
RSSM at the same parameter count, trained on the same data for the same wall time, then probed.

    python benchmarks/cue_memory.py --minutes 30 --out runs/cue_memory      # about 1 h 10 min
    python benchmarks/cue_memory.py --out runs/cue_memory --probe-only      # probe what is there
    python benchmarks/cue_memory.py --length 8 --out runs/cue_memory_8      # a shorter corridor
    python benchmarks/cue_memory.py --out runs/cue_memory_norm model.head_norm=true

An agent can only solve CueCorridor if its world model predicts, at the junction, that the exit
of the cue's colour pays +1 and the other -1: the cue was shown ``length`` steps before. This
measures that directly, without an agent in between:

1. **Data** (shared by both models): ``--data`` steps of CueCorridor played by a random policy
   biased to walk on (forward with probability 0.6, left and right 0.2 each), so that most
   64-step training windows hold an episode's cue and its decision (uniform actions take about
   72 steps to reach the junction). Written once to ``OUT/replay``.
2. **Training**: each world model offline on that replay (preset ``cue_corridor_ac``'s model:
   2 levels, k = 4, reward and continue heads, frame std 0.5), sequences of 64, for
   ``--minutes`` of training wall time (``train.max_minutes``; re-running resumes).
3. **Probe** on ``--episodes`` fresh episodes (seeds unseen in training): walk forward to the
   junction, then score the exit actions by the predicted reward of the step they lead to
   (posterior and prior means, no sampling):

   * *filtered*: every frame up to the junction observed; the reward of LEFT and RIGHT predicted
     one step ahead. The cue is only in the first 3 frames, so the state must carry it 22+ steps.
   * *imagined*: only the first ``cue_steps + 1`` frames observed, the walk to the junction and
     the exit imagined open-loop (what a planner or an actor-critic in imagination relies on).

   Accuracy: the fraction of episodes where the cue's exit gets the higher predicted reward
   (chance 50%); the margin: mean predicted reward of the right exit minus the wrong one (an
   exact model: +2). And whether the state at the junction holds the cue at all, used or not:
   a logistic regression from every level's features there to the cue, fitted on half of the
   probe episodes and scored on the other half (chance 50%). With the posterior means the probe
   episodes differ in nothing but the cue, so any trace of it separates them: the same probe on
   a *sampling* filter (as training and acting use) and the forgetting table (the gap between the
   two cues' mean states h per level and step, against the spread within a cue) say how much of
   the cue is left.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cwworld.agents.actor_critic import features
from cwworld.config import load_config
from cwworld.data.replay import ReplayBuffer
from cwworld.envs import collect, make_env, make_vector_env
from cwworld.envs.cue_corridor import FORWARD, LEFT, RIGHT
from cwworld.model import matched_rssm, parameter_count
from cwworld.states import CWState
from cwworld.train import Trainer, load_model


class WalkOn:
    """Random actions biased to walk on: one-hot ``forward`` with probability ``p``, else left or right."""

    def __init__(self, p: float = 0.6, seed: int = 0):
        self.rng, self.probs = np.random.default_rng(seed), [p, (1 - p) / 2, (1 - p) / 2]

    def __call__(self, obs):
        return np.eye(3, dtype=np.float32)[self.rng.choice(3, p=self.probs)]


def make_data(out: Path, steps: int, env_id: str, **env_kwargs) -> ReplayBuffer:
    folder = out / "replay"
    buffer = ReplayBuffer(folder, chunk_size=500)
    if len(buffer) < steps:
        stats = collect(make_env(env_id, **env_kwargs), WalkOn(seed=len(buffer)), steps - len(buffer), buffer,
                        seed=len(buffer), progress=False)
        buffer.end_stream()
        print(f"data: {stats['episodes']} episodes, mean length {np.mean(stats['lengths']):.1f}, "
              f"success {np.mean(np.array(stats['returns']) > 0):.0%} -> {folder}", file=sys.stderr)
    return buffer


def config_for(kind: str, out: Path, minutes: float, extra: list[str] = ()):
    overrides = [*extra, "data.kind=replay", f"data.path={out / 'replay'}", "data.env=null", "data.workers=0",
                 "agent.kind=random", "agent.eval_every=0", "train.steps=1000000", f"train.max_minutes={minutes}",
                 "train.seq_len=64", "train.batch_size=8", "train.save_every=200", "train.sample_every=1000000",
                 "train.log_every=50"]
    config = load_config("cue_corridor_ac", overrides)
    if kind == "rssm":
        config.model = matched_rssm(config.model)
    return config


@torch.no_grad()
def probe(model, env_id: str, episodes: int, batch: int = 50, seed: int = 1_000_000, **env_kwargs) -> dict:
    """Exit scores after a filtered walk and after an imagined one (see the module docstring)."""
    correct = {"filtered": [], "imagined": []}
    margin = {"filtered": [], "imagined": []}
    junction, cues = [], []  # every level's features at the junction, and the cue: the linear probe
    sampled_junction, h_at = [], {}  # the same with a sampling filter; per step, every level's h (sampled)
    eye = torch.eye(3)
    for start in range(0, episodes, batch):
        B = min(batch, episodes - start)
        envs = make_vector_env(env_id, B, **env_kwargs)
        obs, info = envs.reset(seed=seed + start)
        inner = envs.envs[0].unwrapped
        length, cue_steps = inner.length, min(inner.cue_steps, inner.length)
        cue = torch.as_tensor(info["cue"])  # 0 red = LEFT pays, 1 blue = RIGHT pays
        frames = [torch.as_tensor(obs["image"])]
        for _ in range(length):  # walk to the junction: frames 0 .. length
            obs, *_ = envs.step(np.stack([np.eye(3, dtype=np.float32)[FORWARD]] * B))
            frames.append(torch.as_tensor(obs["image"]))
        envs.close()
        states = walk_states(model, frames, sample=False)
        junction.append(features(states[-1]))
        torch.manual_seed(start)  # a sampling filter, as in training and acting
        sampled = walk_states(model, frames, sample=True)
        sampled_junction.append(features(sampled[-1]))
        for t in forget_steps(length):
            h_at.setdefault(t, []).append(sampled[t].h)  # per level (B, deter_l)
        cues.append(cue)
        for mode, start_state, walk in (("filtered", states[-1], 0), ("imagined", states[cue_steps], length - cue_steps)):
            both = CWState.cat([start_state, start_state])  # [2B]: LEFT for the first B, RIGHT for the rest
            exits = torch.cat([eye[LEFT].expand(B, 3), eye[RIGHT].expand(B, 3)])
            actions = torch.cat([eye[FORWARD].expand(2 * B, walk, 3), exits[:, None]], dim=1)
            rollout = model.imagine(both, walk + 1, actions=actions, sample=False)
            reward = rollout.reward[:, -1].reshape(2, B)  # [exit, B]
            right = torch.where(cue == 0, reward[0], reward[1])
            wrong = torch.where(cue == 0, reward[1], reward[0])
            correct[mode].append((right > wrong).float())
            margin[mode].append(right - wrong)
    result = {f"{mode}_{name}": float(torch.cat(values[mode]).mean())
              for name, values in (("accuracy", correct), ("margin", margin)) for mode in ("filtered", "imagined")}
    cues = torch.cat(cues)
    result["cue_in_state"] = linear_probe(torch.cat(junction), cues)
    result["cue_in_state_sampled"] = linear_probe(torch.cat(sampled_junction), cues)
    result["forgetting"] = {}  # per step: per level, the cue gap in h and the noise around it
    for t, batches in sorted(h_at.items()):
        per_level = []
        for level in range(model.levels):
            h = torch.cat([b[level] for b in batches])  # (episodes, deter)
            means = [h[cues == c].mean(0) for c in (0, 1)]
            noise = torch.cat([h[cues == c] - means[c] for c in (0, 1)]).std(0).norm()
            per_level.append({"gap": float((means[0] - means[1]).norm()), "noise": float(noise)})
        result["forgetting"][t] = per_level
    return result


def walk_states(model, frames: list, sample: bool) -> list:
    """The filter's state after each frame of a forward walk (``frames[t]``: ``[B, H, W, C]``)."""
    B = frames[0].shape[0]
    forward = torch.eye(3)[FORWARD].expand(B, 3)  # the action before every frame (ignored at the first)
    state, states = model.initial(B), []
    for t, frame in enumerate(frames):
        state = model.observe_step(state, frame, forward, torch.full((B,), t == 0), sample=sample)
        states.append(state)
    return states


def forget_steps(length: int) -> tuple:
    """Steps at which the forgetting table measures the cue in the state: in view, then on the walk."""
    return tuple(sorted({2, min(8, length), min(16, length), length}))


def linear_probe(features: torch.Tensor, labels: torch.Tensor, steps: int = 500) -> float:
    """Held-out accuracy of a logistic regression reading ``labels`` (0/1) from ``features``,
    fitted on the first half of the episodes and tested on the second: whether the state at the
    junction still holds the cue at all, whether or not the reward head uses it."""
    half = len(labels) // 2
    mean, std = features[:half].mean(0), features[:half].std(0) + 1e-6
    x, y = (features - mean) / std, labels.float()
    weights = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([weights, bias], lr=0.05, weight_decay=1e-3)
    with torch.enable_grad():
        for _ in range(steps):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x[:half] @ weights + bias, y[:half])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return float(((x[half:] @ weights + bias > 0).float() == y[half:]).float().mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/cue_memory"))
    parser.add_argument("--models", nargs="+", default=["cwvae", "rssm"], choices=["cwvae", "rssm"])
    parser.add_argument("--minutes", type=float, default=30.0, help="training wall time per model")
    parser.add_argument("--data", type=int, default=20_000, help="environment steps of training data")
    parser.add_argument("--episodes", type=int, default=200, help="probe episodes")
    parser.add_argument("--env", default="cwworld/CueCorridor-v0")
    parser.add_argument("--length", type=int, default=None, help="corridor length (default: the env's, 24)")
    parser.add_argument("--cue-steps", type=int, default=None,
                        help="steps the cue stays in view (default: the env's, 3); a control with the cue in view "
                             "at the junction (e.g. 1000) asks for no memory at all")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--probe-only", action="store_true", help="probe the runs in OUT, train nothing")
    parser.add_argument("overrides", nargs="*", help="key=value for both models, e.g. model.head_norm=true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    env_kwargs = {} if args.length is None else {"length": args.length}
    if args.cue_steps is not None:
        env_kwargs["cue_steps"] = args.cue_steps
    if not args.probe_only:
        make_data(args.out, args.data, args.env, **env_kwargs)
    rows = []
    for kind in args.models:
        run = args.out / kind
        if not args.probe_only:
            started = time.perf_counter()
            trainer = Trainer(config_for(kind, args.out, args.minutes, args.overrides), run, progress=False)
            trainer.train()
            print(f"{kind}: step {trainer.step}, {time.perf_counter() - started:.0f} s", file=sys.stderr)
        model, config, step = load_model(run)
        state = torch.load(run / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
        result = {"model": kind, "params": parameter_count(config.model), "steps": step,
                  "minutes": state.get("train_seconds", 0.0) / 60, **probe(model, args.env, args.episodes, **env_kwargs)}
        rows.append(result)
        print(json.dumps(result), file=sys.stderr, flush=True)
    print("| world model | params | updates | train minutes | filtered: accuracy / margin | "
          "imagined: accuracy / margin | cue in the junction state (linear probe) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['steps']} | {r['minutes']:.0f} | "
              f"{r['filtered_accuracy']:.0%} / {r['filtered_margin']:+.2f} | "
              f"{r['imagined_accuracy']:.0%} / {r['imagined_margin']:+.2f} | {r['cue_in_state']:.0%} |")
    print("\nForgetting (sampling filter, as in training and acting): per level, the distance between the two "
          "cues' mean deterministic states h / the spread of h within a cue, by step; and the linear probe "
          "of the sampled junction state")
    for r in rows:
        steps = sorted(r["forgetting"], key=int)
        cells = [f"step {t}: " + ", ".join(f"L{level} {v['gap']:.2f} / {v['noise']:.2f}"
                                           for level, v in enumerate(r["forgetting"][t])) for t in steps]
        print(f"{r['model']}: " + "; ".join(cells) + f"; sampled probe {r['cue_in_state_sampled']:.0%}")
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
