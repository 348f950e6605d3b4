"""TensorBoard scalars through tensorboardX, a maintained event writer that needs neither
TensorFlow nor the tensorboard package. ``metrics.jsonl`` stays the dependency-free record
of a run; the events are a view of it for ``tensorboard --logdir RUN_DIR``.
"""

from __future__ import annotations

import os
import time
from typing import Optional, Union

__all__ = ["EventWriter"]


class EventWriter:
    """Writes a dict of scalar metrics per step into ``log_dir`` (``events.out.tfevents.*``)."""

    def __init__(self, log_dir: Union[str, os.PathLike], purge_step: Optional[int] = None):
        """``purge_step``: on resume, the first step logged again; TensorBoard then ignores the
        events of earlier files from that step on (written after the last checkpoint)."""
        from tensorboardX import SummaryWriter

        # tensorboardX names files by the second: a nanosecond suffix keeps two writers of one second
        # (a quick resume) from sharing a file, and sorts them in the order they were opened
        self._writer = SummaryWriter(str(log_dir), flush_secs=30, purge_step=purge_step,
                                     filename_suffix=f".{time.time_ns()}")

    def scalars(self, step: int, values: dict) -> None:
        for tag, value in values.items():
            self._writer.add_scalar(tag, float(value), global_step=step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
