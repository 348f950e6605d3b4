"""Open-loop evaluation: SSIM and PSNR per predicted frame, per-level KL, pictures.

For each held-out video the model observes ``context`` frames and predicts the
next ``horizon`` frames open-loop, ``num_samples`` times. Each predicted frame is
compared with the true frame:

* **SSIM**: the standard definition (Wang et al. 2004) as ``tf.image.ssim`` computes it:
  11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, valid positions only,
  averaged over positions and channels. Pixels are in [0, 1] and the data range is 1
  (the official CW-VAE code passed range 2 for [0, 1] data, which inflates SSIM).
* **PSNR**: ``10 log10(1 / MSE)`` per frame, MSE over pixels and channels in [0, 1]
  (capped at 100 dB for an exact match).

Predictions are clipped to [0, 1] (the model's ``decode`` does this). Two summaries
per horizon step are reported: the **mean** over the N samples (then over videos) and
the **best of N**: per video the sample whose metric averaged over the horizon is
highest, so a curve is one whole sample, not a per-frame maximum.

The per-level KL table (the paper's Table 1) is computed on the ground-truth videos
with every level observing: ``kl_per_frame`` is each level's KL(q || p) summed over its
active steps and divided by the number of frames (as the training metric ``kl/l``),
``kl_per_tick`` divides by that level's number of active steps instead.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from .model import CWVAE, _gaussian_kl
from .utils import atomic_output, atomic_write_text
from .viz import save_video, video_grid

__all__ = ["EvalResult", "evaluate", "evaluate_run", "plot_metrics", "psnr", "ssim", "write_results"]


# -- metrics ------------------------------------------------------------------------------


def _gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype)


def ssim(pred: torch.Tensor, truth: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM per frame: ``[..., H, W, C]`` float -> ``[...]`` (see the module docstring)."""
    if pred.shape != truth.shape:
        raise ValueError(f"ssim: pred and truth shapes differ: {list(pred.shape)} vs {list(truth.shape)}")
    lead = pred.shape[:-3]
    # float64: E[x^2] - E[x]^2 cancels badly in float32 next to the small constants
    x = rearrange(pred.double(), "... h w c -> (...) c h w")
    y = rearrange(truth.double(), "... h w c -> (...) c h w")
    C = x.shape[1]
    g = _gaussian_window(dtype=torch.float64).to(x.device)
    if min(x.shape[-2:]) < len(g):
        raise ValueError(f"ssim: frames must be at least {len(g)} pixels on each side, found {list(x.shape[-2:])}")

    def blur(t):  # separable Gaussian, valid positions, per channel
        t = F.conv2d(t, g.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
        return F.conv2d(t, g.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * cov + c2) / (var_x + var_y + c2)
    return (luminance * contrast_structure).mean(dim=(1, 2, 3)).reshape(lead).float()


def psnr(pred: torch.Tensor, truth: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per frame: ``[..., H, W, C]`` -> ``[...]``; capped at 100 dB."""
    if pred.shape != truth.shape:
        raise ValueError(f"psnr: pred and truth shapes differ: {list(pred.shape)} vs {list(truth.shape)}")
    mse = ((pred.double() - truth.double()) ** 2).mean(dim=(-3, -2, -1))
    return (10.0 * torch.log10(data_range**2 / mse.clamp_min(data_range**2 * 1e-10))).float()


# -- evaluation ---------------------------------------------------------------------------


@dataclass
class EvalResult:
    """Per-frame metrics ``[videos, samples, horizon]`` and the per-level KL table."""

    ssim: np.ndarray
    psnr: np.ndarray
    kl_per_frame: list[float]
    kl_per_tick: list[float]
    context: int
    horizon: int
    num_samples: int
    name: str = "model"
    step: Optional[int] = None
    lpips: Optional[np.ndarray] = None  # [videos, samples, horizon] when LPIPS weights were given
    identity: Optional[np.ndarray] = None  # [videos, samples, horizon] digit identity accuracy (Moving MNIST)
    fvd: Optional[float] = None  # FVD of the first `fvd_frames` predicted frames (sample 0) vs the truth
    fvd_frames: Optional[int] = None
    predictions: Optional[np.ndarray] = None  # uint8 grid video: truth and samples
    top_prior: Optional[np.ndarray] = None  # uint8 grid video: top level from its prior
    baselines: dict = field(default_factory=dict)  # name -> {"ssim": [videos, horizon], "psnr": [videos, horizon]}
    extra: dict = field(default_factory=dict)
    sampled: bool = True  # predictions from prior samples (the paper's); False: from the priors' means

    @property
    def num_videos(self) -> int:
        return self.ssim.shape[0]

    def curves(self) -> dict[str, np.ndarray]:
        """``{ssim_mean, ssim_best, psnr_mean, psnr_best}`` (and ``lpips_*``), each ``[horizon]``."""
        out = {}
        for metric in ("ssim", "psnr", "lpips", "identity"):
            values = getattr(self, metric)  # [V, S, H]
            if values is None:
                continue
            out[f"{metric}_mean"] = values.mean(axis=(0, 1))
            score = values.mean(axis=2)  # [V, S]
            best = (score.argmin if metric == "lpips" else score.argmax)(axis=1)  # the best whole sample per video
            out[f"{metric}_best"] = values[np.arange(len(values)), best].mean(axis=0)
        for name, metrics in self.baselines.items():
            for metric, values in metrics.items():
                out[f"{name}_{metric}"] = values.mean(axis=0)
        return out

    def frames_beating_baselines(self, metric: str = "ssim") -> int:
        """How many predicted frames, from the first, the model's mean ``metric`` stays above every
        baseline's by more than rounding (0 when it is not above one at the first frame)."""
        curves = self.curves()
        if not self.baselines:
            return self.horizon
        best_baseline = np.max([curves[f"{name}_{metric}"] for name in self.baselines], axis=0)
        tie = 1e-5 * np.maximum(1.0, np.abs(best_baseline))  # rounding of the means is not a win
        below = np.nonzero(curves[f"{metric}_mean"] <= best_baseline + tie)[0]
        return int(below[0]) if len(below) else self.horizon

    def baseline_line(self) -> str:
        """One sentence: for how many predicted frames the model beats every baseline, per metric."""
        what = ("predictions from the means" if not self.sampled
                else f"sampled predictions (metrics averaged over {self.num_samples} samples)")
        if not self.baselines:
            return f"{what}: no baselines for this data"
        names = {"psnr": "PSNR", "ssim": "SSIM", "identity": "digit identity"}
        counts = [(self.frames_beating_baselines(m), names[m]) for m in names if getattr(self, m) is not None]
        counts = [f"{n} {('frame ' if n == 1 else 'frames ') if i == 0 else ''}by {name}"
                  for i, (n, name) in enumerate(counts)]  # "the first 3 frames by PSNR, 0 by SSIM, ..."
        return (f"{what} ({self.num_videos} held-out videos, {self.context} context frames) beat every baseline "
                f"({', '.join(self.baselines)}) for the first {', '.join(counts)} (of {self.horizon} predicted frames)")

    def summary(self) -> dict:
        curves = self.curves()
        return {
            "name": self.name, "step": self.step, "videos": self.num_videos, "samples": self.num_samples,
            "context": self.context, "horizon": self.horizon, "prediction": "samples" if self.sampled else "means",
            **{f"{key}_avg": float(value.mean()) for key, value in curves.items()},
            "fvd": self.fvd, "fvd_frames": self.fvd_frames,
            "kl_per_frame": self.kl_per_frame, "kl_per_tick": self.kl_per_tick,
            **({"frames_beating_baselines": {m: self.frames_beating_baselines(m) for m in ("ssim", "psnr", "identity")
                                             if getattr(self, m) is not None}}
               if self.baselines else {}),
        }


@torch.no_grad()
def evaluate(
    model: CWVAE,
    videos,
    context: int,
    horizon: int,
    num_samples: int = 1,
    num_videos: Optional[int] = None,
    batch_size: int = 8,
    seed: int = 0,
    grid_videos: int = 4,
    progress: bool = False,
    name: str = "model",
    lpips=None,
    i3d=None,
    fvd_frames: int = 16,
    sample: bool = True,
) -> EvalResult:
    """Evaluate ``model`` open-loop on a dataset of ``{"image": uint8 [T, H, W, C]}`` videos
    (``T >= context + horizon``); the first ``num_videos`` (default all) are used.
    ``lpips``: a :class:`cwworld.lpips.LPIPS` to also report LPIPS (lower is better).
    ``i3d``: a :class:`cwworld.fvd.I3DFeatures` to also report FVD between the first
    ``fvd_frames`` predicted frames (the first sample) and the true ones.
    Moving MNIST videos (a dataset with ``layout(i)``, 64x64 grey) also get the digit identity
    accuracy of every predicted frame (:mod:`cwworld.digits`), for the model and the baselines.
    ``sample=False``: predict from the posterior and prior *means* (deterministic: one sample is
    enough; not the paper's protocol, which samples)."""
    if not sample:
        _check_mean_samples(num_samples, "evaluate")
    total = len(videos) if num_videos is None else min(num_videos, len(videos))
    if total < 1:
        raise ValueError("evaluate: the dataset holds no videos")
    length = context + horizon
    _check_memory(model, min(batch_size, total) * num_samples, horizon)
    model.eval()
    device = model.device
    ssims, psnrs, lpipses, kls, grids = [], [], [], [], {}
    classifier = _digit_classifier(videos, model)
    identities = []
    baseline_values = {name: {"ssim": [], "psnr": [], **({"identity": []} if classifier else {})}
                       for name in BASELINES}
    real_feats, fake_feats = [], []
    clip = min(fvd_frames, horizon)
    L, k = model.levels, model.config.factor
    ticks = [math.ceil(length / k**level) for level in range(L)]
    batches = range(0, total, batch_size)
    if progress:
        from rich.progress import track

        batches = track(batches, description=f"evaluating {name}", transient=True)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in batches:
            items = [videos[i] for i in range(start, min(start + batch_size, total))]
            truth = torch.stack([item["image"] for item in items]).to(device)
            if truth.shape[1] < length:
                raise ValueError(f"evaluate: videos have {truth.shape[1]} frames, context + horizon = {length}")
            truth = truth[:, :length]
            actions = None
            if model.config.action_dim > 0:  # the true actions, as the paper's action-conditioned setting
                actions = torch.stack([item["action"] for item in items]).float().to(device)[:, :length]
            vectors = {k: torch.stack([item[k] for item in items]).to(device)[:, :length]
                       for k in model.vector_keys} if model.vector_keys else None
            ctx_vectors = None if vectors is None else {k: v[:, :context] for k, v in vectors.items()}
            target = truth[:, context:].float() / 255.0  # [B, H, h, w, c]
            pred = model.predict(truth[:, :context], horizon, actions=actions, vectors=ctx_vectors,
                                 num_samples=num_samples, sample=sample)  # [B, S, H, h, w, c]
            ssims.append(ssim(pred, target[:, None].expand_as(pred)).cpu())
            psnrs.append(psnr(pred, target[:, None].expand_as(pred)).cpu())
            others = torch.stack([videos[(i + 1) % total]["image"][context:length]
                                  for i in range(start, start + len(items))]).to(device).float() / 255.0
            if classifier is not None:
                from .digits import digit_identity

                layouts = [videos.layout(i) for i in range(start, start + len(items))]
                labels = np.stack([labels for labels, _ in layouts])  # (B, n)
                corners = np.stack([corners[context:length] for _, corners in layouts])  # (B, horizon, n, 2)
                identities.append(digit_identity(classifier, pred, labels, corners))
            for baseline, frames in _baseline_frames(truth, context, others).items():
                baseline_values[baseline]["ssim"].append(ssim(frames, target).cpu())
                baseline_values[baseline]["psnr"].append(psnr(frames, target).cpu())
                if classifier is not None:
                    baseline_values[baseline]["identity"].append(
                        digit_identity(classifier, frames[:, None], labels, corners)[:, 0])
            if lpips is not None:
                lpips = lpips.to(device)
                rgb = (lambda v: v.expand(*v.shape[:-1], 3)) if pred.shape[-1] == 1 else (lambda v: v)  # noqa: E731
                lpipses.append(lpips(rgb(pred), rgb(target[:, None].expand_as(pred))).cpu())
            if i3d is not None:
                real_feats.append(i3d(target[:, :clip]))
                fake_feats.append(i3d(pred[:, 0, :clip]))
            traj = model.observe(truth, actions, sample=False, vectors=vectors)
            kls.append(torch.stack([
                _gaussian_kl(post.mean, post.std, prior.mean, prior.std).sum(dim=(1, 2)).cpu()
                for post, prior in zip(traj.posterior, traj.prior)
            ], dim=1))  # [B, L], nats per sequence
            if start == 0:
                grid_actions = None if actions is None else actions[:grid_videos]
                grid_vectors = None if ctx_vectors is None else {k: v[:grid_videos] for k, v in ctx_vectors.items()}
                grids = _grids(model, truth[:grid_videos], context, horizon, pred[:grid_videos], grid_actions,
                               grid_vectors, sample)
    kl = torch.cat(kls).mean(dim=0)  # [L]
    fvd = None
    if i3d is not None:
        from .fvd import frechet_distance

        fvd = frechet_distance(np.concatenate(fake_feats), np.concatenate(real_feats))
    return EvalResult(
        fvd=fvd, fvd_frames=clip if i3d is not None else None,
        ssim=torch.cat(ssims).numpy(), psnr=torch.cat(psnrs).numpy(),
        lpips=torch.cat(lpipses).numpy() if lpipses else None,
        identity=torch.cat(identities).numpy() if identities else None,
        kl_per_frame=[float(v) / length for v in kl], kl_per_tick=[float(v) / n for v, n in zip(kl, ticks)],
        context=context, horizon=horizon, num_samples=num_samples, name=name, sampled=sample, **grids,
        baselines={b: {m: torch.cat(v).numpy() for m, v in values.items()} for b, values in baseline_values.items()},
    )


def _check_mean_samples(num_samples: int, caller: str) -> None:
    if num_samples != 1:
        raise ValueError(f"{caller}: predictions from the means are deterministic, so num_samples must be 1 "
                         f"(found {num_samples})")


BASELINES = {
    "black": "an all-black frame",
    "last": "the last context frame, repeated",
    "random": "the same frames of another held-out video (video i + 1), the paper's 'random' line",
}


def _check_memory(model: CWVAE, batch: int, horizon: int) -> None:
    """Refuse a horizon whose predictions would not fit in memory, naming the horizon."""
    model._check_rollout_memory(batch, horizon, frames=True, caller="evaluate: ",
                                advice="choose a shorter horizon (--horizon / eval.horizon)")


def _digit_classifier(videos, model: CWVAE):
    """The digit classifier when ``videos`` are Moving MNIST at the classifier's scale, else None."""
    if not hasattr(videos, "layout") or model.config.channels != 1 or model.config.image_size != 64:
        return None
    from .digits import load_classifier

    return load_classifier()


def _baseline_frames(truth: torch.Tensor, context: int, others: torch.Tensor) -> dict[str, torch.Tensor]:
    """Predictions that use no model, ``[B, horizon, h, w, c]`` float in [0, 1] each (see ``BASELINES``)."""
    horizon = others.shape[1]
    last = truth[:, context - 1 : context].float() / 255.0
    return {"black": torch.zeros_like(others), "last": last.expand(-1, horizon, -1, -1, -1), "random": others}


def _grids(model: CWVAE, truth: torch.Tensor, context: int, horizon: int, pred: torch.Tensor,
           actions: Optional[torch.Tensor] = None, vectors: Optional[dict] = None, sample: bool = True) -> dict:
    """Grid videos: truth above each sample; and all-levels vs top-level-from-prior predictions.
    ``vectors``: the context's vector observations, for models that read them."""
    ctx_actions = None if actions is None else actions[:, :context]
    recon = model.decode(model.observe(truth[:, :context], ctx_actions, vectors=vectors, sample=sample).features)
    with_context = lambda p: torch.cat([recon, p], dim=1).cpu()  # noqa: E731
    rows = [list(truth.cpu())] + [list(with_context(pred[:, s])) for s in range(min(pred.shape[1], 3))]
    out = {"predictions": video_grid(rows)}
    if model.levels > 1:
        blind_top = [True] * (model.levels - 1) + [False]
        prior_rows = [list(with_context(model.predict(truth[:, :context], horizon, actions, use_obs=blind_top,
                                                      vectors=vectors, sample=sample)[:, 0]))
                      for _ in range(2 if sample else 1)]
        out["top_prior"] = video_grid([list(truth.cpu()), list(with_context(pred[:, 0]))] + prior_rows)
    return out


# -- outputs ------------------------------------------------------------------------------


def write_results(result: EvalResult, out_dir: Union[str, os.PathLike], fps: float = 10.0) -> dict[str, Path]:
    """Write ``metrics.csv`` (one row per horizon step), ``metrics.json``, ``kl.csv``,
    ``ssim.png``, ``psnr.png``, ``predictions.gif`` and ``top_prior.gif`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = result.curves()
    paths = {}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = [key for key in ("ssim_mean", "ssim_best", "psnr_mean", "psnr_best", "lpips_mean", "lpips_best",
                               "identity_mean", "identity_best") if key in curves]
    columns += [f"{name}_{metric}" for name in result.baselines for metric in ("ssim", "psnr", "identity")
                if f"{name}_{metric}" in curves]
    writer.writerow(["t", "frame", *columns])
    for i in range(result.horizon):
        writer.writerow([i + 1, result.context + i] + [f"{curves[key][i]:.6f}" for key in columns])
    paths["csv"] = atomic_write_text(out_dir / "metrics.csv", buf.getvalue())
    record = {**result.summary(), "best_of": result.num_samples,
              "definition": {"ssim": "gaussian 11x11 sigma 1.5, data range 1, predictions clipped to [0, 1]",
                             "psnr": "10 log10(1 / mse), data range 1, capped at 100 dB",
                             "mean": "mean over samples, then over videos",
                             "lpips": "AlexNet LPIPS v0.1 from local weights (lower is better)",
                             "identity": "Moving MNIST: the fraction of digits that the shipped classifier "
                                         "reads as their true class in the 28x28 window at their true "
                                         "position (cwworld.digits)",
                             "best": "per video the sample with the best horizon-averaged metric",
                             **{f"baseline {name}": text for name, text in BASELINES.items()},
                             "frames_beating_baselines": "predicted frames, from the first, in which the mean "
                                                         "metric stays above every baseline's"},
              "per_step": {key: [float(v) for v in value] for key, value in curves.items()}}
    paths["json"] = atomic_write_text(out_dir / "metrics.json", json.dumps(record, indent=1) + "\n")
    kl_rows = "level,kl_per_frame,kl_per_tick\n" + "".join(
        f"{level},{a:.6f},{b:.6f}\n" for level, (a, b) in enumerate(zip(result.kl_per_frame, result.kl_per_tick)))
    paths["kl"] = atomic_write_text(out_dir / "kl.csv", kl_rows)
    paths.update(plot_metrics([result], out_dir))
    if result.predictions is not None:
        paths["predictions"] = save_video(out_dir / "predictions.gif", result.predictions, fps=fps)
    if result.top_prior is not None:
        paths["top_prior"] = save_video(out_dir / "top_prior.gif", result.top_prior, fps=fps)
    return paths


def plot_metrics(results: Sequence[EvalResult], out_dir: Union[str, os.PathLike]) -> dict[str, Path]:
    """``ssim.png`` and ``psnr.png`` (and ``identity.png`` for Moving MNIST): each metric against
    the horizon, one colour per result (solid: mean over samples, dashed: best of N), like the
    paper's Fig. 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    metrics = [("ssim", "SSIM"), ("psnr", "PSNR (dB)")]
    if "identity_mean" in results[0].curves():
        metrics.append(("identity", "digit identity accuracy"))
    for metric, label in metrics:
        fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
        for i, result in enumerate(results):
            curves = result.curves()
            t = np.arange(1, result.horizon + 1)
            colour = f"C{i}"
            ax.plot(t, curves[f"{metric}_mean"], color=colour, label=f"{result.name} (mean of {result.num_samples})")
            if result.num_samples > 1:
                ax.plot(t, curves[f"{metric}_best"], color=colour, linestyle="--",
                        label=f"{result.name} (best of {result.num_samples})")
        for name, style in zip(BASELINES, (":", "-.", (0, (1, 3)))):  # the first result's baselines, in grey
            key = f"{name}_{metric}"
            if key in results[0].curves():
                ax.plot(np.arange(1, results[0].horizon + 1), results[0].curves()[key], color="0.45",
                        linestyle=style, linewidth=1.2, label=f"baseline: {name}")
        ax.set_xlabel("frames predicted after the context")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, never over them
        videos = ", ".join(sorted({str(r.num_videos) for r in results}))
        ax.set_title(f"open-loop {label.split(' (')[0]}, {videos} test videos, context {results[0].context}", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"{metric}.png"
        try:
            with atomic_output(path, suffix=".png") as tmp:
                fig.savefig(tmp)
        finally:
            plt.close(fig)
        paths[metric] = path
    return paths


def evaluate_run(
    run_dir: Union[str, os.PathLike],
    out_dir: Union[str, os.PathLike, None] = None,
    context: Optional[int] = None,
    horizon: Optional[int] = None,
    num_samples: Optional[int] = None,
    num_videos: Optional[int] = None,
    batch_size: Optional[int] = None,
    checkpoint: Optional[str] = None,
    device: str = "auto",
    seed: int = 0,
    overrides: Sequence[str] = (),
    progress: bool = False,
    lpips_weights: Optional[Sequence[str]] = None,
    i3d_path: Optional[str] = None,
    fvd_frames: int = 16,
    sample: bool = True,
) -> tuple[EvalResult, dict[str, Path]]:
    """Evaluate a run directory's model on its config's held-out data; writes into
    ``out_dir`` (default ``RUN_DIR/eval``; for ``pretrained:NAME`` or a model file, under ``runs/``).
    Arguments left None come from the config's ``eval`` section; ``overrides`` (``key=value``) change the config first, e.g. ``data.path``.
    ``lpips_weights``: (AlexNet weights, LPIPS linear weights) files to also report LPIPS;
    ``i3d_path``: a local ``i3d_torchscript.pt`` to also report FVD over ``fvd_frames`` frames;
    ``sample=False``: predictions from the means (see :func:`evaluate`; ``num_samples`` must be 1)."""
    from .config import apply_overrides
    from .data import make_dataset
    from .pretrained import default_run_dir
    from .train import load_model
    from .utils import check_writable, keep_freed_memory, pick_device

    out_dir = check_writable(out_dir or default_run_dir(run_dir) / "eval", "the evaluation's output folder")  # before the work
    device = pick_device(device)
    if device.type == "cpu":
        keep_freed_memory()  # as the trainer does: large prediction tensors without fresh page faults per batch
    model, config, step = load_model(run_dir, checkpoint, device=device)
    apply_overrides(config, overrides)
    if config.data.kind == "replay" and config.data.env and not config.data.path:
        config.data.path = str(Path(run_dir) / "replay")  # an online run: evaluate on what it collected
    ev = config.eval
    for name, value in (("context", context), ("horizon", horizon), ("num_samples", num_samples),
                        ("num_videos", num_videos), ("batch_size", batch_size)):
        if value is not None:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"evaluate_run: {name} must be a whole number >= 1, found {value!r}")
            setattr(ev, name, value)
    if not sample:  # the means: one prediction per video (the config's eval.num_samples is for samples)
        ev.num_samples = num_samples or 1
        _check_mean_samples(ev.num_samples, "evaluate_run")
    _check_memory(model, min(ev.batch_size, ev.num_videos) * ev.num_samples, ev.horizon)  # before making the videos
    videos = make_dataset(config, "eval", progress=progress)
    lpips = None
    if lpips_weights:
        from .lpips import LPIPS

        lpips = LPIPS(*lpips_weights)
    i3d = None
    if i3d_path:
        from .fvd import I3DFeatures

        i3d = I3DFeatures(i3d_path, device=model.device)
    result = evaluate(model, videos, ev.context, ev.horizon, ev.num_samples, ev.num_videos, ev.batch_size,
                      seed=seed, progress=progress, name=Path(run_dir).name, lpips=lpips, i3d=i3d, fvd_frames=fvd_frames,
                      sample=sample)
    result.step = step
    return result, write_results(result, out_dir)
