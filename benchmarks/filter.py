"""Online filtering speed: `observe_step` frame by frame against `observe` on the whole sequence.

    python benchmarks/filter.py                                  # mmnist and minerl_navigate sizes
    python benchmarks/filter.py --presets mmnist --batches 1 --frames 72

For each preset, window kind (``paper``: the posterior of an upper tick sums the frames
``[o, o + k**l)``, so ``observe_step`` recomputes the open windows, up to ``k**(L-1)``
bottom steps per frame; ``causal``: it sums ``(o - k**l, o]``, so each frame costs one step
of each level that ticks) and batch size, it feeds ``--frames`` frames one at a time with
``observe_step`` and, for comparison, all at once with ``observe``. "frames/s" counts frames
filtered per second summed over the batch; "ms/frame" is the wall time of one call.
Random weights and frames: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

import cwworld
from cwworld.utils import cpu_name, keep_freed_memory, pick_device


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _filter(model, video, device) -> float:
    state = model.initial(video.shape[0])
    t0 = time.perf_counter()
    for t in range(video.shape[1]):
        state = model.observe_step(state, video[:, t], is_first=torch.full((video.shape[0],), t == 0))
    _sync(device)
    return time.perf_counter() - t0


def _observe(model, video, device) -> float:
    t0 = time.perf_counter()
    model.observe(video)
    _sync(device)
    return time.perf_counter() - t0


@torch.no_grad()
def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["mmnist", "minerl_navigate"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--frames", type=int, default=72, help="frames per run (72 = two top-level windows at k=6)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per cell (the best is kept)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if device.type == "cpu":
        keep_freed_memory()
    rows = []
    for preset in args.presets:
        for windows in ("paper", "causal"):
            config = cwworld.load_config(preset, [f"model.windows={windows}"]).model
            torch.manual_seed(0)
            model = cwworld.CWVAE(config).to(device).eval()
            for batch in args.batches:
                shape = (batch, args.frames, config.image_size, config.image_size, config.channels)
                video = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
                _filter(model, video[:, :8], device), _observe(model, video[:, :8], device)  # warm-up
                step = min(_filter(model, video, device) for _ in range(args.repeats))
                whole = min(_observe(model, video, device) for _ in range(args.repeats))
                rows.append(dict(preset=preset, windows=windows, batch=batch,
                                 step_ms=1000 * step / args.frames, step_fps=batch * args.frames / step,
                                 observe_fps=batch * args.frames / whole))
    table = Table(title=f"observe_step vs observe, {args.frames} frames ({cpu_name() if device.type == 'cpu' else device}, "
                        f"torch {torch.__version__}, {torch.get_num_threads()} threads)")
    for column in ("preset", "windows", "B", "observe_step ms/frame", "observe_step frames/s", "observe frames/s",
                   "causal speed-up"):
        table.add_column(column, justify="right")
    for row in rows:
        paper = next(r for r in rows if r["preset"] == row["preset"] and r["batch"] == row["batch"]
                     and r["windows"] == "paper")
        speedup = f"{paper['step_ms'] / row['step_ms']:.1f}x" if row["windows"] == "causal" else ""
        table.add_row(row["preset"], row["windows"], str(row["batch"]), f"{row['step_ms']:.2f}",
                      f"{row['step_fps']:,.0f}", f"{row['observe_fps']:,.0f}", speedup)
    Console().print(table)
    return rows


if __name__ == "__main__":
    main()
