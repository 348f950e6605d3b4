"""Time CW-VAE training steps (forward, backward, Adam) on synthetic video.

    python benchmarks/train_step.py --preset mmnist --batch 16 --seq-len 100 --warmup 2 --steps 5
    python benchmarks/train_step.py --preset mmnist --bf16            # bfloat16 autocast
    python benchmarks/train_step.py --preset mmnist --compile         # torch.compile the loss
    python benchmarks/train_step.py --preset mmnist --compile-parts   # compile cell steps and conv stacks only
    python benchmarks/train_step.py --preset mmnist --no-channels-last --no-keep-memory

Prints step seconds (min / median / max), frames/s and peak memory; ``--json PATH``
writes ``{"impl", "config": {...}, "step_s": [...], "peak_rss_mib", ...}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

import cwworld
from cwworld.utils import cpu_name, keep_freed_memory, peak_rss_mib, pick_device


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mmnist", help="config preset or YAML file (model section is used)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile the loss")
    parser.add_argument("--compile-parts", action="store_true",
                        help="torch.compile each level's cell step and the conv stacks (CWVAE.compile_parts)")
    parser.add_argument("--no-channels-last", action="store_true", help="NCHW convolutions")
    parser.add_argument("--no-keep-memory", action="store_true",
                        help="leave glibc malloc at its defaults (see cwworld.utils.keep_freed_memory)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if device.type == "cpu" and not args.no_keep_memory:
        keep_freed_memory()
    overrides = list(args.overrides)
    if args.no_channels_last:
        overrides.append("model.channels_last=false")
    cfg = cwworld.load_config(args.preset, overrides)
    torch.manual_seed(0)
    model = cwworld.CWVAE(cfg.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, eps=cfg.train.adam_eps)
    shape = (args.batch, args.seq_len, cfg.model.image_size, cfg.model.image_size, cfg.model.channels)
    batch = {"image": torch.randint(0, 256, shape, dtype=torch.uint8, device=device)}
    if cfg.model.action_dim:
        batch["action"] = torch.randn(args.batch, args.seq_len, cfg.model.action_dim, device=device)
    if args.compile_parts:
        model.compile_parts()
    loss_fn = torch.compile(model.loss_terms) if args.compile else model.loss_terms

    losses = []

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss, _ = loss_fn(batch, validate=False)
        if not losses:  # the loss of the initial weights: the same for every option up to its rounding
            losses.append(float(loss))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)

    frames = args.batch * args.seq_len
    median = statistics.median(times)
    params = sum(p.numel() for p in model.parameters())
    result = {
        "impl": "cwworld",
        "config": {
            "preset": args.preset, "batch": args.batch, "seq_len": args.seq_len, "bf16": args.bf16,
            "compile": args.compile, "compile_parts": args.compile_parts, "channels_last": cfg.model.channels_last,
            "keep_freed_memory": device.type == "cpu" and not args.no_keep_memory,
            "device": str(device), "threads": torch.get_num_threads(), "params": params,
            "overrides": overrides,
        },
        "hardware": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "warmup_s": warmup_s,
        "first_loss": losses[0] if losses else None,
        "step_s": times,
        "frames_per_s": frames / median,
        "peak_rss_mib": peak_rss_mib(),
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20

    table = Table(title=f"train step: {args.preset}, B={args.batch}, T={args.seq_len}, "
                        f"{'bf16' if args.bf16 else 'fp32'}{', compiled' if args.compile else ''}")
    for col in ("step s (min)", "median", "max", "frames/s", "peak RSS MiB", "params"):
        table.add_column(col, justify="right")
    table.add_row(f"{min(times):.3f}", f"{median:.3f}", f"{max(times):.3f}", f"{frames / median:.0f}",
                  f"{result['peak_rss_mib']:.0f}", f"{params / 1e6:.2f}M")
    console = Console()
    console.print(table)
    console.print(f"{result['hardware']}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
                  f"warm-up {warmup_s:.1f} s; loss of the initial weights {result['first_loss']:.6g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
