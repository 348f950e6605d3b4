"""The ``cwworld`` command.

    cwworld train [--config NAME_OR_PATH] [--run-dir DIR] [key=value ...]
    cwworld eval RUN_DIR [RUN_DIR ...] [--context N] [--horizon N] [--samples N] ...
    cwworld predict RUN_DIR --video PATH [--context 36] [--horizon 500] [--out FILE.gif]
    cwworld convert minerl SRC DST                    MineRL demonstrations -> replay chunks
    cwworld config [NAME_OR_PATH] [key=value ...]     print the resolved config
    cwworld presets                                   list the shipped presets
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings
from pathlib import Path

import yaml
from rich.console import Console

from .config import ConfigError, load_config, preset_names


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (so 0 and negatives are refused by name, not ignored)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, found {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, found {value}")
    return value


def _train(args) -> int:
    if getattr(args, "nproc", 1) > 1 and "WORLD_SIZE" not in os.environ:
        return _spawn_training(args)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # started by torchrun (or our spawn): join the job
        _join_process_group(args)
    try:
        return _train_here(args)
    finally:
        if world > 1:
            _leave_process_group(synchronize=False)  # a failed run: do not wait for the others


def _leave_process_group(synchronize: bool = True) -> None:
    """Destroy the process group of a distributed run, if one is initialised. With ``synchronize``
    every rank first waits for the others: ``destroy_process_group`` is collective, and a gloo rank
    that tears its group down while another still trains or writes can abort (SIGABRT)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if synchronize:
        dist.barrier()
    dist.destroy_process_group()


