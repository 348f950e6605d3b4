"""Batches for training: a resumable batch order and a DataLoader around any dataset.

The batch order is a pure function of ``(seed, step)``: the dataset is walked in
epoch-wise random permutations (epoch ``e`` uses permutation ``e`` of the seed),
and batch ``s`` is the ``s``-th run of ``batch_size`` indices. A resumed run
therefore needs only its step number to draw exactly the batches an
uninterrupted run would have drawn, however many batches the DataLoader's
workers had prefetched when the run stopped.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class StepBatchSampler(Sampler):
    """Endless batches of dataset indices; batch ``s`` depends only on ``(size, batch_size, seed, s)``.

    Args:
        size: dataset length.
        batch_size: indices per (global) batch (may exceed ``size``: batches then span epochs).
        seed: order seed.
        start_step: the first batch yielded (a resumed run passes its step).
        rank, world: with ``world`` processes, process ``rank`` gets its share of every global
            batch, the indices ``[rank * b, (rank + 1) * b)`` with ``b = batch_size / world``.
    """

    def __init__(self, size: int, batch_size: int, seed: int = 0, start_step: int = 0, rank: int = 0,
                 world: int = 1):
        if size < 1 or batch_size < 1:
            raise ValueError(f"StepBatchSampler: size and batch_size must be >= 1, found {size} and {batch_size}")
        if batch_size % world or not 0 <= rank < world:
            raise ValueError(f"StepBatchSampler: batch_size {batch_size} must split evenly over {world} processes "
                             f"(rank {rank})")
        self.size, self.batch_size, self.seed, self.start_step = size, batch_size, seed, start_step
        self.rank, self.world = rank, world
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=gen)
        return self._perm

    def indices(self, step: int) -> list[int]:
        """Dataset indices of batch ``step``."""
        out = []
        for position in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, offset = divmod(position, self.size)
            out.append(int(self._permutation(epoch)[offset]))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        step, share = self.start_step, self.batch_size // self.world
        while True:
            yield self.indices(step)[self.rank * share:(self.rank + 1) * share]
            step += 1


def make_loader(dataset: Dataset, batch_size: int, seed: int = 0, start_step: int = 0,
                workers: int = 2, pin_memory: bool = False, rank: int = 0, world: int = 1) -> DataLoader:
    """An endless DataLoader of collated batches (``{"image": uint8 [B, T, H, W, C]}``) in
    :class:`StepBatchSampler` order, loaded by ``workers`` processes (0: in this process);
    with ``world`` processes, this ``rank``'s share of each global batch of ``batch_size``."""
    return DataLoader(
        dataset,
        batch_sampler=StepBatchSampler(len(dataset), batch_size, seed, start_step, rank, world),
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        # its own generator: creating an iterator must not draw from the global torch RNG,
        # which the trainer saves in checkpoints for exact resume
        generator=torch.Generator().manual_seed(seed),
    )
