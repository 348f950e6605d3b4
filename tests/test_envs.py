"""Gymnasium side: the built-in environment, wrappers, recording into replay, collection."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from cwworld.data.replay import ReplayBuffer
from cwworld.envs import (ActionRepeat, CueCorridor, ImageObservation, NormalizeActions, OneHotActions,
                          RandomPolicy, Recorder, collect, make_env)
from cwworld.envs.cue_corridor import FORWARD, LEFT, RIGHT


def test_cue_corridor_passes_the_gymnasium_checker_and_is_registered():
    check_env(CueCorridor(), skip_render_check=False)
    env = gym.make("cwworld/CueCorridor-v0")
    obs, info = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and info["cue"] in (0, 1)
    long = gym.make("cwworld/CueCorridorLong-v0")
    long.reset(seed=0)
    for _ in range(96):
        _, reward, terminated, truncated, _ = long.step(FORWARD)
    assert reward == 0 and not terminated and not truncated  # 96 steps between the cue and the junction
    assert long.step(LEFT)[2] and long.spec.max_episode_steps == 400


@pytest.mark.parametrize("seed", range(4))
def test_the_reward_depends_on_the_cue_seen_at_the_start(seed):
    env = CueCorridor(length=10, cue_steps=2)
    obs, info = env.reset(seed=seed)
    cue_pixel = obs[5, 32].copy()
    assert tuple(cue_pixel) == ((220, 40, 40) if info["cue"] == 0 else (40, 80, 230))
    for t in range(10):
        obs, reward, terminated, truncated, _ = env.step(FORWARD)
        assert reward == 0 and not terminated
    assert tuple(obs[5, 32]) == (110, 110, 110)  # the cue is gone long before the choice
    right_exit = LEFT if info["cue"] == 0 else RIGHT
    _, reward, terminated, _, _ = env.step(right_exit)
    assert reward == 1.0 and terminated
    env.reset(seed=seed)
    for _ in range(10):
        env.step(FORWARD)
    _, reward, terminated, _, _ = env.step(RIGHT if right_exit == LEFT else LEFT)
    assert reward == -1.0 and terminated


@pytest.mark.parametrize("right_choice", [True, False])
def test_the_outcome_variant_shows_the_outcome_in_the_last_frame_only(right_choice):
    env = gym.make("cwworld/CueCorridorOutcome-v0")
    obs, info = env.reset(seed=3)
    plain = CueCorridor()
    plain_obs, plain_info = plain.reset(seed=3)
    assert plain_info["cue"] == info["cue"] and np.array_equal(obs, plain_obs)
    for _ in range(24):
        obs, *_ = env.step(FORWARD)
        plain_obs, *_ = plain.step(FORWARD)
        assert np.array_equal(obs, plain_obs)  # the same task until the exit
    cued = LEFT if info["cue"] == 0 else RIGHT
    choice = cued if right_choice else (RIGHT if cued == LEFT else LEFT)
    obs, reward, terminated, *_ = env.step(choice)
    plain_obs, plain_reward, *_ = plain.step(choice)
    assert reward == plain_reward == (1.0 if right_choice else -1.0) and terminated
    assert tuple(obs[5, 32]) == ((40, 200, 60) if right_choice else (0, 0, 0))  # green or black band
    assert tuple(plain_obs[5, 32]) == (110, 110, 110)  # without the option: grey, as the frame before
    assert np.array_equal(obs[12:], plain_obs[12:])
    assert gym.make("cwworld/CueCorridorLongOutcome-v0").spec.max_episode_steps == 400


class PointEnv(gym.Env):
    """A vector-observation environment with a bounded Box action and an rgb render()."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-10, 10, (2,), np.float32)
        self.action_space = gym.spaces.Box(np.array([0.0, -2.0], np.float32), np.array([1.0, 2.0], np.float32))
        self.pos = np.zeros(2, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self.pos.copy(), {}

    def step(self, action):
        self.pos = np.clip(self.pos + action, -10, 10).astype(np.float32)
        return self.pos.copy(), 0.0, False, False, {}

    def render(self):
        frame = np.zeros((100, 80, 3), np.uint8)
        frame[40:60, 30:50] = 255
        return frame


def test_wrappers():
    env = make_env("cwworld/CueCorridor-v0")
    assert isinstance(env, OneHotActions) and env.action_space.shape == (3,)
    obs, _ = env.reset(seed=1)
    assert set(obs) == {"image"} and obs["image"].shape == (64, 64, 3)
    with pytest.raises(ValueError, match="expected a vector of 3"):
        env.step(np.zeros(2))
    point = NormalizeActions(ImageObservation(PointEnv(render_mode="rgb_array"), size=32))  # image from render()
    assert point.observation_space["image"].shape == (32, 32, 3)
    assert np.allclose(point.action(np.array([1.0, -1.0])), [1.0, -2.0])
    assert np.allclose(point.action(np.array([0.0, 0.0])), [0.5, 0.0])
    obs, _ = point.reset(seed=0)
    assert obs["image"].shape == (32, 32, 3) and obs["image"].std() > 0
    with pytest.raises(ValueError, match="render_mode"):
        ImageObservation(PointEnv())
    repeated = ActionRepeat(CueCorridor(length=6), 3)
    repeated.reset(seed=0)
    repeated.step(FORWARD)
    assert repeated.unwrapped._pos == 3


def test_recorder_writes_the_step_layout():
    buffer = ReplayBuffer(None, chunk_size=100)
    env = Recorder(OneHotActions(ImageObservation(CueCorridor(length=3, cue_steps=1))), buffer)
    obs, info = env.reset(seed=0)
    exit_action = np.eye(3)[LEFT if info["cue"] == 0 else RIGHT]
    for action in [np.eye(3)[FORWARD]] * 3 + [exit_action]:
        env.step(action)
    assert len(buffer) == 5  # 5 observations: start, 3 moves, the exit
    batch = buffer.sample(1, 5)
    assert batch["is_first"][0].tolist() == [True, False, False, False, False]
    assert batch["is_last"][0, -1] and batch["is_terminal"][0, -1]
    assert batch["reward"][0].tolist() == [0, 0, 0, 0, 1.0]  # received on arriving at the last image
    assert np.array_equal(batch["action"][0, :3], np.eye(3)[[FORWARD] * 3])  # action[t] after image[t]
    assert np.array_equal(batch["action"][0, 3], exit_action) and not batch["action"][0, 4].any()
    assert np.array_equal(batch["image"][0, 0], obs["image"])


def test_collect_with_a_random_policy_fills_the_buffer():
    env = make_env("cwworld/CueCorridor-v0", length=4)
    buffer = ReplayBuffer(None, chunk_size=50)
    stats = collect(env, RandomPolicy(env.action_space, seed=0), 300, buffer, seed=0, progress=False)
    assert stats["steps"] == 300 and stats["episodes"] > 5
    assert set(stats["returns"]) <= {-1.0, 1.0, 0.0}
    assert len(buffer) >= 300
    batch = buffer.sample(8, 10)
    assert batch["action"].shape == (8, 10, 3) and np.allclose(batch["action"].sum(-1)[~batch["is_last"]], 1)


def test_random_policy_draws_discrete_actions_with_the_given_probabilities():
    from cwworld.envs import env_spaces, make_vector_env

    probs = [0.6, 0.1, 0.3]
    discrete = RandomPolicy(gym.spaces.Discrete(3, start=1), seed=0, probs=probs)
    draws = np.array([discrete(None) for _ in range(4000)])
    assert np.allclose(np.bincount(draws - 1, minlength=3) / 4000, probs, atol=0.03)
    one_hot = make_env("cwworld/CueCorridor-v0").action_space
    policy = RandomPolicy(one_hot, seed=1, probs=probs)
    draws = np.array([policy(None) for _ in range(4000)])
    assert np.allclose(draws.mean(0), probs, atol=0.03) and np.all(draws.sum(1) == 1)
    vector = make_vector_env("cwworld/CueCorridor-v0", 3)
    batched = RandomPolicy(vector.action_space, seed=2, probs=[0, 1, 0], single_space=env_spaces(vector)[0])
    assert np.array_equal(batched(None), np.eye(3)[[1, 1, 1]])
    uniform = RandomPolicy(gym.spaces.Discrete(3), seed=3)  # no probabilities: the space's own sampler
    reference = gym.spaces.Discrete(3, seed=3)
    assert [uniform(None) for _ in range(20)] == [reference.sample() for _ in range(20)]
    # a walk biased forward reaches the junction sooner: more exits per prefill step
    env = make_env("cwworld/CueCorridor-v0")
    biased = collect(env, RandomPolicy(env.action_space, seed=0, probs=[0.6, 0.2, 0.2]), 3000, seed=0,
                     progress=False)
    plain = collect(env, RandomPolicy(env.action_space, seed=0), 3000, seed=0, progress=False)
    assert biased["episodes"] > 1.4 * plain["episodes"] and 0 not in biased["returns"]


@pytest.mark.parametrize("probs", [[0.5, 0.5], [0.5, 0.6, -0.1], [0.2, 0.2, 0.2]])
def test_random_policy_refuses_probabilities_that_do_not_fit(probs):
    with pytest.raises(ValueError, match=r"3 non-negative numbers summing to 1.*Discrete\(3\)"):
        RandomPolicy(gym.spaces.Discrete(3), probs=probs)
    with pytest.raises(ValueError, match="need Discrete"):
        RandomPolicy(gym.spaces.Box(-1, 1, (2,)), probs=[0.5, 0.5])


def test_online_training_names_random_probs_that_do_not_fit_the_environment(tmp_path, capsys):
    from cwworld.cli import main
    from test_train import TINY

    args = ["train", "--config", "cue_corridor_online", "--run-dir", str(tmp_path / "run"), "--no-progress", *TINY,
            "model.channels=3", "model.action_dim=3", "data.prefill=10", "train.steps=1"]
    assert main([*args, "data.random_probs=[0.5,0.5]"]) != 0
    err = capsys.readouterr().err
    assert "data.random_probs for cwworld/CueCorridor-v0" in err and "must be 3 non-negative" in err
    assert "OneHot(3)" in err and "[0.5, 0.5]" in err
    assert main([*args, "data.random_probs=[0.5,0.6]"]) != 0
    assert "data.random_probs must be non-negative probabilities summing to 1" in capsys.readouterr().err


def test_minerl_adapter_needs_minerl_and_converts_with_the_codec(monkeypatch):
    import importlib
    import sys
    import types

    monkeypatch.setitem(sys.modules, "minerl", None)  # as on a machine without minerl
    sys.modules.pop("cwworld.envs.minerl", None)
    with pytest.raises(ImportError, match=r"pip install \"cwworld\[minerl\]\""):
        importlib.import_module("cwworld.envs.minerl")

    monkeypatch.setitem(sys.modules, "minerl", types.ModuleType("minerl"))  # a stand-in, no Minecraft
    sys.modules.pop("cwworld.envs.minerl", None)
    adapter = importlib.import_module("cwworld.envs.minerl")

    class OldGymNavigate:  # the old gym API MineRL 0.4.4 has
        def __init__(self):
            self.actions = []

        def reset(self):
            return {"pov": np.full((64, 64, 3), 7, np.uint8), "compass": {"angle": 12.5}, "inventory": {"dirt": 3}}

        def step(self, action):
            self.actions.append(action)
            return self.reset(), 1.5, True, {"TimeLimit.truncated": False}

        def close(self):
            pass

    old = OldGymNavigate()
    env = adapter.MineRLEnv(env=old)
    obs, _ = env.reset()
    assert obs["image"].shape == (64, 64, 3) and obs["compass"][0] == 12.5 and obs["inventory_dirt"][0] == 3
    vector = np.array([1, 0, 0.1, -0.05, 1, 0, 0, 1, 0, 0, 1], np.float32)
    _, reward, terminated, truncated, _ = env.step(vector)
    sent = old.actions[0]
    assert sent["attack"] == 1 and sent["forward"] == 1 and sent["place"] == "dirt" and sent["back"] == 0
    assert np.allclose(sent["camera"], [18.0, -9.0])
    assert reward == 1.5 and terminated and not truncated
    with pytest.raises(ValueError, match=r"float32 \[11\]"):
        env.step(np.zeros(3))
    sys.modules.pop("cwworld.envs.minerl", None)


def test_online_training_collects_and_trains(tmp_path, capsys):
    from cwworld.cli import main
    from test_train import TINY

    run = tmp_path / "online"
    args = ["train", "--config", "cue_corridor_online", "--run-dir", str(run), "--no-progress", *TINY,
            "model.channels=3", "model.action_dim=3", "data.prefill=40", "data.collect_every=2",
            "data.collect_steps=10", "train.steps=4", "train.save_every=2"]
    assert main(args) == 0
    buffer = ReplayBuffer.load(run / "replay")
    assert len(buffer) == 40 + 10  # prefill, then one round at step 2 (step 4 is the last)
    assert set(buffer.keys) >= {"image", "action", "reward", "is_first", "is_last", "is_terminal"}
    assert (run / "samples" / "step_000004.gif").exists()
    import json

    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["replay_steps"] for m in logged] == [40, 40, 50, 50]  # the round at step 2 feeds step 3
    assert all(-1 <= m["collect_mean_return"] <= 1 for m in logged if "collect_mean_return" in m)
    assert main(args[:-2] + ["train.steps=6", "train.save_every=2"]) == 0  # resumes, keeps collecting
    assert len(ReplayBuffer.load(run / "replay")) == 40 + 10 + 10
    assert main(["eval", str(run), "--videos", "2", "--no-progress"]) == 0
    bad = args + ["model.action_dim=5", "--run-dir", str(tmp_path / "bad")]
    assert main(bad) == 2
    assert "model.action_dim is 5, but cwworld/CueCorridor-v0's actions have 3" in capsys.readouterr().err


