"""The hostile-input sweep of issue 12 (benchmarks/hostile_inputs.py) as a slow test: every case
must end in a message naming what was wrong, or be handled and said so (about 3 minutes)."""

import pytest

from conftest import load_benchmark


@pytest.mark.slow
def test_every_hostile_input_is_handled(capsys):
    module = load_benchmark("hostile_inputs")
    code = module.main([])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{len(module.CASES)} cases: ok {len(module.CASES)}," in out
