"""Stage a task's data once, before a sweep: ``make data TASK=snli [ARGS="experiment=snli_cpu"] [DATA_DIR=DIR]``.

    python -m tasks.stage task=snli experiment=snli_cpu           # the same overrides as the runs that follow

It builds the task exactly as a run would (same config, same ``data_dir``) and calls its ``setup()``: every file
the task reads is downloaded (or found in ``task.data.root`` / ``shared``), verified, prepared (IWSLT14's
tokenization, the sumdata extraction) and GloVe is parsed into its tensor file, all under ``data_dir``. The jobs
of the sweep then read the cache without network: set ``DATA_OFFLINE=1`` on compute nodes to make any missing
file an immediate error instead of a download (tasks/download.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .build import build_task
from .download import DataError
from .resolvers import register_resolvers

register_resolvers()  # before Hydra resolves the config


def stage(cfg: DictConfig) -> list[Path]:
    """Set the task up (downloads, checks, parses); returns the files under ``data_dir`` afterwards."""
    task = build_task(OmegaConf.to_container(cfg, resolve=True))
    task.setup()
    data_dir = Path(cfg.data_dir)
    return sorted(p for p in data_dir.rglob("*") if p.is_file()) if data_dir.is_dir() else []


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        files = stage(cfg)
    except DataError as error:
        print(f"\nerror: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"staged {cfg.task.name}: {len(files)} files under {cfg.data_dir}")
    for path in files:
        print(f"  {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
