"""Datasets: Moving MNIST (shipped and real-format digits), video folders via PyAV, batch order."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cwworld import load_config
from cwworld.data import (MovingMNIST, StepBatchSampler, VideoError, VideoFolder, load_digits, make_dataset,
                          read_video)
from cwworld.data.moving_mnist import bounce, read_idx
from cwworld.viz import save_gif, save_mp4

MINERL_SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "minerl_navigate_samples"


# -- Moving MNIST ---------------------------------------------------------------------------


def test_shipped_digits_cover_all_classes_in_both_splits():
    import cwworld.data.moving_mnist as mm
    from importlib import resources

    with resources.as_file(resources.files("cwworld.data") / "assets" / "mnist_digits.npz") as path:
        with np.load(path, allow_pickle=False) as data:
            assert sorted(set(data["train_labels"].tolist())) == list(range(10))
            assert sorted(set(data["test_labels"].tolist())) == list(range(10))
    train, test = load_digits(None, "train"), load_digits(None, "test")
    assert train.shape == (1500, mm.DIGIT_SIZE, mm.DIGIT_SIZE) and test.shape == (500, 28, 28)
    assert train.dtype == np.uint8 and train.max() == 255


def test_moving_mnist_shapes_determinism_and_splits():
    ds = MovingMNIST(5, 20, seed=3)
    video = ds[2]["image"]
    assert video.shape == (20, 64, 64, 1) and video.dtype == torch.uint8
    assert torch.equal(video, MovingMNIST(5, 20, seed=3)[2]["image"])
    assert not torch.equal(video, ds[3]["image"])
    assert not torch.equal(video, MovingMNIST(5, 20, split="test", seed=3)[2]["image"])
    # two digits of ~100-200 lit pixels each: well above one digit's worth, below a full frame
    lit = (video > 0).flatten(1).sum(1).float()
    assert 80 < lit.mean() < 600
    with pytest.raises(IndexError):
        ds[5]


def _centre_track(video: np.ndarray) -> np.ndarray:
    """Centroid (y, x) of the lit pixels per frame, [T, 2]."""
    ys, xs = np.mgrid[:64, :64]
    w = video[..., 0].astype(np.float64)
    return np.stack([(w * ys).sum((1, 2)) / w.sum((1, 2)), (w * xs).sum((1, 2)) / w.sum((1, 2))], axis=1)


@pytest.mark.parametrize("speed", [0.5, 1.0, 2.0])
def test_moving_mnist_speed_range_and_multiplier(speed):
    ds = MovingMNIST(20, 12, num_digits=1, speed=speed, seed=1)
    steps = []
    for i in range(len(ds)):
        track = _centre_track(ds[i]["image"].numpy())
        step = np.linalg.norm(np.diff(track, axis=0), axis=1)
        steps.append(np.median(step))  # the median skips the frames with a bounce
    steps = np.array(steps)
    assert steps.min() >= 2 * speed - 1.0 and steps.max() <= 6 * speed + 1.0
    assert steps.max() - steps.min() > speed  # speeds vary across videos


def test_moving_mnist_speed_zero_is_static():
    video = MovingMNIST(1, 5, speed=0.0)[0]["image"]
    assert all(torch.equal(video[0], video[t]) for t in range(5))


def test_bounce_stays_inside_and_keeps_speed():
    pos = bounce(np.array([3.0, 30.0]), np.array([5.5, -4.0]), 200, 36.0)
    assert pos.min() >= 0 and pos.max() <= 36.0
    speed = np.abs(np.diff(pos, axis=0))
    assert np.allclose(speed[speed > 5.4], 5.5)  # away from a bounce the step is the velocity
    assert np.isclose(np.median(speed[:, 1]), 4.0)


def _write_idx(path: Path, images: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 8, images.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    data = header + images.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_real_mnist_files_idx_gz_plain_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train, compress=True)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", test, compress=False)
    assert np.array_equal(load_digits(tmp_path, "train"), train)
    assert np.array_equal(load_digits(tmp_path, "test"), test)
    assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte"), test)
    np.savez(tmp_path / "mnist.npz", x_train=train, y_train=np.zeros(7, np.uint8), x_test=test)
    assert np.array_equal(load_digits(tmp_path / "mnist.npz", "test"), test)
    ds = MovingMNIST(2, 4, digits=tmp_path, split="test")
    assert ds.digits.shape == (3, 28, 28)


def test_bad_mnist_files_name_the_file(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 20)
    with pytest.raises(ValueError, match="not an IDX file"):
        load_digits(bad)
    short = tmp_path / "short-idx3-ubyte"
    _write_idx(short, np.zeros((4, 28, 28), np.uint8), compress=False)
    short.write_bytes(short.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"short-idx3-ubyte.*\(4, 28, 28\)"):
        load_digits(short)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_digits(tmp_path / "nowhere")
    np.savez(tmp_path / "other.npz", pictures=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(KeyError, match="x_train or train_images"):
        load_digits(tmp_path / "other.npz")


# -- video folders --------------------------------------------------------------------------


def _frames(T: int, H: int = 64, W: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth moving blobs, compressible without large errors: uint8 [T, H, W, 3]."""
    ys, xs = np.mgrid[:H, :W]
    rng = np.random.default_rng(seed)
    out = np.zeros((T, H, W, 3), np.uint8)
    for t in range(T):
        for c in range(3):
            cy, cx = rng.uniform(0, H), rng.uniform(0, W)
            out[t, ..., c] = (255 * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / 200.0)).astype(np.uint8)
    return out


