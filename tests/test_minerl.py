"""MineRL readers on fixtures written in the real formats: v0 streams and the processed release."""

import json

import numpy as np
import pytest

from cwworld.cli import main
from cwworld.data.minerl import (ACTION_KEYS, MineRLDemos, MineRLFormatError, MineRLRelease, convert_minerl,
                                 decode_actions, encode_actions, read_v0_stream, write_v0_stream)
from cwworld.data.replay import ReplayBuffer

BINARY = ("forward", "back", "left", "right", "jump", "sneak", "sprint", "attack")


def levels(n):
    """Frame t is a uniform grey of level 20 + 10 t (survives H.264 within +-2)."""
    return 20 + 10 * np.arange(n)


def make_stream(root, name, n=12, leading=3, version="v4", success=True, seed=0):
    rng = np.random.default_rng(seed)
    frames = np.broadcast_to(levels(n).astype(np.uint8)[:, None, None, None], (n, 64, 64, 3)).copy()
    actions = {k: rng.integers(0, 2, n - 1) for k in BINARY}
    actions["camera"] = rng.uniform(-30, 30, (n - 1, 2)).astype(np.float32)
    actions["place"] = np.where(rng.random(n - 1) < 0.3, "dirt", "none")
    raw = {"actions": actions, "reward": rng.normal(size=n - 1).astype(np.float32),
           "compass": rng.uniform(-180, 180, n).astype(np.float32), "inventory_dirt": rng.integers(0, 5, n)}
    write_v0_stream(root / name, frames, actions, raw["reward"], raw["compass"], raw["inventory_dirt"],
                    leading_frames=leading, version=version, success=success)
    return raw


def test_codec_round_trip_and_order():
    assert ACTION_KEYS == tuple(sorted(ACTION_KEYS))
    action = {"attack": 1, "back": 0, "forward": 1, "jump": 0, "left": 0, "right": 1, "sneak": 0, "sprint": 1,
              "camera": np.array([-9.0, 45.0], np.float32), "place": "dirt"}
    vector = encode_actions(action)
    assert vector.shape == (11,) and vector.dtype == np.float32
    assert list(vector) == [1, 0, -0.05, 0.25, 1, 0, 0, 1, 1, 0, 1]
    back = decode_actions(vector)
    assert {k: v for k, v in back.items() if k != "camera"} == {k: v for k, v in action.items() if k != "camera"}
    assert np.allclose(back["camera"], action["camera"])
    batched = encode_actions({"action$forward": np.array([0, 1]), "action$place": np.array(["none", "dirt"])})
    assert batched.shape == (2, 11) and list(batched[:, 4]) == [0, 1] and list(batched[:, 7]) == [0, 1]


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_v0_stream_alignment(tmp_path, version):
    n, leading = 12, 3
    raw = make_stream(tmp_path, f"{version}_brave_fox_11-222", n, leading, version)
    ep = read_v0_stream(tmp_path / f"{version}_brave_fox_11-222")
    assert ep["image"].shape == (n, 64, 64, 3) and ep["image"].dtype == np.uint8
    # frames: the leading ones are skipped, frame t is level t
    assert np.abs(ep["image"].reshape(n, -1).mean(1) - levels(n)).max() < 2.5
    expected = encode_actions(raw["actions"])
    assert np.array_equal(ep["action"][:-1], expected) and not ep["action"][-1].any()
    assert ep["reward"][0] == 0 and np.array_equal(ep["reward"][1:], raw["reward"])  # reward for action t at t+1
    assert np.allclose(ep["compass"][:, 0], raw["compass"])
    assert np.array_equal(ep["inventory_dirt"][:, 0], raw["inventory_dirt"])
    assert ep["is_first"].tolist() == [True] + [False] * (n - 1)
    assert ep["is_last"][-1] and ep["is_terminal"][-1] and ep["is_terminal"].sum() == 1


def test_demos_skip_missing_files_and_the_corrupted_stream(tmp_path):
    env = tmp_path / "MineRLNavigate-v0"
    make_stream(env, "v4_a_1-2", success=False)
    make_stream(env, "v4_tempting_capers_shapeshifter-14_3-4")
    make_stream(env, "v4_b_5-6")
    (env / "v4_b_5-6" / "metadata.json").unlink()
    with pytest.warns(UserWarning) as caught:
        episodes = list(MineRLDemos(tmp_path))
    assert [name for name, _ in episodes] == ["v4_a_1-2"] and not episodes[0][1]["is_terminal"].any()
    messages = " ".join(str(w.message) for w in caught)
    assert "v4_b_5-6" in messages and "metadata.json" in messages and "tempting_capers" in messages


