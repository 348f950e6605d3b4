"""Reduced-scale reproduction of the paper's Moving MNIST comparison: open-loop SSIM, PSNR and
digit identity against the horizon (Fig. 1 / 4), KL per level (Table 1), and how the KL moves
between levels when the digits move slower or faster (Fig. 8).

Train each row first, one command per row (each stops after ``train.max_minutes`` = 45 minutes
of training; the README's table ran two rows at a time with ``OMP_NUM_THREADS=1`` each):

    cwworld train --config mmnist_small --run-dir runs/mmnist_small                 # CW-VAE, 3 levels, k = 4
    cwworld train --config mmnist_small_rssm --run-dir runs/mmnist_small_rssm       # 1 level, same parameters
    cwworld train --config mmnist_small_notmpabs --run-dir runs/mmnist_small_notmpabs  # 3 levels, k = 1

then evaluate them on the same held-out videos (test digits) and print one table:

    python benchmarks/reproduce_mmnist.py runs/mmnist_small runs/mmnist_small_rssm runs/mmnist_small_notmpabs --out repro

Writes ``OUT/ssim.png``, ``psnr.png``, ``identity.png`` (every row, with the baselines) and
``OUT/results.json``; each row's own ``cwworld eval`` output goes to ``OUT/<run name>/``.
The speed table evaluates the first run on digits at ``--speeds`` times the training speed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cwworld.evaluate import evaluate_run, plot_metrics
from cwworld.train import model_from_checkpoint, run_checkpoint
from cwworld.utils import atomic_write_text, cpu_name

MARKS = (1, 10, 100, 300, 500, 1000)


def training_summary(run_dir: Path) -> dict:
    """Parameters, steps and training minutes of a run (from its checkpoint)."""
    path, state = run_checkpoint(run_dir)
    model, config, step = model_from_checkpoint(path, state)
    seconds = state.get("train_seconds")  # a run's checkpoint; an exported file keeps "train_minutes"
    minutes = state.get("train_minutes") if seconds is None else seconds / 60
    return {"parameters": sum(p.numel() for p in model.parameters()), "steps": step,
            "train_minutes": minutes, "levels": model.levels,
            "factor": config.model.factor}


def evaluate_apart(run, out_dir, **kwargs):
    """:func:`evaluate_run` in a fresh process, which ends with it: on CPU the evaluation keeps
    freed memory for speed (``keep_freed_memory``), so evaluating row after row in one process
    grew its heap until the kernel killed it (24 GB after 3-4 rows of 500 predicted frames)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_evaluate, run, out_dir, kwargs).result()


def _evaluate(run, out_dir, kwargs):
    result, _ = evaluate_run(run, out_dir, **kwargs)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="trained run directories (the first also gets the speed table)")
    parser.add_argument("--out", default="repro", help="folder for the plots and results.json")
    parser.add_argument("--context", type=int, default=None, help="default: the runs' eval.context")
    parser.add_argument("--horizon", type=int, default=None, help="default: the runs' eval.horizon")
    parser.add_argument("--videos", type=int, default=None, help="default: the runs' eval.num_videos")
    parser.add_argument("--samples", type=int, default=None, help="default: the runs' eval.num_samples")
    parser.add_argument("--speeds", type=float, nargs="*", default=[0.5, 1.0, 2.0],
                        help="digit speeds (x the training range) for the KL-per-level table; none to skip")
    parser.add_argument("--speed-horizon", type=int, default=64, help="frames after the context in the speed table")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 150))  # the table is wide; a log file gets it whole
    out = Path(args.out)
    results, rows = [], []
    for run in map(Path, args.runs):
        result = evaluate_apart(run, out / run.name, context=args.context, horizon=args.horizon,
                                num_samples=args.samples, num_videos=args.videos, progress=True)
        results.append(result)
        rows.append({"run": str(run), **training_summary(run), **result.summary()})
    paths = plot_metrics(results, out)

    first = results[0]
    marks = [m for m in MARKS if m <= first.horizon]
    table = Table(title=f"Moving MNIST, {first.num_videos} held-out videos, context {first.context}, "
                        f"{first.horizon} frames predicted, mean of {first.num_samples} samples")
    for column in ("row", "L, k", "params", "steps", "minutes", "SSIM", "PSNR dB",
                   *[f"id@{m}" for m in marks], "frames > baselines SSIM / PSNR", "KL/frame per level"):
        table.add_column(column, justify="left" if column in ("row",) else "right")
    for row, result in zip(rows, results):
        identity = result.identity.mean(axis=(0, 1)) if result.identity is not None else None
        beats = row.get("frames_beating_baselines", {})
        minutes = row["train_minutes"]
        table.add_row(Path(row["run"]).name, f"{row['levels']}, {row['factor']}", f"{row['parameters'] / 1e6:.3f}M",
                      str(row["steps"]), "-" if minutes is None else f"{minutes:.1f}",
                      f"{row['ssim_mean_avg']:.3f}", f"{row['psnr_mean_avg']:.2f}",
                      *[("-" if identity is None else f"{identity[m - 1]:.0%}") for m in marks],
                      f"{beats.get('ssim', '-')} / {beats.get('psnr', '-')}",
                      " ".join(f"{v:.2f}" for v in result.kl_per_frame))
    curves = first.curves()
    for name in first.baselines:
        identity = curves.get(f"{name}_identity")
        table.add_row(f"baseline: {name}", "", "", "", "", f"{curves[f'{name}_ssim'].mean():.3f}",
                      f"{curves[f'{name}_psnr'].mean():.2f}",
                      *[("-" if identity is None else f"{identity[m - 1]:.0%}") for m in marks], "", "")
    console.print(table)

    speeds = []
    for speed in args.speeds:
        result = evaluate_apart(args.runs[0], out / f"speed_{speed:g}", context=args.context,
                                horizon=args.speed_horizon, num_samples=1, num_videos=args.videos,
                                overrides=[f"data.speed={speed}"], progress=True)
        speeds.append({"speed": speed, "kl_per_frame": result.kl_per_frame, "kl_per_tick": result.kl_per_tick})
    if speeds:
        levels = len(speeds[0]["kl_per_frame"])
        table = Table(title=f"{Path(args.runs[0]).name}: KL per level (nats per frame) on digits at a multiple "
                            "of the training speed")
        table.add_column("speed", justify="right")
        for level in range(levels):
            table.add_column(f"level {level}", justify="right")
        table.add_column("share of the top level", justify="right")
        for entry in speeds:
            kl = np.asarray(entry["kl_per_frame"])
            table.add_row(f"{entry['speed']:g}x", *[f"{v:.3f}" for v in kl], f"{kl[-1] / kl.sum():.1%}")
        console.print(table)
    console.print(f"{cpu_name()}; plots: {', '.join(str(p) for p in paths.values())}")
    record = {"rows": rows, "speeds": speeds}
    atomic_write_text(out / "results.json", json.dumps(record, indent=1, default=float) + "\n")
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