@pytest.fixture
def video_dir(tmp_path):
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    np.savez(root / "a.npz", image=_frames(25, seed=1))
    save_mp4(root / "sub" / "b.mp4", _frames(30, seed=2), scale=1, crf=0)
    save_gif(root / "c.gif", _frames(12, seed=3), scale=1)
    (root / "notes.txt").write_text("not a video")
    return root


def test_video_folder_chunks_sliding_and_decoding(video_dir, tmp_path):
    folder = VideoFolder(video_dir, 10, cache_dir=tmp_path / "cache")
    assert [p.name for p in folder.sources] == ["a.npz", "c.gif", "b.mp4"] or \
        sorted(p.name for p in folder.sources) == ["a.npz", "b.mp4", "c.gif"]
    assert folder.summary.videos == 3 and folder.summary.frames == 25 + 30 + 12
    assert len(folder) == 2 + 3 + 1  # non-overlapping chunks, remainders dropped
    item = folder[0]["image"]
    assert item.shape == (10, 64, 64, 3) and item.dtype == torch.uint8
    by_name = {p.name: i for i, p in enumerate(folder.sources)}
    assert np.array_equal(folder.video(by_name["a.npz"]), _frames(25, seed=1))  # npz: exact
    mp4 = folder.video(by_name["b.mp4"]).astype(int)
    assert np.abs(mp4 - _frames(30, seed=2)).mean() < 4  # H.264 yuv420p at crf 0: chroma subsampled
    sliding = VideoFolder(video_dir, 10, mode="sliding", stride=5, cache_dir=tmp_path / "cache")
    assert len(sliding) == 4 + 5 + 1  # (25-10)/5+1, (30-10)/5+1, (12-10)/5+1
    video, start = sliding.index[1]
    assert start == 5 and np.array_equal(sliding[1]["image"].numpy(), sliding.video(video)[5:15])