def test_bad_streams_name_the_key_the_stream_and_the_counts(tmp_path):
    make_stream(tmp_path, "v4_c_1-2")
    npz = dict(np.load(tmp_path / "v4_c_1-2" / "rendered.npz"))
    del npz["action$jump"]
    np.savez(tmp_path / "v4_c_1-2" / "rendered.npz", **npz)
    with pytest.raises(MineRLFormatError, match=r"v4_c_1-2.*'action\$jump'"):
        read_v0_stream(tmp_path / "v4_c_1-2")

    make_stream(tmp_path, "v4_d_1-2", n=12, leading=0)
    stream = tmp_path / "v4_d_1-2"
    npz = dict(np.load(stream / "rendered.npz"))
    longer = {k: np.concatenate([v, v[:5]]) for k, v in npz.items()}  # N = 17 states, the video has 12
    np.savez(stream / "rendered.npz", **longer)
    meta = json.loads((stream / "metadata.json").read_text())
    (stream / "metadata.json").write_text(json.dumps({**meta, "true_video_frame_count": 17}))
    with pytest.raises(MineRLFormatError, match="recording.mp4 has 12 frames, fewer than the 17 states"):
        read_v0_stream(stream)

    np.savez(stream / "rendered.npz", **{**npz, "action$place": np.array([object()] * 11, dtype=object)})
    with pytest.raises(MineRLFormatError, match="without pickle"):
        read_v0_stream(stream)


def make_release(folder, n=10, with_metadata=True, keys=("forward", "camera_x", "camera_y", "place")):
    from cwworld.viz import save_mp4

    folder.mkdir(parents=True)
    meta = {}
    for i in range(2):
        frames = np.broadcast_to(levels(n).astype(np.uint8)[:, None, None, None], (n, 64, 64, 3))
        save_mp4(folder / f"clip{i}.mp4", frames, scale=1, crf=0)
        meta[f"clip{i}.mp4"] = {k: ([1, 0] * n)[:n] if k != "camera_x" else [float(t) for t in range(n)]
                                for k in keys}
    if with_metadata:
        (folder / "metadata.json").write_text(json.dumps(meta))


def test_release_with_and_without_actions(tmp_path):
    make_release(tmp_path / "train")
    release = MineRLRelease(tmp_path / "train")
    assert set(release.missing_keys) == {"attack", "back", "jump", "left", "right", "sneak", "sprint"}
    name, ep = next(iter(release))
    assert name == "clip0" and ep["image"].shape == (10, 64, 64, 3)
    assert list(ep["action"][:4, ACTION_KEYS.index("forward")]) == [1, 0, 1, 0]  # action[t] with frame t
    assert np.allclose(ep["action"][:, 2], np.arange(10) / 180)  # camera_x -> camera_0, degrees / 180
    assert np.allclose(ep["action"][:4, 3], np.array([1, 0, 1, 0]) / 180)  # camera_y -> camera_1
    make_release(tmp_path / "videos_only", with_metadata=False)
    _, ep = next(iter(MineRLRelease(tmp_path / "videos_only")))
    assert "action" not in ep and ep["is_first"][0]