def test_online_training_collects_with_a_planner_and_evaluates_it(tmp_path):
    from cwworld.cli import main
    from test_train import TINY

    run = tmp_path / "agent"
    args = ["train", "--config", "cue_corridor_agent", "--run-dir", str(run), "--no-progress", *TINY,
            "model.channels=3", "model.action_dim=3", "model.head_hidden=8", "data.prefill=30",
            "data.collect_every=2", "data.collect_steps=12", "train.steps=4", "train.save_every=2",
            "agent.kind=cem", "agent.horizon=3", "agent.population=8", "agent.elites=2", "agent.iterations=1",
            "agent.eval_every=2", "agent.eval_episodes=1",
            "agent.initial_probs=replay"]  # collecting and evaluating planners start from the replay's frequencies
    assert main(args) == 0
    assert len(ReplayBuffer.load(run / "replay")) == 30 + 12  # random prefill, then one round by the planner
    import json

    logged = {m["step"]: m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    for step in (2, 4):  # every evaluation is logged: one episode of at most 100 steps
        assert -1 <= logged[step]["eval/return"] <= 1 and logged[step]["eval/success"] in (0.0, 1.0)
        assert 1 <= logged[step]["eval/length"] <= 100
    assert "eval/return" not in logged[1]


def test_agent_eval_envs_evaluates_in_a_vector_env_of_that_many_environments(tmp_path):
    """``agent.eval_envs`` runs the evaluation episodes side by side (data.num_envs is 1 here)."""
    from cwworld.config import ConfigError, load_config
    from cwworld.train import Trainer
    from test_train import TINY

    config = load_config("cue_corridor_agent", [*TINY, "model.channels=3", "model.action_dim=3", "model.head_hidden=8",
                                                "data.prefill=30", "agent.kind=cem", "agent.horizon=2",
                                                "agent.population=8", "agent.elites=2", "agent.iterations=1",
                                                "agent.eval_episodes=4", "agent.eval_envs=3"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    metrics = trainer.evaluate_agent()
    assert trainer.eval_env.num_envs == 3 and config.data.num_envs == 1
    assert -1 <= metrics["eval/return"] <= 1 and 1 <= metrics["eval/length"] <= 100
    config.agent.eval_envs = -1
    with pytest.raises(ConfigError, match="agent.eval_envs"):
        config.agent.validate()


def test_an_actor_critic_run_learns_logs_and_resumes_exactly(tmp_path):
    """Online training with the actor-critic: its updates are logged, and a run stopped at a
    checkpoint and resumed ends with the same world model, actor, critic and metrics as one
    that ran straight through (collection rounds restart their episodes either way)."""
    import json

    from cwworld.cli import main
    from cwworld.train import read_checkpoint
    from test_train import TINY

    common = ["--config", "cue_corridor_ac", "--no-progress", *TINY, "model.head_hidden=8", "data.prefill=30",
              "data.collect_every=2", "data.collect_steps=12", "train.save_every=2", "train.sample_every=100",
              "agent.horizon=3", "agent.starts=8", "agent.hidden=8", "agent.eval_every=2", "agent.eval_episodes=1",
              "agent.initial_probs=replay"]  # a planners' setting (the presets for the Clockwork planner carry it): ignored
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", "--run-dir", str(straight), *common, "train.steps=6"]) == 0
    assert main(["train", "--run-dir", str(split), *common, "train.steps=2"]) == 0
    assert main(["train", "--run-dir", str(split), *common, "train.steps=6"]) == 0
    a, b = (read_checkpoint(run / "checkpoints" / "latest.pt") for run in (straight, split))
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    for name, value in a["agent"]["nets"].items():
        assert torch.equal(value, b["agent"]["nets"][name]), name
    logs = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (straight, split)]
    drop = ("time", "frames_per_s", "train_minutes")
    assert [{k: v for k, v in m.items() if k not in drop} for m in logs[0]] == \
        [{k: v for k, v in m.items() if k not in drop} for m in logs[1]]
    assert all(np.isfinite(m["agent/critic_loss"]) for m in logs[0]) and "eval/success" in logs[0][1]
    assert len(ReplayBuffer.load(split / "replay")) == len(ReplayBuffer.load(straight / "replay")) == 30 + 2 * 12


def test_the_actor_critic_starts_learning_at_agent_start_and_can_act_by_planning(tmp_path):
    """``agent.start``: no actor-critic update (and no agent metrics) before that many world-model
    updates, ``agent.updates`` per update after (each batch's features folded into ``input_norm``
    once); ``agent.plan_horizon`` with ``plan_collect``: the run collects and is evaluated by CEM
    on the critic, and its checkpoint keeps the planner's random state."""
    import json

    from cwworld.cli import main
    from cwworld.train import read_checkpoint
    from test_train import TINY

    run = tmp_path / "run"
    assert main(["train", "--config", "cue_corridor_ac", "--run-dir", str(run), "--no-progress", *TINY,
                 "model.head_hidden=8", "data.prefill=30", "data.collect_every=2", "data.collect_steps=12",
                 "train.save_every=6", "train.sample_every=100", "train.log_every=1", "train.steps=6",
                 "agent.horizon=3", "agent.starts=8", "agent.hidden=8", "agent.eval_every=6", "agent.eval_episodes=1",
                 "agent.start=4", "agent.plan_horizon=2", "agent.plan_collect=true", "agent.population=8",
                 "agent.elites=2", "agent.iterations=1", "agent.updates=3", "agent.input_norm=true"]) == 0
    logged = {m["step"]: m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    assert [step for step in sorted(logged) if "agent/critic_loss" in logged[step]] == [5, 6]
    state = read_checkpoint(run / "checkpoints" / "latest.pt")
    assert state["agent"]["updates"] == 2 * 3 and "planner" in state["agent"]
    assert int(state["agent"]["nets"]["input_norm.count"]) == 2  # two batches, six updates
    assert -1 <= logged[6]["eval/return"] <= 1
    assert len(ReplayBuffer.load(run / "replay")) == 30 + 2 * 12


def test_point_reach_pays_for_approaching_the_target():
    from cwworld.envs import PointReach

    check_env(PointReach(), skip_render_check=False)
    env = make_env("cwworld/PointReach-v0")
    assert env.action_space.shape == (2,) and env.observation_space["image"].shape == (64, 64, 3)
    inner = PointReach()
    inner.reset(seed=1)
    rewards = []
    for _ in range(20):  # head straight for the target
        direction = (inner._target + 5) - (inner._dot + 3)
        _, reward, terminated, truncated, info = inner.step(np.clip(direction / 4.0, -1, 1))
        rewards.append(reward)
    assert info["distance"] < 3 and rewards[-1] > 0.9 and rewards[-1] > rewards[0]
    with pytest.raises(ValueError, match="2 finite numbers"):
        inner.step(np.array([np.nan, 0.0]))


def test_reach_probe_finds_the_dot_where_the_environment_put_it():
    """benchmarks/reach_probe.py locates the dot in a frame as its bright pixels' centroid (the
    grey target square ignored), exactly where the environment drew it, and NaN when it is gone."""
    from cwworld.envs import PointReach
    from conftest import load_benchmark

    dot_centre = load_benchmark("reach_probe").dot_centre
    env = PointReach()
    for seed in range(5):
        frame, _ = env.reset(seed=seed)
        for _ in range(3):
            centre = dot_centre(frame.astype(np.float32) / 255)
            drawn = np.rint(env._dot) + 3  # drawn at the rounded position, 6 px wide
            # the dot may hide part of the target but never the other way round
            assert np.allclose(centre, drawn), (seed, centre, drawn)
            frame, *_ = env.step(env.action_space.sample())
    assert np.isnan(dot_centre(np.zeros((64, 64, 3), np.float32))).all()


def test_an_unknown_or_importing_env_id_is_refused_by_name(tmp_path, capsys):
    from cwworld.cli import main

    with pytest.raises(ValueError, match=r"no gymnasium environment 'NoSuchEnv-v0'.*cwworld/CueCorridor-v0"):
        make_env("NoSuchEnv-v0")
    base = ["train", "--config", "cue_corridor_online", "--run-dir", str(tmp_path / "run"), "--no-progress"]
    assert main(base + ["data.env=os:system"]) == 2
    assert "a config does not import code" in capsys.readouterr().err
    assert main(base + ["data.env=NoSuchEnv-v0"]) == 2
    assert "no gymnasium environment 'NoSuchEnv-v0'" in capsys.readouterr().err


class _Cyclic:
    """forward, forward, forward, left, forward, right, ... by call count, the same for every
    environment of a batch; with ``act`` it also keeps the ``is_first`` masks it was given."""

    pattern = [FORWARD, FORWARD, FORWARD, LEFT, FORWARD, RIGHT]

    def __init__(self, num_envs=None):
        self.calls, self.num_envs, self.firsts = 0, num_envs, []

    def __call__(self, obs):
        action = np.eye(3, dtype=np.float32)[self.pattern[self.calls % len(self.pattern)]]
        self.calls += 1
        return action if self.num_envs is None else np.stack([action] * self.num_envs)

    def act(self, obs, is_first):
        self.firsts.append(np.asarray(is_first).copy())
        return self(obs)


def _worker_stream(buffer, worker):
    (name,) = [n for n in buffer.streams if n.startswith(f"w{worker}_")]
    return {key: buffer.streams[name].field(key) for key in ("image", "action", "reward", "is_first", "is_last")}


def test_a_vector_env_records_each_environment_as_its_own_single_run_would():
    from cwworld.envs import make_vector_env

    n, rounds = 3, 40
    buffer = ReplayBuffer(None, chunk_size=1000)
    envs = make_vector_env("cwworld/CueCorridor-v0", n, buffer=buffer, length=4)
    spy = _Cyclic(n)
    stats = collect(envs, spy, n * rounds, seed=7, progress=False)
    for worker in range(n):
        buffer.end_stream(worker)
    assert stats["steps"] == n * rounds and stats["episodes"] >= n
    for i in range(n):
        single = ReplayBuffer(None, chunk_size=1000)
        alone = collect(make_env("cwworld/CueCorridor-v0", length=4), _Cyclic(), rounds, single, seed=7 + i,
                        progress=False)
        single.end_stream()
        ours, theirs = _worker_stream(buffer, i), _worker_stream(single, 0)
        for key in ours:
            assert np.array_equal(ours[key], theirs[key]), (i, key)
        # the policy saw every recorded frame but an episode's last (the vector env shows the next
        # episode's first instead), and was told is_first exactly where the recording starts one
        acted = ours["is_first"][~ours["is_last"]]
        assert np.array_equal(np.stack(spy.firsts)[: len(acted), i], acted)
        assert alone["episodes"] >= 1
    with pytest.raises(ValueError, match="records in its sub-environments"):
        collect(envs, spy, 3, buffer, progress=False)


def test_episodes_in_a_vector_env_are_shared_out_and_equal_single_runs():
    from cwworld.envs import make_vector_env, run_episodes

    envs = make_vector_env("cwworld/CueCorridor-v0", 2, length=4)
    stats = run_episodes(envs, _Cyclic(2), 5, seed=3)
    assert len(stats["returns"]) == 5 and stats["mean_length"] == np.mean(stats["lengths"])
    expected = []
    for i, share in ((0, 3), (1, 2)):  # environment 0 plays 3 of the 5, environment 1 plays 2
        alone = collect(make_env("cwworld/CueCorridor-v0", length=4), _Cyclic(), 400, seed=3 + i, progress=False)
        expected += list(zip(alone["returns"][:share], alone["lengths"][:share]))
    assert sorted(zip(stats["returns"], stats["lengths"])) == sorted(expected)


def test_online_training_with_several_environments_collects_a_stream_each_and_resumes_exactly(tmp_path):
    import json

    from cwworld.cli import main
    from cwworld.train import read_checkpoint
    from test_train import TINY

    common = ["--config", "cue_corridor_agent", "--no-progress", *TINY, "model.channels=3", "model.action_dim=3",
              "model.head_hidden=8", "data.prefill=30", "data.num_envs=3", "data.collect_every=2",
              "data.collect_steps=12", "train.save_every=2", "train.sample_every=100", "agent.kind=cem",
              "agent.horizon=3", "agent.population=8", "agent.elites=2", "agent.iterations=1",
              "agent.eval_every=2", "agent.eval_episodes=3"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", "--run-dir", str(straight), *common, "train.steps=4"]) == 0
    assert main(["train", "--run-dir", str(split), *common, "train.steps=2"]) == 0
    assert main(["train", "--run-dir", str(split), *common, "train.steps=4"]) == 0
    buffer = ReplayBuffer.load(straight / "replay")
    assert len(buffer) >= 30 + 12  # random prefill, one round by the planner; plus each episode's last frame
    workers = {name.split("_")[0] for name in buffer.streams}
    assert workers == {"w0", "w1", "w2"}
    a, b = (read_checkpoint(run / "checkpoints" / "latest.pt") for run in (straight, split))
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    logs = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (straight, split)]
    drop = ("time", "frames_per_s", "train_minutes")
    assert [{k: v for k, v in m.items() if k not in drop} for m in logs[0]] == \
        [{k: v for k, v in m.items() if k not in drop} for m in logs[1]]
    assert all(1 <= m["eval/length"] <= 100 for m in logs[0] if "eval/length" in m) and "eval/success" in logs[0][1]
