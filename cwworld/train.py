"""Training loop: a run directory, atomic checkpoints, exact resume, metrics, sample GIFs.

A run directory holds::

    config.yaml                 the resolved config
    checkpoints/latest.pt       written every ``train.save_every`` steps and at the end
    checkpoints/step_000100.pt  numbered copies
    metrics.jsonl               one JSON object per logged step
    events.out.tfevents.*       the same metrics for TensorBoard (``tensorboard --logdir runs``)
    samples/step_000100.gif     ground truth (top) against open-loop prediction (bottom)

Re-running on the same directory resumes from ``checkpoints/latest.pt``:
model, optimizer, step and the global torch RNG. The batch order is a function
of the step (:class:`cwworld.data.StepBatchSampler`), so the continued run draws
the same batches and noise as an uninterrupted one; metric lines logged after
the checkpoint by a killed run are dropped from ``metrics.jsonl``.
Checkpoints are plain tensors and dicts, loaded with ``weights_only=True``.

The posterior samples' noise is drawn per global sample from ``(train.seed, step)``, so a run
does not depend on the global RNG, nor on how many processes share the batch.

**Several processes** (``torch.distributed`` initialised, e.g. by ``cwworld train --nproc N``
or ``torchrun``): the model is wrapped in ``DistributedDataParallel`` (gradients averaged over
ranks); ``train.batch_size`` is the global batch and each rank reads its share of it
(:class:`cwworld.data.StepBatchSampler`); metrics are averaged over ranks; only rank 0 locks and
writes the run directory; checkpoints are the single-process format (either kind resumes the
other). Online runs (``data.env``) train in one process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pickle
import time
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column

from .config import Config, load_config, save_config
from .data import make_dataset, make_loader
from .inputs import check_batch
from .clock import level_lengths
from .model import CWVAE
from .utils import RunLock, atomic_output, remove_stale_temporaries, atomic_write_text, keep_freed_memory, pick_device
from .viz import save_gif, video_grid

__all__ = ["NonFiniteLossError", "Trainer", "load_model", "prediction_grid"]


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses or gradients."""


def load_model(run_dir: Union[str, os.PathLike], checkpoint: Optional[Union[str, os.PathLike]] = None,
               device: Union[str, torch.device] = "cpu") -> tuple[CWVAE, Config, int]:
    """A trained model from a run directory: ``(model in eval mode, config, step)``.

    ``checkpoint``: a checkpoint file; default ``RUN_DIR/checkpoints/latest.pt``. ``run_dir``
    ``pretrained:NAME`` loads a model shipped with the package (:mod:`cwworld.pretrained`).
    """
    return model_from_checkpoint(*run_checkpoint(run_dir, checkpoint), device=device)


def model_from_checkpoint(path: Path, state: dict, device: Union[str, torch.device] = "cpu"
                          ) -> tuple[CWVAE, Config, int]:
    """:func:`load_model` from a checkpoint already read (``path`` names it in errors)."""
    config = Config.from_dict(state["config"], source=str(path))
    model = CWVAE(config.model)
    _load_state(model, state["model"], path)
    return model.to(device).eval(), config, int(state["step"])


def run_checkpoint(run_dir: Union[str, os.PathLike], checkpoint: Optional[Union[str, os.PathLike]] = None
                   ) -> tuple[Path, dict]:
    """``(path, contents)`` of ``checkpoint``, default the run's newest intact one; ``run_dir``
    ``pretrained:NAME`` is a model shipped with the package (:mod:`cwworld.pretrained`)."""
    from .pretrained import is_pretrained, pretrained_path

    single = pretrained_path(run_dir) if is_pretrained(run_dir) else Path(run_dir) if Path(run_dir).is_file() else None
    if single is not None:  # a shipped model or a model file (`cwworld export`): one checkpoint
        if checkpoint:
            raise ValueError(f"{run_dir}: a model file is one checkpoint; --checkpoint does not apply")
        return single, read_checkpoint(single)
    if not checkpoint:
        return newest_checkpoint(Path(run_dir))
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    state = read_checkpoint(path)
    _check_same_model(path, state, Path(run_dir))
    return path, state


def _check_same_model(path: Path, state: dict, run_dir: Path) -> None:
    """Refuse a ``--checkpoint`` whose model is not the run's: its results would be written and
    named as the run's."""
    saved = run_dir / "config.yaml"
    if not saved.is_file() or "config" not in state:
        return
    ours = dataclasses.asdict(load_config(saved).model)
    theirs = dataclasses.asdict(Config.from_dict(state["config"], source=str(path)).model)
    differ = [f"model.{k}: {theirs[k]!r} in the checkpoint, {ours[k]!r} in the run" for k in ours if ours[k] != theirs.get(k)]
    if differ:
        raise ValueError(f"{path}: the checkpoint holds another model than {saved} ({'; '.join(differ[:3])}); "
                         f"to use it on its own, give the file in place of the run directory")


