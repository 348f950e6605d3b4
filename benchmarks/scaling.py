"""Data-parallel scaling: training frames/s with 1, 2, ... processes at a fixed global batch.

Each row runs ``cwworld train --nproc N`` (gloo on CPU, NCCL on GPUs) for ``--steps`` steps of
the same config into a fresh run directory and reads the logged ``frames_per_s`` (global frames
per second, the first ``--skip`` steps left out as warm-up). Efficiency is
``frames/s(N) / (N * frames/s(1))``.

    python benchmarks/scaling.py --nproc 1 2 --steps 30 train.batch_size=8 train.seq_len=16

On a 2-core CPU two processes share the same two cores (each gets one thread), so the number
shows the cost of the gradient all-reduce and of splitting the batch, not a speed-up: for
that, each process needs its own cores or GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cwworld.utils import cpu_name


def run(nproc: int, config: str, steps: int, skip: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "cwworld.cli", "train", "--config", config, "--run-dir", str(run_dir),
               "--no-progress", "--nproc", str(nproc), f"train.steps={steps}", "train.log_every=1",
               "train.save_every=1000000", "train.sample_every=1000000", "train.tensorboard=false",
               "data.workers=0", *overrides]
        started = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - started
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [line["frames_per_s"] for line in lines[skip:]]
    return {"nproc": nproc, "frames_per_s": statistics.median(rates), "wall_s": wall, "steps": steps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the median")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    rows = [run(n, args.config, args.steps, args.skip, args.overrides) for n in args.nproc]
    base = rows[0]["frames_per_s"] / rows[0]["nproc"]
    print(f"{cpu_name()}; config {args.config} {' '.join(args.overrides)}; median over steps {args.skip + 1}-{args.steps}")
    print("| processes | frames/s | efficiency | wall time |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['nproc']} | {r['frames_per_s']:.0f} | {r['frames_per_s'] / (r['nproc'] * base):.0%} | "
              f"{r['wall_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
