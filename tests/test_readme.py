"""The README's runnable examples run as written."""

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _block_after(marker: str) -> str:
    text = README.read_text()
    start = text.index(marker)
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    return match.group(1)


def test_agent_example_runs(capsys):
    exec(compile(_block_after("<!-- agent-example"), "README agent example", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "torch.Size([1, 48]) torch.Size([1, 48])"
    assert lines[1] == "[48, 12]" and lines[2] == "torch.Size([1, 12])"
    assert lines[3].split()[0] == "120"


def test_trained_agent_example_runs(tmp_path, capsys):
    """The example as written, on a run trained for a few steps (so its numbers mean nothing)."""
    from cwworld.cli import main
    from test_train import TINY

    run = tmp_path / "ac"
    assert main(["train", "--config", "cue_corridor_ac", "--run-dir", str(run), "--no-progress", *TINY,
                 "model.head_hidden=8", "data.prefill=40", "data.collect_every=2", "data.collect_steps=8",
                 "train.steps=2", "agent.horizon=3", "agent.starts=8", "agent.hidden=8"]) == 0
    capsys.readouterr()
    code = _block_after("<!-- trained-agent-example").replace('"runs/cue_corridor_ac"', repr(str(run)))
    exec(compile(code, "README trained-agent example", "exec"), {})
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"success \d+%, mean episode length \d+", line), line
    # how it acts can change (what it learned cannot), and benchmarks/agent_eval.py repeats that
    from cwworld.agents import load_agent
    from cwworld.config import ConfigError

    agent, _ = load_agent(run, overrides=["agent.plan_horizon=2", "agent.plan_discount=0.5"])
    assert (agent.planner.config.horizon, agent.planner.config.discount) == (2, 0.5)
    with pytest.raises(ConfigError, match=r"only agent\.\* settings.*model.levels=3"):
        load_agent(run, overrides=["model.levels=3"])
    spec = importlib.util.spec_from_file_location("agent_eval", Path(__file__).parents[1] / "benchmarks" / "agent_eval.py")
    agent_eval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent_eval)
    rows = [agent_eval.evaluate(str(run), settings, episodes=2, envs=2) for settings in ([], ["agent.plan_horizon=2"])]
    assert [(r["episodes"], r["step"], r["variant"]) for r in rows] == [(2, 2, "(as trained)"), (2, 2, "agent.plan_horizon=2")]
    assert all(0.0 <= r["success"] <= 1.0 and 1 <= r["length"] <= 100 for r in rows)
