"""The Hydra app through its real entry point: `make smoke` (every task x every attention on the fixtures, also
part of `make test`), the run record, resume from the command line, a submitit_local multirun."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.records import KEYS

ROOT = Path(__file__).resolve().parents[1]
ATTENTIONS = ("softmax", "sparsemax", "fusedmax", "oscarmax")
SMOKE = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("smoke_*.yaml"))


def train(*args, timeout=600):
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    done = subprocess.run([sys.executable, "-m", "tasks.train", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.parametrize("experiment", SMOKE)
def test_smoke_every_attention(tmp_path, experiment):
    """What `make smoke` runs, for one task: a multirun over the four attentions on the tiny fixtures."""
    train("-m", f"experiment={experiment}", f"attention={','.join(ATTENTIONS)}",
          f"hydra.sweep.dir={tmp_path}/multirun", f"results_dir={tmp_path}/results")
    records = sorted((tmp_path / "results").glob("*/*/*.json"))
    assert len(records) == len(ATTENTIONS), records
    for path in records:
        record = json.loads(path.read_text())
        assert set(KEYS) <= set(record), set(KEYS) - set(record)
        packages = record["environment"]["packages"]  # what can change a number besides code and config
        assert packages["torch"] == torch.__version__ and packages["numba"] and record["environment"]["python"]
        task, attention = path.parts[-3], path.parts[-2]
        assert record["task"] == task and record["attention"]["name"] == attention
        metric = record["metric"]
        for split in ("valid", "test"):
            value = record["metrics"][split][metric]  # neg_ppl (Gigaword's default) is -perplexity <= -1
            assert (value <= -1 if metric == "neg_ppl" else value >= 0) and "support" in record["metrics"][split]
            assert "groups" in record["metrics"][split]
        assert record["epochs"] >= 1 and record["time_per_epoch_s"] > 0 and record["wall_time_s"] > 0
        assert record["git"]["commit"] and record["config"]["attention"]["name"] == attention
        assert Path(record["run_dir"]).is_dir()


def test_more_epochs_continue_the_same_run_and_wandb_keeps_it_whole(tmp_path):
    """A run is its settings, not its command line: `trainer.epochs=2` after a finished 1-epoch run continues that
    run in its folder (same run name); its two W&B offline parts read back as one run carrying the whole record."""
    common = ["experiment=smoke_snli", "attention=sparsemax", "trainer.resume=true", "logger=wandb",
              f"hydra.run.dir={tmp_path}/runs/${{run_name}}", f"results_dir={tmp_path}/results"]
    out1 = train(*common, "trainer.epochs=1")
    assert "resumed" not in out1
    out2 = train(*common, "trainer.epochs=2")
    assert "resumed from" in out2 and "epoch 2:" in out2 and "epoch 1:" not in out2
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["experiment=smoke_snli"]
    path = tmp_path / "results" / "snli" / "sparsemax" / "experiment=smoke_snli.json"
    record = json.loads(path.read_text())
    assert record["epochs"] == 2 and record["resumed_from"]["epoch"] == 1 and record["run"] == "experiment=smoke_snli"

    from tasks.loggers import sync_commands
    from tasks.report import wandb_source

    wandb_dir = tmp_path / "runs" / "experiment=smoke_snli" / "wandb"
    parts = sorted(wandb_dir.glob("offline-run-*"))
    assert len(parts) == 2 and len({p.name.rsplit("-", 1)[-1] for p in parts}) == 1  # one id, two parts
    assert sync_commands(wandb_dir) == [["wandb", "sync", "--include-synced", *map(str, parts)]]
    (from_wandb,) = wandb_source.load(str(wandb_dir))
    assert {k: v for k, v in from_wandb.items() if k != "source"} == record  # every key of the local record
    # without record.json (an older run): the summary still has the final metrics, the commit, `finished`
    for part in parts:
        (part / "files" / "record.json").unlink(missing_ok=True)
    (mapped,) = wandb_source.load(str(wandb_dir))
    metric = record["metric"]
    assert mapped["metrics"]["test"][metric] == pytest.approx(record["metrics"]["test"][metric])
    assert mapped["git_commit"] == record["git"]["commit"] and mapped["finished"] == record["finished"]
    assert mapped["epochs"] == 2


def test_a_setting_that_changes_the_result_is_another_run(tmp_path):
    from tasks.resolvers import run_name_from
    from tasks.train import run_identity

    assert run_name_from(["trainer.epochs=20", "seed=2", "trainer.progress=false", "attention=fusedmax",
                          "trainer.threads=1", "hydra.launcher.timeout_min=60", "shared=/x", "logger=none"]) == "seed=2"
    assert run_name_from(["seed=2", "attention.lam=0.2", "trainer.optimizer.lr=0.1"]) == \
        "attention.lam=0.2,seed=2,trainer.optimizer.lr=0.1"
    base = {"seed": 1, "trainer": {"epochs": 10, "optimizer": {"lr": 0.1}, "threads": 1}, "logger": {"kind": "x"},
            "task": {"name": "snli", "data": {"root": "/a", "files": {"train": "t"}}}}
    moved = {**base, "trainer": {**base["trainer"], "epochs": 20, "threads": 2},
             "task": {"name": "snli", "data": {"root": "/b", "files": {"train": "t"}}}}
    assert run_identity(base) == run_identity(moved) == {
        "seed": 1, "trainer.optimizer.lr": 0.1, "task.name": "snli", "task.data.files.train": "t"}
    # the same folder with another learning rate: an error that names the difference, not a silent mix of two runs
    from test_harness_trainer import CFG, make_task

    from tasks.resume import RunMismatchError
    from tasks.trainer import Trainer

    Trainer(make_task(), {**CFG, "epochs": 1}, tmp_path / "run", identity=run_identity(base)).fit()
    other = {**base, "trainer": {**base["trainer"], "optimizer": {"lr": 0.5}}}
    with pytest.raises(RunMismatchError, match=r"trainer.optimizer.lr: 0.1 -> 0.5") as info:
        Trainer(make_task(), {**CFG, "epochs": 2}, tmp_path / "run", identity=run_identity(other)).fit()
    assert "trainer.resume=false" in str(info.value) and "run_name=" in str(info.value)
    assert Trainer(make_task(), {**CFG, "epochs": 2}, tmp_path / "run", identity=run_identity(moved)).fit()[
        "resumed_from"]["epoch"] == 1  # more epochs, data elsewhere, other threads: the same run


@pytest.mark.slow  # ~1 min; .ci/run runs it (make test-slow)
def test_submitit_local_sweep_survives_a_sigterm(tmp_path):
    """Two jobs through hydra-submitit-launcher's local executor (what launcher=slurm does on a cluster); one gets
    SIGTERM mid-training: it checkpoints, submitit requeues it, it resumes, and the sweep ends with both records
    complete (the killed job lost nothing: it resumed at the step where it was stopped)."""
    import signal
    import time

    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "tasks.train", "-m", "experiment=smoke_snli", "attention=softmax,fusedmax",
         "trainer.epochs=30", "trainer.patience=null", "trainer.resume=true", "launcher=submitit_local",
         "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={tmp_path}/mr", f"results_dir={tmp_path}/results"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, victim = time.time() + 300, None
        while victim is None and time.time() < deadline and sweep.poll() is None:
            time.sleep(0.5)
            # both jobs in their training loops (a checkpoint each, no record yet): a job still importing or setting
            # up has no SIGTERM handler yet, and one that has finished has nothing left to checkpoint
            training = len(list((tmp_path / "mr").glob("*/*/checkpoints/last.pt"))) == 2
            if training and not list((tmp_path / "results").glob("snli/*/*.json")):
                victim = next((int(pid) for pid in os.listdir("/proc") if pid.isdigit() and
                               f"{tmp_path}/mr/.submitit".encode() in _cmdline(pid)), None)
        assert victim is not None, "no submitit job found to stop"
        os.kill(victim, signal.SIGTERM)
        out, _ = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, out[-3000:]
    records = {p.parts[-2]: json.loads(p.read_text()) for p in (tmp_path / "results").glob("snli/*/*.json")}
    assert sorted(records) == ["fusedmax", "softmax"]
    assert all(set(KEYS) <= set(r) and r["epochs"] == 30 for r in records.values())
    logs = "".join(p.read_text() for p in (tmp_path / "mr" / ".submitit").rglob("*_log.out"))
    stopped = int(re.search(r"checkpoint written at step (\d+) \(SIGTERM\)", logs).group(1))
    assert "Requeued job" in logs
    resumed = [r["resumed_from"] for r in records.values() if r["resumed_from"]]
    assert len(resumed) == 1 and resumed[0]["step"] == stopped  # nothing but the step under way lost


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_launcher_configs_compose():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        slurm = compose("train", overrides=["launcher=slurm", "hydra.launcher.partition=gpu"],
                        return_hydra_config=True)
        assert "submitit_slurm" in slurm.hydra.launcher._target_.lower() or "Slurm" in slurm.hydra.launcher._target_
        assert slurm.hydra.launcher.partition == "gpu" and slurm.hydra.launcher.gpus_per_node == 1
        local = compose("train", overrides=["launcher=local"], return_hydra_config=True)
        assert "BasicLauncher" in local.hydra.launcher._target_
        cfg = compose("train", overrides=["task=snli", "attention=oscarmax", "embeddings=glove6b_50d"])
        assert cfg.attention.name == "oscarmax" and cfg.embeddings.dim == 50 and cfg.trainer.optimizer.lr == 3e-4
