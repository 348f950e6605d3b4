"""Exported and pretrained models: export a run, load it back by name or file."""

import pytest
import torch

import cwworld
from cwworld.pretrained import PRETRAINED, export_pretrained, pretrained_path
from cwworld.train import Trainer

from test_train import tiny_run_config


def test_export_halves_the_weights_and_loads_back_within_fp16(tmp_path, monkeypatch):
    Trainer(tiny_run_config(2), tmp_path / "run", progress=False).train()
    model, config, step = cwworld.load_model(tmp_path / "run")
    monkeypatch.setattr("cwworld.pretrained.FOLDER", tmp_path / "shipped")
    monkeypatch.setitem(PRETRAINED, "tiny", "a test model")
    path = export_pretrained(tmp_path / "run", tmp_path / "shipped" / "tiny.pt")
    assert pretrained_path("pretrained:tiny") == path
    state = torch.load(path, weights_only=True)
    assert state["step"] == step == 2 and state["train_minutes"] > 0 and "optimizer" not in state
    assert all(v.dtype == torch.float16 for v in state["model"].values() if v.is_floating_point())
    loaded, loaded_config, loaded_step = cwworld.load_model("pretrained:tiny")
    assert loaded_config.model == config.model and loaded_step == 2
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype and torch.allclose(a, b, rtol=1e-3, atol=1e-4), name
    with pytest.raises(ValueError, match="no such pretrained model; shipped: .*tiny"):
        cwworld.load_model("pretrained:nope")


def test_cli_export_file_is_accepted_as_a_run(tmp_path, monkeypatch):
    from cwworld.cli import main

    Trainer(tiny_run_config(2), tmp_path / "run", progress=False).train()
    monkeypatch.chdir(tmp_path)
    assert main(["export", "run", "small.pt"]) == 0
    assert main(["export", "run", "small.txt"]) == 2  # refused: not a .pt name
    assert not (tmp_path / "small.txt").exists()
    (tmp_path / "a_file").write_text("")
    assert main(["export", "run", "a_file/small.pt"]) == 2  # a folder under a file: named, no traceback
    assert main(["eval", "small.pt", "--videos", "2", "--horizon", "3", "--no-progress"]) == 0
    assert (tmp_path / "runs" / "small" / "eval" / "metrics.json").exists()  # outputs next to, not inside, the file
    with pytest.raises(ValueError, match="--checkpoint does not apply"):
        cwworld.load_model(tmp_path / "small.pt", checkpoint=tmp_path / "small.pt")
