"""Replay buffer: chunks on disk, crash safety, eviction, sampling with episode starts, determinism."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cwworld.data.replay import ReplayBuffer


def episode(n, start=0, action_dim=2, size=8):
    """Steps numbered start..start+n-1 (the number is in every field, for checking alignment)."""
    ids = np.arange(start, start + n)
    image = np.broadcast_to((ids % 256).astype(np.uint8)[:, None, None, None], (n, size, size, 3)).copy()
    return {"image": image, "action": np.stack([ids] * action_dim, 1).astype(np.float32),
            "reward": ids.astype(np.float32), "id": ids.astype(np.float32)[:, None],
            "is_first": np.eye(1, n, dtype=bool)[0], "is_last": np.eye(1, n, n - 1, dtype=bool)[0],
            "is_terminal": np.zeros(n, bool)}


def add_steps(buffer, ep, worker=0):
    for t in range(len(ep["image"])):
        buffer.add_step({k: v[t] for k, v in ep.items()}, worker=worker)


def test_chunks_on_disk_and_load_resumes(tmp_path):
    buffer = ReplayBuffer(tmp_path, chunk_size=10)
    add_steps(buffer, episode(25))
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 2 and len(buffer) == 25  # 2 full chunks written, 5 steps open
    with np.load(files[0], allow_pickle=False) as chunk:
        assert chunk["image"].dtype == np.uint8 and chunk["action"].dtype == np.float32
        assert chunk["is_first"].dtype == bool and list(chunk["id"][:, 0]) == list(range(10))
    buffer.save()
    assert len(list(tmp_path.glob("*.npz"))) == 3
    loaded = ReplayBuffer.load(tmp_path)
    assert len(loaded) == 25 and len(loaded.streams) == 1
    batch = loaded.sample(4, 25)
    assert np.array_equal(batch["id"][0, :, 0], np.arange(25))  # the chunks are consecutive again
    add_steps(loaded, episode(5, start=100))  # a new session writes a new stream
    assert len(loaded.streams) == 2


def test_sequences_mark_every_episode_start(tmp_path):
    buffer = ReplayBuffer(None, chunk_size=7)
    for i in range(6):
        add_steps(buffer, episode(5 + i, start=1000 * i))  # episodes back to back in one stream
    batch = buffer.sample(64, 12)
    assert batch["image"].shape == (64, 12, 8, 8, 3) and batch["is_first"][:, 0].all()
    ids = batch["id"][..., 0]
    for b in range(64):
        for t in range(1, 12):
            if ids[b, t] != ids[b, t - 1] + 1:  # a jump in the ids = a new episode
                assert batch["is_first"][b, t]
        # a sequence's first step keeps its recorded reward (the loss masks it); episode starts hold 0
        assert batch["reward"][b, 0] == (0 if ids[b, 0] % 1000 == 0 else ids[b, 0])
        episode_starts = batch["is_first"][b].copy()
        episode_starts[0] = False
        assert np.all(batch["reward"][b][episode_starts] == 0)
    assert not batch["is_first"][:, 1:].all()


def test_same_seed_same_samples_and_alignment():
    def make(seed):
        buffer = ReplayBuffer(None, chunk_size=16, seed=seed)
        add_steps(buffer, episode(40))
        add_steps(buffer, episode(30, start=500))
        return buffer

    a, b = make(3).sample(8, 6), make(3).sample(8, 6)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(make(4).sample(8, 6)["id"], a["id"])
    aligned = make(0).sample(200, 6, align=9)
    starts = aligned["id"][:, 0, 0]
    assert np.all(np.where(starts >= 500, starts - 500, starts) % 9 == 0)


def test_eviction_keeps_the_newest_data_on_disk_too(tmp_path):
    buffer = ReplayBuffer(tmp_path, capacity=30, chunk_size=10)
    add_steps(buffer, episode(85))  # 8 chunks of 10 written, 5 steps open
    assert len(buffer) == 35  # 3 chunks within capacity, plus the open steps (never evicted)
    ids = buffer.sample(50, 5)["id"][..., 0]
    assert ids.min() >= 50
    on_disk = sorted(int(np.load(p)["id"][0, 0]) for p in tmp_path.glob("*.npz"))
    assert on_disk == [50, 60, 70]
    small = ReplayBuffer.load(tmp_path, capacity=20)  # loading beyond capacity keeps the newest
    assert len(small) == 20 and small.sample(10, 2)["id"].min() >= 60
    assert len(list(tmp_path.glob("*.npz"))) == 3  # ... without deleting the older file yet


def test_recent_fraction_prefers_new_data():
    buffer = ReplayBuffer(None, chunk_size=50, recent_fraction=1.0, recent_steps=20, seed=1)
    add_steps(buffer, episode(200))
    ids = buffer.sample(100, 4)["id"][..., 0, 0]
    assert ids.min() >= 200 - 20 - 4


def test_bad_input_names_field_and_shapes(tmp_path):
    buffer = ReplayBuffer(None)
    add_steps(buffer, episode(3))
    bad = episode(3, action_dim=3)
    with pytest.raises(ValueError, match=r"'action' is float32 \[3\] per step, the buffer holds float32 \[2\]"):
        add_steps(buffer, bad)
    with pytest.raises(ValueError, match="'reward' has 2 steps, expected 3"):
        buffer.add_episode({**episode(3), "reward": np.zeros(2)})
    with pytest.raises(ValueError, match="no stream holds 50 steps"):
        buffer.sample(2, 50)
    (tmp_path / "0001-x-3.npz").write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="0001-x-3.npz"):
        loaded = ReplayBuffer.load(tmp_path)
    assert len(loaded) == 0 and loaded.skipped_files


WRITER = """
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
from test_replay import add_steps, episode
from cwworld.data.replay import ReplayBuffer
buffer = ReplayBuffer(sys.argv[1], chunk_size=5)
for i in range(10_000):
    add_steps(buffer, episode(7, start=100 * i))
