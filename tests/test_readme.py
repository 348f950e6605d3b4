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
