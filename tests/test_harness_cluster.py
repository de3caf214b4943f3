"""What a GPU cluster needs from the trainer: resume whatever device wrote or reads the checkpoint, preemption
signals (checkpoint, then exit or requeue), wall-time checkpoints, mixed precision."""

import math
import os
import signal
from pathlib import Path

import pytest
import torch
from test_harness_trainer import CFG, Killed, assert_same, batches_with, dies_before_step, make_task, weights

import tasks.trainer as trainer_mod
from tasks.checkpoints import set_rng_state
from tasks.loggers import NullLogger
from tasks.preemption import Preempted
from tasks.snli.task import SNLITask
from tasks.trainer import Trainer

QUIET = {**CFG, "checkpoint_every_steps": 0, "checkpoint_every_minutes": 0}  # only what a test asks for


@pytest.mark.filterwarnings("ignore:.*meta parameter")
def test_resume_reads_the_checkpoint_on_cpu_whatever_the_device(tmp_path, monkeypatch):
    """A checkpoint resumed on another device: torch.load(map_location=<device>) moved the CPU RNG state there and
    torch.set_rng_state raised ("RNG state must be a torch.ByteTensor"). "meta" stands in for "cuda" here."""
    Trainer(make_task(), {**QUIET, "epochs": 1}, tmp_path / "r", seed=1).fit()
    saved = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=False)
    monkeypatch.setattr(trainer_mod, "pick_device", lambda name: torch.device("meta"))
    resumed = Trainer(make_task(), {**QUIET, "epochs": 2}, tmp_path / "r", seed=1)
    resumed.setup()  # resumes from last.pt
    assert resumed.resumed_from == {"epoch": 1, "batch_in_epoch": 0, "step": 8}
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])
    assert all(p.device.type == "meta" for p in resumed.model.parameters())
    moments = [s["exp_avg"] for s in resumed.optimizer.state_dict()["state"].values()]
    assert moments and all(m.device.type == "meta" for m in moments)  # optimizer state follows the parameters


def test_cuda_rng_states_restored_per_device(monkeypatch):
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, device)))
    cpu_state = torch.get_rng_state()
    cuda_states = [torch.ones(16, dtype=torch.uint8), torch.zeros(16, dtype=torch.uint8)]  # saved on 2 GPUs
    set_rng_state({"python": __import__("random").getstate(), "numpy": __import__("numpy").random.get_state(),
                   "torch": cpu_state, "cuda": cuda_states})
    assert len(restored) == 1 and restored[0][1] == 0 and torch.equal(restored[0][0], cuda_states[0])