def test_video_folder_cache_is_used_and_keyed_on_the_file(video_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    VideoFolder(video_dir, 10, cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 3

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr("cwworld.data.video.read_video", no_decoding)
    again = VideoFolder(video_dir, 10, cache_dir=cache)
    assert len(again) == 6 and isinstance(again.video(0), np.memmap)
    monkeypatch.undo()
    np.savez(video_dir / "a.npz", image=_frames(40, seed=9))  # changed file -> decoded again
    os.utime(video_dir / "a.npz", ns=(1, 1))
    changed = VideoFolder(video_dir, 10, cache_dir=cache)
    assert changed.summary.frames == 40 + 30 + 12


def test_video_folder_resizes_crops_and_converts_channels(tmp_path):
    root = tmp_path / "v"
    root.mkdir()
    wide = np.zeros((6, 60, 90, 3), np.uint8)
    wide[:, :, :15] = 255  # a bar on the left, outside the centred 60x60 square
    np.savez(root / "wide.npz", image=wide)
    cropped = VideoFolder(root, 6, cache_dir=False).video(0)
    assert cropped.shape == (6, 64, 64, 3) and cropped.max() == 0
    squashed = VideoFolder(root, 6, crop=False, cache_dir=False).video(0)
    assert squashed.shape == (6, 64, 64, 3) and squashed[:, :, :5].min() == 255
    grey = VideoFolder(root, 6, channels=1, crop=False, cache_dir=False).video(0)
    assert grey.shape == (6, 64, 64, 1) and grey[:, :, :5].min() == 255


def test_smaller_videos_are_resized_or_rejected_explicitly(tmp_path):
    root = tmp_path / "v"
    root.mkdir()
    np.savez(root / "small.npz", image=_frames(8, 32, 32))
    np.savez(root / "ok.npz", image=_frames(8))
    assert VideoFolder(root, 8, cache_dir=False, smaller="resize").video(1).shape == (8, 64, 64, 3)
    with pytest.warns(UserWarning, match="small.npz"):
        rejected = VideoFolder(root, 8, cache_dir=False, smaller="reject")
    assert rejected.summary.videos == 1 and "32x32" in rejected.summary.skipped[0].reason
    with pytest.raises(VideoError, match="small.npz.*32x32"):
        read_video(root / "small.npz", 64, smaller="reject")


def test_corrupt_truncated_and_short_videos_are_skipped_and_counted(video_dir, tmp_path):
    (video_dir / "garbage.mp4").write_bytes(os.urandom(2000))
    good = (video_dir / "sub" / "b.mp4").read_bytes()
    (video_dir / "truncated.mp4").write_bytes(good[: len(good) // 3])
    np.savez(video_dir / "short.npz", image=_frames(4))
    np.savez(video_dir / "float.npz", image=np.zeros((20, 64, 64, 3), np.float32))
    with pytest.warns(UserWarning) as caught:
        folder = VideoFolder(video_dir, 10, cache_dir=tmp_path / "cache")
    skipped = {item.path.name: item.reason for item in folder.summary.skipped}
    assert {"garbage.mp4", "short.npz", "float.npz"} <= set(skipped)
    assert "fewer than seq_len 10" in skipped["short.npz"] and "uint8" in skipped["float.npz"]
    # a truncated mp4 either fails to open or yields fewer frames; it never yields wrong shapes
    assert "truncated.mp4" in skipped or folder.lengths[[p.name for p in folder.sources].index("truncated.mp4")] < 30
    assert any("garbage.mp4" in str(w.message) for w in caught)
    assert f"skipped {len(skipped)} file(s)" in str(folder.summary)
    assert folder.summary.videos == 3 + ("truncated.mp4" not in skipped)


def test_empty_or_missing_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoFolder(tmp_path / "missing", 10)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty holds no video files"):
        VideoFolder(tmp_path / "empty", 10)


@pytest.mark.skipif(not MINERL_SAMPLES.exists(), reason="real MineRL Navigate clips not available")
def test_real_minerl_navigate_clips(tmp_path):
    folder = VideoFolder(MINERL_SAMPLES, 100, cache_dir=tmp_path / "cache")
    assert folder.summary.videos == 4 and not folder.summary.skipped
    assert list(folder.lengths) == [500] * 4 and len(folder) == 20
    frames = folder[7]["image"].numpy()
    assert frames.shape == (100, 64, 64, 3)
    assert 30 < frames.mean() < 220 and frames.std() > 20  # real scenes, not blank or constant
    motion = [np.abs(np.diff(folder.video(i).astype(int), axis=0)).mean() for i in range(4)]
    assert max(motion) > 3  # the player moves in at least one clip


# -- datasets from configs and the batch order ----------------------------------------------


def test_make_dataset_for_each_kind(video_dir, tmp_path):
    cfg = load_config("quickstart", ["eval.num_videos=3"])
    assert isinstance(make_dataset(cfg), MovingMNIST) and len(make_dataset(cfg, "eval")) == 3
    assert make_dataset(cfg, "eval")[0]["image"].shape[0] == cfg.eval.context + cfg.eval.horizon
    cfg = load_config("quickstart", ["data.kind=video", f"data.path={video_dir}", "model.channels=3",
                                     "train.seq_len=10", f"data.cache={tmp_path / 'c'}", "eval.context=4",
                                     "eval.horizon=6"])
    assert len(make_dataset(cfg)) == 6
    (tmp_path / "split" / "train").mkdir(parents=True)
    (tmp_path / "split" / "test").mkdir()
    np.savez(tmp_path / "split" / "train" / "x.npz", image=_frames(20))
    np.savez(tmp_path / "split" / "test" / "y.npz", image=_frames(30))
    cfg.data.path = str(tmp_path / "split")
    assert make_dataset(cfg).summary.frames == 20 and make_dataset(cfg, "eval").summary.frames == 30
    cfg.data.path = None
    with pytest.raises(ValueError, match="data.path"):
        make_dataset(cfg)


def test_step_batch_sampler_is_a_function_of_the_step():
    sampler = StepBatchSampler(10, 4, seed=5)
    batches = [b for _, b in zip(range(5), sampler)]
    assert sorted(batches[0] + batches[1] + batches[2][:2]) == list(range(10))  # epoch 0 is a permutation
    resumed = StepBatchSampler(10, 4, seed=5, start_step=3)
    assert next(iter(resumed)) == batches[3]
    assert StepBatchSampler(10, 4, seed=6).indices(0) != batches[0]
    assert len(StepBatchSampler(2, 5).indices(0)) == 5  # a batch larger than the dataset spans epochs


def test_thread_safe_npy_readers_return_what_numpy_does(tmp_path):
    """The readers that decode in threads parse .npy headers under one lock (CPython 3.11 can raise a
    spurious SystemError when threads run ast.literal_eval at once); they read the same arrays."""
    from concurrent.futures import ThreadPoolExecutor

    from cwworld.utils import load_npy, npz_member

    video = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    np.savez_compressed(tmp_path / "v.npz", image=video, reward=np.arange(6.0))
    np.save(tmp_path / "c.npy", video)

    def read(_):
        with np.load(tmp_path / "v.npz", allow_pickle=False) as npz:
            return npz_member(npz, "image"), npz_member(npz, "reward"), np.asarray(load_npy(tmp_path / "c.npy", "r"))

    with ThreadPoolExecutor(4) as pool:
        for image, reward, cached in pool.map(read, range(16)):
            assert np.array_equal(image, video) and np.array_equal(cached, video)
            assert np.array_equal(reward, np.arange(6.0))
    np.savez(tmp_path / "o.npz", obj=np.array([{"a": 1}], dtype=object))
    with np.load(tmp_path / "o.npz", allow_pickle=False) as npz, pytest.raises(ValueError, match="pickle"):
        npz_member(npz, "obj")
