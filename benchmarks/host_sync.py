"""Count the host synchronisations in a training step and in an acting step.

    python benchmarks/host_sync.py                    # CPU: the operations that would stall a GPU
    python benchmarks/host_sync.py --device cuda      # plus the synchronisations CUDA reports

Rows: the offline training step (``quickstart`` model), the online actor-critic step (world model
and actor-critic update, ``cue_corridor_ac``), and one ``Agent.act`` of each agent kind on a batch of
environments. For each, the value reads per step found by :func:`cwworld.syncs.record_syncs` (any
device) and, on CUDA, by :func:`cwworld.syncs.record_cuda_syncs`, with the lines they come from.
An acting step must read its actions back once (the environments run on the host); a training
step needs no read at all except where ``train.sync_every`` asks for its metrics.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch
from rich.console import Console
from rich.table import Table

import cwworld
from cwworld.agents import make_agent
from cwworld.envs import env_spaces, make_vector_env
from cwworld.syncs import record_cuda_syncs, record_syncs
from cwworld.train import Trainer
from cwworld.utils import cpu_name, pick_device


def _trainer(preset, run_dir, device, overrides=()):
    config = cwworld.load_config(preset, [f"train.device={device}", "train.tensorboard=false", *overrides])
    return Trainer(config, run_dir, progress=False)


def _count(fn, steps, cuda):
    fn()  # warm-up: first calls allocate, compile and cache
    fn()
    with record_syncs() as ops:
        for _ in range(steps):
            fn()
    real = None
    if cuda:
        torch.cuda.synchronize()
        with record_cuda_syncs() as real:
            for _ in range(steps):
                fn()
        torch.cuda.synchronize()
    return ops, real


def _time_sync_every(device, steps, overrides) -> dict:
    """Milliseconds per training step (``quickstart``, one batch reused) with the metrics read
    every step against every 50 steps, the device synchronised before and after."""
    import time

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for every in (1, 50):
            trainer = _trainer("quickstart", f"{tmp}/{every}", device, [*overrides, f"train.sync_every={every}"])
            batch = next(trainer.batches())
            for _ in range(5):
                trainer.train_step(batch)
            trainer.read_metrics({})
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(steps):
                metrics = trainer.train_step(batch)
                if every == 1 or (i + 1) % every == 0:
                    trainer.read_metrics(metrics)
            trainer.read_metrics(metrics)
            if device.type == "cuda":
                torch.cuda.synchronize()
            out[f"sync_every={every}"] = 1000 * (time.perf_counter() - t0) / steps
            trainer.close()
    print("training step ms (quickstart, one batch): " + ", ".join(f"{k}: {v:.2f}" for k, v in out.items()))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="steps recorded per row")
    parser.add_argument("--time-steps", type=int, default=0,
                        help="also time this many training steps with train.sync_every 1 and 50 (quickstart)")
    parser.add_argument("--json", default=None)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="train.* overrides for both training rows (e.g. train.sync_every=0)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer("quickstart", f"{tmp}/offline", device, args.overrides)
        batches = trainer.batches()
        batch = next(batches)
        rows["train step (quickstart)"] = _count(lambda: trainer.train_step(batch), args.steps, cuda)
        trainer.close()

        trainer = _trainer("cue_corridor_ac", f"{tmp}/online", device,
                           ["data.prefill=300", "train.batch_size=4", "train.seq_len=32", *args.overrides])
        batch = next(trainer.batches())
        rows["train step + actor-critic (cue_corridor_ac)"] = _count(lambda: trainer.train_step(batch),
                                                                    args.steps, cuda)
        model = trainer.model
        env = make_vector_env("cwworld/CueCorridor-v0", 4)
        obs, _ = env.reset(seed=0)
        action_space, obs_space = env_spaces(env)
        for kind in ("random", "cem", "clockwork", "actor_critic"):
            agent_config = cwworld.load_config("cue_corridor_ac", [f"agent.kind={kind}", "agent.population=64",
                                                                   "agent.iterations=2"]).agent
            agent = make_agent(agent_config, model, action_space, 4, observation_space=obs_space,
                                              seed=0)
            rows[f"act, {kind}, 4 envs"] = _count(lambda: agent.act(obs), args.steps, cuda)
        trainer.close()

    table = Table(title=f"host value reads per step ({device}: "
                        f"{torch.cuda.get_device_name(device) if cuda else cpu_name()}, torch {torch.__version__})")
    table.add_column("step")
    table.add_column("reads / step (ops)", justify="right")
    if cuda:
        table.add_column("CUDA syncs / step", justify="right")
    table.add_column("where (ops)")
    result = {"device": str(device), "torch": torch.__version__, "rows": {}}
    for name, (ops, real) in rows.items():
        where = "; ".join(f"{site} x{n / args.steps:g}" for site, n in ops.summary().items())
        cells = [name, f"{len(ops) / args.steps:g}"]
        if cuda:
            cells.append(f"{len(real) / args.steps:g}")
        table.add_row(*cells, where or "-")
        result["rows"][name] = {"ops_per_step": len(ops) / args.steps, "ops": ops.summary(),
                                "cuda_per_step": None if real is None else len(real) / args.steps,
                                "cuda": None if real is None else real.summary()}
    Console(width=200).print(table)
    if cuda:
        for name, (_, real) in rows.items():
            for site, n in real.summary().items():
                print(f"  {name}: CUDA sync at {site} x{n / args.steps:g}")
    if args.time_steps:
        result["step_ms"] = _time_sync_every(device, args.time_steps, args.overrides)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
