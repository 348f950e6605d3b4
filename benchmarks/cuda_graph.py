"""The training step replayed from a CUDA graph (``train.cuda_graph``) against the same step run
eagerly, both without host reads (``train.sync_every=50``). CUDA only.

    python benchmarks/cuda_graph.py                       # quickstart, mmnist, minerl_navigate
    python benchmarks/cuda_graph.py --presets mmnist --batch 50 --steps 40

For each model: the same batches (random videos, the same posterior noise) go through a
Trainer with and without the graph. Checked: the losses of the first ``--check`` steps and the
weights after them agree (the graph computes the same update); timed: ``--steps`` more updates,
the device synchronised before and after. Prints one table.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

import cwworld
from cwworld.train import Trainer


class RandomVideos(torch.utils.data.Dataset):
    """Deterministic random uint8 videos ``[T, 64, 64, C]``: item i is the same in every Trainer."""

    def __init__(self, length: int, channels: int, size: int = 4096):
        self.length, self.channels, self.size = length, channels, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"image": torch.randint(0, 256, (self.length, 64, 64, self.channels), dtype=torch.uint8, generator=g)}


def _run(preset, batch, seq_len, precision, graph, batches, check, steps, tmp):
    overrides = [f"train.batch_size={batch}", f"train.seq_len={seq_len}", f"train.precision={precision}",
                 "train.device=cuda", "train.tensorboard=false", "train.sync_every=50",
                 f"train.cuda_graph={str(graph).lower()}"]
    config = cwworld.load_config(preset, overrides)
    trainer = Trainer(config, f"{tmp}/{preset}_{graph}", dataset=RandomVideos(seq_len, config.model.channels),
                      progress=False)
    losses = []
    initial = [p.detach().clone() for p in trainer.model.parameters()]
    t0 = time.perf_counter()
    for i in range(check):  # read every step: the values to compare
        trainer.step = i  # the noise of step i, as in a run
        losses.append(trainer.read_metrics(trainer.train_step(batches[i % len(batches)]))["loss"])
        if i == 0:
            first_s = time.perf_counter() - t0  # includes the capture
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        trainer.step = check + i
        metrics = trainer.train_step(batches[i % len(batches)])
    trainer.read_metrics(metrics)
    torch.cuda.synchronize()
    step_ms = 1000 * (time.perf_counter() - t0) / steps
    trainer.close()
    return losses, weights, step_ms, first_s, initial


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["quickstart", "mmnist", "minerl_navigate"])
    parser.add_argument("--batch", type=int, default=None, help="default: the preset's train.batch_size")
    parser.add_argument("--seq-len", type=int, default=None, help="default: the preset's train.seq_len")
    parser.add_argument("--precision", default=None, choices=["fp32", "bf16"],
                        help="default: bf16 for minerl_navigate, fp32 otherwise")
    parser.add_argument("--check", type=int, default=5, help="steps whose losses and weights are compared")
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/cuda_graph.py: needs a CUDA device")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            train = cwworld.load_config(preset).train
            batch, seq_len = args.batch or train.batch_size, args.seq_len or train.seq_len
            precision = args.precision or ("bf16" if preset == "minerl_navigate" else "fp32")
            channels = cwworld.load_config(preset).model.channels
            g = torch.Generator().manual_seed(1)
            batches = [{"image": torch.randint(0, 256, (batch, seq_len, 64, 64, channels), dtype=torch.uint8,
                                               generator=g).cuda()} for _ in range(3)]
            try:
                eager = _run(preset, batch, seq_len, precision, False, batches, args.check, args.steps, tmp)
                graph = _run(preset, batch, seq_len, precision, True, batches, args.check, args.steps, tmp)
            except Exception as err:  # a model whose step cannot be captured: say why, go on
                rows.append((preset, batch, seq_len, precision, None, None, None, None, None, f"{type(err).__name__}: {err}"[:300]))
                continue
            loss_diff = max(abs(a - b) / abs(a) for a, b in zip(eager[0], graph[0]))
            # all weights as one vector: |eager - graph| over |eager| and over the update's own size
            moved = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(eager[1], graph[1])))
            weight_diff = float(moved / torch.sqrt(sum((a ** 2).sum() for a in eager[1])))
            update = torch.sqrt(sum(((a - i) ** 2).sum() for a, i in zip(eager[1], eager[4])))
            print(f"{preset}: weights differ by {weight_diff:.1e} of their norm, {float(moved / update):.1e} of the "
                  f"{args.check} updates' size; losses per step eager {eager[0]} graph {graph[0]}")
            rows.append((preset, batch, seq_len, precision, eager[2], graph[2], graph[3], loss_diff, weight_diff, ""))
    table = Table(title=f"training step, eager vs CUDA graph (both train.sync_every=50), "
                        f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    for column in ("preset", "B", "T", "precision", "eager ms", "graph ms", "speed-up", "first graph step s",
                   "max loss diff (rel)", "weight diff |e-g|/|e|", "error"):
        table.add_column(column)
    for preset, B, T, prec, e, gr, first, ld, wd, error in rows:
        table.add_row(preset, str(B), str(T), prec, f"{e:.1f}" if e else "-", f"{gr:.1f}" if gr else "-",
                      f"{e / gr:.2f}x" if e and gr else "-", f"{first:.1f}" if first else "-",
                      f"{ld:.1e}" if ld is not None else "-", f"{wd:.1e}" if wd is not None else "-", error)
    Console(width=220).print(table)
    return rows


if __name__ == "__main__":
    main()
