"""Faults never end in a wrong record (issue 17): diverging runs, lost or damaged checkpoints, a full disk, a
max_steps budget that is raised, orphan temporary files."""

import errno
import json
import os
from pathlib import Path

import pytest
import torch

import attention
import tasks.trainer as trainer_mod
from tasks import records
from tasks.trainer import CheckpointError, Trainer, TrainingDiverged

from test_harness_trainer import CFG, assert_same, make_task, weights

QUIET = {**CFG, "checkpoint_every_steps": 0, "checkpoint_every_minutes": 0, "log_every_steps": 0}


@pytest.fixture
def no_attention_checks():
    """As on a GPU: the attention library does not look at the scores' values, so nan flows through."""
    previous = attention.set_checks(False)
    yield
    attention.set_checks(previous)


def ckpt(run_dir, name="last.pt"):
    return Path(run_dir) / "checkpoints" / name


# -- 1. a diverging run ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("log_every", [0, 1])  # checked at checkpoints / epoch ends, and at logging steps
def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, no_attention_checks, log_every):
    """The learning rate jumps to 1e30 after step 4: the loss is nan from step 6 on. Training stops with an error
    that names the step; last.pt is the step-3 checkpoint (finite weights), no best.pt is written."""
    run = tmp_path / "run"
    trainer = None

    def explode(step):
        if step == 4:
            for group in trainer.optimizer.param_groups:
                group["lr"] = 1e30

    trainer = Trainer(make_task("softmax"), {**CFG, "checkpoint_every_steps": 3, "grad_clip": None,
                                             "log_every_steps": log_every}, run, seed=1, on_step=explode)
    with pytest.raises(TrainingDiverged, match=r"training diverged: the (training loss is|weights are) not finite.* at step \d") as info:
        trainer.fit()
    message = str(info.value)
    assert str(ckpt(run)) in message and "(step 3)" in message and "no record" in message
    state = torch.load(ckpt(run), weights_only=False)
    assert state["step"] == 3 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not ckpt(run, "best.pt").exists()


def test_nan_validation_metric_is_never_an_improvement(tmp_path):
    task = make_task()
    task.evaluate = lambda model, split: {"accuracy": float("nan")}
    with pytest.raises(TrainingDiverged, match=r"validation accuracy is nan after epoch 1"):
        Trainer(task, {**QUIET, "epochs": 1}, tmp_path / "run", seed=1).fit()
    assert not ckpt(tmp_path / "run", "best.pt").exists()


def test_record_is_strict_json_and_refuses_a_nan_headline(tmp_path):
    record = {k: None for k in records.KEYS}
    record.update(metric="accuracy", metrics={"valid": {"accuracy": 0.5, "support": float("nan")}, "test": {}},
                  history=[{"train_loss": float("inf")}])
    path = records.write_record(tmp_path / "r.json", record)

    def reject(token):
        raise ValueError(f"bare {token} in the record")

    back = json.loads(path.read_text(), parse_constant=reject)
    assert back["metrics"]["valid"] == {"accuracy": 0.5, "support": None} and back["history"][0]["train_loss"] is None
    record["metrics"]["test"] = {"accuracy": float("nan")}
    with pytest.raises(records.RecordError, match=r"test accuracy is nan"):
        records.write_record(tmp_path / "bad.json", record)
    assert os.listdir(tmp_path) == ["r.json"]


def test_record_write_failure_leaves_no_temporary_file(tmp_path, monkeypatch):
    record = {k: None for k in records.KEYS}
    record.update(metric="accuracy", metrics={"valid": {"accuracy": 0.5}})

    def full_disk(self, *args, **kwargs):
        Path.write_bytes(self, b"{")  # a part written, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="No space left"):
        records.write_record(tmp_path / "r.json", record)
    assert os.listdir(tmp_path) == []


# -- 3. a missing checkpoint -------------------------------------------------------------------------------------


def test_missing_last_checkpoint_never_overwrites_best(tmp_path):
    run = tmp_path / "run"
    Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1).fit()
    best_bytes = ckpt(run, "best.pt").read_bytes()
    ckpt(run).unlink()
    steps = []
    with pytest.raises(CheckpointError, match=r"last.pt is missing.*trainer.resume=false"):
        Trainer(make_task(), {**QUIET, "epochs": 2}, run, seed=1, on_step=steps.append).fit()
    assert steps == [] and ckpt(run, "best.pt").read_bytes() == best_bytes
    # starting over is explicit; the old best.pt is removed first, so it can never stand for the new run
    summary = Trainer(make_task(), {**QUIET, "epochs": 1, "resume": False}, run, seed=2).fit()
    assert summary["resumed_from"] is None and summary["best_epoch"] == 1
    assert torch.load(ckpt(run, "best.pt"), weights_only=False)["epoch"] == 0


def test_missing_best_checkpoint_is_an_error_not_the_last_model(tmp_path):
    run = tmp_path / "run"
    Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1).fit()
    ckpt(run, "best.pt").unlink()
    with pytest.raises(CheckpointError, match=r"best.pt is missing.*epoch 1 was this run's best"):
        Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1).fit()  # the finished run's final evaluation
    steps = []
    with pytest.raises(CheckpointError, match=r"best.pt is missing"):  # before training more, not after
        Trainer(make_task(), {**QUIET, "epochs": 2}, run, seed=1, on_step=steps.append).fit()
    assert steps == []


