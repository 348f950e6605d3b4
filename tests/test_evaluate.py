"""Evaluation: SSIM/PSNR definitions, outputs of `cwworld eval` and `cwworld predict`, TensorBoard files."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cwworld.cli import main
from cwworld.data import MovingMNIST, VideoFolder
from cwworld.evaluate import EvalResult, evaluate_run, psnr, ssim
from cwworld.tensorboard import EventWriter
from cwworld.train import Trainer, load_model
from cwworld.viz import save_mp4

from test_train import tiny_run_config


def test_psnr_matches_its_definition():
    truth = torch.full((2, 16, 16, 1), 0.5)
    assert torch.allclose(psnr(truth + 0.1, truth), torch.full((2,), 20.0), atol=1e-4)  # mse 0.01
    assert torch.allclose(psnr(truth, truth), torch.full((2,), 100.0))


def test_ssim_of_constant_images_matches_the_formula():
    a, b = 0.3, 0.7
    x, y = torch.full((1, 20, 20, 3), a), torch.full((1, 20, 20, 3), b)
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # no variance: the structure term is 1
    assert torch.allclose(ssim(x, y), torch.tensor([expected]), atol=1e-5)


def test_ssim_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 32, 32, 1, generator=g)
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-5)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    very = (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert torch.allclose(ssim(x, noisy), ssim(noisy, x), atol=1e-6)
    assert (ssim(x, very) < ssim(x, noisy)).all() and (ssim(x, noisy) < 0.95).all()
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(x, x[:2])


def test_best_of_n_picks_whole_samples():
    values = np.array([[[0.1, 0.9], [0.5, 0.6]]])  # one video, two samples, horizon 2
    result = EvalResult(ssim=values, psnr=values * 10, kl_per_frame=[0.0], kl_per_tick=[0.0],
                        context=1, horizon=2, num_samples=2)
    curves = result.curves()
    assert np.allclose(curves["ssim_mean"], [0.3, 0.75])
    assert np.allclose(curves["ssim_best"], [0.5, 0.6])  # sample 1 has the higher average (0.55 > 0.5)


def read_scalars(log_dir) -> dict:
    """Scalars of a run's event files, read with tensorboard's own reader (the dev extra)."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_reads_our_events(tmp_path):
    with EventWriter(tmp_path) as writer:
        writer.scalars(5, {"loss": 3.25, "kl/0": 0.5})
        writer.scalars(10, {"loss": 1.0})
    assert read_scalars(tmp_path) == {"loss": [(5, 3.25), (10, 1.0)], "kl/0": [(5, 0.5)]}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    cfg = tiny_run_config(4)
    cfg.eval.num_samples = 2
    Trainer(cfg, run, progress=False).train()
    return run