def read_checkpoint(path: Union[str, os.PathLike]) -> dict:
    """A checkpoint's contents (``weights_only=True``), or ``ValueError`` saying what is wrong with
    the file: empty, cut short, not a checkpoint, or holding objects a safe load refuses."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the checkpoint file is empty (a save cut short?)")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # torch.save's zip format, or a pickle (legacy torch.save)
        raise ValueError(f"{path}: not a checkpoint (a file written by torch.save starts with 'PK'; "
                         f"this one starts with {head!r})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refused to load: the file holds Python objects beyond tensors and plain "
                         f"data, which weights_only loading does not run (not a cwworld checkpoint, or an "
                         f"unsafe one): {str(err).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path}: cannot read the checkpoint (truncated or corrupted file): "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if not isinstance(state, dict) or any(key not in state for key in ("model", "config", "step")):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a cwworld checkpoint (expected the entries model, config, step; found {found})")
    return state


def newest_checkpoint(run_dir: Union[str, os.PathLike], warn=None) -> tuple[Path, dict]:
    """``latest.pt`` of a run, or, if it is missing or unreadable, the newest intact ``step_*.pt``
    (saying so through ``warn``, default a Python warning)."""
    folder = Path(run_dir) / "checkpoints"
    candidates = [folder / "latest.pt"] + sorted(folder.glob("step_*.pt"), reverse=True)
    problems = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            state = read_checkpoint(path)
        except ValueError as err:
            problems.append(str(err))
            continue
        if problems:
            message = f"{path}: loaded instead of a newer checkpoint that could not be read: " + "; ".join(problems)
            (warn or (lambda text: warnings.warn(text, stacklevel=3)))(message)
        return path, state
    if problems:
        raise ValueError(f"{folder}: no readable checkpoint: " + "; ".join(problems))
    raise FileNotFoundError(f"{folder / 'latest.pt'}: no checkpoint (is {run_dir} a cwworld run directory?)")


def _load_state(module, state: dict, path: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first = [line.strip() for line in str(err).splitlines() if "size mismatch" in line or "Missing" in line
                 or "Unexpected" in line][:2]
        raise ValueError(f"{path}: the checkpoint's weights do not fit this model (another model size or "
                         f"version?): {' '.join(first) or str(err).splitlines()[0]}") from None


class Trainer:
    """Trains a :class:`CWVAE` into a run directory.

    Args:
        config: the full config; on resume its ``model`` section must match the saved one.
        run_dir: the run directory (created if needed).
        dataset: optional torch dataset of ``{"image": uint8 [T, H, W, C]}`` items;
            default: :func:`cwworld.data.make_dataset` for ``config``.
        console: rich console for the progress bar and messages.
        progress: show the progress bar.
    """

    def __init__(self, config: Config, run_dir: Union[str, os.PathLike], dataset=None,
                 console: Optional[Console] = None, progress: bool = True):
        self.run_dir = Path(run_dir)
        self.rank, self.world = _distributed()
        self.main = self.rank == 0  # the process that writes the run directory
        self.online = dataset is None and config.data.kind == "replay" and config.data.env is not None
        if config.train.cuda_graph:
            _check_cuda_graph(config, pick_device(config.train.device), self.world, self.online)
        if self.world > 1:
            if self.online:
                raise ValueError("online runs (data.env) train in one process; run without --nproc / torchrun")
            check_global_batch(config, self.world)
        self.lock = RunLock(self.run_dir) if self.main else None  # one training job per run directory
        self.console = (console or Console(stderr=True)) if self.main else Console(stderr=True, quiet=True)
        self.show_progress = progress and self.main
        saved = self.run_dir / "config.yaml"
        if saved.exists():
            previous = load_config(saved)
            if previous.model != config.model:
                raise ValueError(
                    f"{saved}: this run directory holds a model with another config; "
                    "use a new run directory, or the same model settings to resume"
                )
        self.config = config
        self.device = pick_device(config.train.device)
        if self.device.type == "cpu":
            keep_freed_memory()
        torch.manual_seed(config.train.seed)
        self.model = CWVAE(config.model).to(self.device)
        # sync_every > 1: fused Adam, which skips a non-finite update on the device (its found_inf)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.train.lr, eps=config.train.adam_eps,
                                          fused=True if config.train.sync_every > 1 else None,
                                          capturable=config.train.cuda_graph)
        self.step = 0  # before the prefill: whether the agent collects depends on it
        if self.online:
            self.dataset = self._start_online()
        else:
            self.dataset = dataset if dataset is not None else make_dataset(config, "train", progress=progress)
        summary = getattr(self.dataset, "summary", None)
        if summary is not None:
            self.console.print(f"data: {summary}")
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self._nonfinite = None  # sync_every > 1: (in a row, in all since the last read) on the device
        self._unread = False  # whether a step ran since the counters were last read
        self._graph = None  # train.cuda_graph: the captured update
        self.train_seconds = 0.0  # training wall time, summed over resumes (train.max_minutes)
        self._eval_videos = None  # held-out videos for sample GIFs, made on first use
        self.last_eval = None  # the latest agent evaluation's success rate (online runs)
        if config.train.compile_parts:
            self.model.compile_parts()
        self._loss_fn = self.model.loss_terms
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._loss_fn = DistributedDataParallel(self.model, device_ids=ids)  # its forward is loss_terms
        if config.train.compile:
            self._loss_fn = torch.compile(self._loss_fn)
        if self.main:
            remove_stale_temporaries(self.run_dir / "checkpoints")  # a save cut short by a killed run
            remove_stale_temporaries(self.run_dir / "samples")
        if any((self.run_dir / "checkpoints").glob("*.pt")):
            self.load_checkpoint()
        if self.main:
            save_config(config, saved)
            self._drop_metrics_after(self.step)

    # -- one update ----------------------------------------------------------------------

    def _start_online(self):
        """Online replay: the environment, the collecting agent (``agent.kind``; the prefill is random)
        and RUN_DIR/replay (resumed if present). Environments start new episodes on resume."""
        from .agents import make_agent, planner_priors
        from .data.replay import ReplayBuffer
        from .envs import RandomPolicy, collect, env_spaces, make_env, make_vector_env

        data, model = self.config.data, self.config.model
        seed = self.config.train.seed
        self.buffer = ReplayBuffer(self.run_dir / "replay", capacity=data.capacity, seed=seed,
                                   episode_start_fraction=data.episode_starts)
        vector = data.num_envs > 1  # environment i records into the buffer's worker-i stream
        self.env = make_vector_env(data.env, data.num_envs, buffer=self.buffer) if vector else make_env(data.env)
        single_action, single_obs = env_spaces(self.env)
        dims = int(np.prod(single_action.shape))
        if model.action_dim != dims:
            raise ValueError(f"model.action_dim is {model.action_dim}, but {data.env}'s actions have {dims} "
                             f"dimensions (set model.action_dim={dims})")
        try:  # a vector env's space samples a batch
            self.policy = RandomPolicy(self.env.action_space, seed=seed, probs=data.random_probs,
                                       single_space=single_action if vector else None)
        except ValueError as error:
            raise ValueError(f"data.random_probs for {data.env}: {error}") from None
        agent = self.config.agent
        self.agent = make_agent(agent, self.model, single_action, data.num_envs, observation_space=single_obs,
                                seed=seed, explore=agent.explore, replay=self.buffer)

        def _collect(steps):
            # random until the prefill is there, and for an actor-critic until it starts learning
            waiting = agent.kind == "actor_critic" and self._learner() is None
            policy = self.agent if len(self.buffer) >= data.prefill and not waiting else self.policy
            if policy is self.agent and agent.initial_probs == "replay" and agent.kind in ("cem", "mppi", "clockwork"):
                # planners start fresh plan steps from the replay's action frequencies as they are now
                self.agent.set_prior(*planner_priors(agent, self.model, single_action, self.buffer))
            stats = collect(self.env, policy, steps, None if vector else self.buffer, progress=False,
                            seed=seed + len(self.buffer))
            for worker in range(data.num_envs):  # one stream per environment and round: a resumed run
                self.buffer.end_stream(worker)   # samples what an uninterrupted one does
            return stats

        self._collect = _collect
        self.collect_stats = None  # the latest collection round's statistics, logged with the metrics
        if len(self.buffer) < data.prefill:
            stats = self.collect_stats = self._collect(data.prefill - len(self.buffer))
            self.buffer.save()
            self.console.print(f"prefilled {self.run_dir / 'replay'}: {len(self.buffer)} steps, "
                               f"{stats['episodes']} episodes, mean return {stats['mean_return']:.2f}")
        return self.buffer

    def _online_batches(self):
        cfg, data = self.config.train, self.config.data
        align = self.config.model.factor ** (self.config.model.levels - 1) if data.align else 1
        while True:
            if self.step and self.step % data.collect_every == 0:
                self.collect_stats = self._collect(data.collect_steps)
            batch = self.buffer.sample(cfg.batch_size, cfg.seq_len, align)
            yield {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}

    def batches(self):
        """Endless training batches on the device, starting at the current step's batch."""
        if self.online:
            yield from self._online_batches()
            return
        data = self.config.data
        loader = make_loader(self.dataset, self.config.train.batch_size, seed=self.config.train.seed,
                             start_step=self.step, workers=data.workers, pin_memory=self.device.type == "cuda",
                             rank=self.rank, world=self.world)
        for batch in loader:
            yield {k: torch.as_tensor(v).to(self.device, non_blocking=True) for k, v in batch.items()}

    def _learner(self):
        """The actor-critic to update after this step's world-model update (from ``agent.start``
        on), or None."""
        agent = self.config.agent
        online_ac = self.online and agent.kind == "actor_critic"
        return self.agent if online_ac and self.step >= agent.start else None

    def train_step(self, batch: dict) -> dict[str, float]:
        """One update. A non-finite loss or gradient norm skips it and is counted."""
        model, cfg = self.model, self.config.train
        batch = check_batch(model, batch)
        learner = self._learner()
        noise = self._noise(*batch["image"].shape[:2])
        if cfg.sync_every > 1 and learner is None and self.world == 1:  # nothing read back to the host
            if cfg.cuda_graph:
                return self._graphed_update(batch, noise)
            self.optimizer.zero_grad(set_to_none=True)
            return self._device_update(batch, noise)
        with self._autocast():
            if learner is None:
                loss, terms = self._loss_fn(batch, validate=False, noise=noise)
            else:  # the actor-critic imagines from this batch's posterior states
                loss, terms, traj = self._loss_fn(batch, validate=False, with_trajectory=True, noise=noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)  # of the averaged gradient
        if self.world > 1:  # every rank logs the mean over ranks
            import torch.distributed as dist

            names = list(terms)
            values = torch.stack([terms[name].detach().float() for name in names])
            dist.all_reduce(values)
            terms = dict(zip(names, values / self.world))
        if cfg.sync_every > 1:  # several processes or the actor-critic: the same device-side skip
            metrics = self._skip_or_step(loss, grad_norm, terms)
        else:
            metrics = {name: float(value) for name, value in terms.items()}
            metrics["grad_norm"] = float(grad_norm)
            if math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"]):
                self.optimizer.step()
                self.nonfinite_in_a_row = 0
            else:
                self.nonfinite_in_a_row += 1
                self.nonfinite_total += 1
                self.optimizer.zero_grad(set_to_none=True)
            metrics["skipped_updates"] = float(self.nonfinite_total)
        if learner is not None:  # agent.updates of them on this batch's posterior states
            metrics.update(learner.update(traj, batch, repeats=self.config.agent.updates))
        return metrics

    def read_metrics(self, metrics: dict) -> dict[str, float]:
        """The host values of a step's metrics (``train.sync_every > 1`` leaves them on the device,
        with the non-finite counters): the one place such a run waits for the device."""
        if self._nonfinite is not None and self._unread:
            run, total = (int(v) for v in self._nonfinite)  # in a row up to now; since the last read
            self._nonfinite[1].zero_()
            self.nonfinite_in_a_row = run
            self.nonfinite_total += total
            self._unread = False
            metrics = dict(metrics, skipped_updates=float(self.nonfinite_total))
        return {name: float(value) for name, value in metrics.items()}

    # -- the step without host reads (train.sync_every > 1) and its CUDA graph ---------------

    def _skip_or_step(self, loss, grad_norm, terms) -> dict:
        """Fused Adam's step, skipped on the device when the loss or the gradient norm is not
        finite (its ``found_inf``); the non-finite counters updated in place. No host read."""
        finite = torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)
        self._make_counters()
        self._found_inf.copy_((~finite).float())
        self.optimizer.found_inf = self._found_inf
        self.optimizer.step()
        run, total = self._nonfinite
        run.copy_(torch.where(finite, 0, run + 1))
        total.add_((~finite).long())
        self._unread = True
        metrics = {name: value.detach() for name, value in terms.items()}
        metrics["grad_norm"] = grad_norm.detach()
        return metrics

    def _make_counters(self) -> None:
        if self._nonfinite is None:  # (in a row, since the last read), made on the device
            zero = torch.zeros((), dtype=torch.long, device=self.device)
            self._nonfinite = (zero + self.nonfinite_in_a_row, zero.clone())
            self._found_inf = torch.zeros((), device=self.device)

    def _autocast(self):
        """``train.precision``'s autocast (bf16), or nothing; without its weight cache under a CUDA
        graph, which cannot hold one."""
        cfg = self.config.train
        if cfg.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not cfg.cuda_graph)

    def _device_update(self, batch: dict, noise: list) -> dict:
        """Forward, backward, clipping and the skip-or-step, all on the device (gradients must be
        None or zero on entry)."""
        cfg = self.config.train
        with self._autocast():
            loss, terms = self._loss_fn(batch, validate=False, noise=noise)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        return self._skip_or_step(loss, grad_norm, terms)

    def _graphed_update(self, batch: dict, noise: list) -> dict:
        """``train.cuda_graph``: the whole update replayed from one CUDA graph (captured at the
        first step; a batch of another shape runs uncaptured). The returned metrics are the
        graph's output tensors, valid until the next step."""
        shapes = {k: tuple(v.shape) for k, v in batch.items()}, [tuple(n.shape) for n in noise]
        if self._graph is None:
            self._capture(batch, noise, shapes)
        if shapes != self._graph_shapes:
            self.optimizer.zero_grad(set_to_none=False)  # the graph's gradient tensors stay in place
            return self._device_update(batch, noise)
        for name, value in batch.items():
            self._graph_batch[name].copy_(value, non_blocking=True)
        for static, value in zip(self._graph_noise, noise):
            static.copy_(value, non_blocking=True)
        self._graph.replay()
        self._unread = True
        return dict(self._graph_metrics)

    def _capture(self, batch: dict, noise: list, shapes) -> None:
        """Record one update into a CUDA graph. Three warm-up updates run first (on a side stream,
        as capture requires); the weights, the optimizer's state and the counters are put back
        afterwards, so that the run continues exactly as an uncaptured one would."""
        self._graph_batch = {k: v.clone() for k, v in batch.items()}
        self._graph_noise = [n.clone() for n in noise]
        self._graph_shapes = shapes
        params = [p.detach().clone() for p in self.model.parameters()]
        buffers = [b.clone() for b in self.model.buffers()]
        saved = {p: {k: v.clone() for k, v in s.items()} for p, s in self.optimizer.state.items()}  # after a resume
        self._make_counters()
        counters = [c.clone() for c in self._nonfinite]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.optimizer.zero_grad(set_to_none=True)
                self._device_update(self._graph_batch, self._graph_noise)
        torch.cuda.current_stream(self.device).wait_stream(side)
        with torch.no_grad():
            for p, value in zip(self.model.parameters(), params):
                p.copy_(value)
            for b, value in zip(self.model.buffers(), buffers):
                b.copy_(value)
            for p, state in self.optimizer.state.items():
                for name, tensor in state.items():
                    if p in saved:
                        tensor.copy_(saved[p][name])
                    else:  # a fresh Adam's: zero moments, step 0
                        tensor.zero_()
            for counter, value in zip(self._nonfinite, counters):
                counter.copy_(value)
        self.optimizer.zero_grad(set_to_none=True)  # the graph allocates the gradients in its own pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._graph_metrics = self._device_update(self._graph_batch, self._graph_noise)
        self._graph = graph

    def _noise(self, B: int, T: int) -> list[torch.Tensor]:
        """The posterior samples' standard normal noise for this step's batch ``[B, T]``, per level
        ``[B, ceil(T / k**l), stoch_l]``: drawn for the whole global batch from ``(seed, step)``,
        this rank's rows taken, so that no result depends on the number of processes."""
        generator = torch.Generator().manual_seed(self.config.train.seed * 1_000_003 + self.step)
        rows = slice(self.rank * B, (self.rank + 1) * B)
        lengths = level_lengths(T, self.config.model.factor, self.model.levels)
        pin = self.device.type == "cuda"  # a copy from pinned memory does not make the host wait
        return [_pinned(torch.randn(B * self.world, n, stoch, generator=generator)[rows], pin).to(
                    self.device, non_blocking=pin) for n, stoch in zip(lengths, self.model.stoch)]

    def check_replicas(self) -> None:
        """Several processes: stop if the ranks' parameters differ (they must stay identical)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        total = torch.stack([p.detach().double().sum() for p in self.model.parameters()]).sum().reshape(1)
        low, high = total.clone(), total.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise RuntimeError(f"step {self.step}: the processes' parameters differ (checksums {float(low)} to "
                               f"{float(high)}); distributed training is out of step")

    # -- the loop ------------------------------------------------------------------------

    def train(self) -> dict[str, float]:
        """Train until ``train.steps``; returns the last step's metrics. The run directory stays
        locked against other training processes until this returns."""
        if self.main and not self.lock.held:
            self.lock = RunLock(self.run_dir)
        try:
            return self._train()
        finally:
            if self.lock is not None:
                self.lock.release()

    def close(self) -> None:
        """Release the run directory without training (``train`` releases it when it returns)."""
        if self.lock is not None:
            self.lock.release()

    def _train(self) -> dict[str, float]:
        cfg = self.config.train
        frames_per_step = cfg.batch_size * cfg.seq_len
        metrics: dict[str, float] = {}
        if self.step >= cfg.steps:
            self.console.print(f"[green]{self.run_dir}: already trained for {self.step} steps[/]")
            return metrics
        if self._seconds_left() <= 0:
            self.console.print(f"[green]{self.run_dir}: already trained for {self.train_seconds / 60:.1f} minutes "
                               f"(train.max_minutes={cfg.max_minutes:g}), {self.step} steps[/]")
            return metrics
        progress = Progress(  # the times before the metrics: a narrow terminal cuts the metrics, not the ETA
            TextColumn("step {task.completed}/{task.total}", table_column=Column(min_width=14)),
            BarColumn(bar_width=20, table_column=Column(min_width=10)),
            TimeElapsedColumn(table_column=Column(min_width=7)), TextColumn("ETA"),
            TimeRemainingColumn(table_column=Column(min_width=7)),
            TextColumn("{task.fields[info]}", table_column=Column(no_wrap=True, overflow="ellipsis")),
            console=self.console, disable=not self.show_progress,
        )
        plain_lines = not (self.show_progress and self.console.is_terminal)
        started, first_step = time.perf_counter(), self.step
        events = None
        if cfg.tensorboard and self.main:
            from .tensorboard import EventWriter

            # events a killed run wrote after its last checkpoint are logged again: TensorBoard drops the old ones
            events = EventWriter(self.run_dir, purge_step=self.step + 1 if self.step else None)
        if self.step and self.step % cfg.sample_every == 0 and self.main and \
                not (self.run_dir / "samples" / f"step_{self.step:06d}.gif").exists():
            self.save_samples()  # a run killed between its checkpoint and this GIF: make it now
        batches = self.batches()
        try:
            with progress:
                task = progress.add_task("train", total=cfg.steps, completed=self.step, info="")
                t0 = time.perf_counter()
                since_read, read_t0 = 0, t0
                for batch in batches:
                    metrics = self.train_step(batch)
                    self.step += 1
                    since_read += 1
                    evaluated = False
                    if self.online:
                        metrics["replay_steps"] = float(len(self.buffer))
                        if self.collect_stats and self.collect_stats["episodes"]:
                            metrics["collect_mean_return"] = self.collect_stats["mean_return"]
                        every = self.config.agent.eval_every
                        if every and self.step % every == 0:
                            metrics.update(self.evaluate_agent())
                            evaluated = True
                    now = time.perf_counter()
                    self.train_seconds += now - t0
                    t0 = now
                    out_of_time = self._seconds_left() <= 0
                    last = self.step == cfg.steps or out_of_time
                    if not (last or evaluated or any(self.step % every == 0 for every in (
                            cfg.sync_every, cfg.log_every, cfg.save_every, cfg.sample_every))):
                        progress.update(task, completed=self.step)  # metrics stay on the device
                        t0 = time.perf_counter()
                        continue
                    metrics = self.read_metrics(metrics)
                    now = time.perf_counter()  # over the steps since the last read (a GPU runs behind the host)
                    metrics["frames_per_s"] = frames_per_step * since_read / (now - read_t0)
                    self.train_seconds += now - t0
                    metrics["train_minutes"] = self.train_seconds / 60
                    since_read, read_t0, t0 = 0, now, now
                    if self.nonfinite_in_a_row:
                        self.console.print(f"[yellow]step {self.step}: non-finite loss or gradient, update "
                                           f"skipped ({self.nonfinite_in_a_row} in a row, "
                                           f"{self.nonfinite_total} in all)[/]")
                    if self.nonfinite_in_a_row >= cfg.max_nonfinite:
                        self.save_checkpoint()
                        raise NonFiniteLossError(
                            f"{self.nonfinite_in_a_row} consecutive non-finite losses or gradients at step "
                            f"{self.step}; stopping (train.max_nonfinite={cfg.max_nonfinite}). "
                            "Try a lower train.lr or model.kl_balance / free_nats."
                        )
                    kls = " ".join(f"kl{l}={metrics[f'kl/{l}']:.2f}" for l in range(self.model.levels))
                    if self.online and "collect_mean_return" in metrics:
                        kls += f" collect_return={metrics['collect_mean_return']:.2f}"
                    if self.online and self.last_eval is not None:
                        kls += f" eval_success={self.last_eval:.0%}"
                    progress.update(task, completed=self.step,
                                    info=f"loss={metrics['loss']:.1f} nll={metrics['nll']:.1f} {kls} "
                                         f"{metrics['frames_per_s']:.0f} frames/s")
                    if out_of_time:
                        self.console.print(f"step {self.step}: train.max_minutes={cfg.max_minutes:g} reached "
                                           f"({self.train_seconds / 60:.1f} min of training); stopping")
                    if self.step % cfg.log_every == 0 or last or evaluated:
                        self.check_replicas()
                        self._log(metrics, events)
                        if plain_lines:  # no live bar (a log file, or --no-progress): one line per log step
                            elapsed = time.perf_counter() - started
                            eta = min(elapsed / max(self.step - first_step, 1) * (cfg.steps - self.step),
                                      self._seconds_left())
                            self.console.print(f"step {self.step}/{cfg.steps} loss={metrics['loss']:.1f} "
                                               f"nll={metrics['nll']:.1f} {kls} {metrics['frames_per_s']:.0f} frames/s "
                                               f"ETA {eta / 60:.1f} min", highlight=False,
                                               soft_wrap=True)  # one line however narrow the log's console
                    if self.step % cfg.save_every == 0 or last:
                        self.save_checkpoint(numbered=True)
                    if self.step % cfg.sample_every == 0 or last:
                        self.save_samples()
                    if last:
                        break
                    t0 = read_t0 = time.perf_counter()
        finally:
            batches.close()
            if events is not None:
                events.close()
        return metrics

    def _seconds_left(self) -> float:
        """Training seconds left under ``train.max_minutes`` (inf without it)."""
        limit = self.config.train.max_minutes
        return math.inf if limit is None else 60 * limit - self.train_seconds

    def evaluate_agent(self) -> dict:
        """``agent.eval_episodes`` episodes of the agent (no exploration) in a fresh environment:
        ``eval/return`` (mean), ``eval/success`` (fraction with a positive return), ``eval/length``."""
        from .agents import make_agent
        from .envs import env_spaces

        if getattr(self, "eval_env", None) is None:
            self.eval_env = make_eval_env(self.config)
        agent = make_agent(self.config.agent, self.model, env_spaces(self.eval_env)[0], eval_env_count(self.config),
                           seed=self.step, nets=getattr(self.agent, "nets", None),
                           evaluate=True, replay=getattr(self, "buffer", None))  # the actor-critic being trained
        stats = evaluation_episodes(self.eval_env, agent, self.config.agent.eval_episodes, self.step)
        self.console.print(f"step {self.step}: {self.config.agent.kind} agent over {len(stats['returns'])} episodes: "
                           f"return {stats['mean_return']:.2f}, success {stats['success']:.0%}, "
                           f"length {stats['mean_length']:.1f}")
        self.last_eval = stats["success"]
        return {"eval/return": stats["mean_return"], "eval/success": stats["success"],
                "eval/length": stats["mean_length"]}

    def _log(self, metrics: dict, events=None) -> None:
        if not self.main:
            return
        record = {"step": self.step, "time": time.time(), **metrics}
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if events is not None:
            events.scalars(self.step, metrics)

    def _drop_metrics_after(self, step: int) -> None:
        """Remove metric lines past ``step`` (logged by a run killed before its next checkpoint)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        lines = path.read_text().splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, KeyError):
                continue  # a line cut short by a kill
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(kept))

    # -- checkpoints ---------------------------------------------------------------------

    def save_checkpoint(self, numbered: bool = False) -> Optional[Path]:
        if not self.main:
            return None
        if self.online:
            self.buffer.save()  # the collected steps survive with the checkpoint
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "nonfinite_total": self.nonfinite_total,
            "train_seconds": self.train_seconds,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "config": self.config.to_dict(),
        }
        if self.online:  # the agent (what it learned, its random generator) and the replay's sampler
            state["agent"] = self.agent.state_dict()
            state["replay_rng"] = self.buffer.rng.bit_generator.state
        folder = self.run_dir / "checkpoints"
        if numbered:  # first: a kill before latest.pt is replaced redoes these steps and this save
            _atomic_torch_save(state, folder / f"step_{self.step:06d}.pt")
        return _atomic_torch_save(state, folder / "latest.pt")

    def load_checkpoint(self, path: Union[str, os.PathLike, None] = None) -> None:
        """Resume from ``path``, default the newest intact checkpoint of the run (``latest.pt``, else
        the newest readable ``step_*.pt``, said on the console)."""
        if path is None:
            path, state = newest_checkpoint(self.run_dir, warn=lambda text: self.console.print(f"[yellow]{text}[/]"))
        else:
            state = read_checkpoint(path)
        _load_state(self.model, state["model"], Path(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if self.online and "agent" in state:
            self.agent.load_state_dict(state["agent"])
            self.buffer.rng.bit_generator.state = state["replay_rng"]
        self.console.print(f"resumed {self.run_dir} at step {self.step}")

    # -- pictures ------------------------------------------------------------------------

    def save_samples(self) -> Optional[Path]:
        """Open-loop predictions on held-out videos as a GIF: truth above, model below (rank 0)."""
        if not self.main:
            return None
        ev = self.config.eval
        if self.online:  # held-out data does not exist online: recent replay sequences stand in
            self._eval_videos = self.buffer.sequences(ev.context + ev.horizon)
        elif self._eval_videos is None:
            self._eval_videos = make_dataset(self.config, "eval")
        videos = self._eval_videos
        n = min(len(videos), 4)
        items = [videos[i] for i in range(n)]
        truth = torch.stack([item["image"] for item in items]).to(self.device)
        actions = None
        if self.model.config.action_dim > 0:
            actions = torch.stack([item["action"] for item in items]).float().to(self.device)
        vectors = {k: torch.stack([item[k] for item in items]).to(self.device) for k in self.model.vector_keys} \
            if self.model.vector_keys else None
        # the global RNG is saved in checkpoints: keep sampling from disturbing it
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.step)
            grid = prediction_grid(self.model, truth, ev.context, ev.horizon, actions, vectors)
        return save_gif(self.run_dir / "samples" / f"step_{self.step:06d}.gif", grid)


@torch.no_grad()
def prediction_grid(model: CWVAE, truth: torch.Tensor, context: int, horizon: int,
                    actions: Optional[torch.Tensor] = None, vectors: Optional[dict] = None) -> np.ndarray:
    """``truth [B, context + horizon, H, W, C]`` -> grid video: per video, truth above and
    the model below (posterior reconstruction over the context, then open-loop prediction,
    given the true ``actions [B, context + horizon, A]`` for an action-conditioned model)."""
    was_training = model.training
    model.eval()
    try:
        ctx_actions = None if actions is None else actions[:, :context]
        ctx_vectors = None if vectors is None else {k: v[:, :context] for k, v in vectors.items()}
        recon = model.decode(model.observe(truth[:, :context], ctx_actions, vectors=ctx_vectors).features)
        pred = model.predict(truth[:, :context], horizon, actions=actions, vectors=ctx_vectors)[:, 0]
    finally:
        model.train(was_training)
    model_rows = torch.cat([recon, pred], dim=1).cpu()
    return video_grid([list(truth.cpu()), list(model_rows)])


def _check_cuda_graph(config: Config, device: torch.device, world: int, online: bool) -> None:
    why = ("it needs a CUDA device, found train.device resolving to " + str(device) if device.type != "cuda" else
           "several processes are not supported with it yet" if world > 1 else
           "it does not combine with train.compile" if config.train.compile else
           "the actor-critic's update reads values to the host and cannot be captured"
           if online and config.agent.kind == "actor_critic" else None)
    if why:
        raise ValueError(f"train.cuda_graph: {why}; set train.cuda_graph=false")


def _pinned(tensor: torch.Tensor, pin: bool) -> torch.Tensor:
    return tensor.pin_memory() if pin else tensor


def check_global_batch(config: Config, world: int) -> None:
    """``train.batch_size`` is the global batch: ``ValueError`` unless it splits over ``world`` processes."""
    if config.train.batch_size % world:
        raise ValueError(f"train.batch_size ({config.train.batch_size}) is the global batch: it must split "
                         f"evenly over {world} processes")


def eval_env_count(config: Config) -> int:
    """Environments side by side in an online run's agent evaluation: ``agent.eval_envs``
    (0: ``data.num_envs``), at most one per episode."""
    return min(config.agent.eval_envs or config.data.num_envs, config.agent.eval_episodes)


def make_eval_env(config: Config):
    """The environment an online run's agent is evaluated in: a vector env of :func:`eval_env_count`."""
    from .envs import make_env, make_vector_env

    envs = eval_env_count(config)
    return make_vector_env(config.data.env, envs) if envs > 1 else make_env(config.data.env)


def evaluation_episodes(env, agent, episodes: int, step: int) -> dict:
    """:func:`cwworld.envs.run_episodes` as an online run evaluates at ``step``: torch seeded with
    ``step`` for the filter's sampling (in a fork: the caller's random state is left as it was),
    environment seeds ``10,000 + step`` on. The same ``step`` and agent give the same episodes."""
    from .envs import run_episodes

    device = agent.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(step)
        return run_episodes(env, agent, episodes, seed=10_000 + step)


def _distributed() -> tuple[int, int]:
    """``(rank, world size)`` of an initialised ``torch.distributed`` job, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _atomic_torch_save(obj, path: Path) -> Path:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
    return path
