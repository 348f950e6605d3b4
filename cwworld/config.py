"""Configuration: dataclass sections, YAML load/save, dotted overrides, validation.

A config has five sections, ``model``, ``train``, ``data``, ``eval`` and ``agent``. Presets
live in ``configs/NAME.yaml`` (installed as ``cwworld.configs``) and are named
by ``NAME`` alone. A preset may start from another one with ``base: NAME``.

    cfg = load_config("mmnist", overrides=["model.levels=2", "train.batch_size=16"])

Every key is checked: an unknown key is rejected with the closest known name
("unknown key 'model.levles' (did you mean 'model.levels'?)"), a bad value
with the allowed range or choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
import yaml

__all__ = [
    "AgentConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "preset_names",
    "save_config",
]


class ConfigError(ValueError):
    """A config file, key or value that cannot be used."""


@dataclass
class ModelConfig:
    """The CW-VAE architecture. Defaults are the paper's Moving MNIST model.

    Sizes given as a list hold one value per level, bottom (0) first.
    """

    image_size: int = 64  # frames are image_size x image_size pixels
    channels: int = 1  # colour channels of a frame (1 grey, 3 RGB)
    levels: int = 3  # L, number of levels in the hierarchy
    factor: int = 6  # k, level l ticks every k**l steps
    stoch: Union[int, list[int]] = 20  # size of the Gaussian state z per level
    deter: Union[int, list[int]] = 200  # size of the GRU state h per level
    hidden: Union[int, list[int]] = 200  # width of the cell's dense layers per level
    embed: int = 1000  # width of the per-level encoder MLP (levels > 0)
    enc_dense_layers: int = 3  # dense layers of each level's encoder MLP
    cnn_depth: int = 32  # channels of the first conv layer (doubling after)
    dec_stddev: float = 1.0  # fixed std of the Gaussian pixel likelihood ([0, 1] pixels)
    min_stddev: float = 1e-4  # floor added to every state std
    beta: Union[float, list[float]] = 1.0  # KL weight, scalar or per level
    free_nats: float = 0.0  # per level, KL (nats per sequence) below this is not penalised
    # fraction of the KL gradient sent to the posterior (the official code's kl_grad_post_perc);
    # None = plain KL. DreamerV2's balancing (alpha = 0.8 to the prior) is kl_balance 0.2.
    kl_balance: Optional[float] = None
    # weight of a second reconstruction loss from the bottom level's PRIOR mean at every step (its
    # one-step prediction given the true past), decoded by the decoder as it is (no gradient into the
    # decoder: the prior and the recurrent state learn to be decodable); 0 = the paper (off)
    prior_recon: float = 0.0
    windows: Literal["paper", "causal"] = "paper"  # frames an upper tick o sums: paper [o, o+k**l), causal (o-k**l, o]
    action_dim: int = 0  # 0 = video only
    action_levels: Literal["all", "bottom"] = "all"  # which levels see actions
    action_embed: int = 32  # width of the per-level action-summary embedding (levels > 0)
    action_low: Optional[list[float]] = None  # Box action bounds (from_spaces); actions outside are refused
    action_high: Optional[list[float]] = None
    reward_head: bool = False  # predict reward[t] from the bottom state at t
    continue_head: bool = False  # predict 1 - is_terminal[t] (a Bernoulli logit) from the bottom state
    level_reward_heads: bool = False  # level l > 0 predicts the reward summed over its window
    # level l > 0 predicts whether the episode still runs at its window's end (a Bernoulli logit on
    # 1 - "a terminal step in the window"), so a jumpy plan's windows can be weighted by survival
    level_continue_heads: bool = False
    # the window-reward heads as a gate times a value, as model.reward_gate for the bottom head
    level_reward_gate: bool = False
    # the window heads also learn the window an episode ends in, which no tick closes (an episode
    # restarts every level): level l's prior one tick on from its last tick, given the actions
    # taken since (scaled to a whole window's count), as jumpy imagination meets an episode's end
    window_ends: bool = False
    head_hidden: int = 200  # width of the heads' hidden layers
    head_layers: int = 2  # hidden layers of each head
    head_norm: bool = False  # standardise each head's input per dimension (running moments of the posterior features)
    # reward and continue heads also read action[t-1], the action leading into step t (zero at
    # episode starts), next to the bottom state at t: a reward that depends on the action just
    # taken need not be learnt through the GRU's update first
    head_action: bool = False
    # the reward head as a gate times a value: sigmoid(gate) predicts whether a reward arrives at
    # all (binary cross-entropy on reward != 0), the value its size (Gaussian NLL on those steps
    # only); the prediction is their product, ~0 wherever rewards never arrive (sparse rewards)
    reward_gate: bool = False
    reward_scale: float = 1.0  # loss weight of the reward heads (Gaussian NLL, unit std)
    continue_scale: float = 1.0  # loss weight of the continue head (binary cross-entropy)
    vectors: Optional[dict[str, int]] = None  # vector observations next to the image: {name: size}
    vector_embed: int = 64  # width of the vector observations' encoder MLP
    vector_scale: float = 1.0  # loss weight of the vector reconstruction (Gaussian NLL, unit std)
    use_obs: Optional[list[bool]] = None  # per level: use the context frames in open-loop predict (None = all); training always does
    init: Literal["tf", "torch"] = "tf"  # "tf": the official code's Keras initialisers; "torch": PyTorch's defaults
    # initial bias of every GRU's update gate towards keeping its state (the official code: 0; an
    # LSTM's forget-gate bias of 1 in spirit): with b, a fresh cell keeps sigmoid(b) of h per step
    gru_keep_bias: float = 0.0
    channels_last: bool = True  # run convolutions in channels-last memory format (speed only)

    @classmethod
    def from_spaces(cls, observation_space, action_space=None, **fields) -> "ModelConfig":
        """A config whose ``channels``, ``action_dim`` and action bounds match gymnasium spaces.

        ``observation_space``: a ``Box`` image ``[64, 64, C]`` or a ``Dict`` with an ``image``
        entry (see :class:`cwworld.envs.ImageObservation`); ``action_space``: ``Discrete(n)``
        (one-hot, ``action_dim = n``), a ``Box`` (``action_dim`` = its size, finite bounds
        checked), or None (video only). ``windows`` defaults to ``causal`` (the agents' choice,
        see :mod:`cwworld.clock`). Other fields as keyword arguments.
        """
        import gymnasium as gym

        space = observation_space
        if isinstance(space, gym.spaces.Dict):
            if "image" not in space.spaces:
                raise ConfigError(f"from_spaces: a Dict observation space needs an 'image' entry, found "
                                  f"{sorted(space.spaces)}")
            space = space.spaces["image"]
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 3:
            raise ConfigError(f"from_spaces: expected an image Box [H, W, C], found {space}")
        H, W, C = space.shape
        if (H, W) != (64, 64):
            raise ConfigError(f"from_spaces: images must be 64x64 (wrap the env in cwworld.envs.ImageObservation), "
                              f"found {H}x{W}")
        derived: dict = {"channels": int(C), "windows": "causal"}
        if isinstance(action_space, gym.spaces.Discrete):
            derived["action_dim"] = int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box):
            derived["action_dim"] = int(np.prod(action_space.shape))
            low, high = action_space.low.reshape(-1), action_space.high.reshape(-1)
            if np.isfinite(low).all() and np.isfinite(high).all():
                derived["action_low"], derived["action_high"] = low.tolist(), high.tolist()
        elif action_space is not None:
            raise ConfigError(f"from_spaces: unsupported action space {action_space} (Discrete or Box)")
        config = cls(**{**derived, **fields})
        config.validate()
        return config

    def per_level(self, name: str) -> list:
        """Value of a size field (``stoch``, ``deter``, ``hidden``, ``beta``) for each level."""
        value = getattr(self, name)
        return list(value) if isinstance(value, list) else [value] * self.levels

    def validate(self) -> None:
        _check_min("model.image_size", self.image_size, 64)
        if self.image_size != 64:
            raise ConfigError(
                f"model.image_size: the conv encoder/decoder support 64 pixels, got {self.image_size}"
            )
        _check_min("model.channels", self.channels, 1)
        _check_min("model.levels", self.levels, 1)
        _check_min("model.factor", self.factor, 1)
        for name in ("stoch", "deter", "hidden", "beta"):
            value = getattr(self, name)
            if isinstance(value, list) and len(value) != self.levels:
                raise ConfigError(
                    f"model.{name}: expected one value per level ({self.levels}), got {len(value)}: {value}"
                )
            for v in self.per_level(name):
                if name == "beta":
                    _check_min("model.beta", v, 0.0)
                else:
                    _check_min(f"model.{name}", v, 1)
        _check_min("model.embed", self.embed, 1)
        _check_min("model.enc_dense_layers", self.enc_dense_layers, 1)
        _check_min("model.cnn_depth", self.cnn_depth, 1)
        _check_range("model.dec_stddev", self.dec_stddev, 0.0, None, low_open=True)
        _check_range("model.min_stddev", self.min_stddev, 0.0, None)
        _check_min("model.free_nats", self.free_nats, 0.0)
        _check_min("model.prior_recon", self.prior_recon, 0.0)
        if self.windows not in ("paper", "causal"):
            raise ConfigError(f"model.windows: expected 'paper' or 'causal', found {self.windows!r}")
        if self.init not in ("tf", "torch"):
            raise ConfigError(f"model.init: expected 'tf' or 'torch', found {self.init!r}")
        if self.kl_balance is not None:
            _check_range("model.kl_balance", self.kl_balance, 0.0, 1.0)
        _check_min("model.action_dim", self.action_dim, 0)
        _check_min("model.action_embed", self.action_embed, 1)
        for name in ("action_low", "action_high"):
            bound = getattr(self, name)
            if bound is not None and len(bound) != self.action_dim:
                raise ConfigError(f"model.{name}: expected {self.action_dim} values (action_dim), got {len(bound)}")
        if (self.action_low is None) != (self.action_high is None):
            raise ConfigError("model.action_low and model.action_high must be given together")
        _check_min("model.head_hidden", self.head_hidden, 1)
        if self.reward_gate and not self.reward_head:
            raise ConfigError("model.reward_gate: needs model.reward_head: true")
        if self.level_reward_gate and not self.level_reward_heads:
            raise ConfigError("model.level_reward_gate: needs model.level_reward_heads: true")
        if self.window_ends and not (self.level_reward_heads or self.level_continue_heads):
            raise ConfigError("model.window_ends: needs window heads (model.level_reward_heads or "
                              "model.level_continue_heads: true)")
        if self.head_action and not self.action_dim:
            raise ConfigError("model.head_action: the heads can only read actions in an action-conditioned model "
                              "(action_dim > 0), found action_dim 0")
        _check_min("model.head_layers", self.head_layers, 0)
        _check_min("model.reward_scale", self.reward_scale, 0.0)
        _check_min("model.continue_scale", self.continue_scale, 0.0)
        for name, size in (self.vectors or {}).items():
            _check_min(f"model.vectors.{name}", size, 1)
        _check_min("model.vector_embed", self.vector_embed, 1)
        _check_min("model.vector_scale", self.vector_scale, 0.0)
        if self.use_obs is not None and len(self.use_obs) != self.levels:
            raise ConfigError(
                f"model.use_obs: expected one bool per level ({self.levels}), got {len(self.use_obs)}"
            )


@dataclass
class TrainConfig:
    """The optimisation loop. Defaults follow the official code (Adam eps 1e-4)."""

    steps: int = 100_000  # optimizer updates
    batch_size: int = 50
    seq_len: int = 100  # frames per training sequence
    lr: float = 3e-4
    adam_eps: float = 1e-4
    grad_clip: float = 10_000.0  # global gradient-norm clip (official clip_grad_norm_by)
    seed: int = 0
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast to bfloat16
    compile: bool = False  # torch.compile the training step (the whole unrolled loss)
    compile_parts: bool = False  # torch.compile each level's cell step and the conv stacks (CWVAE.compile_parts)
    log_every: int = 50  # steps between metric lines (JSONL and TensorBoard)
    save_every: int = 1000  # steps between numbered checkpoints (latest is written too)
    sample_every: int = 1000  # steps between open-loop prediction GIFs (and at the end)
    tensorboard: bool = True  # also write metrics as TensorBoard events
    max_nonfinite: int = 10  # consecutive non-finite losses before the run stops
    # read the step's metrics to the host every N steps. 1: every step (the bar and the non-finite
    # check each step). N > 1: a step never waits for the GPU: a non-finite update is skipped on the
    # device (fused Adam's found_inf), counted there, and reported at the next read (every N steps,
    # log, save and sample steps); max_nonfinite is then checked at those reads
    sync_every: int = 1
    # CUDA only: replay the whole update (forward, backward, clipping, Adam) from one CUDA graph,
    # captured at the first step; the step is launch-bound on a GPU. Needs sync_every > 1
    cuda_graph: bool = False
    max_minutes: Optional[float] = None  # stop (checkpoint, GIF) once training has run this long, resumes summed
    # `cwworld train` only: after training, evaluate the model on the held-out videos with the
    # baselines (the eval section's settings), its sampled predictions (the paper's protocol,
    # RUN_DIR/eval/) and its mean predictions (RUN_DIR/eval_mean/), and print for how many frames
    # each beats every baseline
    final_eval: bool = False

    def validate(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "log_every", "save_every", "sample_every", "max_nonfinite",
                     "sync_every"):
            _check_min(f"train.{name}", getattr(self, name), 1)
        if self.cuda_graph and self.sync_every == 1:
            raise ConfigError("train.cuda_graph: a captured step cannot read values to the host; "
                              "set train.sync_every > 1 (e.g. 50) as well")
        _check_range("train.lr", self.lr, 0.0, None, low_open=True)
        _check_range("train.adam_eps", self.adam_eps, 0.0, None, low_open=True)
        _check_range("train.grad_clip", self.grad_clip, 0.0, None, low_open=True)
        if self.max_minutes is not None:
            _check_range("train.max_minutes", self.max_minutes, 0.0, None, low_open=True)
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(
                f"train.device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}"
            )


@dataclass
class DataConfig:
    """Where training sequences come from.

    ``squares``: generated bouncing squares; ``mmnist``: generated Moving MNIST
    (digits from ``path`` when given, else the digits shipped with the package);
    ``video``: a folder of video files (``path``; when it holds ``train/`` and
    ``test/`` folders, as the paper's releases do, those are the two splits);
    ``replay``: a replay directory (``cwworld convert minerl`` output, or a buffer
    written by collection), with actions and rewards; with ``env`` set, training runs
    online: a random policy (uniform, or ``random_probs``) fills ``prefill`` steps into
    ``RUN_DIR/replay``, then the agent collects ``collect_steps`` steps every
    ``collect_every`` training steps.
    """

    kind: Literal["squares", "mmnist", "video", "replay"] = "squares"
    path: Optional[str] = None  # mmnist: MNIST files (optional); video: the video folder; replay: its directory
    eval_path: Optional[str] = None  # video: held-out folder (default: path/test, else path)
    num_videos: int = 256  # generated kinds: videos in the training set
    num_objects: int = 2  # generated kinds: squares or digits per video
    speed: float = 1.0  # mmnist: multiplier on the [2, 6] pixels/frame speed range
    seed: int = 0  # generated kinds: dataset seed
    mode: Literal["chunks", "sliding"] = "chunks"  # video: non-overlapping chunks or sliding windows
    stride: int = 1  # video, sliding mode: frames between window starts
    crop: bool = True  # video: centre-crop non-square frames before resizing (else squash)
    smaller: Literal["resize", "reject"] = "resize"  # video: frames smaller than image_size
    cache: Optional[str] = None  # video: decoded-video cache folder (default ~/.cache/cwworld/videos)
    workers: int = 2  # DataLoader worker processes (0 = load in the training process)
    align: bool = False  # replay: start sequences where the episode's step is a multiple of k**(L-1)
    env: Optional[str] = None  # replay, online: gymnasium id to collect from (e.g. cwworld/CueCorridor-v0)
    capacity: int = 1_000_000  # replay, online: steps kept in RUN_DIR/replay
    prefill: int = 2000  # replay, online: random-policy steps collected before training
    # replay, online, Discrete actions: the random policy's action probabilities (the prefill, and an
    # actor-critic's collection before agent.start), e.g. [0.6, 0.2, 0.2]; None = uniform
    random_probs: Optional[list[float]] = None
    episode_starts: float = 0.0  # replay, online: share of each batch starting at an episode's first step
    collect_every: int = 100  # replay, online: training steps between collection rounds
    collect_steps: int = 500  # replay, online: environment steps per collection round (all environments together)
    num_envs: int = 1  # replay, online: environments collecting (and evaluating) side by side, one replay stream each

    def validate(self) -> None:
        _check_min("data.num_videos", self.num_videos, 1)
        _check_min("data.num_objects", self.num_objects, 1)
        _check_min("data.speed", self.speed, 0.0)
        _check_min("data.stride", self.stride, 1)
        _check_min("data.workers", self.workers, 0)
        for name in ("capacity", "prefill", "collect_every", "collect_steps", "num_envs"):
            _check_min(f"data.{name}", getattr(self, name), 1)
        _check_range("data.episode_starts", self.episode_starts, 0.0, 1.0)
        if self.random_probs is not None:
            check_probabilities("data.random_probs", self.random_probs)
        if self.env is not None and ":" in str(self.env):
            raise ConfigError(f"data.env: {self.env!r} names a module to import ('module:Env'); a config does not "
                              "import code: register the environment with gymnasium.register in your own code "
                              "and give its id")


@dataclass
class EvalConfig:
    """Open-loop evaluation: ``context`` frames observed, ``horizon`` predicted."""

    context: int = 36  # frames observed before predicting
    horizon: int = 1000  # frames predicted open-loop
    num_samples: int = 1  # predictions per video (metrics: mean and best of these)
    num_videos: int = 100  # held-out videos evaluated by `cwworld eval`
    batch_size: int = 8  # videos per evaluation batch

    def validate(self) -> None:
        for name in ("context", "horizon", "num_samples", "num_videos", "batch_size"):
            _check_min(f"eval.{name}", getattr(self, name), 1)


@dataclass
class AgentConfig:
    """The agent that collects experience in online runs (``data.env`` set) and is evaluated there.

    ``random`` collects with uniform actions; ``cem``, ``mppi`` and ``clockwork`` plan with the
    world model being trained; ``actor_critic`` learns a policy in its imagination, ``updates``
    updates after each world-model update (see :mod:`cwworld.agents`). The prefill is always random.
    """

    kind: Literal["random", "cem", "mppi", "clockwork", "actor_critic"] = "random"
    horizon: int = 12  # cem, mppi: imagined steps per candidate; actor_critic: per imagined rollout
    population: int = 128  # candidates per environment and iteration
    elites: int = 16  # best candidates the sampling distribution is refitted to
    iterations: int = 3  # sample-score-refit rounds per decision
    discount: float = 0.99  # per imagined step
    explore: float = 0.1  # while collecting: chance of a random discrete action (Box: noise std)
    level: int = 1  # clockwork: the upper level that plans the far future
    windows: int = 8  # clockwork: far windows of that level
    near_value: Literal["plan", "sample"] = "plan"  # clockwork: near candidates scored with the far plan or their own far samples
    far_search: Literal["steps", "compositions"] = "steps"  # clockwork, discrete actions: far windows drawn step by step or as action counts
    far_imagination: Literal["jumpy", "full"] = "jumpy"  # clockwork: far windows scored jumpily by the window heads, or (a diagnostic) step by step with every level
    # cem, mppi, clockwork with discrete actions: a fresh plan step's action probabilities (None: uniform;
    # "replay": the replay's action frequencies, and with far_search: compositions its windows')
    initial_probs: Union[list[float], Literal["replay"], None] = None
    return_lambda: float = 0.95  # actor_critic: λ of the λ-returns
    entropy: float = 3.0e-3  # actor_critic: weight of the policy's entropy
    actor_lr: float = 3.0e-4  # actor_critic
    critic_lr: float = 3.0e-4  # actor_critic
    starts: int = 256  # actor_critic: imagination start states per update (at most)
    hidden: int = 256  # actor_critic: width of the actor's and critic's MLPs
    replay: float = 0.0  # actor_critic: weight of its losses on the batch's real steps (0 = imagination only)
    input_norm: bool = False  # actor_critic: standardise the actor's and critic's features per dimension
    start: int = 0  # actor_critic: world-model updates before it starts learning and collecting (random until then)
    updates: int = 1  # actor_critic: its updates after each world-model update (new starts and imagination each)
    plan_horizon: int = 0  # actor_critic: act by CEM over this many steps, the critic as terminal value (0 = actor)
    plan_discount: float = 0.0  # actor_critic with plan_horizon: discount of the plans' scores (0 = discount)
    plan_collect: bool = False  # actor_critic with plan_horizon: also collect by planning (default: the sampled actor)
    eval_every: int = 0  # training steps between evaluations (0 = none; online runs only)
    eval_episodes: int = 10  # episodes per evaluation (no exploration)
    eval_envs: int = 0  # environments side by side in an evaluation (a vector env; 0 = data.num_envs)

    def validate(self) -> None:
        for name in ("horizon", "population", "elites", "iterations", "level", "windows", "eval_episodes", "starts",
                     "hidden", "updates"):
            _check_min(f"agent.{name}", getattr(self, name), 1)
        _check_range("agent.return_lambda", self.return_lambda, 0.0, 1.0)
        _check_range("agent.entropy", self.entropy, 0.0, 1.0)
        _check_min("agent.replay", self.replay, 0.0)
        for name in ("actor_lr", "critic_lr"):
            _check_range(f"agent.{name}", getattr(self, name), 0.0, 1.0, low_open=True)
        _check_min("agent.eval_every", self.eval_every, 0)
        _check_min("agent.eval_envs", self.eval_envs, 0)
        _check_min("agent.start", self.start, 0)
        _check_min("agent.plan_horizon", self.plan_horizon, 0)
        _check_range("agent.plan_discount", self.plan_discount, 0.0, 1.0)
        _check_range("agent.discount", self.discount, 0.0, 1.0, low_open=True)
        _check_range("agent.explore", self.explore, 0.0, 1.0)
        if self.near_value not in ("plan", "sample"):
            raise ConfigError(f"agent.near_value: expected 'plan' or 'sample', found {self.near_value!r}")
        if self.far_search not in ("steps", "compositions"):
            raise ConfigError(f"agent.far_search: expected 'steps' or 'compositions', found {self.far_search!r}")
        if self.far_imagination not in ("jumpy", "full"):
            raise ConfigError(f"agent.far_imagination: expected 'jumpy' or 'full', found {self.far_imagination!r}")
        if self.elites > self.population:
            raise ConfigError(f"agent.elites ({self.elites}) must not exceed agent.population ({self.population})")
        if isinstance(self.initial_probs, str) and self.initial_probs != "replay":
            raise ConfigError(f"agent.initial_probs: expected a list of probabilities, 'replay' or null, "
                              f"found {self.initial_probs!r}")
        if self.initial_probs is not None and not isinstance(self.initial_probs, str):
            check_probabilities("agent.initial_probs", self.initial_probs, positive=True)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)

    def validate(self) -> "Config":
        for section in dataclasses.fields(self):
            getattr(self, section.name).validate()
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "Config":
        cfg = cls()
        _merge(cfg, data, source)
        return cfg.validate()


# ----------------------------------------------------------------------------- loading


def preset_names() -> list[str]:
    """Names of the presets shipped with the package."""
    return sorted(p.name[:-5] for p in _preset_dir().iterdir() if p.name.endswith(".yaml"))


def preset_description(name: str) -> str:
    """The first sentence of a preset's leading comment."""
    lines = []
    for line in (_preset_dir() / f"{name}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    text = " ".join(lines)
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def load_config(path_or_preset: Union[str, os.PathLike, None] = None, overrides=()) -> Config:
    """Load a YAML config file or a preset by name, apply ``key=value`` overrides, validate.

    Args:
        path_or_preset: a YAML file, or the name of a preset (``"mmnist"`` means
            ``configs/mmnist.yaml``); ``None`` gives the defaults.
        overrides: dotted assignments such as ``["model.levels=2", "train.lr=1e-4"]``;
            values are parsed as YAML (``model.beta=[1, 0.5]``).
    """
    cfg = Config()
    if path_or_preset is not None:
        _merge(cfg, _read_with_bases(path_or_preset, seen=()), str(path_or_preset))
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: Config, overrides=()) -> Config:
    """Apply dotted ``key=value`` assignments (values parsed as YAML) to ``cfg`` in place; validate."""
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected 'section.key=value'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
        _set_dotted(cfg, key.strip(), value, "override")
    return cfg.validate()


def save_config(cfg: Config, path: Union[str, os.PathLike]) -> None:
    """Write the config as YAML, atomically (temp file, then rename)."""
    from .utils import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _preset_dir():
    return resources.files("cwworld.configs")


def _resolve(path_or_preset) -> tuple[str, str]:
    """Return (text, name) of a config file or preset."""
    path = Path(path_or_preset)
    if path.is_file():
        return path.read_text(), str(path)
    name = str(path_or_preset)
    if not name.endswith((".yaml", ".yml")) and "/" not in name:
        preset = _preset_dir() / f"{name}.yaml"
        if preset.is_file():
            return preset.read_text(), f"preset '{name}'"
    known = preset_names()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(
        f"config {name!r}: no such file and no such preset{hint}; presets: {', '.join(known)}"
    )


def _read_with_bases(path_or_preset, seen) -> dict:
    text, name = _resolve(path_or_preset)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{name}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping of sections, found {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if base in seen:
        raise ConfigError(f"{name}: 'base' chain loops back to {base!r}")
    merged = _read_with_bases(base, seen + (base,))
    for section, values in data.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def _merge(cfg: Config, data: dict, source: str) -> None:
    for section, values in data.items():
        if section not in _section_names():
            raise ConfigError(f"{source}: {_unknown(section, _section_names())}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(
                f"{source}: section '{section}' must be a mapping, found {type(values).__name__}"
            )
        for key, value in values.items():
            _set_dotted(cfg, f"{section}.{key}", value, source)


def _section_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def _unknown(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key '{key}'{hint}"


def _set_dotted(cfg: Config, key: str, value: Any, source: str) -> None:
    section_name, _, name = key.partition(".")
    all_keys = [
        f"{s}.{f.name}" for s in _section_names() for f in dataclasses.fields(getattr(cfg, s))
    ]
    if section_name not in _section_names() or not name:
        raise ConfigError(f"{source}: {_unknown(key, all_keys)}")
    section = getattr(cfg, section_name)
    hints = typing.get_type_hints(type(section))
    if name not in hints:
        raise ConfigError(f"{source}: {_unknown(key, all_keys)}")
    setattr(section, name, _coerce(key, value, hints[name], source))


def _coerce(key: str, value: Any, tp, source: str):
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    ok, converted = _match(value, tp)
    if not ok:
        raise ConfigError(
            f"{source}: {key} expects {_type_name(tp)}, got {value!r} ({type(value).__name__})"
        )
    return converted


def _match(value, tp) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin is Union:
        for arg in typing.get_args(tp):
            ok, v = _match(value, arg)
            if ok:
                return True, v
        return False, None
    if origin is Literal:
        return (value in typing.get_args(tp)), value
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            return False, None
        out = {}
        for key, item in value.items():
            ok_k, k = _match(key, key_tp)
            ok_v, v = _match(item, value_tp)
            if not (ok_k and ok_v):
                return False, None
            out[k] = v
        return True, out
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False, None
        out = []
        for item in value:
            ok, v = _match(item, item_tp)
            if not ok:
                return False, None
            out.append(v)
        return True, out
    if tp is type(None):
        return value is None, None
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                return False, None
        return False, None
    if tp is str:
        return isinstance(value, str), value
    return False, None


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def check_probabilities(key: str, probs, positive: bool = False) -> None:
    """Refuse ``probs`` (one per action) unless they are finite, non-negative (``positive``: > 0)
    and sum to 1; the :class:`ConfigError` names ``key``."""
    values = [float(p) for p in probs]
    if not values or any(not np.isfinite(p) or p < 0 or (positive and p == 0) for p in values) \
            or abs(sum(values) - 1) > 1e-6:
        kind = "positive" if positive else "non-negative"
        raise ConfigError(f"{key} must be {kind} probabilities summing to 1, one per action, got {list(probs)}")


def _check_min(key: str, value, low) -> None:
    _check_range(key, value, low, None)


def _check_range(key, value, low, high, low_open=False) -> None:
    if isinstance(value, float) and not np.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and value > high
    if bad_low or bad_high:
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else f"<= {high}"
        allowed = " and ".join(s for s in (lo, hi) if s)
        raise ConfigError(f"{key} must be {allowed}, got {value}")
