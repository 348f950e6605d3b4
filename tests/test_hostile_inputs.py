"""The hostile-input sweep of issue 12 (benchmarks/hostile_inputs.py) as a slow test: every case
must end in a message naming what was wrong, or be handled and said so (about 3 minutes)."""

import importlib.util
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_every_hostile_input_is_handled(capsys):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "hostile_inputs.py"
    spec = importlib.util.spec_from_file_location("hostile_inputs", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    code = module.main([])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{len(module.CASES)} cases: ok {len(module.CASES)}," in out
