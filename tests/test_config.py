"""Configs: presets, YAML round trip, overrides, validation messages."""

import pytest

from cwworld import Config, ConfigError, load_config, save_config
from cwworld.config import preset_names


def test_presets_carry_the_official_hyperparameters():
    mm = load_config("mmnist")
    assert (mm.model.levels, mm.model.factor, mm.model.stoch, mm.model.deter, mm.model.hidden) == (3, 6, 20, 200, 200)
    assert (mm.model.dec_stddev, mm.model.embed, mm.train.lr, mm.train.batch_size) == (1.0, 1000, 3e-4, 50)
    assert (mm.train.seq_len, mm.eval.context, mm.eval.horizon, mm.train.adam_eps) == (100, 36, 964, 1e-4)
    mine = load_config("minerl_navigate")
    assert (mine.model.stoch, mine.model.deter, mine.model.hidden, mine.model.dec_stddev) == (100, 800, 800, 0.4)
    assert (mine.train.lr, mine.eval.horizon, mine.model.channels) == (1e-4, 464, 3)
    mazes = load_config("gqn_mazes")
    assert (mazes.model.stoch, mazes.model.deter, mazes.model.dec_stddev, mazes.eval.horizon) == (20, 200, 0.1, 264)
    assert load_config("rssm").model.levels == 1
    assert load_config("notmpabs").model.factor == 1
    assert load_config("kth").model.channels == 1
    assert {"mmnist", "minerl_navigate", "gqn_mazes", "kth", "rssm", "notmpabs", "quickstart"} <= set(preset_names())


def test_preset_can_be_named_by_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: mmnist\nmodel:\n  levels: 2\n")
    cfg = load_config(path)
    assert cfg.model.levels == 2 and cfg.model.deter == 200


def test_overrides_are_parsed_as_yaml_and_typed():
    cfg = load_config("mmnist", ["model.levels=2", "model.beta=[1, 0.5]", "train.lr=1e-3", "model.kl_balance=0.8"])
    assert cfg.model.levels == 2 and cfg.model.beta == [1.0, 0.5] and cfg.train.lr == 1e-3
    assert cfg.model.kl_balance == 0.8


def test_unknown_key_suggests_the_closest_one():
    with pytest.raises(ConfigError, match=r"unknown key 'model.levles' \(did you mean 'model.levels'\?\)"):
        load_config("mmnist", ["model.levles=2"])
    with pytest.raises(ConfigError, match=r"unknown key 'trian' \(did you mean 'train'\?\)"):
        Config.from_dict({"trian": {"lr": 1.0}})


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  detr: 5\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*unknown key 'model.detr' \(did you mean 'model.deter'\?\)"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ("model.levels=0", r"model.levels must be >= 1, got 0"),
    ("model.factor=-2", r"model.factor must be >= 1, got -2"),
    ("model.kl_balance=1.5", r"model.kl_balance must be >= 0.0 and <= 1.0, got 1.5"),
    ("model.dec_stddev=0", r"model.dec_stddev must be > 0.0, got 0.0"),
    ("model.levels=two", r"model.levels expects int, got 'two'"),
    ("model.action_levels=some", r"model.action_levels expects one of 'all', 'bottom', got 'some'"),
    ("model.init=keras", r"model.init expects one of 'tf', 'torch', got 'keras'"),
    ("model.stoch=[1, 2]", r"model.stoch: expected one value per level \(3\), got 2"),
    ("train.device=tpu", r"train.device: expected 'auto', 'cpu', 'cuda'"),
    ("model.image_size=32", r"model.image_size must be >= 64, got 32"),
])
def test_bad_values_name_the_allowed_range(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("mmnist", [override])


def test_unknown_preset_suggests_a_name():
    with pytest.raises(ConfigError, match=r"no such file and no such preset \(did you mean 'mmnist'\?\)"):
        load_config("mmnst")


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="expected 'section.key=value'"):
        load_config(None, ["model.levels"])


