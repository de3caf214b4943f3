"""The trainer: same seed -> same weights; kill + resume -> the weights of an uninterrupted run; W&B offline."""

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tasks.checkpoints import atomic_save
from tasks.runtime import move_to
from tasks.snli.task import SNLITask
from tasks.trainer import Progress, Trainer

DATA = Path(__file__).parent / "data"


def make_task(attention="fusedmax"):
    params = {"name": attention, "lam": 0.1} if attention in ("fusedmax", "oscarmax") else {"name": attention}
    return SNLITask(attention=params, data={"root": str(DATA / "snli"), "max_examples": {"train": 80}},
                    embeddings={"path": str(DATA / "glove" / "glove.tiny.16d.txt"), "dim": 16},
                    model={"hidden": 8}, batch_size=10, attention_examples=2, progress=False)


CFG = {"threads": 1, "epochs": 2, "patience": 0, "checkpoint_every_steps": 3, "progress": False, "device": "cpu",
       "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 1e-4}, "log_every_steps": 1}


def weights(run_dir):
    return torch.load(Path(run_dir) / "checkpoints" / "last.pt", weights_only=False)["model"]


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class Killed(Exception):
    """The process dies here, as on a kill -9: nothing after it runs or is written."""


def die():
    raise Killed


def batches_with(train_batches, step, action=die):
    """A task's ``train_batches`` whose batches run ``action`` when the trainer asks for the batch of optimizer
    step ``step`` (1-based, counted over this run's batches): the steps before it are done, their checkpoints
    written. By default the process dies there (``Killed``). The batches keep their length (the trainer reads it)."""
    asked = itertools.count(1)
    return lambda *args: _Watched(train_batches(*args), asked, step, action)


def dies_before_step(task, step):
    task.train_batches = batches_with(task.train_batches, step)
    return task


class _Watched:
    def __init__(self, batches, asked, step, action):
        self.batches, self.asked, self.step, self.action = batches, asked, step, action

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            if next(self.asked) == self.step:
                self.action()
            yield batch


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """CFG's run with seed 1, never stopped: (its summary, its run dir)."""
    run = tmp_path_factory.mktemp("uninterrupted")
    return Trainer(make_task(), CFG, run, seed=1).fit(), run


def test_same_seed_same_result(tmp_path):
    s1 = Trainer(make_task(), CFG, tmp_path / "a", seed=3).fit()
    s2 = Trainer(make_task(), CFG, tmp_path / "b", seed=3).fit()
    assert_same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert s1["valid"] == s2["valid"] and s1["history"][-1]["train_loss"] == s2["history"][-1]["train_loss"]
    Trainer(make_task(), CFG, tmp_path / "c", seed=4).fit()
    assert not all(torch.equal(x, y) for x, y in zip(weights(tmp_path / "a").values(),
                                                      weights(tmp_path / "c").values()))


def assert_resumed_like(resumed, run_dir, uninterrupted):
    full, full_dir = uninterrupted
    assert_same(weights(full_dir), weights(run_dir))
    assert resumed["valid"] == full["valid"] and resumed["test"] == full["test"]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]
    assert resumed["steps"] == full["steps"] == 16


# killed before step 6 (last.pt of step 3, mid-epoch), 8 (step 6: the epoch's last steps and its end are redone),
# 10 (step 9, inside the second epoch: best.pt of epoch 1 is checked on resume); 8 batches an epoch
@pytest.mark.parametrize("killed_before", [6, 8, 10])
def test_kill_and_resume_equals_uninterrupted(tmp_path, killed_before, uninterrupted):
    with pytest.raises(Killed):  # no checkpoint for the steps after the last one saved: they are redone
        Trainer(dies_before_step(make_task(), killed_before), CFG, tmp_path / "killed", seed=1).fit()
    resumed = Trainer(make_task(), CFG, tmp_path / "killed", seed=1).fit()
    assert resumed["resumed_from"] is not None and resumed["resumed_from"]["step"] < killed_before
    assert_resumed_like(resumed, tmp_path / "killed", uninterrupted)