"""


def test_writer_killed_mid_chunk_loses_only_the_open_chunk(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), os.path.dirname(__file__)])
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("*.npz"))) < 6 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    files = list(tmp_path.glob("*.npz"))
    assert len(files) >= 6
    buffer = ReplayBuffer.load(tmp_path)  # never raises
    assert not buffer.skipped_files and not list(tmp_path.glob(".*.tmp"))
    assert len(buffer) == 5 * len(files) and len(buffer) % 5 == 0
    batch = buffer.sample(32, 5)
    ids = batch["id"][..., 0]
    for b in range(32):  # whole records: every field agrees with the step id
        assert np.array_equal(batch["action"][b, :, 0], ids[b])
        assert np.array_equal(batch["image"][b, :, 0, 0, 0], (ids[b] % 256).astype(np.uint8))


def test_torch_datasets():
    buffer = ReplayBuffer(None, chunk_size=4)
    add_steps(buffer, episode(10))
    stream = iter(buffer.dataset(3, 5))
    batch = next(stream)
    assert batch["image"].shape == (3, 5, 8, 8, 3) and bool(batch["is_first"][:, 0].all())
    sequences = buffer.sequences(5, align=1)
    assert len(sequences) == 6
    item = sequences[2]
    assert list(item["id"][:, 0].numpy()) == [2, 3, 4, 5, 6] and bool(item["is_first"][0])
    assert float(item["reward"][0]) == 2.0 and float(item["reward"][1]) == 3.0  # recorded, not overwritten


def test_opening_a_replay_directory_leaves_a_live_writers_temporary_alone(tmp_path):
    import subprocess
    import sys

    from cwworld.utils import atomic_output

    buffer = ReplayBuffer(tmp_path, chunk_size=4)
    add_steps(buffer, episode(8))
    buffer.save()
    with atomic_output(tmp_path / "live.npz", suffix=".npz.tmp") as tmp:  # this process is writing it
        tmp.write_bytes(b"half")
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        orphan = tmp_path / f".gone.pid{int(dead.stdout)}.abcd.npz.tmp"  # a writer that was killed
        orphan.write_bytes(b"cut")
        assert len(ReplayBuffer.load(tmp_path)) == 8
        assert tmp.exists() and not orphan.exists()
    assert (tmp_path / "live.npz").read_bytes() == b"half"


def test_replay_refuses_data_it_would_store_wrongly():
    buffer = ReplayBuffer(None, chunk_size=4)
    step = {k: v[0] for k, v in episode(1).items()}
    with pytest.raises(ValueError, match=r"add_step \(worker 0\): 'image' must be uint8.*float"):
        buffer.add_step({**step, "image": np.full((8, 8, 3), 0.9)})
    with pytest.raises(ValueError, match=r"'reward' must be one number per step, shape \[\], found \[1\]"):
        buffer.add_step({**step, "reward": np.array([1.0])})
    with pytest.raises(ValueError, match=r"'reward' holds NaN or inf"):
        buffer.add_step({**step, "reward": np.float32("nan")})
    with pytest.raises(ValueError, match=r"'reward' must be one number per step, shape \[3\], found \[3, 1\]"):
        buffer.add_episode({**episode(3), "reward": np.zeros((3, 1))})
    with pytest.raises(ValueError, match=r"'image' must be uint8.*H, W, C > 0.*\[3, 0, 8, 3\]"):
        buffer.add_episode({**episode(3), "image": np.zeros((3, 0, 8, 3), np.uint8)})
    buffer.add_step(step)  # the good step still goes in
    assert len(buffer) == 1


def test_a_share_of_each_batch_can_start_at_episode_starts():
    buffer = ReplayBuffer(episode_start_fraction=0.5, seed=0)
    for t in range(200):  # episodes of 20 steps; the step's index in its episode is its "image"
        buffer.add_step({"image": np.full((4, 4, 1), t % 20, np.uint8), "action": np.zeros(1, np.float32),
                         "reward": np.float32(0), "is_first": t % 20 == 0})
    firsts = [int(buffer.sample(8, 6)["image"][:, 0, 0, 0, 0].tolist().count(0)) for _ in range(50)]
    assert min(firsts) >= 4  # 4 of 8 always start an episode; uniform starts would give about 1 in 15
    plain = ReplayBuffer(seed=0)
    plain.streams, plain._schema = buffer.streams, buffer._schema
    assert np.mean([plain.sample(8, 6)["image"][:, 0, 0, 0, 0].tolist().count(0) for _ in range(50)]) < 2
    with pytest.raises(ValueError, match="episode_start_fraction"):
        ReplayBuffer(episode_start_fraction=0.8, recent_fraction=0.5)


def test_a_bad_oldest_chunk_does_not_set_the_schema(tmp_path):
    from cwworld.data.replay import _write_chunk

    def steps(n, image_dtype=np.uint8):
        return {"image": np.zeros((n, 4, 4, 1), image_dtype), "action": np.zeros((n, 1), np.float32),
                "reward": np.zeros(n, np.float32), "is_first": np.eye(1, n, dtype=bool)[0],
                "is_last": np.zeros(n, bool), "is_terminal": np.zeros(n, bool)}

    _write_chunk(tmp_path, "bad_00000000", steps(5, np.float64), 1)  # the oldest: float images
    _write_chunk(tmp_path, "good_00000000", steps(6), 2)
    _write_chunk(tmp_path, "good_00000000", steps(7), 3)
    with pytest.warns(UserWarning, match=r"'image' must be uint8"):
        buffer = ReplayBuffer.load(tmp_path)
    assert len(buffer) == 13 and [p.name for p, _ in buffer.skipped_files] == ["00000000000000000001-bad_00000000-5.npz"]


def test_two_writers_on_one_directory_keep_its_capacity(tmp_path):
    a = ReplayBuffer(tmp_path, capacity=40, chunk_size=10, seed=0)
    b = ReplayBuffer(tmp_path, capacity=40, chunk_size=10, seed=1)
    for t in range(60):
        for buffer in (a, b):
            buffer.add_step({"image": np.zeros((4, 4, 1), np.uint8), "action": np.zeros(1, np.float32),
                             "reward": np.float32(0), "is_first": t == 0})
    from cwworld.data.replay import parse_chunk_name

    on_disk = sum(parse_chunk_name(p)[2] for p in tmp_path.glob("*.npz"))
    assert on_disk <= 40, on_disk  # was 80 per writer's count: each kept its own 40
    assert len(ReplayBuffer.load(tmp_path)) == on_disk


def test_a_chunk_evicted_while_opening_is_left_out_quietly(tmp_path, monkeypatch):
    """Another writer may evict (delete) a chunk between an opener's listing and its read: the
    chunk is gone, not damaged, so no warning and no skipped file (benchmarks/replay_contention.py)."""
    import warnings
    from pathlib import Path

    import cwworld.data.replay as replay

    buffer = ReplayBuffer(tmp_path, chunk_size=4)
    add_steps(buffer, episode(8))
    buffer.save()
    first = sorted(tmp_path.glob("*.npz"))[0]
    real_load = np.load

    def evicting_load(path, *args, **kwargs):
        if Path(path) == first:
            first.unlink()  # the other writer's eviction lands right now
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(replay.np, "load", evicting_load)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opened = ReplayBuffer.load(tmp_path)
    assert len(opened) == 4 and opened.vanished_files == 1 and opened.skipped_files == []


def test_a_full_disk_while_storing_a_chunk_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import shutil

    import cwworld.data.replay as replay_module

    def full(f, **data):
        f.write(b"PK" + b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    buffer = ReplayBuffer(tmp_path / "replay", chunk_size=4)
    monkeypatch.setattr(replay_module.np, "savez_compressed", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10**9, 10**9 - 10, 10))
    episode = {"image": np.zeros((4, 64, 64, 1), np.uint8), "reward": np.ones(4, np.float32)}
    with pytest.raises(OSError, match=r"no space left on the device of .*replay: could not write .*\.npz"):
        buffer.add_episode(episode)
    assert list((tmp_path / "replay").iterdir()) == []  # no chunk, no temporary
