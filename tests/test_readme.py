"""The README's runnable examples run as written."""

import re
from pathlib import Path

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