def test_convert_v0_resumes_and_counts(tmp_path, capsys):
    src = tmp_path / "MineRLNavigate-v0"
    for i in range(3):
        make_stream(src, f"v4_s{i}_1-2", n=8 + i, seed=i)
    summary = convert_minerl(tmp_path, tmp_path / "out", progress=False)
    assert (summary.streams, summary.steps, summary.already) == (3, 8 + 9 + 10, 0)
    buffer = ReplayBuffer.load(tmp_path / "out")
    assert len(buffer) == 27 and len(buffer.streams) == 3
    assert set(buffer.keys) == {"image", "action", "reward", "is_first", "is_last", "is_terminal", "compass",
                                "inventory_dirt"}
    make_stream(src, "v4_s3_1-2", n=9)
    assert main(["convert", "minerl", str(tmp_path), str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "converted 1 streams (9 steps); 3 already converted; skipped 0" in out
    assert len(ReplayBuffer.load(tmp_path / "out")) == 36


def test_offline_training_on_converted_demonstrations(tmp_path):
    from test_train import TINY

    src = tmp_path / "MineRLNavigate-v0"
    for i in range(3):
        make_stream(src, f"v4_t{i}_1-2", n=14, seed=i)
    convert_minerl(tmp_path, tmp_path / "replay", progress=False)
    run = tmp_path / "run"
    args = ["train", "--config", "minerl_navigate_actions", "--run-dir", str(run), "--no-progress", *TINY,
            f"data.path={tmp_path / 'replay'}", "train.steps=3", "model.channels=3"]
    assert main(args) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3] and all(np.isfinite(line["loss"]) for line in lines)
    assert (run / "samples" / "step_000003.gif").exists()
    from cwworld import load_model

    model, config, _ = load_model(run)
    assert config.model.action_dim == 11 and config.data.kind == "replay"
    assert main(["eval", str(run), "--videos", "2", "--no-progress"]) == 0
    assert (run / "eval" / "metrics.csv").read_text().count("\n") == 1 + config.eval.horizon


def test_broken_streams_are_skipped_by_name_and_later_streams_still_read(tmp_path):
    env = tmp_path / "MineRLNavigate-v0"
    for name in ("v4_a_1-2", "v4_b_1-2", "v4_c_1-2", "v4_d_1-2", "v4_e_1-2", "v4_f_1-2"):
        make_stream(env, name)
    npz = env / "v4_a_1-2" / "rendered.npz"
    npz.write_bytes(npz.read_bytes()[:200])  # truncated
    (env / "v4_b_1-2" / "metadata.json").write_text("{not json")
    (env / "v4_c_1-2" / "metadata.json").write_text("[1, 2]")
    meta = json.loads((env / "v4_d_1-2" / "metadata.json").read_text())
    (env / "v4_d_1-2" / "metadata.json").write_text(json.dumps({**meta, "true_video_frame_count": "abc"}))
    data = dict(np.load(env / "v4_e_1-2" / "rendered.npz"))
    data["reward"] = data["reward"].astype(np.float32)
    data["reward"][1] = np.nan
    np.savez(env / "v4_e_1-2" / "rendered.npz", **data)
    demos = MineRLDemos(tmp_path)
    with pytest.warns(UserWarning):
        episodes = list(demos)
    assert [name for name, _ in episodes] == ["v4_f_1-2"]  # the good stream after five bad ones
    reasons = dict(demos.skipped)
    assert "rendered.npz is truncated or corrupted" in reasons["v4_a_1-2"]
    assert "metadata.json is not valid JSON" in reasons["v4_b_1-2"]
    assert "metadata.json must hold a JSON object, found list" in reasons["v4_c_1-2"]
    assert "'true_video_frame_count' must be a whole number, found 'abc'" in reasons["v4_d_1-2"]
    assert "'reward' holds NaN or inf" in reasons["v4_e_1-2"]


def test_a_truncated_npz_video_is_skipped_and_a_damaged_cache_entry_decoded_again(tmp_path):
    from cwworld.data import VideoFolder

    folder = tmp_path / "videos"
    folder.mkdir()
    frames = np.random.default_rng(0).integers(0, 255, (12, 64, 64, 3), dtype=np.uint8)
    np.savez(folder / "good.npz", image=frames)
    np.savez(folder / "cut.npz", image=frames)
    (folder / "cut.npz").write_bytes((folder / "cut.npz").read_bytes()[:300])
    with pytest.warns(UserWarning, match=r"cut.npz.*truncated or corrupted"):
        videos = VideoFolder(folder, 6, cache_dir=tmp_path / "cache")
    assert len(videos) == 2  # two 6-frame chunks of good.npz
    cached = next((tmp_path / "cache").glob("*.npy"))
    cached.write_bytes(b"\x93NUMPY garbage")
    with pytest.warns(UserWarning, match="unreadable decode cache"):
        again = VideoFolder(folder, 6, cache_dir=tmp_path / "cache")
    assert np.array_equal(again[1]["image"].numpy(), frames[6:])


def test_convert_the_release_with_its_metadata_from_the_root_or_a_split(tmp_path, capsys):
    root = tmp_path / "release"
    make_release(root / "train")  # two clips and metadata.json each
    make_release(root / "test")
    summary = convert_minerl(root, tmp_path / "out", progress=False)
    assert (summary.streams, summary.steps) == (4, 40)
    for split in ("train", "test"):
        buffer = ReplayBuffer.load(tmp_path / "out" / split)
        assert len(buffer.streams) == 2 and "action" in buffer.keys
    assert main(["convert", "minerl", str(root / "train"), str(tmp_path / "split"), "--no-progress"]) == 0
    assert "converted 2 streams (20 steps)" in capsys.readouterr().out