def _join_process_group(args) -> None:
    """Initialise torch.distributed from the environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""
    import torch
    import torch.distributed as dist

    cfg = load_config(args.config, args.overrides)
    on_gpu = torch.cuda.is_available() and cfg.train.device != "cpu"
    if on_gpu:
        local = int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
        torch.cuda.set_device(local)
        args.overrides = list(args.overrides) + [f"train.device=cuda:{local}"]
    else:  # processes sharing the CPU cores: split the threads, do not oversubscribe them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["WORLD_SIZE"])))
    dist.init_process_group("nccl" if on_gpu else "gloo")


def _spawn_training(args) -> int:
    """``--nproc N`` on one machine: N processes of this command, joined by torch.distributed."""
    import socket

    import torch.multiprocessing as mp

    from .train import check_global_batch

    check_global_batch(load_config(args.config, args.overrides), args.nproc)  # refused once, before spawning
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        mp.spawn(_spawned_worker, args=(args, args.nproc, port), nprocs=args.nproc, join=True)
    except mp.ProcessRaisedException as err:
        print(f"cwworld train: a training process failed:\n{err}", file=sys.stderr)
        return 1
    except mp.ProcessExitedException as err:
        print(f"cwworld train: a training process exited: {err}", file=sys.stderr)
        return 1
    return 0


def _spawned_worker(rank: int, args, world: int, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    code = _train(args)
    if code:
        raise SystemExit(code)


def _train_here(args) -> int:
    from .train import NonFiniteLossError, Trainer

    console = Console(stderr=True, quiet=int(os.environ.get("RANK", "0")) > 0)
    cfg = load_config(args.config, args.overrides)
    name = Path(args.config).stem
    run_dir = Path(args.run_dir or Path("runs") / name)
    console.print(f"run directory: [bold]{run_dir}[/]")
    trainer = Trainer(cfg, run_dir, console=console, progress=not args.no_progress)
    try:
        metrics = trainer.train()
    except NonFiniteLossError as err:
        console.print(f"[red]{err}[/]")
        return 3
    step = trainer.step
    del trainer  # the DistributedDataParallel wrapper goes before its process group
    _leave_process_group()  # every rank together; rank 0 then evaluates alone
    if metrics:
        kls = ", ".join(f"kl/{l} {metrics[f'kl/{l}']:.2f}" for l in range(cfg.model.levels))
        console.print(f"step {step}: loss {metrics['loss']:.2f}, nll {metrics['nll']:.2f}, {kls}")
    console.print(f"checkpoint: {run_dir / 'checkpoints' / 'latest.pt'}")
    samples = sorted((run_dir / "samples").glob("*.gif"))
    if samples:
        console.print(f"predictions: {samples[-1]}")
    if cfg.train.final_eval and int(os.environ.get("RANK", "0")) == 0:
        from .evaluate import evaluate_run

        for sample, out in ((True, run_dir / "eval"), (False, run_dir / "eval_mean")):
            result, paths = evaluate_run(run_dir, out, sample=sample, progress=not args.no_progress)
            console.print(f"{result.baseline_line()}; plots and GIFs: {paths['json'].parent}", highlight=False,
                          soft_wrap=True)
    return 0


def _eval(args) -> int:
    from .evaluate import evaluate_run, plot_metrics
    from .pretrained import default_run_dir

    console = Console(stderr=True)
    results = []
    # argparse gives every positional to RUN_DIR...; key=value ones that name no folder are overrides
    overrides = [d for d in args.run_dirs if "=" in d and not Path(d).exists()]
    args.run_dirs = [d for d in args.run_dirs if d not in overrides]
    args.overrides = overrides + list(args.overrides)
    if not args.run_dirs:
        raise ValueError("expected at least one RUN_DIR before the key=value overrides")
    for run_dir in args.run_dirs:
        out = Path(args.out) / default_run_dir(run_dir).name if args.out and len(args.run_dirs) > 1 else args.out
        result, paths = evaluate_run(
            run_dir, out, context=args.context, horizon=args.horizon, num_samples=args.samples,
            num_videos=args.videos, batch_size=args.batch_size, checkpoint=args.checkpoint,
            device=args.device, seed=args.seed, overrides=args.overrides, progress=not args.no_progress,
            lpips_weights=args.lpips, i3d_path=args.fvd, fvd_frames=args.fvd_frames, sample=not args.mean,
        )
        results.append(result)
        s = result.summary()
        lines = [
            f"{run_dir} (step {result.step}): {result.num_videos} videos, {result.num_samples} samples, "
            f"context {result.context}, horizon {result.horizon}",
            f"  SSIM mean {s['ssim_mean_avg']:.4f}, best of {result.num_samples} {s['ssim_best_avg']:.4f}; "
            f"PSNR mean {s['psnr_mean_avg']:.2f} dB, best {s['psnr_best_avg']:.2f} dB (averaged over the horizon)",
        ]
        if result.baselines:
            lines.append("  baselines (SSIM / PSNR): " + ", ".join(
                f"{name} {s[f'{name}_ssim_avg']:.4f} / {s[f'{name}_psnr_avg']:.2f} dB" for name in result.baselines))
            lines.append(f"  {result.baseline_line()}")
        if result.identity is not None:
            t = result.identity.mean(axis=(0, 1))
            marks = [m for m in (1, 10, 100, 300, 1000) if m <= len(t)]
            lines.append("  digit identity accuracy (mean of samples) at frames " + ", ".join(
                f"{m}: {t[m - 1]:.0%}" for m in marks) + "; baselines over the horizon: " + ", ".join(
                f"{name} {s[f'{name}_identity_avg']:.0%}" for name in result.baselines))
        if result.lpips is not None:
            lines.append(f"  LPIPS mean {s['lpips_mean_avg']:.4f}, best {s['lpips_best_avg']:.4f}")
        if result.fvd is not None:
            lines.append(f"  FVD {result.fvd:.1f} (first {result.fvd_frames} predicted frames, sample 0)")
        lines.append("  KL per level (nats per frame): "
                     + ", ".join(f"{l}: {v:.3f}" for l, v in enumerate(result.kl_per_frame)))
        console.print("\n".join(lines))
        console.print(f"  wrote {paths['csv'].parent}/ (metrics.csv, metrics.json, kl.csv, *.png, *.gif)")
    if len(results) > 1:
        out = Path(args.out or "eval_compare")
        paths = plot_metrics(results, out)
        console.print(f"comparison plots: {paths['ssim']}, {paths['psnr']}")
    return 0


def _export(args) -> int:
    import torch

    from .pretrained import export_pretrained

    if not str(args.out).endswith(".pt"):
        raise ValueError(f"{args.out}: the exported file's name must end in .pt")
    path = export_pretrained(args.run_dir, args.out, dtype=torch.float32 if args.fp32 else torch.float16)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _predict(args) -> int:
    import torch

    from .data.video import read_video
    from .train import load_model
    from .utils import pick_device
    from .viz import save_video, video_grid

    console = Console(stderr=True)
    if Path(args.out).suffix.lower() not in (".gif", ".mp4"):  # before any work
        raise ValueError(f"--out {args.out}: unsupported video extension {Path(args.out).suffix!r} (use .gif or .mp4)")
    if args.mean and args.samples != 1:
        raise ValueError(f"--mean predicts from the means, which is deterministic: --samples must be 1, found {args.samples}")
    model, config, step = load_model(args.run_dir, args.checkpoint, device=pick_device(args.device))
    size, channels = config.model.image_size, config.model.channels
    video = read_video(args.video, size, 3, smaller="resize")
    if channels == 1:
        if (video.max(axis=-1) != video.min(axis=-1)).any():
            console.print(f"[yellow]{args.video}: a colour clip; this model reads grey frames (model.channels 1), "
                          "so the clip is converted to grey[/]")
        video = read_video(args.video, size, 1, smaller="resize")
    if len(video) < args.context:
        console.print(f"[red]{args.video}: {len(video)} frames, fewer than --context {args.context}[/]")
        return 2
    torch.manual_seed(args.seed)
    context = torch.from_numpy(video[None, : args.context]).to(model.device)
    pred = model.predict(context, args.horizon, num_samples=args.samples, sample=not args.mean)[0].cpu()  # [S, H, h, w, c]
    truth = torch.from_numpy(video[: args.context + args.horizon]).float() / 255.0
    with torch.no_grad():  # the model's rows show its reconstructions of the context, as cwworld eval's do
        recon = model.decode(model.observe(context, sample=not args.mean).features)[0].cpu()  # [context, h, w, c]
    rows = [[truth]] + [[torch.cat([recon, p])] for p in pred]
    path = save_video(args.out, video_grid(rows) if not args.side_by_side else
                      video_grid([[truth] + [torch.cat([recon, p]) for p in pred]]), fps=args.fps)
    console.print(f"{path}: ground truth ({len(truth)} frames) and {args.samples} prediction(s) of "
                  f"{args.horizon} frames after the model's reconstruction of {args.context} context frames "
                  f"(model step {step})")
    return 0


def _convert(args) -> int:
    from .data.minerl import convert_minerl

    summary = convert_minerl(args.src, args.dst, image_size=args.image_size, chunk_size=args.chunk_size,
                             progress=not args.no_progress)
    print(f"{args.dst}: {summary}")
    for name, reason in summary.skipped:
        print(f"  skipped {name}: {reason}")
    return 0


def _config(args) -> int:
    overrides = list(args.overrides)
    if args.config is not None and "=" in args.config:  # `cwworld config key=value`: an override, not a name
        overrides.insert(0, args.config)
        args.config = None
    cfg = load_config(args.config or "quickstart", overrides)
    sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return 0


def _presets(args) -> int:
    from .config import preset_description

    names = preset_names()
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:<{width}}  {preset_description(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cwworld", description="Clockwork VAE world models.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="train a model into a run directory (re-run on it to resume)",
        description="Train a CW-VAE into a run directory. Without --config: the 'quickstart' preset on built-in Moving MNIST (about 5 minutes on 2 CPU cores).",
    )
    train.add_argument("--config", default=None,
                       help="preset name (see `cwworld presets`) or YAML file; default: the run directory's own "
                            "config.yaml when it has one, else quickstart")
    train.add_argument("--run-dir", default=None,
                       help="where checkpoints, metrics and samples go; default: runs/<config name>. "
                            "An existing run directory is resumed.")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    train.add_argument("--nproc", type=_positive_int, default=1,
                       help="train with N processes on this machine (DistributedDataParallel: NCCL on GPUs, one "
                            "per GPU; gloo on CPU); train.batch_size is the global batch. Several machines: torchrun")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config overrides, e.g. model.levels=2 train.batch_size=16")
    train.set_defaults(func=_train)

    ev = sub.add_parser(
        "eval", help="open-loop evaluation: SSIM/PSNR per horizon step, KL per level, plots, GIFs",
        description="Evaluate trained runs on their held-out data. Each run gets RUN_DIR/eval/ "
                    "(metrics.csv, metrics.json, kl.csv, ssim.png, psnr.png, predictions.gif, top_prior.gif); "
                    "several runs are also plotted together (--out, default ./eval_compare).",
    )
    ev.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                    help="run directories written by `cwworld train`, files written by `cwworld export`, or "
                         "pretrained:NAME (a model shipped with cwworld)")
    ev.add_argument("--context", type=_positive_int, default=None, help="context frames observed (default: the config's eval.context)")
    ev.add_argument("--horizon", type=_positive_int, default=None, help="frames predicted open-loop (default: eval.horizon)")
    ev.add_argument("--samples", type=_positive_int, default=None,
                    help="samples per video; metrics report the mean and the best of them (default: eval.num_samples)")
    ev.add_argument("--videos", type=_positive_int, default=None, help="held-out videos to evaluate (default: eval.num_videos)")
    ev.add_argument("--batch-size", type=_positive_int, default=None, help="videos per batch (default: eval.batch_size)")
    ev.add_argument("--checkpoint", default=None, help="checkpoint file (default: RUN_DIR/checkpoints/latest.pt)")
    ev.add_argument("--out", default=None, help="output folder (default: RUN_DIR/eval; with several runs: "
                                               "OUT/<run name> per run and the comparison plots in OUT)")
    ev.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    ev.add_argument("--seed", type=int, default=0, help="seed of the prediction noise")
    ev.add_argument("--mean", action="store_true",
                    help="predict from the posterior and prior means instead of samples: deterministic, one "
                         "prediction per video (the paper samples; metrics.json says which)")
    ev.add_argument("--lpips", nargs=2, metavar=("ALEXNET_PTH", "LPIPS_PTH"), default=None,
                    help="also report LPIPS, from local files: torchvision's AlexNet weights "
                         "(alexnet-owt-7be5be79.pth) and the lpips package's v0.1 alex.pth")
    ev.add_argument("--fvd", metavar="I3D_TORCHSCRIPT", default=None,
                    help="also report FVD, with a local i3d_torchscript.pt (the StyleGAN-V / fvd-comparison port "
                         "of the original FVD's I3D)")
    ev.add_argument("--fvd-frames", type=_positive_int, default=16, help="predicted frames per clip for FVD (default 16)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("overrides", nargs="*", metavar="key=value",
                    help="config overrides for the data, e.g. data.path=/data/minerl data.eval_path=/data/test")
    ev.set_defaults(func=_eval)

    pr = sub.add_parser(
        "predict", help="predict a video file open-loop and write a GIF or mp4",
        description="Observe the first --context frames of --video, predict --horizon frames, and write the "
                    "ground truth (top) above each sample (below); .gif or .mp4 by the --out extension.",
    )
    pr.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `cwworld train`, a file written "
                                                        "by `cwworld export`, or pretrained:NAME")
    pr.add_argument("--video", required=True, help="a video file (.mp4, .avi, .gif, .npz, ...), resized to the model's size")
    pr.add_argument("--context", type=_positive_int, default=36, help="frames observed before predicting (default 36)")
    pr.add_argument("--horizon", type=_positive_int, default=500, help="frames predicted after the context (default 500)")
    pr.add_argument("--samples", type=_positive_int, default=1, help="independent predictions (default 1)")
    pr.add_argument("--out", default="prediction.gif", help="output .gif or .mp4 (default prediction.gif)")
    pr.add_argument("--fps", type=_positive_float, default=10.0, help="frames per second of the output (default 10)")
    pr.add_argument("--side-by-side", action="store_true", help="truth and samples in one row instead of a column")
    pr.add_argument("--checkpoint", default=None, help="checkpoint file (default: RUN_DIR/checkpoints/latest.pt)")
    pr.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    pr.add_argument("--seed", type=int, default=0, help="seed of the prediction noise")
    pr.add_argument("--mean", action="store_true",
                    help="predict from the posterior and prior means instead of samples (deterministic; --samples 1)")
    pr.set_defaults(func=_predict)

    conv = sub.add_parser(
        "convert", help="convert demonstrations into replay-buffer chunks",
        description="Convert MineRL demonstrations into replay chunks (one stream per demonstration, in the "
                    "step layout: the reward paid for action t is stored at step t+1). Re-running skips "
                    "streams already converted.",
    )
    conv.add_argument("format", choices=["minerl"], help="source format: minerl (v0 streams or the CW-VAE release)")
    conv.add_argument("src", help="MineRL v0 root or env folder (<stream>/recording.mp4, rendered.npz, "
                                  "metadata.json), or the processed release (train/, test/ or a folder of mp4s)")
    conv.add_argument("dst", help="replay directory to write (created; resumable)")
    conv.add_argument("--image-size", type=int, default=64, help="frame size in pixels (default 64)")
    conv.add_argument("--chunk-size", type=int, default=1000, help="steps per chunk file (default 1000)")
    conv.add_argument("--no-progress", action="store_true", help="no progress bar")
    conv.set_defaults(func=_convert)

    ex = sub.add_parser(
        "export", help="write a run's model as one small file (weights in float16) for eval, predict, load_model",
        description="Write RUN_DIR's newest checkpoint without optimizer or random state, weights in float16 "
                    "(--fp32 to keep float32). The file is accepted wherever a RUN_DIR is: cwworld eval OUT.pt, "
                    "cwworld predict OUT.pt, cwworld.load_model('OUT.pt'). Not for resuming training.",
    )
    ex.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `cwworld train`")
    ex.add_argument("out", metavar="OUT.pt", help="file to write (atomically)")
    ex.add_argument("--fp32", action="store_true", help="keep the weights in float32")
    ex.set_defaults(func=_export)

    config = sub.add_parser("config", help="print a resolved config as YAML")
    config.add_argument("config", nargs="?", default=None, help="preset name or YAML file")
    config.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    config.set_defaults(func=_config)

    presets = sub.add_parser("presets", help="list the shipped config presets")
    presets.set_defaults(func=_presets)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings on the command line: the message, not the source line that raised it."""
    return f"cwworld: warning: {message}\n"


def main(argv=None) -> int:
    warnings.formatwarning = _format_warning
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may stand anywhere among the options (`train --run-dir X a=b --no-progress c=d`)
    misplaced = [token for token in extra if "=" in token and not token.startswith("-")]
    if extra and (len(misplaced) != len(extra) or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(t for t in extra if t not in misplaced or not hasattr(args, 'overrides'))}")
    if misplaced:
        args.overrides = list(args.overrides) + misplaced
    if getattr(args, "command", None) == "train" and args.config is None:
        # an existing run directory goes on with its own config (overrides apply on top, e.g. a
        # longer train.steps or train.max_minutes); a new one starts from the quickstart
        saved = Path(args.run_dir) / "config.yaml" if args.run_dir else None
        args.config = str(saved) if saved is not None and saved.is_file() else "quickstart"
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"cwworld: config error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, PermissionError) as err:
        print(f"cwworld {args.command}: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the OS's own words name the file ([Errno 17] File exists: 'runs/x')
        print(f"cwworld {args.command}: {err.strerror if err.errno == errno.ENOSPC else err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
