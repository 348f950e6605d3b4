"""Frames per second read from a folder of 64x64 mp4 videos and served as training batches,
against the frames per second the `minerl_navigate` model consumes when training.

    python benchmarks/data_throughput.py                     # 16 generated 500-frame mp4s
    python benchmarks/data_throughput.py --folder /data/minerl_navigate/train --videos 0

Stages, each timed separately in one process:

* decode: PyAV decoding of every video plus writing the uint8 cache (first use of a folder);
* serve:  batches ``[B, T, 64, 64, 3]`` from the cache through the DataLoader
  (``--workers`` processes, collation included), what the trainer receives;
* generate: Moving MNIST batches made on the fly (for comparison);
* train:  frames per second of `minerl_navigate` training steps (forward, backward, Adam)
  at ``--model-batch`` on this machine (CPU frames/s hardly depend on the batch size).

The ratio columns divide by the training rate: the pipeline must be at least 10x faster.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import cwworld
from cwworld.data import MovingMNIST, VideoFolder, make_loader
from cwworld.utils import cpu_name, keep_freed_memory
from cwworld.viz import save_mp4


def make_videos(folder: Path, count: int, length: int, seed: int = 0) -> None:
    """``count`` mp4 files of ``length`` 64x64 RGB frames: moving coloured squares on noise."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        background = rng.integers(0, 80, (64, 64, 3), dtype=np.uint8)
        frames = np.repeat(background[None], length, axis=0)
        pos, vel = rng.uniform(0, 48, 2), rng.uniform(-3, 3, 2)
        for t in range(length):
            y, x = np.clip(pos + vel * t, 0, 48).astype(int)
            frames[t, y : y + 16, x : x + 16] = (200, 120 + i % 100, 60)
        save_mp4(folder / f"video_{i:04d}.mp4", frames, fps=20, scale=1)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default=None, help="a folder of videos (default: generate --videos mp4s)")
    parser.add_argument("--videos", type=int, default=16, help="mp4s to generate when no --folder is given")
    parser.add_argument("--length", type=int, default=500, help="frames per generated video")
    parser.add_argument("--batch", type=int, default=50, help="served batch size (the preset's: 50)")
    parser.add_argument("--seq-len", type=int, default=100, help="served sequence length (the preset's: 100)")
    parser.add_argument("--batches", type=int, default=40, help="batches timed per worker setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader workers to try")
    parser.add_argument("--decode-threads", type=int, default=2, help="threads decoding on first use")
    parser.add_argument("--model-batch", type=int, default=8, help="batch of the timed training steps")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps (after one warm-up)")
    args = parser.parse_args(argv)
    console = Console()
    keep_freed_memory()
    tmp = Path(tempfile.mkdtemp(prefix="cwworld-bench-"))
    try:
        folder = Path(args.folder) if args.folder else tmp / "videos"
        if not args.folder:
            folder.mkdir()
            make_videos(folder, args.videos, args.length)
        cache = tmp / "cache"

        t0 = time.perf_counter()
        dataset = VideoFolder(folder, args.seq_len, 64, 3, mode="sliding", stride=10, cache_dir=cache,
                              workers=args.decode_threads)
        decode_s = time.perf_counter() - t0
        frames_total = dataset.summary.frames
        rows = [("decode + cache (first use)", f"{args.decode_threads} threads", frames_total / decode_s)]

        for workers in args.workers:
            loader = iter(make_loader(dataset, args.batch, seed=0, workers=workers))
            next(loader)  # worker start-up is not throughput
            t0 = time.perf_counter()
            for _ in range(args.batches):
                batch = next(loader)
            elapsed = time.perf_counter() - t0
            assert batch["image"].shape == (args.batch, args.seq_len, 64, 64, 3)
            rows.append((f"serve batches [{args.batch}, {args.seq_len}, 64, 64, 3]", f"{workers} workers",
                         args.batches * args.batch * args.seq_len / elapsed))
            del loader

        mnist = MovingMNIST(100_000, args.seq_len)
        loader = iter(make_loader(mnist, args.batch, seed=0, workers=0))
        t0 = time.perf_counter()
        for _ in range(5):
            next(loader)
        rows.append((f"generate Moving MNIST [{args.batch}, {args.seq_len}, 64, 64, 1]", "0 workers",
                     5 * args.batch * args.seq_len / (time.perf_counter() - t0)))

        config = cwworld.load_config("minerl_navigate")
        torch.manual_seed(0)
        model = cwworld.CWVAE(config.model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-4)
        video = torch.randint(0, 256, (args.model_batch, args.seq_len, 64, 64, 3), dtype=torch.uint8)
        times = []
        for i in range(args.train_steps + 1):
            t0 = time.perf_counter()
            loss, _ = model.loss({"image": video})
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:
                times.append(time.perf_counter() - t0)
        train_fps = args.model_batch * args.seq_len / statistics.median(times)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    table = Table(title=f"data throughput vs minerl_navigate training, {cpu_name()}, "
                        f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    for column in ("stage", "setting", "frames/s", "x training"):
        table.add_column(column, justify="right" if column in ("frames/s", "x training") else "left")
    table.add_row("train minerl_navigate", f"B={args.model_batch}, T={args.seq_len}", f"{train_fps:,.0f}", "1.0")
    for stage, setting, fps in rows:
        table.add_row(stage, setting, f"{fps:,.0f}", f"{fps / train_fps:,.1f}")
    console.print(table)
    console.print(f"{dataset.summary.videos} videos, {frames_total} frames")
    return {"train_fps": train_fps, "rows": rows}


if __name__ == "__main__":
    main()
