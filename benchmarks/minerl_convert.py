"""Frames per second converting MineRL v0 streams into replay chunks (`cwworld convert minerl`).

    python benchmarks/minerl_convert.py                  # 8 generated 500-frame streams
    python benchmarks/minerl_convert.py --src /data/MineRLNavigate-v0

Generated streams follow the v0 format exactly (H.264 recording.mp4 with leading frames,
rendered.npz with the Navigate keys, metadata.json); their frames are textured noise with
moving squares, which compresses about as badly as Minecraft footage. The timed stage is
the conversion only: decoding, alignment, action encoding and compressed npz chunks.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from cwworld.data.minerl import convert_minerl, write_v0_stream
from cwworld.utils import cpu_name


def make_streams(env_dir: Path, count: int, length: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        background = rng.integers(0, 200, (64, 64, 3), dtype=np.uint8)
        frames = np.repeat(background[None], length, axis=0)
        for t in range(length):
            y, x = (np.array([5, 7]) * t + 11 * i) % 48
            frames[t, y : y + 16, x : x + 16] = (220, 180, 40)
        n = length
        actions = {k: rng.integers(0, 2, n - 1) for k in ("forward", "back", "left", "right", "jump", "sneak",
                                                           "sprint", "attack")}
        actions["camera"] = rng.uniform(-10, 10, (n - 1, 2)).astype(np.float32)
        actions["place"] = np.where(rng.random(n - 1) < 0.1, "dirt", "none")
        write_v0_stream(env_dir / f"v4_bench_{i}_0-{n}", frames, actions, rng.random(n - 1).astype(np.float32),
                        rng.uniform(-180, 180, n).astype(np.float32), rng.integers(0, 3, n), leading_frames=2,
                        crf=18)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", default=None, help="MineRL v0 root or env folder (default: generate streams)")
    parser.add_argument("--streams", type=int, default=8, help="streams to generate")
    parser.add_argument("--length", type=int, default=500, help="frames per generated stream")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="cwworld-convert-"))
    try:
        src = Path(args.src) if args.src else tmp / "MineRLNavigate-v0"
        if not args.src:
            make_streams(src, args.streams, args.length)
        t0 = time.perf_counter()
        summary = convert_minerl(src, tmp / "replay", progress=False)
        seconds = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in (tmp / "replay").glob("*.npz")) / 2**20
        t0 = time.perf_counter()
        again = convert_minerl(src, tmp / "replay", progress=False)
        rerun = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = Table(title=f"MineRL v0 -> replay chunks, {cpu_name()}, torch {torch.__version__}")
    for column in ("streams", "steps", "seconds", "frames/s", "chunks MiB", "re-run (all skipped) s"):
        table.add_column(column, justify="right")
    fps = summary.steps / seconds
    table.add_row(str(summary.streams), str(summary.steps), f"{seconds:.2f}", f"{fps:,.0f}", f"{size_mb:.1f}",
                  f"{rerun:.2f} ({again.already} skipped)")
    Console().print(table)
    return {"frames_per_s": fps, "steps": summary.steps}


if __name__ == "__main__":
    main()
