"""The Hydra app: ``python -m tasks.train task=snli attention=fusedmax [key=value ...]``.

    python -m tasks.train task=snli attention=fusedmax experiment=snli_cpu        # one run
    python -m tasks.train -m task=snli attention=softmax,fusedmax seed=1,2        # a sweep (multirun)

Config: configs/train.yaml (read it first). The run dir is ``outputs/<task>/<attention>/<run_name>`` (multirun:
``multirun/<task>/<attention>/<run_name>``); running the same command again resumes from its checkpoint. At the end
the record ``<results_dir>/<task>/<attention>/<run_name>.json`` is written (tasks/records.py).
"""

from __future__ import annotations

import logging

import os
import re
import sys
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from . import records
from .download import DataMissingError
from .loggers import build_logger
from .trainer import Trainer

log = logging.getLogger(__name__)


def run_name_from(override_dirname: str) -> str:
    """A file-name-safe run name from Hydra's override dirname ("default" when there are no overrides)."""
    name = re.sub(r"[/\\:*?\"<>| ]+", "_", override_dirname or "").strip("_.")
    return name[:200] or "default"


if not OmegaConf.has_resolver("run_name_from"):
    OmegaConf.register_new_resolver("run_name_from", run_name_from)


def run(cfg: DictConfig, run_dir: str | os.PathLike, on_step=None) -> dict:
    """Instantiate the task, train, write the record. Returns the record (also usable without Hydra's main)."""
    started, start = records.now(), time.perf_counter()
    config = OmegaConf.to_container(cfg, resolve=True)
    attention_cfg = config["attention"]
    task = hydra.utils.instantiate(cfg.task, attention=attention_cfg, seed=cfg.seed, data_dir=cfg.data_dir,
                                   _recursive_=False, _convert_="all")
    logger = build_logger(config.get("logger"), run_dir, config,
                          name=f"{task.name}/{attention_cfg['name']}/{cfg.run_name}")
    try:
        trainer = Trainer(task, config["trainer"], run_dir, seed=cfg.seed, logger=logger, on_step=on_step)
        summary = trainer.fit()
    finally:
        logger.finish()
    record = records.make_record(
        task=task.name, attention=attention_cfg, run=cfg.run_name, seed=cfg.seed, metric=task.metric,
        summary=summary, config=config, started=started, wall_time_s=time.perf_counter() - start, run_dir=run_dir)
    path = records.write_record(records.record_path(cfg.results_dir, task.name, attention_cfg["name"],
                                                    cfg.run_name), record)
    log.info(f"record: {path}")
    return record


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        record = run(cfg, run_dir)
    except DataMissingError as error:  # a message for the user, not a traceback
        print(f"\nerror: {error}", file=sys.stderr)
        sys.exit(2)
    return record["metrics"]["valid"].get(record["metric"])


if __name__ == "__main__":
    main()