def test_end_to_end_train_then_eval(trained_run):
    assert (trained_run / "checkpoints" / "latest.pt").exists()
    steps = [json.loads(line)["step"] for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    scalars = read_scalars(trained_run)
    assert [s for s, _ in scalars["loss"]] == [1, 2, 3, 4] and "kl/1" in scalars
    assert (trained_run / "samples" / "step_000004.gif").read_bytes()[:6] == b"GIF89a"

    result, paths = evaluate_run(trained_run, horizon=5, num_videos=3)
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and [int(r["t"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [int(r["frame"]) for r in rows] == [4, 5, 6, 7, 8]  # context 4
    for row in rows:
        assert math.isfinite(float(row["psnr_mean"])) and 0 < float(row["psnr_mean"]) < 100
        assert -1 <= float(row["ssim_mean"]) <= 1 and -1 <= float(row["ssim_best"]) <= 1
    # best of N is chosen per video by the horizon average, so it wins on average, not at every step
    assert sum(float(r["ssim_best"]) for r in rows) >= sum(float(r["ssim_mean"]) for r in rows) - 1e-9
    record = json.loads(paths["json"].read_text())
    assert record["samples"] == 2 and record["videos"] == 3 and record["step"] == 4
    assert len(record["per_step"]["psnr_best"]) == 5 and len(record["kl_per_frame"]) == 2
    assert result.ssim.shape == (3, 2, 5)
    for name in ("ssim", "psnr"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["predictions"].read_bytes()[:6] == b"GIF89a" and paths["top_prior"].exists()
    assert paths["kl"].read_text().splitlines()[0] == "level,kl_per_frame,kl_per_tick"


def test_cli_eval_compares_runs_and_predict_writes_gif_and_mp4(trained_run, tmp_path, capsys):
    assert main(["eval", str(trained_run), str(trained_run), "--horizon", "3", "--videos", "2",
                 "--out", str(tmp_path / "cmp"), "--no-progress"]) == 0
    assert (tmp_path / "cmp" / "ssim.png").exists() and (tmp_path / "cmp" / "run0" / "metrics.csv").exists()
    assert "SSIM mean" in capsys.readouterr().err
    frames = (np.random.default_rng(0).random((12, 64, 64, 3)) * 255).astype(np.uint8)
    save_mp4(tmp_path / "clip.mp4", frames, scale=1)
    for out in ("p.gif", "p.mp4"):
        assert main(["predict", str(trained_run), "--video", str(tmp_path / "clip.mp4"), "--context", "4",
                     "--horizon", "6", "--samples", "2", "--out", str(tmp_path / out)]) == 0
    assert (tmp_path / "p.gif").read_bytes()[:6] == b"GIF89a"
    assert "a colour clip; this model reads grey frames" in " ".join(capsys.readouterr().err.split())  # 1 channel
    assert main(["predict", "no/such/run", "--video", "v.mp4", "--out", str(tmp_path / "p.png")]) == 2
    assert "--out" in capsys.readouterr().err and not (tmp_path / "p.png").exists()  # refused before any work
    import av

    with av.open(str(tmp_path / "p.mp4")) as container:
        decoded = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    assert len(decoded) == 10  # context + horizon frames
    assert main(["predict", str(trained_run), "--video", str(tmp_path / "clip.mp4"), "--context", "40",
                 "--out", str(tmp_path / "x.gif")]) == 2
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_load_model_restores_the_trained_weights(trained_run):
    model, config, step = load_model(trained_run)
    state = torch.load(trained_run / "checkpoints" / "latest.pt", weights_only=True)
    assert step == 4 and config.model.levels == 2 and not model.training
    assert torch.equal(model.state_dict()["cells.0.gru.weight_hh"], state["model"]["cells.0.gru.weight_hh"])


def _lpips_files(tmp_path):
    """Weight files in the two real layouts (torchvision AlexNet, lpips v0.1), random values."""
    from cwworld.lpips import _CONVS, _TORCHVISION_INDEX

    g = torch.Generator().manual_seed(0)
    backbone, lins = {}, {}
    for (i, o, k, _, _), index in zip(_CONVS, _TORCHVISION_INDEX):
        backbone[f"features.{index}.weight"] = torch.randn(o, i, k, k, generator=g) * 0.05
        backbone[f"features.{index}.bias"] = torch.zeros(o)
    backbone["classifier.1.weight"] = torch.zeros(2, 2)  # present in the real file, unused
    for n, (_, o, _, _, _) in enumerate(_CONVS):
        lins[f"lin{n}.model.1.weight"] = torch.rand(1, o, 1, 1, generator=g)
    torch.save(backbone, tmp_path / "alexnet.pth")
    torch.save(lins, tmp_path / "alex.pth")
    return tmp_path / "alexnet.pth", tmp_path / "alex.pth"


def test_lpips_from_local_weight_files(tmp_path):
    from cwworld.lpips import LPIPS

    metric = LPIPS(*_lpips_files(tmp_path))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, 3, generator=g)
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    same, diff = metric(x, x), metric(x, y)
    assert same.shape == (2, 3) and torch.allclose(same, torch.zeros(2, 3), atol=1e-6)
    assert (diff > 0).all() and torch.allclose(diff, metric(y, x), atol=1e-6)
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "short.pth")
    with pytest.raises(KeyError, match="lin1.model.1.weight"):
        LPIPS(tmp_path / "alexnet.pth", tmp_path / "short.pth")
    with pytest.raises(FileNotFoundError, match="local weight files only"):
        LPIPS(tmp_path / "missing.pth", tmp_path / "alex.pth")


def test_eval_reports_lpips_when_weights_are_given(trained_run, tmp_path):
    alexnet, lins = _lpips_files(tmp_path)
    result, paths = evaluate_run(trained_run, tmp_path / "out", horizon=3, num_videos=2,
                                 lpips_weights=(str(alexnet), str(lins)))
    header = paths["csv"].read_text().splitlines()[0]
    assert "psnr_best,lpips_mean,lpips_best" in header and result.lpips.shape == (2, 2, 3)
    curves = result.curves()
    assert curves["lpips_best"].mean() <= curves["lpips_mean"].mean() + 1e-9  # best of 2 = the lower average


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    from cwworld.fvd import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (20000, 3))
    b = rng.normal(1.0, 2.0, (20000, 3))
    expected = 3 * 1.0**2 + 3 * (1 + 4 - 2 * 2)  # |mu|^2 + tr(C1 + C2 - 2 sqrt(C1 C2))
    assert abs(frechet_distance(a, b) - expected) < 0.15
    assert abs(frechet_distance(a, a)) < 1e-6
    with pytest.raises(ValueError, match="expected"):
        frechet_distance(a, b[:, :2])


class _FakeI3D(torch.nn.Module):
    """Same call signature as i3d_torchscript.pt; features that expose the preprocessing."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        B = x.shape[0]
        shape = torch.tensor([x.shape[1], x.shape[3], x.shape[4]], dtype=torch.float32).expand(B, 3)
        return torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4)), x.amin(dim=(1, 2, 3, 4))[:, None],
                          x.amax(dim=(1, 2, 3, 4))[:, None], shape], dim=1)


def test_fvd_with_a_local_torchscript_i3d(trained_run, tmp_path):
    from cwworld.fvd import I3DFeatures

    torch.jit.script(_FakeI3D()).save(str(tmp_path / "i3d.pt"))
    i3d = I3DFeatures(tmp_path / "i3d.pt")
    feats = i3d(torch.rand(3, 5, 64, 64, 1))
    assert feats.shape == (3, 11) and (feats[:, 8:] == [3, 224, 224]).all()  # RGB, resized to 224
    assert feats[:, 6].min() >= -1 and feats[:, 7].max() <= 1 and feats[:, 6].min() < -0.5  # in [-1, 1]
    result, paths = evaluate_run(trained_run, tmp_path / "out", horizon=4, num_videos=3, i3d_path=str(tmp_path / "i3d.pt"),
                                 fvd_frames=3)
    assert result.fvd is not None and result.fvd >= 0 and result.fvd_frames == 3
    assert json.loads(paths["json"].read_text())["fvd"] == result.fvd
    with pytest.raises(FileNotFoundError, match="local i3d_torchscript.pt"):
        I3DFeatures(tmp_path / "missing.pt")


MINERL_SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "minerl_navigate_samples"


def _skimage_ssim(pred: np.ndarray, truth: np.ndarray) -> float:
    metrics = pytest.importorskip("skimage.metrics")
    # tf.image.ssim's definition: Gaussian 11 / 1.5 (skimage truncates at 3.5 sigma: 11 taps),
    # population covariances, data range 1, valid positions only (skimage crops the border)
    return metrics.structural_similarity(pred, truth, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                         data_range=1.0, channel_axis=-1)


def test_ssim_matches_scikit_image_on_random_and_real_frames():
    rng = np.random.default_rng(0)
    pairs = [(rng.random((64, 64, c)), rng.random((64, 64, c))) for c in (1, 3)]
    noise = rng.random((64, 64, 3))
    pairs.append((noise, np.clip(noise + 0.1 * rng.standard_normal((64, 64, 3)), 0, 1)))
    digits = MovingMNIST(num_videos=2, seq_len=4, split="test")
    video = digits[0]["image"].numpy() / 255.0
    pairs.append((video[0], video[3]))  # real digits that moved
    if MINERL_SAMPLES.is_dir():
        clip = VideoFolder(MINERL_SAMPLES, 20)[0]["image"].numpy() / 255.0
        pairs += [(clip[0], clip[10]), (clip[5], clip[6])]
    for pred, truth in pairs:
        ours = ssim(torch.from_numpy(pred)[None], torch.from_numpy(truth)[None]).item()
        assert abs(ours - _skimage_ssim(pred, truth)) < 1e-5, (ours, _skimage_ssim(pred, truth))


def test_every_evaluation_carries_the_baselines_and_a_black_model_scores_the_black_baseline():
    from cwworld.evaluate import evaluate

    model = load_model.__globals__["CWVAE"](tiny_run_config(1).model)  # an untrained quickstart-sized tiny model
    with torch.no_grad():  # a decoder that draws black frames: zero weights, a very negative bias (clamped to 0)
        last = model.decoder.deconvs[-1]
        last.weight.zero_()
        last.bias.fill_(-100.0)
    videos = MovingMNIST(num_videos=3, seq_len=10, split="test")
    result = evaluate(model, videos, context=4, horizon=6, num_samples=2, batch_size=2)
    curves = result.curves()
    assert set(result.baselines) == {"black", "last", "random"}
    for sample in range(2):  # frame by frame, exactly the black baseline's scores
        assert np.array_equal(result.ssim[:, sample], result.baselines["black"]["ssim"])
        assert np.array_equal(result.psnr[:, sample], result.baselines["black"]["psnr"])
    assert np.allclose(curves["ssim_mean"], curves["black_ssim"], atol=1e-6)
    # the last context frame repeated: exact at no step here (the digits move), but SSIM 1 against itself
    truth = np.stack([videos[i]["image"].numpy() for i in range(3)]) / 255.0
    expected = ssim(torch.from_numpy(np.repeat(truth[:, 3:4], 6, 1)), torch.from_numpy(truth[:, 4:])).numpy()
    assert np.allclose(result.baselines["last"]["ssim"], expected, atol=1e-6)
    summary = result.summary()
    assert summary["frames_beating_baselines"] == {"ssim": 0, "psnr": 0, "identity": 0}  # a tie is no win
    assert np.array_equal(result.identity[:, 0], result.baselines["black"]["identity"])
    assert summary["black_ssim_avg"] == pytest.approx(float(curves["black_ssim"].mean()))
    assert result.baseline_line().endswith("for the first 0 frames by PSNR, 0 by SSIM, 0 by digit identity "
                                           "(of 6 predicted frames)")


def test_frames_beating_baselines_counts_until_the_first_loss():
    model = np.array([[[20.0, 19.0, 12.0, 30.0]]])  # one video, one sample, 4 frames
    result = EvalResult(ssim=model / 100, psnr=model, kl_per_frame=[0.0], kl_per_tick=[0.0], context=2, horizon=4,
                        num_samples=1, sampled=False,
                        baselines={"black": {"ssim": np.array([[0.1, 0.1, 0.1, 0.1]]),
                                             "psnr": np.array([[10.0, 10.0, 13.0, 10.0]])},
                                   "last": {"ssim": np.array([[0.3, 0.1, 0.1, 0.1]]),
                                            "psnr": np.array([[15.0, 11.0, 11.0, 11.0]])}})
    assert result.frames_beating_baselines("psnr") == 2  # frame 3 loses to black; frame 4's win does not count
    assert result.frames_beating_baselines("ssim") == 0  # frame 1 loses to last
    assert result.baseline_line().startswith("predictions from the means (1 held-out videos, 2 context frames)")
    assert "for the first 2 frames by PSNR, 0 by SSIM (of 4 predicted frames)" in result.baseline_line()


def test_train_with_final_eval_prints_how_long_the_means_beat_the_baselines(tmp_path, capsys):
    from test_train import TINY

    assert main(["train", "--run-dir", str(tmp_path / "r"), "--no-progress", *TINY, "train.steps=2",
                 "train.final_eval=true"]) == 0
    printed = " ".join(capsys.readouterr().err.split())
    for folder, kind, what in (("eval", "samples", "sampled predictions (metrics averaged over 3 samples)"),
                               ("eval_mean", "means", "predictions from the means")):
        record = json.loads((tmp_path / "r" / folder / "metrics.json").read_text())
        assert record["prediction"] == kind and record["horizon"] == 4 and record["videos"] == 2
        beats = record["frames_beating_baselines"]
        frames = "frame" if beats["psnr"] == 1 else "frames"
        assert (f"{what} (2 held-out videos, 4 context frames) beat every baseline (black, last, random) for the "
                f"first {beats['psnr']} {frames} by PSNR, {beats['ssim']} by SSIM, {beats['identity']} by digit "
                f"identity (of 4 predicted frames)") in printed


def test_eval_outputs_hold_the_baselines(trained_run):
    result, paths = evaluate_run(trained_run, horizon=3, num_videos=2)
    header = paths["csv"].read_text().splitlines()[0].split(",")
    assert header[-9:] == ["black_ssim", "black_psnr", "black_identity", "last_ssim", "last_psnr", "last_identity",
                           "random_ssim", "random_psnr", "random_identity"]
    assert "identity_mean" in header and (paths["csv"].parent / "identity.png").exists()
    record = json.loads(paths["json"].read_text())
    assert len(record["per_step"]["random_psnr"]) == 3 and "baseline black" in record["definition"]
    assert 0 <= record["frames_beating_baselines"]["ssim"] <= 3


def test_mean_predictions_are_deterministic_and_say_so(trained_run, tmp_path, capsys):
    runs = {}
    for seed in (0, 1):
        for sample in (True, False):
            runs[seed, sample] = evaluate_run(trained_run, tmp_path / f"{seed}{sample}", horizon=4, num_videos=2,
                                              seed=seed, sample=sample)
    assert np.array_equal(runs[0, False][0].psnr, runs[1, False][0].psnr)  # no noise: the seed changes nothing
    assert not np.array_equal(runs[0, True][0].psnr, runs[1, True][0].psnr)
    assert runs[0, False][0].psnr.shape == (2, 1, 4)  # one prediction per video, whatever eval.num_samples says
    assert json.loads(runs[0, False][1]["json"].read_text())["prediction"] == "means"
    assert json.loads(runs[0, True][1]["json"].read_text())["prediction"] == "samples"
    with pytest.raises(ValueError, match="num_samples must be 1"):
        evaluate_run(trained_run, tmp_path / "x", horizon=4, num_videos=2, num_samples=2, sample=False)
    assert main(["eval", str(trained_run), "--mean", "--horizon", "3", "--videos", "2", "--out", str(tmp_path / "m"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["prediction"] == "means"
    frames = (np.random.default_rng(0).random((8, 64, 64, 1)) * 255).astype(np.uint8)
    save_mp4(tmp_path / "clip.mp4", frames, scale=1)
    gifs = []
    for name in ("a.gif", "b.gif"):
        assert main(["predict", str(trained_run), "--video", str(tmp_path / "clip.mp4"), "--context", "4",
                     "--horizon", "3", "--mean", "--seed", str(len(gifs)), "--out", str(tmp_path / name)]) == 0
        gifs.append((tmp_path / name).read_bytes())
    assert gifs[0] == gifs[1]
    assert main(["predict", str(trained_run), "--video", str(tmp_path / "clip.mp4"), "--mean", "--samples", "2",
                 "--out", str(tmp_path / "c.gif")]) == 2
    assert "--samples must be 1" in " ".join(capsys.readouterr().err.split())


def test_events_logged_after_the_last_checkpoint_are_not_counted_twice_after_a_resume(tmp_path):
    import shutil

    Trainer(tiny_run_config(4, save_every=2), tmp_path, progress=False).train()
    # as if killed after logging steps 3 and 4 but before saving step 4's checkpoint
    folder = tmp_path / "checkpoints"
    shutil.copy(folder / "step_000002.pt", folder / "latest.pt")
    (folder / "step_000004.pt").unlink()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    Trainer(tiny_run_config(4, save_every=2), tmp_path, progress=False).train()
    scalars = read_scalars(tmp_path)
    assert [step for step, _ in scalars["loss"]] == [1, 2, 3, 4]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == len(lines) == 4
    assert (folder / "step_000004.pt").exists()  # the numbered checkpoint is written again


def test_the_digit_classifier_reads_held_out_digits_and_the_identity_metric_separates_right_from_wrong():
    from cwworld.data.moving_mnist import load_digits, load_labels
    from cwworld.digits import accuracy, digit_identity, load_classifier

    classifier = load_classifier()
    assert accuracy(classifier, load_digits(None, "test"), load_labels(None, "test")) >= 0.95  # 500 held-out digits
    videos = MovingMNIST(num_videos=24, seq_len=60, split="test", seed=3)
    frames = torch.stack([videos[i]["image"] for i in range(24)])[:, None]  # (24, 1, 60, 64, 64, 1)
    layouts = [videos.layout(i) for i in range(24)]
    labels, corners = np.stack([a for a, _ in layouts]), np.stack([c for _, c in layouts])
    truth = digit_identity(classifier, frames, labels, corners)
    assert truth.shape == (24, 1, 60) and float(truth.mean()) >= 0.9  # ground truth (overlaps included)
    # the same motion drawn with other digits (another video's), read against these labels: chance
    other = torch.from_numpy(np.stack([_redraw(videos, i, (i + 5) % 24) for i in range(24)]))[:, None]
    shuffled = float(digit_identity(classifier, other, labels, corners).mean())
    same = np.mean([set(labels[i]) & set(labels[(i + 5) % 24]) != set() for i in range(24)])
    assert shuffled < 0.25, (shuffled, same)


def _redraw(videos, index: int, digits_of: int) -> np.ndarray:
    """Video ``index``'s motion with the digits of video ``digits_of``."""
    from cwworld.data.moving_mnist import _SPLITS, draw_digits, moving_mnist_layout

    rng = np.random.default_rng([videos.seed, _SPLITS[videos.split], digits_of])
    which, _ = moving_mnist_layout(rng, len(videos.digits), 2)
    _, corners = videos.layout(index)
    return draw_digits(videos.digits[which], corners)


def test_eval_into_an_unwritable_folder_stops_before_the_work(trained_run, tmp_path, capsys, monkeypatch):
    import cwworld.evaluate as evaluate_module

    blocker = tmp_path / "a_file"  # a folder under a file cannot be made, even by root (read-only folders can)
    blocker.write_text("")
    monkeypatch.setattr(evaluate_module, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking"))
    assert main(["eval", str(trained_run), "--out", str(blocker / "eval"), "--no-progress"]) == 2
    assert f"cwworld eval: the evaluation's output folder: cannot write into {blocker / 'eval'}" in capsys.readouterr().err


def test_a_horizon_that_cannot_fit_is_refused_before_any_video_is_made(trained_run, tmp_path, monkeypatch):
    import cwworld.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    with pytest.raises(ValueError, match=r"horizon 1000000000 for a batch of 4 would hold about [0-9.]+ GiB.*"
                                         r"choose a shorter horizon"):
        evaluate_run(trained_run, tmp_path / "eval", horizon=10**9, num_videos=2, batch_size=2)


def test_a_full_disk_is_named_as_such(tmp_path, monkeypatch):
    import shutil

    from cwworld.utils import atomic_output

    def fail(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 2048 vs 1976")

    monkeypatch.setattr(shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10**9, 10**9 - 10, 10))
    with pytest.raises(OSError, match=r"no space left on the device of .*could not write model.pt"):
        with atomic_output(tmp_path / "model.pt") as tmp:
            fail(tmp)
    assert list(tmp_path.iterdir()) == []
