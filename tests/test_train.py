"""Trainer: run directory contents, atomic checkpoints, exact resume, CLI."""

import json
import os

import pytest
import torch

from cwworld import load_config
from cwworld.cli import main
from cwworld.train import Trainer

TINY = ["model.levels=2", "model.factor=2", "model.stoch=4", "model.deter=8", "model.hidden=8",
        "model.embed=16", "model.cnn_depth=4", "model.enc_dense_layers=2",
        "train.batch_size=2", "train.seq_len=6", "train.log_every=1", "data.num_videos=8", "data.workers=0",
        "eval.context=4", "eval.horizon=4", "eval.batch_size=2", "eval.num_videos=2"]


def tiny_run_config(steps, save_every=2):
    return load_config("quickstart", TINY + [f"train.steps={steps}", f"train.save_every={save_every}"])


def test_run_directory_holds_config_checkpoints_metrics_and_gif(tmp_path):
    metrics = Trainer(tiny_run_config(4), tmp_path, progress=False).train()
    mask = os.umask(0)
    os.umask(mask)
    for written in ("config.yaml", "checkpoints/latest.pt", "samples/step_000004.gif"):
        assert (tmp_path / written).stat().st_mode & 0o777 == 0o666 & ~mask  # like any new file, not 0600
    assert load_config(tmp_path / "config.yaml").model.levels == 2
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest.pt", "step_000002.pt", "step_000004.pt"]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert all(line["loss"] > 0 and line["frames_per_s"] > 0 for line in lines)
    assert lines[-1]["loss"] == metrics["loss"]
    gif = tmp_path / "samples" / "step_000004.gif"
    assert gif.read_bytes()[:6] == b"GIF89a"
    state = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    assert state["step"] == 4