def test_best_checkpoint_of_another_epoch_is_refused(tmp_path):
    run = tmp_path / "run"
    Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1).fit()
    state = torch.load(ckpt(run, "best.pt"), weights_only=False)
    torch.save({**state, "epoch": 4}, ckpt(run, "best.pt"))
    with pytest.raises(CheckpointError, match=r"holds the model of epoch 5, but this run's best epoch is 1"):
        Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1).fit()


# -- 4. max_steps continues a run --------------------------------------------------------------------------------


def test_raising_max_steps_continues_mid_epoch_exactly(tmp_path):
    """5 steps, then the same run with max_steps=12, equals a fresh 12-step run (8 steps an epoch): the partial
    epoch is not counted as an epoch, and the continuation resumes inside it."""
    cfg = {**QUIET, "epochs": 5}
    first = Trainer(make_task(), {**cfg, "max_steps": 5}, tmp_path / "a", seed=1).fit()
    assert first["epochs"] == 0 and first["best_epoch"] is None and first["best_step"] == 5 and first["steps"] == 5
    continued = Trainer(make_task(), {**cfg, "max_steps": 12}, tmp_path / "a", seed=1).fit()
    fresh = Trainer(make_task(), {**cfg, "max_steps": 12}, tmp_path / "b", seed=1).fit()
    assert continued["resumed_from"] == {"epoch": 0, "batch_in_epoch": 5, "step": 5}
    assert_same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    for key in ("valid", "test", "epochs", "steps", "best_epoch", "best_step"):
        assert continued[key] == fresh[key], key
    assert fresh["epochs"] == 1 and fresh["steps"] == 12
    assert [h["train_loss"] for h in continued["history"]] == [h["train_loss"] for h in fresh["history"]]


def test_max_steps_at_an_epoch_end_is_an_epoch(tmp_path):
    summary = Trainer(make_task(), {**QUIET, "epochs": 5, "max_steps": 8}, tmp_path / "r", seed=1).fit()
    assert summary["epochs"] == 1 and summary["best_epoch"] == 1 and summary["best_step"] == 8


# -- 7. damaged checkpoints --------------------------------------------------------------------------------------


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "random": os.urandom(len(data)), "empty": b""}[how])


@pytest.mark.parametrize("how", ["truncated", "random", "empty"])
def test_damaged_last_checkpoint_names_the_file_and_the_way_out(tmp_path, how):
    run = tmp_path / "run"
    Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1).fit()
    _damage(ckpt(run), how)
    with pytest.raises(CheckpointError) as info:
        Trainer(make_task(), {**QUIET, "epochs": 2}, run, seed=1).fit()
    message = str(info.value)
    assert f"{ckpt(run)} is damaged" in message and "trainer.resume=false" in message
    assert "best.pt is not affected" in message  # the other checkpoint: still usable for an evaluation


@pytest.mark.parametrize("how", ["truncated", "random", "empty"])
def test_damaged_best_checkpoint_names_the_file(tmp_path, how):
    run = tmp_path / "run"
    Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1).fit()
    _damage(ckpt(run, "best.pt"), how)
    with pytest.raises(CheckpointError, match=rf"{ckpt(run, 'best.pt')} is damaged.*trainer.resume=false"):
        Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1).fit()


def test_checkpoints_are_flushed_to_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    trainer_mod.atomic_save({"x": torch.ones(3)}, tmp_path / "c.pt")
    assert events[:2] == ["fsync", "replace"]
    assert os.listdir(tmp_path) == ["c.pt"]


# -- 8. a full disk ----------------------------------------------------------------------------------------------


class _FullDisk:
    """A file whose writes fail with ENOSPC after ``room`` bytes, as on a full disk."""

    def __init__(self, path, mode, room):
        self.file, self.room = open(path, mode), room

    def write(self, data):
        if len(data) > self.room:
            self.file.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_full_disk_while_checkpointing_says_so_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1).fit()
    before = ckpt(run).read_bytes()
    monkeypatch.setattr(trainer_mod, "open", lambda path, mode="r": _FullDisk(path, mode, 1000), raising=False)
    with pytest.raises(CheckpointError) as info:
        Trainer(make_task(), {**QUIET, "epochs": 2}, run, seed=1).fit()
    message = str(info.value)
    assert "No space left on device" in message and str(run / "checkpoints") in message
    assert "previous" in message and "kept" in message
    assert ckpt(run).read_bytes() == before and sorted(os.listdir(run / "checkpoints")) == ["best.pt", "last.pt"]


# -- 10. orphans -------------------------------------------------------------------------------------------------


def test_orphan_temporary_checkpoints_are_removed_on_start(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    dead = run / "checkpoints" / "last.pt.tmp-999999999"  # no such process: left by a kill -9
    alive = run / "checkpoints" / f"last.pt.tmp-{os.getppid()}"  # a live process may still be writing it
    dead.write_bytes(b"half a checkpoint")
    alive.write_bytes(b"being written")
    trainer = Trainer(make_task(), {**QUIET, "epochs": 1}, run, seed=1)
    trainer.setup()
    assert not dead.exists() and alive.exists()