def test_kill_9_of_a_training_process_then_the_same_command_resumes(tmp_path, uninterrupted):
    """A real process, killed with SIGKILL while it trains (before step 11, in the second epoch): its run dir lock,
    checkpoints and temporary files are what a kill leaves; resuming gives the uninterrupted run's weights."""
    run, waiting = tmp_path / "run", tmp_path / "waiting"
    child = f"""
import sys, time
sys.path[:0] = [{str(Path(__file__).parent)!r}]
from test_harness_trainer import CFG, batches_with, make_task
from tasks.trainer import Trainer
def wait_to_be_killed():
    open({str(waiting)!r}, "w").close()
    time.sleep(600)
task = make_task()
task.train_batches = batches_with(task.train_batches, 11, wait_to_be_killed)
Trainer(task, CFG, {str(run)!r}, seed=1).fit()
"""
    process = subprocess.Popen([sys.executable, "-c", child], cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 300
        while not waiting.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert waiting.exists(), f"the training process did not reach step 11 (exit code {process.poll()})"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    resumed = Trainer(make_task(), CFG, run, seed=1).fit()
    assert resumed["resumed_from"] == {"epoch": 1, "batch_in_epoch": 1, "step": 9}
    assert_resumed_like(resumed, run, uninterrupted)


def test_finished_run_is_not_retrained(tmp_path):
    first = Trainer(make_task(), CFG, tmp_path / "r", seed=1).fit()
    again = Trainer(dies_before_step(make_task(), 1), CFG, tmp_path / "r", seed=1).fit()  # no batch asked for
    assert again["valid"] == first["valid"] and again["epochs"] == first["epochs"]


def test_early_stopping_max_steps_and_sgd_halving(tmp_path):
    cfg = {**CFG, "epochs": 20, "patience": 1, "optimizer": {"name": "sgd", "lr": 1e-9},
           "lr_decay": {"factor": 0.5, "patience": 0}}
    summary = Trainer(make_task(), cfg, tmp_path / "es", seed=1).fit()
    assert summary["epochs"] < 20  # an lr of 1e-9 cannot improve the validation accuracy
    lrs = [h["lr"] for h in summary["history"]]
    assert lrs[-1] == pytest.approx(1e-9 * 0.5 ** (len(lrs) - 1))
    capped = Trainer(make_task(), {**CFG, "max_steps": 5}, tmp_path / "cap", seed=1).fit()
    assert capped["steps"] == 5


def test_a_checkpoint_written_before_the_progress_dataclass_still_resumes(tmp_path, uninterrupted):
    """Checkpoints hold the run's progress as one entry (``progress``, the fields of ``Progress``); those written
    before held its fields at the top level, the latest additions missing: they resume as they did."""
    import dataclasses

    with pytest.raises(Killed):
        Trainer(dies_before_step(make_task(), 6), CFG, tmp_path / "old", seed=1).fit()
    path = tmp_path / "old" / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=False)
    progress = state.pop("progress")
    assert set(progress) == {f.name for f in dataclasses.fields(Progress)} and progress["step"] == 3
    assert not set(progress) & set(state)  # saved once, not also at the top level
    for late in ("decaying", "stopped_early", "epoch_batches"):  # added after the first checkpoints were written
        del progress[late]
    torch.save({**state, **progress}, path)  # the old layout
    resumed = Trainer(make_task(), CFG, tmp_path / "old", seed=1).fit()
    assert resumed["resumed_from"] == {"epoch": 0, "batch_in_epoch": 3, "step": 3}
    full, full_dir = uninterrupted
    assert_same(weights(full_dir), weights(tmp_path / "old"))
    assert resumed["valid"] == full["valid"]
    assert [(h["step"], h["train_loss"], h["valid"]) for h in resumed["history"]] == \
        [(h["step"], h["train_loss"], h["valid"]) for h in full["history"]]


def test_atomic_save_and_move_to(tmp_path):
    atomic_save({"x": torch.ones(2)}, tmp_path / "c.pt")
    assert os.listdir(tmp_path) == ["c.pt"]
    moved = move_to({"a": [torch.ones(1), (torch.zeros(1), 3)]}, torch.device("cpu"))
    assert moved["a"][1][1] == 3


def test_test_end_writes_attention_maps(tmp_path):
    Trainer(make_task("sparsemax"), {**CFG, "epochs": 1}, tmp_path / "m", seed=1).fit()
    assert (tmp_path / "m" / "attention_test.json").exists()


def test_wandb_offline_writes_run_without_network(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # any network attempt would fail at once
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    from tasks.loggers import build_logger

    logger = build_logger({"kind": "wandb", "mode": "offline", "project": "test"}, tmp_path / "run", {"a": 1})
    logger.log({"loss": 1.0}, step=1)
    logger.summary({"accuracy": 0.5})
    logger.finish()
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    with pytest.raises(RuntimeError, match="WANDB_API_KEY"):
        build_logger({"kind": "wandb", "mode": "online"}, tmp_path / "run2", {})


def test_opennmt_decay_every_epoch_from_start_at(tmp_path):
    """OpenNMT-py 0.x: halve at the end of epoch `start_at` and of every epoch after it (or from the first epoch
    without improvement), whatever validation says afterwards."""
    cfg = {**CFG, "epochs": 4, "patience": 0, "optimizer": {"name": "sgd", "lr": 0.4},
           "lr_decay": {"factor": 0.5, "start_at": 2}}
    summary = Trainer(make_task(), cfg, tmp_path / "o", seed=1).fit()
    assert [h["lr"] for h in summary["history"]] == pytest.approx([0.4, 0.2, 0.1, 0.05])
    # a run resumed after epoch 2 keeps decaying every epoch (the flag is in the checkpoint)
    two = Trainer(make_task(), {**cfg, "epochs": 2}, tmp_path / "r", seed=1).fit()
    assert [h["lr"] for h in two["history"]] == pytest.approx([0.4, 0.2])
    resumed = Trainer(make_task(), cfg, tmp_path / "r", seed=1).fit()
    assert [h["lr"] for h in resumed["history"]] == pytest.approx([0.4, 0.2, 0.1, 0.05])
