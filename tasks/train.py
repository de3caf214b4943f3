"""The Hydra app: ``python -m tasks.train task=snli attention=fusedmax [key=value ...]``.

    python -m tasks.train task=snli attention=fusedmax experiment=snli_cpu        # one run
    python -m tasks.train -m task=snli attention=softmax,fusedmax seed=1,2        # a sweep (multirun)

Config: configs/train.yaml (read it first). The run dir is ``outputs/<task>/<attention>/<run_name>`` (multirun:
``multirun/<task>/<attention>/<run_name>``); running the same command again resumes from its checkpoint. At the end
the record ``<results_dir>/<task>/<attention>/<run_name>.json`` is written (tasks/records.py), then handed to the
logger (W&B keeps it as ``record.json`` in the run's files) before the logger is closed.

**A run is its settings, not its command line.** The run name is made of the command-line overrides *less*
those of ``NOT_IDENTITY`` (budgets such as ``trainer.epochs``, where the data comes from, threads, progress bars,
logger and launcher settings): ``trainer.epochs=20`` after a finished 10-epoch run continues that run in its
folder. ``run_identity`` (the resolved config less the same keys) is stored in every checkpoint; resuming a
checkpoint whose identity differs (say a config file was edited in between) stops with an error that lists the
differences instead of mixing two runs.
"""

from __future__ import annotations

import logging

import os
import re
import signal
import sys
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from . import records
from .download import DataMissingError
from .loggers import build_logger
from .trainer import Preempted, RunMismatchError, Trainer

log = logging.getLogger(__name__)

# Config keys (dotted; a key also covers what is under it) that do not change a run's result: neither its name nor
# its identity. Budgets (a larger one continues the run), where files are, how fast or verbosely it runs, logging,
# launching, and evaluation-only extras (DUC-2004 is a second test set of the Gigaword model).
NOT_IDENTITY = (
    "trainer.epochs", "trainer.max_steps", "trainer.resume", "trainer.progress", "trainer.threads",
    "trainer.device", "trainer.log_every_steps", "trainer.checkpoint_every_steps", "trainer.checkpoint_every_minutes",
    "trainer.signals", "trainer.eval_test",
    "task.threads", "task.progress", "task.data.root", "task.data.mirror", "task.data.cache", "task.duc",
    "task.extra_test_sets",
    "embeddings.path", "embeddings.mirror", "task.embeddings.path", "task.embeddings.mirror",
    "shared", "data_dir", "results_dir", "run_name", "logger", "launcher", "hydra",
)
# group choices left out of the run name: task and attention are in the run dir's path already
# (<task>/<attention>/<run_name>); `attention=fusedmax` is a choice, `attention.lam=0.2` is not
_GROUP_CHOICES = {"task", "attention", "logger", "launcher"}


def _not_identity(key: str) -> bool:
    key = key.lstrip("+~")
    if key.startswith("hydra") or key in _GROUP_CHOICES:
        return True
    return any(key == k or key.startswith(k + ".") for k in NOT_IDENTITY)


def run_name_from(overrides) -> str:
    """A file-name-safe run name from the command-line overrides (Hydra's ``hydra.overrides.task``) less those of
    ``NOT_IDENTITY``, sorted ("default" when none is left). A string is taken as Hydra's override dirname."""
    if isinstance(overrides, str):
        items = [overrides] if overrides else []
    else:
        items = sorted(str(o).lstrip("+") for o in overrides if not _not_identity(str(o).split("=", 1)[0]))
    name = re.sub(r"[/\\:*?\"<>| ]+", "_", ",".join(items)).strip("_.")
    return name[:200] or "default"


def run_identity(config: dict) -> dict:
    """``{dotted key: value}`` of the resolved config less ``NOT_IDENTITY``: what makes this run this run."""
    flat: dict = {}

    def walk(node, prefix):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if any(dotted == k or dotted.startswith(k + ".") for k in NOT_IDENTITY):
                continue
            if isinstance(value, dict) and value:
                walk(value, dotted + ".")
            else:
                flat[dotted] = value

    walk(config, "")
    return flat


if not OmegaConf.has_resolver("run_name_from"):
    OmegaConf.register_new_resolver("run_name_from", run_name_from)


def run(cfg: DictConfig, run_dir: str | os.PathLike, on_step=None) -> dict:
    """Instantiate the task, train, write the record, give it to the logger. Returns the record (also usable
    without Hydra's main)."""
    started, start = records.now(), time.perf_counter()
    config = OmegaConf.to_container(cfg, resolve=True)
    attention_cfg = config["attention"]
    task = hydra.utils.instantiate(cfg.task, attention=attention_cfg, seed=cfg.seed, data_dir=cfg.data_dir,
                                   _recursive_=False, _convert_="all")
    logger = build_logger(config.get("logger"), run_dir, config,
                          name=f"{task.name}/{attention_cfg['name']}/{cfg.run_name}")
    exit_code = 1
    try:
        trainer = Trainer(task, config["trainer"], run_dir, seed=cfg.seed, logger=logger, on_step=on_step,
                          identity=run_identity(config))
        summary = trainer.fit()
        record = records.make_record(
            task=task.name, attention=attention_cfg, run=cfg.run_name, seed=cfg.seed, metric=task.metric,
            summary=summary, config=config, started=started, wall_time_s=time.perf_counter() - start,
            run_dir=run_dir)
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
        requeue(stopped.signum, None)


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        record = run(cfg, run_dir)
    except (DataMissingError, RunMismatchError) as error:  # a message for the user, not a traceback
        print(f"\nerror: {error}", file=sys.stderr)
        sys.exit(2)
    except Preempted as stopped:  # checkpoint written; the same command continues (128 + signal, like a kill)
        requeue_if_submitit(stopped)
        print(f"\n{stopped}", file=sys.stderr)
        sys.exit(128 + int(stopped.signum))
    return record["metrics"]["valid"].get(record["metric"])


if __name__ == "__main__":
    main()