def test_sigterm_mid_epoch_then_same_command_loses_nothing(tmp_path):
    """SIGTERM during step 5 of 8 (no step or time checkpoints): the step finishes, a checkpoint is written, the run
    stops; the same command resumes at step 5 and ends with the weights of an uninterrupted run."""
    full = Trainer(make_task(), QUIET, tmp_path / "full", seed=1).fit()
    task = make_task()
    task.train_batches = batches_with(task.train_batches, 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(Preempted) as info:
        Trainer(task, QUIET, tmp_path / "run", seed=1).fit()
    assert info.value.step == 5 and info.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are given back
    resumed = Trainer(make_task(), QUIET, tmp_path / "run", seed=1).fit()
    assert resumed["resumed_from"]["step"] == 5  # nothing lost but the step under way (none here)
    assert_same(weights(tmp_path / "full"), weights(tmp_path / "run"))
    assert resumed["test"] == full["test"]


def _smoke_config(tmp_path):
    """experiment=smoke_snli as tasks/train.py's `run` gets it, without Hydra's runtime."""
    from hydra import compose, initialize_config_dir

    root = Path(__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(root / "configs"), version_base="1.3"):
        return compose("train", overrides=[
            "experiment=smoke_snli", f"task.data.root={root}/tests/data/snli",
            f"embeddings.path={root}/tests/data/glove/glove.tiny.16d.txt", f"results_dir={tmp_path}/results",
            f"data_dir={tmp_path}/data", "run_name=run", "trainer.checkpoint_every_steps=0"])


def test_signal_under_submitit_closes_the_logger_then_requeues(tmp_path, monkeypatch):
    """Run by submitit: the trainer checkpoints and stops, tasks/train.py closes the logger, then hands over to
    submitit's handler (which requeues the job and exits). On Slurm the requeue kills every process of the job, W&B's
    service among them: when the trainer called the handler itself, the W&B run could not be closed any more, its
    error replaced the requeue's exit, and the sweep took the requeued job for a failed one (make test-cluster)."""
    import tasks.train as train_mod

    events = []

    class Logger(NullLogger):
        def finish(self, exit_code=0):
            events.append(("finish", exit_code))

    def checkpoint_and_try_requeue(signum, frame):  # the name of submitit's handler
        events.append(("requeue", signum, torch.load(tmp_path / "run" / "checkpoints" / "last.pt",
                                                     weights_only=False)["progress"]["step"]))
        raise SystemExit(-1)

    monkeypatch.setattr(train_mod, "build_logger", lambda *args, **kwargs: Logger())
    monkeypatch.setattr(SNLITask, "train_batches", batches_with(SNLITask.train_batches, 3,
                                                                lambda: os.kill(os.getpid(), signal.SIGUSR1)))
    previous = signal.signal(signal.SIGUSR2, checkpoint_and_try_requeue)
    try:
        with pytest.raises(Preempted) as info:
            train_mod.run(_smoke_config(tmp_path), tmp_path / "run")
        assert signal.getsignal(signal.SIGUSR2) is checkpoint_and_try_requeue  # submitit's handler is back
        assert events == [("finish", 1)]
        with pytest.raises(SystemExit):
            train_mod.requeue_if_submitit(info.value)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert events == [("finish", 1), ("requeue", signal.SIGUSR1, 3)]


def test_a_logger_that_cannot_close_does_not_hide_why_the_run_stopped(tmp_path, monkeypatch):
    import tasks.train as train_mod

    class DeadService(NullLogger):  # W&B after its service process was killed
        def finish(self, exit_code=0):
            raise ConnectionResetError("Connection lost")

    monkeypatch.setattr(train_mod, "build_logger", lambda *args, **kwargs: DeadService())
    with monkeypatch.context() as dying:
        dying.setattr(SNLITask, "train_batches", batches_with(SNLITask.train_batches, 3))
        with pytest.raises(Killed):
            train_mod.run(_smoke_config(tmp_path), tmp_path / "run")
    with pytest.raises(ConnectionResetError):  # after a run that finished, the error is the logger's own
        train_mod.run(_smoke_config(tmp_path), tmp_path / "done")


def test_wall_time_checkpoints(tmp_path):
    cfg = {**QUIET, "checkpoint_every_minutes": 1e-9}  # every step is "10 minutes later"
    with pytest.raises(Killed):  # before step 6: steps 1 to 5 done, each one checkpointed
        Trainer(dies_before_step(make_task(), 6), cfg, tmp_path / "run", seed=1).fit()
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)["progress"]["step"] == 5
    assert trainer_mod.DEFAULTS["checkpoint_every_minutes"] == 10.0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision(tmp_path, precision):
    summary = Trainer(make_task("fusedmax"), {**QUIET, "epochs": 1, "precision": precision}, tmp_path / precision,
                      seed=1).fit()
    assert summary["precision"] == precision and math.isfinite(summary["history"][0]["train_loss"])
    state = torch.load(tmp_path / precision / "checkpoints" / "last.pt", weights_only=False)
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    assert ("scale" in state["scaler"]) == (precision == "fp16")  # a GradScaler for fp16 only
    with pytest.raises(ValueError, match="trainer.precision"):
        Trainer(make_task(), {**QUIET, "precision": "fp8"}, tmp_path / "bad", seed=1).fit()