def test_yaml_round_trip(tmp_path):
    cfg = load_config("minerl_navigate", ["model.beta=[1.0, 0.5, 0.25]", "model.use_obs=[true, true, false]"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"]  # no temp file left behind


def test_action_presets_use_causal_windows_and_video_presets_the_papers():
    for name in ("cue_corridor_online", "cue_corridor_plan", "cue_corridor_long_plan", "minerl_navigate_actions",
                 "cue_corridor_clockwork", "cue_corridor_long_clockwork"):
        assert load_config(name).model.windows == "causal", name
    long = load_config("cue_corridor_long_clockwork")  # the long corridor with the short one's window heads
    assert long.data.env == "cwworld/CueCorridorLong-v0" and long.model.window_ends and long.model.level_reward_gate
    assert (long.agent.far_search, long.agent.initial_probs) == ("compositions", "replay")
    for name in ("mmnist", "minerl_navigate", "gqn_mazes", "quickstart"):
        assert load_config(name).model.windows == "paper", name
    with pytest.raises(ConfigError, match="model.windows"):
        load_config("mmnist", ["model.windows=sideways"])


@pytest.mark.parametrize("override", ["train.lr=.nan", "model.dec_stddev=.nan", "model.kl_balance=.nan",
                                      "model.beta=.nan", "train.grad_clip=.nan", "data.speed=.nan",
                                      "data.speed=.inf"])
def test_non_finite_numbers_are_refused_by_name(override):
    with pytest.raises(ConfigError, match=rf"{override.split('=')[0]}.*finite"):
        load_config("quickstart", [override])


def test_cli_refuses_zero_and_negative_counts(capsys):
    from cwworld.cli import main

    for args in (["eval", "runs/x", "--samples", "0"], ["eval", "runs/x", "--horizon", "-1"],
                 ["predict", "runs/x", "--video", "v.mp4", "--context", "-3"],
                 ["predict", "runs/x", "--video", "v.mp4", "--fps", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        assert "expected a" in capsys.readouterr().err


def test_cli_takes_overrides_anywhere_and_config_defaults_to_the_quickstart(tmp_path, capsys, monkeypatch):
    from cwworld import cli

    seen = {}
    monkeypatch.setattr(cli, "_train", lambda args: seen.setdefault("train", (args.run_dir, args.overrides)) and 0)
    assert cli.main(["train", "train.steps=1", "--run-dir", str(tmp_path), "model.levels=2", "--no-progress"]) == 0
    assert seen["train"] == (str(tmp_path), ["train.steps=1", "model.levels=2"])
    assert cli.main(["config", "model.levels=3"]) == 0
    printed = capsys.readouterr().out
    assert "levels: 3" in printed and "steps: 1800" in printed  # the quickstart, with the override
    assert cli.main(["presets"]) == 0
    lines = {line.split()[0]: " ".join(line.split()[1:]) for line in capsys.readouterr().out.splitlines()}
    assert lines["quickstart"].startswith("A small model on generated Moving MNIST") and len(lines) >= 10
    monkeypatch.setattr("cwworld.evaluate.evaluate_run", lambda run_dir, out, **kw: seen.setdefault(
        "eval", (run_dir, kw["overrides"])) and (_ for _ in ()).throw(FileNotFoundError("stop here")))
    assert cli.main(["eval", str(tmp_path), "data.path=/data/x"]) == 2
    assert seen["eval"] == (str(tmp_path), ["data.path=/data/x"])


def test_matched_rssm_is_one_level_at_the_cw_vae_parameter_count_and_sizes_the_preset():
    from cwworld.model import matched_rssm, parameter_count

    cw = load_config("mmnist_small").model
    rssm = matched_rssm(cw)
    assert rssm.levels == 1 and rssm.deter == rssm.hidden > cw.deter
    target = parameter_count(cw)
    assert parameter_count(rssm) <= target < parameter_count(matched_rssm_wider(rssm))
    assert load_config("mmnist_small_rssm").model.deter == rssm.deter == 342  # the preset's width is this one
    agent = load_config("cue_corridor_ac").model  # heads and actions too; upper level reward heads dropped
    assert not matched_rssm(agent).level_reward_heads
    assert abs(parameter_count(matched_rssm(agent)) / parameter_count(agent) - 1) < 0.01


def matched_rssm_wider(config):
    import dataclasses

    return dataclasses.replace(config, deter=config.deter + 1, hidden=config.hidden + 1)
