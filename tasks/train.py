"""The Hydra app: ``python -m tasks.train task=snli attention=fusedmax [key=value ...]``.

    python -m tasks.train task=snli attention=fusedmax experiment=snli_cpu        # one run
    python -m tasks.train -m task=snli attention=softmax,fusedmax seed=1,2        # a sweep (multirun)

Config: configs/train.yaml (read it first). The run dir is ``outputs/<task>/<attention>/<run_name>`` (multirun:
``multirun/<task>/<attention>/<run_name>``); running the same command again resumes from its checkpoint. At the end
the record ``<results_dir>/<task>/<attention>/<run_name>.json`` is written (tasks/records.py), then handed to the
logger (W&B keeps it as ``record.json`` in the run's files) before the logger is closed.

**A run is its settings, not its command line.** The run name is made of the command-line overrides *less*
those outside a run's identity (``tasks/records.py``'s ``NON_RESULT_KEYS`` and ``BUDGET_KEYS``: budgets such as
``trainer.epochs``, where the data comes from, threads, progress bars, logger and launcher settings):
``trainer.epochs=20`` after a finished 10-epoch run continues that run in its folder. ``run_identity`` (the
resolved config less the same keys) is stored in every checkpoint; resuming a checkpoint whose identity differs
(say a config file was edited in between) stops with an error that lists the differences instead of mixing two runs.

Exit codes: 0 with a record; 2 refused with one line on stderr (a config value, data, a checkpoint, the run dir),
checked before training where possible (``validate_config``, the ``Preflight`` Hydra callback); 3 diverged
(non-finite loss or validation metric: no record, the last good checkpoint kept); 128 + N stopped by signal N
after a checkpoint, or at once during the data setup (the same command continues).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from . import records
from .build import build_task
from .checkpoints import CheckpointError
from .divergence import TrainingDiverged
from .download import DataError
from .files import RunDirInUse, UnsafeFileError, run_dir_lock
from .loggers import LoggerError, build_logger
from .optim import LR_SCHEDULES
from .preemption import Preempted
from .resolvers import register_resolvers
from .resume import RunMismatchError
from .runtime import PRECISIONS
from .trainer import Trainer

log = logging.getLogger(__name__)

def run_identity(config: dict) -> dict:
    """``{dotted key: value}`` of the resolved config less what is not part of a run's identity
    (``records.in_identity``: settings that do not change a result, and budgets): what makes this run this run."""
    return {key: value for key, value in records.flatten(config).items() if records.in_identity(key)}


class ConfigError(ValueError):
    """A config value of the wrong type or out of range; the message names the key, the value and what is allowed."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# key -> (test, what is allowed); a key absent from the config is not checked. "*" matches one key level.
_INT = lambda low: (lambda v: _is_int(v) and v >= low, f"an integer >= {low}")  # noqa: E731
_INT_OR_NULL = lambda low: (lambda v: v is None or _is_int(v) and v >= low, f"an integer >= {low}, or null")  # noqa
_NUMBER = lambda low: (lambda v: _is_number(v) and v >= low, f"a number >= {low:g}")  # noqa: E731
_NUMBER_OR_NULL = lambda low: (lambda v: v is None or _is_number(v) and v >= low,  # noqa: E731
                               f"a number >= {low:g}, or null")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
