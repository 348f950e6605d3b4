"""A training run killed with SIGKILL and re-run on its directory matches an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from cwworld.train import Trainer

from test_train import TINY, tiny_run_config

STEPS = 10


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def _command(run_dir):
    code = "import sys; from cwworld.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code, "train", "--run-dir", str(run_dir), "--no-progress", *TINY,
            f"train.steps={STEPS}", "train.save_every=1", "train.sample_every=100"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_then_rerun_continues_like_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    config = tiny_run_config(STEPS, save_every=1)
    config.train.sample_every = 100
    Trainer(config, straight, progress=False).train()
    expected = _losses(straight)
    assert sorted(expected) == list(range(1, STEPS + 1))

    kill_after = random.Random(os.urandom(8)).randint(2, STEPS - 3)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_command(run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count("\n") >= kill_after:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = len((run / "metrics.jsonl").read_text().splitlines())
    assert killed_at < STEPS, f"killed too late (after step {killed_at})"

    done = subprocess.run(_command(run), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed" in done.stderr
    resumed = _losses(run)
    assert sorted(resumed) == list(range(1, STEPS + 1)), f"killed after step {killed_at}"
    assert resumed == expected, f"killed after step {killed_at}"
    assert not list((run / "checkpoints").glob(".*.tmp"))  # a save cut by the kill is cleaned up