def test_wandb_api_runs_prefer_their_uploaded_record(tmp_path):
    """`make tables SOURCE=wandb PROJECT=entity/project`: a run's record.json (uploaded by the harness) is the
    record, with every key the local one has (new keys included); runs without it fall back to the mapping."""
    import json
    import types

    from tasks.report import wandb_source

    record = {"task": "snli", "attention": {"name": "fusedmax", "params": {"lam": 0.1}}, "seed": 2,
              "metrics": {"test": {"accuracy": 0.8}}, "per_example": {"test": [1, 0, 1]}, "git": {"commit": "abc"}}

    class File:
        def __init__(self, content):
            self.content = content

        def download(self, root, replace=False):
            if self.content is None:
                raise ValueError("file not found")
            (Path(root) / "record.json").write_text(json.dumps(self.content))

    def run(run_id, content):
        return types.SimpleNamespace(id=run_id, name=run_id, state="finished", summary={"test/accuracy": 0.5},
                                     config={"task": {"name": "snli"}, "attention": {"name": "softmax"}, "seed": 1},
                                     file=lambda name: File(content))

    api = types.SimpleNamespace(runs=lambda project, filters=None: [run("a", record), run("b", None)])
    with_record, mapped = wandb_source.api_records("me/project", api=api)
    assert {k: v for k, v in with_record.items() if k != "source"} == record
    assert mapped["attention"]["name"] == "softmax" and mapped["metrics"]["test"]["accuracy"] == 0.5


def test_the_slurm_launcher_is_a_hydra_plugin():
    """configs/launcher/slurm.yaml's launcher (hydra_plugins/structured_attention_slurm.py): Hydra takes launchers
    from the hydra_plugins package only ("Invalid plugin ...: not the hydra_plugins package" otherwise)."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    from omegaconf import OmegaConf

    config = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "launcher" / "slurm.yaml")
    launchers = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}
    assert config.hydra.launcher._target_ in launchers


def test_a_suspended_job_has_not_ended(tmp_path):
    """submitit takes a SUSPENDED job (scontrol suspend) for one that ended without a result: the sweep raised while
    its jobs went on. The launcher waits for it (hydra_plugins/structured_attention_slurm.py: has_ended)."""
    from types import SimpleNamespace

    from hydra_plugins.structured_attention_slurm import as_ended, has_ended

    class Job:
        """A submitit job whose Slurm state goes through ``states``, one poll (``done``) at a time."""

        def __init__(self, name, states):
            self.name, self.states, self.state = name, list(states), None
            self.paths = SimpleNamespace(result_pickle=tmp_path / f"{name}_result.pkl")

        def done(self):  # submitit's rule (Watcher.is_done)
            self.state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            return self.state not in ("READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED")

    assert not has_ended(Job("a", ["SUSPENDED"])) and not has_ended(Job("b", ["RUNNING"]))
    assert has_ended(Job("c", ["FAILED"])) and has_ended(Job("d", ["CANCELLED"]))
    (tmp_path / "e_result.pkl").write_bytes(b"")
    assert has_ended(Job("e", ["SUSPENDED"]))  # its result is written: over, whatever the state says
    jobs = [Job("slow", ["SUSPENDED", "SUSPENDED", "RUNNING", "COMPLETED"]), Job("fast", ["COMPLETED"])]
    assert [job.name for job in as_ended(jobs, poll_s=0)] == ["fast", "slow"]


def test_a_requeue_that_kills_its_own_scontrol_exits_without_a_result():
    """Slurm cancels a job's step for `scontrol requeue` and may kill that scontrol (SIGTERM) before it returns: the
    requeue took effect, so the job exits as after a requeue (SystemExit, no result for submitit to write); the sweep
    took the error for a failed run in CI once (test_preempted_and_timed_out_jobs_resume_where_they_stopped)."""
    import subprocess

    import tasks.train as train_mod

    def handler_raising(error):
        def checkpoint_and_try_requeue(signum, frame):  # the name of submitit's handler
            raise error
        return checkpoint_and_try_requeue

    stopped = Preempted(signal.SIGUSR2, 5)
    killed = subprocess.CalledProcessError(-signal.SIGTERM, ["scontrol", "requeue", "123"])
    refused = subprocess.CalledProcessError(1, ["scontrol", "requeue", "123"])
    previous = signal.getsignal(signal.SIGUSR2)
    try:
        signal.signal(signal.SIGUSR2, handler_raising(killed))
        with pytest.raises(SystemExit) as exited:
            train_mod.requeue_if_submitit(stopped)
        assert exited.value.code == -1
        signal.signal(signal.SIGUSR2, handler_raising(refused))  # scontrol refused: a real failure, raised
        with pytest.raises(subprocess.CalledProcessError):
            train_mod.requeue_if_submitit(stopped)
    finally:
        signal.signal(signal.SIGUSR2, previous)