CONFIG_RULES = {
    "seed": (_is_int, "an integer"),
    "trainer.epochs": _INT(1),
    "trainer.max_steps": _INT_OR_NULL(1),
    "trainer.optimizer.name": (lambda v: str(v).lower() in ("adam", "adamw", "sgd"), "adam, adamw or sgd"),
    "trainer.optimizer.lr": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "trainer.optimizer.weight_decay": _NUMBER(0),
    "trainer.optimizer.momentum": _NUMBER(0),
    "trainer.optimizer.betas": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2
                                and all(_is_number(b) and 0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "trainer.lr_decay.factor": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "trainer.lr_decay.patience": _INT(0),
    "trainer.lr_decay.min_lr": _NUMBER(0),
    "trainer.lr_decay.start_at": _INT_OR_NULL(1),
    "trainer.grad_clip": _NUMBER_OR_NULL(0),
    "trainer.patience": _INT_OR_NULL(0),
    "trainer.checkpoint_every_steps": _INT_OR_NULL(0),
    "trainer.checkpoint_every_minutes": _NUMBER_OR_NULL(0),
    "trainer.log_every_steps": _INT_OR_NULL(0),
    "trainer.threads": _INT_OR_NULL(1),
    "trainer.precision": (lambda v: str(v).lower() in PRECISIONS, "fp32, bf16 or fp16"),
    "trainer.device": (lambda v: v in (None, "auto") or _parses_as_device(v), "auto, cpu, cuda or cuda:N"),
    **{f"trainer.{k}": _BOOL for k in ("resume", "resume_unchecked", "progress", "deterministic",
                                                  "eval_test")},
    "task.batch_size": _INT(1), "task.eval_batch_size": _INT(1), "task.*.batch_size": _INT(1),
    "task.threads": _INT_OR_NULL(1),
    "task.model.dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    **{f"task.model.{k}": _INT(1) for k in ("hidden", "embedding_dim", "layers", "rnn_size", "word_vec_size")},
    "task.train.max_src_len": _INT_OR_NULL(1), "task.train.max_tgt_len": _INT_OR_NULL(1),
    "task.decode.beam": _INT(1),
    "trainer.lr_schedule.warmup_steps": _INT(0),
    "trainer.lr_schedule.decay": (lambda v: v in LR_SCHEDULES, " or ".join(LR_SCHEDULES)),
    **{f"task.model.{k}": _INT(1) for k in ("d_model", "heads", "encoder_layers", "decoder_layers", "ffn_size")},
}


def _parses_as_device(value) -> bool:
    try:
        torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def _lookup(config: dict, pattern: str):
    """(dotted key, value) of the config entries matching ``pattern`` ("*" matches one level)."""
    nodes = [("", config)]
    for part in pattern.split("."):
        found = []
        for prefix, node in nodes:
            if not isinstance(node, dict):
                continue
            keys = list(node) if part == "*" else [part] if part in node else []
            found += [(f"{prefix}{k}", node[k]) for k in keys]
        nodes = [(f"{key}.", value) for key, value in found]
    return [(key[:-1], value) for key, value in nodes]


def validate_config(config: dict) -> None:
    """Check the resolved config before anything is read or built: a ``ConfigError`` naming the key, the value
    and what is allowed. The attention parameters go through the library's own checks (``attention.build``)."""
    for pattern, (test, allowed) in CONFIG_RULES.items():
        for key, value in _lookup(config, pattern):
            if isinstance(value, dict):
                continue
            try:
                ok = test(value)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ConfigError(f"config {key}={value!r}: must be {allowed}")
    trainer = config.get("trainer") or {}
    if trainer.get("lr_schedule") and (trainer.get("lr_decay") or {}).get("factor", 1.0) < 1:
        raise ConfigError(f"config trainer.lr_schedule={trainer['lr_schedule']} with trainer.lr_decay.factor="
                          f"{trainer['lr_decay']['factor']}: choose one way to change the learning rate "
                          "(trainer.lr_decay.factor=1.0)")
    spec = dict(config.get("attention") or {})
    spec.pop("_target_", None)
    name = spec.pop("name", None)
    from tasks.mapping import build_attention

    try:
        build_attention({"name": name, **spec})  # the library's checks (attention.build), whatever _target_ says
    except (TypeError, ValueError, KeyError) as error:
        shown = " ".join(f"attention.{k}={v!r}" for k, v in spec.items())
        raise ConfigError(f"config attention={name!r} {shown}: {str(error).splitlines()[0]}") from None


def remove_if_empty(run_dir: str | os.PathLike) -> bool:
    """Remove a run dir holding only what Hydra writes before the job starts (.hydra/, <job>.log), the run dir's
    lock and the logger's folder (wandb/: a run that never trained): a run that failed on its config or data leaves
    no empty folder that looks like a run. Returns whether it was removed."""
    run_dir = Path(run_dir)
    try:
        entries = {p.name for p in run_dir.iterdir()}
    except OSError:
        return False
    if not entries <= {".hydra", "train.log", "stage.log", ".lock", "wandb"}:
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


def _config_without_hydra(config: DictConfig) -> dict:
    copy = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    return OmegaConf.to_container(copy, resolve=True)


class Preflight(Callback):
    """A Hydra callback (configs/train.yaml ``hydra.callbacks``) run before Hydra creates the run dir: the config
    is validated (``validate_config``) and the run dir checked writable, each failure one line and exit code 2
    instead of a traceback from Hydra's logging setup, and no run dir is left behind by a config error."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        HydraConfig.instance().set_config(config)  # for ${hydra:...} in the config (run_job sets it again)
        try:
            validate_config(_config_without_hydra(config))
        except ConfigError as error:
            _fail(error)
        check_writable(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        HydraConfig.instance().set_config(config)
        check_writable(Path(config.hydra.sweep.dir))  # each job's config is validated by run()


def check_writable(folder: Path) -> None:
    """Create ``folder`` and a file in it, or exit with one line saying why not (a read-only disk, a path
    through a file, no permission)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        _fail(f"the run dir {folder} cannot be written: {os.strerror(error.errno) if error.errno else error} "
              f"({error.filename or folder}). Make it writable, or put runs elsewhere (hydra.run.dir=DIR, or "
              f"hydra.sweep.dir=DIR for -m).")


def _fail(message, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


register_resolvers()  # before Hydra resolves the config (tasks/resolvers.py says why here)


def run(cfg: DictConfig, run_dir: str | os.PathLike) -> dict:
    """Instantiate the task, train, write the record, give it to the logger. Returns the record (also usable
    without Hydra's main)."""
    started, start = records.now(), time.perf_counter()
    config = OmegaConf.to_container(cfg, resolve=True)
    validate_config(config)  # before any data is read
    attention_cfg = config["attention"]
    task = build_task(config)
    with run_dir_lock(run_dir):  # before the logger writes there; held until the record is written
        logger = build_logger(config.get("logger"), run_dir, config,
                              name=f"{task.name}/{attention_cfg['name']}/{cfg.run_name}")
        exit_code = 1
        try:
            trainer = Trainer(task, config["trainer"], run_dir, seed=cfg.seed, logger=logger,
                              identity=run_identity(config))
            summary = trainer.fit()
            record = records.make_record(
                task=task.name, attention=attention_cfg, run=cfg.run_name, seed=cfg.seed, metric=task.metric,
                summary=summary, config=config, started=started, wall_time_s=time.perf_counter() - start,
                run_dir=run_dir)
            record = records.finite_json(record)  # the same strict JSON for the file and for the logger
            path = records.write_record(records.record_path(cfg.results_dir, task.name, attention_cfg["name"],
                                                            cfg.run_name), record)
            log.info(f"record: {path}")
            logger.record(record)  # W&B: the summary and record.json, so that W&B sees what the record says
            exit_code = 0
        finally:
            try:
                logger.finish(exit_code=exit_code)  # a killed or failed run is marked so; its logs are kept
            except Exception as error:  # (W&B's service killed with the job): never hides why the run stopped
                if exit_code == 0:
                    raise
                log.warning(f"the logger could not be closed: {error!r}")
    return record


def requeue_if_submitit(stopped: Preempted) -> None:
    """In a job started by submitit (launcher=slurm|submitit_local): its signal handler, which requeues the job
    (the requeued job resumes from the checkpoint) and exits; it raises instead when the job may not be requeued
    (after ``max_num_timeout`` time limits). Elsewhere: returns. Called once the run is stopped and its logger
    closed: requeueing kills the job's processes, W&B's service among them."""
    requeue = next((handler for handler in map(signal.getsignal, signal.valid_signals())
                    if getattr(handler, "__name__", "") == "checkpoint_and_try_requeue"), None)
    if requeue is not None:
        log.warning("submitit: requeueing this job; it resumes from the checkpoint")
        try:
            requeue(stopped.signum, None)
        except subprocess.CalledProcessError as error:
            # submitit runs `scontrol requeue <this job>`; Slurm cancels the job's step for the requeue and may kill
            # scontrol with it (SIGTERM) before it returns. The requeue took effect, so exit as submitit does after
            # one, without a result: a result would tell the sweep that the job ended while it starts again.
            if error.returncode != -signal.SIGTERM or "requeue" not in error.cmd:
                raise
            log.warning("submitit: `scontrol requeue` was killed by the requeue it asked for; exiting")
            sys.exit(-1)


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        record = run(cfg, run_dir)
    except (ConfigError, DataError, UnsafeFileError, LoggerError) as error:  # refused
        remove_if_empty(run_dir)
        _fail(error)
    except (RunMismatchError, CheckpointError, records.RecordError, RunDirInUse) as error:  # a message
        _fail(error)
    except TrainingDiverged as error:  # no record; the last good checkpoint is kept
        _fail(error, code=3)
    except Preempted as stopped:  # checkpoint written; the same command continues (128 + signal, like a kill)
        requeue_if_submitit(stopped)
        print(f"\n{stopped}", file=sys.stderr)
        sys.exit(128 + int(stopped.signum))
    return record["metrics"]["valid"].get(record["metric"])


if __name__ == "__main__":
    main()