def test_resume_continues_exactly(tmp_path):
    straight = Trainer(tiny_run_config(6), tmp_path / "a", progress=False)
    straight.train()
    first = Trainer(tiny_run_config(3, save_every=3), tmp_path / "b", progress=False)
    first.train()
    resumed = Trainer(tiny_run_config(6, save_every=3), tmp_path / "b", progress=False)
    assert resumed.step == 3
    resumed.train()
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    log_a = [json.loads(l)["loss"] for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(l)["loss"] for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert log_a == log_b


def test_nonfinite_loss_skips_the_update_and_stops_after_max(tmp_path):
    trainer = Trainer(tiny_run_config(5), tmp_path, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        trainer.model.decoder.dense.bias.fill_(float("nan"))
    metrics = trainer.train_step(next(trainer.batches()))
    assert metrics["skipped_updates"] == 1.0
    after = trainer.model.state_dict()
    assert torch.equal(before["cells.0.gru.weight_hh"], after["cells.0.gru.weight_hh"])
    trainer.config.train.max_nonfinite = 2
    try:
        trainer.train()
        raised = False
    except RuntimeError as err:
        raised = "consecutive non-finite" in str(err)
    assert raised


def test_cli_train_and_config(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--no-progress", *TINY, "train.steps=2"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "latest.pt").exists()
    assert main(["config", "mmnist", "model.levels=2"]) == 0
    assert "levels: 2" in capsys.readouterr().out
    assert main(["train", "--run-dir", str(tmp_path / "x"), "model.levles=2"]) == 2
    assert "did you mean 'model.levels'" in capsys.readouterr().err
    # without --config an existing run goes on with its own config: train it longer with one override
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--no-progress", "train.steps=3"]) == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert load_config(tmp_path / "run" / "config.yaml").model.deter == 8


def test_a_second_trainer_on_a_busy_run_directory_stops_at_once_naming_the_holder(tmp_path):
    from cwworld.utils import RunDirectoryBusy

    first = Trainer(tiny_run_config(2), tmp_path, progress=False)
    with pytest.raises(RunDirectoryBusy, match=rf"process {os.getpid()} is training in it"):
        Trainer(tiny_run_config(2), tmp_path, progress=False)
    first.train()  # releases the directory when done
    second = Trainer(tiny_run_config(3), tmp_path, progress=False)  # resumes
    assert second.step == 2
    second.close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="must be a folder, found a file"):
        Trainer(tiny_run_config(2), tmp_path / "file", progress=False)


def test_broken_checkpoints_are_named_and_the_newest_intact_one_is_used(tmp_path):
    from cwworld.train import load_model

    Trainer(tiny_run_config(4), tmp_path, progress=False).train()  # step_2, step_4 and latest
    folder = tmp_path / "checkpoints"
    latest = folder / "latest.pt"
    raw = latest.read_bytes()
    latest.write_bytes(raw[: len(raw) // 2])  # cut short
    with pytest.warns(UserWarning, match=r"step_000004.pt: loaded instead.*latest.pt: cannot read the checkpoint"):
        _, _, step = load_model(tmp_path)
    assert step == 4
    (folder / "step_000004.pt").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"step_000002.pt: loaded instead.*step_000004.pt: the checkpoint file is empty"):
        assert load_model(tmp_path)[2] == 2
    resumed = Trainer(tiny_run_config(6), tmp_path, progress=False)  # resumes from the intact one
    assert resumed.step == 2
    resumed.close()
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": Evil(), "config": {}, "step": 1}))
    with pytest.raises(ValueError, match=r"evil.pt: refused to load: the file holds Python objects"):
        load_model(tmp_path, evil)
    other = tmp_path / "other"
    Trainer(load_config("quickstart", TINY + ["train.steps=1", "model.deter=12"]), other, progress=False).train()
    state = torch.load(other / "checkpoints" / "latest.pt", weights_only=True)
    state["config"] = torch.load(folder / "step_000002.pt", weights_only=True)["config"]
    torch.save(state, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match=r"mismatch.pt: the checkpoint's weights do not fit this model.*size mismatch"):
        load_model(tmp_path, tmp_path / "mismatch.pt")
    # another run's checkpoint given as this run's: refused (its results would be named as this run's)
    with pytest.raises(ValueError, match=r"latest.pt: the checkpoint holds another model than .*config.yaml "
                                         r"\(model.deter: 12 in the checkpoint, 8 in the run\)"):
        load_model(tmp_path, other / "checkpoints" / "latest.pt")
    assert load_model(other / "checkpoints" / "latest.pt")[2] == 1  # on its own, it loads
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes.txt: not a checkpoint \(a file written by torch.save starts"):
        load_model(tmp_path, tmp_path / "notes.txt")


def test_a_sample_gif_lost_to_a_kill_is_made_on_resume(tmp_path):
    first = Trainer(tiny_run_config(2, save_every=2), tmp_path, progress=False)
    first.config.train.sample_every = 2
    first.train()
    gif = tmp_path / "samples" / "step_000002.gif"
    gif.unlink()  # as if the run was killed after its checkpoint, before the GIF
    config = tiny_run_config(3, save_every=2)
    config.train.sample_every = 2
    Trainer(config, tmp_path, progress=False).train()
    assert gif.read_bytes()[:6] == b"GIF89a"


def test_at_80_columns_the_progress_bar_keeps_its_eta(tmp_path):
    import io
    import re

    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True)
    Trainer(tiny_run_config(2), tmp_path, console=console, progress=True).train()
    lines = [re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", line) for line in buf.getvalue().splitlines()]
    bar = [line for line in lines if "step 2/2" in line and "ETA" in line]
    assert bar and re.search(r"ETA \d+:\d\d:\d\d", bar[-1]), bar[-1:]


def test_in_a_log_file_each_logged_step_is_one_whole_line_however_narrow(tmp_path):
    import io
    import re

    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=40, force_terminal=False)  # a log file: no live bar
    Trainer(tiny_run_config(2), tmp_path, console=console, progress=True).train()
    lines = [line for line in buf.getvalue().splitlines() if line.startswith("step 2/2 loss=")]
    assert len(lines) == 1 and len(lines[0]) > 40, lines
    assert re.search(r"loss=-?\d.* kl0=.* frames/s ETA \d+\.\d min$", lines[0]), lines[0]


def test_max_minutes_stops_the_run_and_its_resume(tmp_path):
    config = tiny_run_config(50)
    config.train.max_minutes = 1e-9  # reached by the first step
    Trainer(config, tmp_path, progress=False).train()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1]
    assert 0 < lines[0]["train_minutes"] < 1
    state = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    assert state["step"] == 1 and state["train_seconds"] == pytest.approx(60 * lines[0]["train_minutes"])
    resumed = Trainer(config, tmp_path, progress=False)  # the time is summed over resumes: nothing left
    assert resumed.train() == {} and resumed.step == 1
    config.train.max_minutes = 10.0  # a larger budget: the run goes on to train.steps
    config.train.steps = 3
    assert Trainer(config, tmp_path, progress=False).train()["train_minutes"] > lines[0]["train_minutes"]
    with pytest.raises(Exception, match="max_minutes"):
        load_config("quickstart", ["train.max_minutes=0"])


def test_the_command_line_prints_warnings_as_one_line_without_the_source(capsys):
    import warnings

    assert main(["presets"]) == 0
    text = warnings.formatwarning(UserWarning("MineRL: skipping stream s: bad"), UserWarning, "/x/thread.py", 58)
    assert text == "cwworld: warning: MineRL: skipping stream s: bad\n"


def test_sync_every_leaves_the_step_without_host_reads_and_trains_like_every_step_reads(tmp_path):
    """``train.sync_every=3``: the training step reads nothing back to the host (counted by
    cwworld.syncs.record_syncs), the metrics are read at log steps only, and the weights and the
    logged losses equal a run that reads every step to within fused Adam's rounding (1e-5)."""
    from cwworld.syncs import record_syncs

    every = Trainer(load_config("quickstart", TINY + ["train.steps=6", "train.save_every=6",
                                                                 "train.log_every=3"]), tmp_path / "a", progress=False)
    every.train()
    lazy = Trainer(load_config("quickstart", TINY + ["train.steps=6", "train.save_every=6", "train.log_every=3",
                                                     "train.sync_every=3"]), tmp_path / "b", progress=False)
    lazy.train()
    for (name, a), b in zip(every.model.state_dict().items(), lazy.model.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name
    log_a = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_b] == [3, 6] == [r["step"] for r in log_a]
    for a, b in zip(log_a, log_b):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["skipped_updates"] == 0.0 and b["frames_per_s"] > 0

    batch = next(lazy.batches())
    with record_syncs() as reads:
        for _ in range(2):
            metrics = lazy.train_step(batch)
    assert reads.summary() == {}
    with record_syncs() as reads:
        every.train_step(batch)
    assert any("train.py" in site for site in reads.sites)  # the counter sees the per-step reads
    assert isinstance(lazy.read_metrics(metrics)["loss"], float)


def test_sync_every_skips_a_nonfinite_update_on_the_device_and_stops_after_max(tmp_path):
    trainer = Trainer(load_config("quickstart", TINY + ["train.steps=20", "train.sync_every=4",
                                                        "train.max_nonfinite=3"]), tmp_path, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        trainer.model.decoder.dense.bias.fill_(float("nan"))
    batch = next(trainer.batches())
    metrics = trainer.read_metrics(trainer.train_step(batch))
    assert metrics["skipped_updates"] == 1.0 and trainer.nonfinite_in_a_row == 1
    after = trainer.model.state_dict()
    assert torch.equal(before["cells.0.gru.weight_hh"], after["cells.0.gru.weight_hh"])
    assert trainer.optimizer.state_dict()["state"][0]["step"].item() == 0  # the skipped step is not counted
    trainer.train_step(batch), trainer.train_step(batch)
    trainer.read_metrics({})
    assert (trainer.nonfinite_in_a_row, trainer.nonfinite_total) == (3, 3)
    with pytest.raises(RuntimeError, match="consecutive non-finite"):
        trainer.train()


def test_cuda_graph_is_refused_where_it_cannot_work(tmp_path):
    from cwworld.config import ConfigError

    with pytest.raises(ConfigError, match="train.cuda_graph: .*set train.sync_every > 1"):
        load_config("quickstart", TINY + ["train.cuda_graph=true"])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="train.cuda_graph: it needs a CUDA device, found .*cpu"):
            Trainer(load_config("quickstart", TINY + ["train.cuda_graph=true", "train.sync_every=10",
                                                      "train.device=cpu"]), tmp_path, progress=False)
