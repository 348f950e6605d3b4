"""Distributed data parallel: two gloo processes on CPU train exactly like one process."""

import json

import pytest
import torch

from cwworld.cli import main
from cwworld.train import read_checkpoint

from test_train import TINY

COMMON = ["--no-progress", *TINY, "train.batch_size=4", "data.workers=0", "train.save_every=2",
          "train.sample_every=100", "train.tensorboard=false"]


def _losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_two_gloo_processes_train_like_one_and_resume_exactly(tmp_path):
    one, two, split = tmp_path / "one", tmp_path / "two", tmp_path / "split"
    assert main(["train", "--run-dir", str(one), *COMMON, "train.steps=4"]) == 0
    # every logged step checks that both ranks hold identical parameters (the run stops otherwise)
    assert main(["train", "--run-dir", str(two), *COMMON, "train.steps=4", "--nproc", "2"]) == 0
    a, b = (read_checkpoint(run / "checkpoints" / "latest.pt") for run in (one, two))
    assert a["step"] == b["step"] == 4
    for name, value in a["model"].items():
        assert torch.allclose(value, b["model"][name], atol=1e-5, rtol=0), name
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-5)  # metrics averaged over the ranks
    assert len(_losses(two)) == 4  # rank 0 alone writes: one line per step
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["latest.pt", "step_000002.pt", "step_000004.pt"]
    # stopped at step 2 and resumed with two processes: the same as straight through
    assert main(["train", "--run-dir", str(split), *COMMON, "train.steps=2", "--nproc", "2"]) == 0
    assert main(["train", "--run-dir", str(split), *COMMON, "train.steps=4", "--nproc", "2"]) == 0
    c = read_checkpoint(split / "checkpoints" / "latest.pt")
    for name, value in b["model"].items():
        assert torch.equal(value, c["model"][name]), name
    # and a single process resumes what two wrote
    assert main(["train", "--run-dir", str(split), *COMMON, "train.steps=5"]) == 0
    assert read_checkpoint(split / "checkpoints" / "latest.pt")["step"] == 5


def test_the_global_batch_must_split_over_the_processes(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "r"), *COMMON, "train.batch_size=3", "train.steps=1",
                 "--nproc", "2"]) == 2
    assert "must split evenly over 2 processes" in capsys.readouterr().err
