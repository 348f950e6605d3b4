"""Processes sharing one replay directory: a writer adds episodes while readers open it in a loop.

    python benchmarks/replay_contention.py --opens 200 --readers 2

The writer adds episodes of ``--length`` steps (``--chunk-size`` steps per chunk file, so it
writes many chunks, each through a temporary file) until the readers have opened the directory
``--opens`` times in all (``ReplayBuffer.load``, which also cleans temporaries left by dead
writers) and sampled a batch from it. Prints one table: opens, episodes written, writer failures,
reader failures, chunks skipped as damaged (with a warning), chunks the writer evicted between
a reader's listing and its read (left out quietly: gone, not damaged), and the smallest and largest number of steps an
open saw (never above the capacity; it grows while the writer writes). Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cwworld.data.replay import ReplayBuffer


def _episode(length: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (length, 16, 16, 3), dtype=np.uint8),
            "action": rng.standard_normal((length, 2)).astype(np.float32),
            "reward": rng.standard_normal(length).astype(np.float32),
            "is_first": np.eye(1, length, dtype=bool)[0]}


def _writer(directory: str, length: int, chunk_size: int, capacity: int, stop, out) -> None:
    episodes, failures = 0, []
    try:
        buffer = ReplayBuffer(directory, chunk_size=chunk_size, capacity=capacity)
        while not stop.is_set():
            try:
                buffer.add_episode(_episode(length, episodes), name="writer")
                episodes += 1
            except Exception:  # noqa: BLE001 - counted and reported, the point of the benchmark
                failures.append(traceback.format_exc(limit=2))
    except Exception:  # noqa: BLE001
        failures.append(traceback.format_exc(limit=2))
    out.put({"episodes": episodes, "failures": failures})


def _reader(directory: str, opens: int, capacity: int, out) -> None:
    sizes, failures, skipped, vanished = [], [], 0, 0
    for _ in range(opens):
        try:
            buffer = ReplayBuffer.load(directory, capacity=capacity)
            skipped += len(buffer.skipped_files)
            vanished += buffer.vanished_files
            sizes.append(len(buffer))
            if len(buffer) >= 8:
                batch = buffer.sample(2, 4)
                assert batch["image"].shape == (2, 4, 16, 16, 3), batch["image"].shape
        except Exception:  # noqa: BLE001
            failures.append(traceback.format_exc(limit=2))
    out.put({"sizes": sizes, "failures": failures, "skipped": skipped, "vanished": vanished})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opens", type=int, default=200, help="opens in all, split over the readers")
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--length", type=int, default=24, help="steps per episode")
    parser.add_argument("--chunk-size", type=int, default=8, help="steps per chunk file")
    parser.add_argument("--capacity", type=int, default=2000, help="steps kept (the writer evicts on disk)")
    args = parser.parse_args(argv)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        directory = str(Path(tmp) / "replay")
        ReplayBuffer(directory)  # created before anyone opens it
        stop, results = ctx.Event(), ctx.Queue()
        writer = ctx.Process(target=_writer, args=(directory, args.length, args.chunk_size, args.capacity,
                                                    stop, results))
        writer.start()
        time.sleep(1.0)  # the writer is under way
        per_reader = [args.opens // args.readers + (i < args.opens % args.readers) for i in range(args.readers)]
        readers = [ctx.Process(target=_reader, args=(directory, n, args.capacity, results)) for n in per_reader]
        started = time.perf_counter()
        for reader in readers:
            reader.start()
        reports = [results.get() for _ in readers]
        seconds = time.perf_counter() - started
        stop.set()
        written = results.get()
        for process in (writer, *readers):
            process.join()
    sizes = [s for r in reports for s in r["sizes"]]
    record = {"opens": len(sizes), "episodes_written": written["episodes"],
              "writer_failures": len(written["failures"]),
              "reader_failures": sum(len(r["failures"]) for r in reports),
              "skipped_chunks": sum(r["skipped"] for r in reports),
              "evicted_while_opening": sum(r["vanished"] for r in reports),
              "min_steps": min(sizes, default=0), "max_steps": max(sizes, default=0), "capacity": args.capacity,
              "seconds": seconds}
    table = Table(title=f"1 writer, {args.readers} readers, one replay directory (chunks of {args.chunk_size} "
                        f"steps, capacity {args.capacity})")
    for key in record:
        table.add_column(key.replace("_", " "), justify="right")
    table.add_row(*[f"{v:.1f}" if isinstance(v, float) else str(v) for v in record.values()])
    console = Console(width=max(Console().width, 120))
    console.print(table)
    for failure in written["failures"][:3] + [f for r in reports for f in r["failures"]][:3]:
        console.print(failure, highlight=False)
    return record


if __name__ == "__main__":
    result = main(sys.argv[1:])
    bad = result["writer_failures"] or result["reader_failures"] or result["skipped_chunks"] or \
        result["max_steps"] > result["capacity"]
    sys.exit(1 if bad else 0)
