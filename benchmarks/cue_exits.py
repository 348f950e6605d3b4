"""Does a CueCorridor run's world model carry the cue to the exits it trains on?

``benchmarks/cue_memory.py`` probes straight walks (the cue 24 steps before the junction). The
reward head, though, learns from the exits in its replay, which random play reaches about 70
steps after the cue. This reads a run's replay the way training does, but with every sequence
starting at an episode's first step (so its cue is in view at step 0), filters it with the run's
world model (posterior, as in training) and, at each exit (the first non-zero reward of the
sequence's first episode), asks:

* whether the cue can be read from the reward head's input (the bottom state and the action
  leading into the exit) and from the level-1 state of the latest tick at or before the exit: a
  logistic regression fitted on half of the exits and scored on the other half (chance 50%);
* what the reward head predicts there for the exits that paid +1 and for those that cost -1
  (an exact model: +1 and -1; one that has not learned the exits: about the same for both).

Rows by the number of steps between the cue and the exit.

    python benchmarks/cue_exits.py runs/cue_corridor_plan                      # latest checkpoint
    python benchmarks/cue_exits.py runs/cue_corridor_plan --checkpoint step_001000.pt --batches 40

About a minute per 40 batches of 8 x 96 steps on the 2-core CPU (sequences of the run's
train.seq_len by default).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agent_runs import cell  # noqa: E402
from cue_memory import linear_probe  # noqa: E402

from cwworld.data.replay import ReplayBuffer  # noqa: E402
from cwworld.train import load_model  # noqa: E402

RANGES = (("all", 0, None), ("0-39", 0, 40), ("40-69", 40, 70), ("70-119", 70, 120),
          (">= 120", 120, None))  # label, steps [lo, hi)


def exits_in_batch(batch: dict) -> list[tuple[int, int, int]]:
    """``(row, exit step, cue)`` for each sequence of ``batch`` (numpy or torch, ``image``
    ``[B, T, H, W, 3]`` uint8, ``reward``/``is_first`` ``[B, T]``) that starts at an episode's first
    step with the cue in view and reaches an exit inside that episode. The cue is read from the
    frame's top band at step 0: 0 red, 1 blue; sequences whose band is neither are skipped."""
    image, reward, is_first = (np.asarray(batch[k]) for k in ("image", "reward", "is_first"))
    found = []
    for row in range(image.shape[0]):
        if not is_first[row, 0]:
            continue
        r, g, b = (int(v) for v in image[row, 0, 2, 2, :3])
        if r > 150 and b < 100:
            cue = 0
        elif b > 150 and r < 100:
            cue = 1
        else:
            continue
        later_starts = np.flatnonzero(is_first[row, 1:])
        end = int(later_starts[0]) + 1 if len(later_starts) else image.shape[1]
        paid = np.flatnonzero(reward[row, :end] != 0)
        if len(paid):
            found.append((row, int(paid[0]), cue))
    return found


@torch.no_grad()
def collect(model, buffer: ReplayBuffer, batches: int, batch_size: int, seq_len: int) -> dict:
    """Head inputs, level-1 features, cue, cue-to-exit steps, reward and head prediction per exit."""
    captured = []
    hook = model.heads.reward.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    k = model.config.factor
    out = {"head_input": [], "level1": [], "cue": [], "gap": [], "reward": [], "predicted": []}
    try:
        for _ in range(batches):
            batch = {key: torch.as_tensor(v) for key, v in buffer.sample(batch_size, seq_len).items()}
            captured.clear()
            _, _, traj = model.loss_terms(batch, with_trajectory=True)
            head_input = captured[-1]
            predicted = model.heads.reward_value(head_input)
            for row, step, cue in exits_in_batch(batch):
                out["head_input"].append(head_input[row, step])
                if model.levels > 1:
                    out["level1"].append(traj.posterior[1].features[row, step // k])
                out["cue"].append(cue)
                out["gap"].append(step)
                out["reward"].append(float(batch["reward"][row, step]))
                out["predicted"].append(float(predicted[row, step]))
    finally:
        hook.remove()
    return out


def table(data: dict, seed: int = 0) -> list[dict]:
    """One row per cue-to-exit range of :data:`RANGES`: exits, probes, mean predictions."""
    n = len(data["cue"])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))  # halves that mix the ranges
    cue = torch.tensor(data["cue"])[order]
    gap, reward, predicted = (np.asarray(data[key])[order.numpy()] for key in ("gap", "reward", "predicted"))
    head_input = torch.stack(data["head_input"])[order]
    level1 = torch.stack(data["level1"])[order] if data["level1"] else None
    rows = []
    for label, lo, hi in RANGES:
        mask = (gap >= lo) & (gap < (hi if hi is not None else np.inf))
        if mask.sum() < 20:  # too few exits for a held-out probe
            continue
        m = torch.as_tensor(mask)
        rows.append({"range": label,
                     "exits": int(mask.sum()), "probe_head_input": linear_probe(head_input[m], cue[m]),
                     "probe_level1": None if level1 is None else linear_probe(level1[m], cue[m]),
                     "predicted_paid": float(predicted[mask & (reward > 0)].mean()) if (mask & (reward > 0)).any() else None,
                     "predicted_cost": float(predicted[mask & (reward < 0)].mean()) if (mask & (reward < 0)).any() else None})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a cwworld train run directory on a CueCorridor env")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file name or path (default: the latest)")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=0, help="steps per sequence (0: the run's train.seq_len)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines")
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint
    if checkpoint is not None and not Path(checkpoint).exists():
        checkpoint = str(args.run / "checkpoints" / checkpoint)
    model, config, step = load_model(args.run, checkpoint)
    if model.heads.reward is None:
        raise SystemExit(f"{args.run}: the world model has no reward head (model.reward_head)")
    model.requires_grad_(False)
    torch.manual_seed(args.seed)
    buffer = ReplayBuffer.load(args.run / "replay", episode_start_fraction=1.0, seed=args.seed)
    seq_len = args.seq_len or config.train.seq_len
    data = collect(model, buffer, args.batches, args.batch_size, seq_len)
    if not data["cue"]:
        raise SystemExit(f"{args.run}: no exit in {args.batches} x {args.batch_size} sequences of {seq_len} steps "
                         "from episode starts (a longer --seq-len?)")
    rows = table(data)
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(f"{args.run} at update {step}: exits of {args.batches} x {args.batch_size} sequences of {seq_len} steps "
          "from episode starts")
    print("| steps from cue to exit | exits | cue from the reward head's input | cue from level 1 | "
          "predicted reward: exits that paid +1 | exits that cost -1 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['range']} | {r['exits']} | {r['probe_head_input']:.0%} | {cell(r['probe_level1'], '.0%')} | "
              f"{cell(r['predicted_paid'], '+.2f')} | {cell(r['predicted_cost'], '+.2f')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
