"""Loggers: W&B (offline by default, never a login prompt or a hang) or none.

``logger=wandb`` (default): ``mode: offline`` unless the environment sets ``WANDB_MODE``; the run is written under
``<run_dir>/wandb/`` and can be uploaded later with ``wandb sync <run_dir>/wandb/offline-run-*``.
``logger=wandb_online``: ``mode: online`` (needs ``WANDB_API_KEY`` or a prior ``wandb login``; without credentials
it fails at once instead of prompting). ``logger=none``: nothing but the local record (tasks/records.py).

The W&B run id is derived from the run dir, so a resumed run appends to the same W&B run (``resume="allow"``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .trainer import NullLogger


class WandbLogger:
    def __init__(self, run_dir: str | os.PathLike, config: dict, project: str = "structured-attention",
                 entity: str | None = None, mode: str = "offline", name: str | None = None,
                 group: str | None = None, tags: list | tuple = (), init_timeout: float = 60.0):
        mode = os.environ.get("WANDB_MODE", mode)  # the environment wins
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_CONSOLE", "off")
        os.environ.setdefault("WANDB_DISABLE_GIT", "true")
        os.environ.setdefault("WANDB_DISABLE_CODE", "true")
        import wandb

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
        settings = wandb.Settings(silent=True, console="off", disable_git=True, disable_code=True,
                                  x_disable_stats=True, x_disable_machine_info=True, init_timeout=init_timeout)
        if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _has_netrc_login()):
            raise RuntimeError("logger=wandb_online needs W&B credentials: set WANDB_API_KEY (or run `wandb login` "
                               "once), or use logger=wandb (offline) / logger=none")
        self.run = wandb.init(project=project, entity=entity, name=name, group=group, tags=list(tags),
                              config=config, dir=str(run_dir), mode=mode, id=run_id, resume="allow",
                              settings=settings, reinit="finish_previous")
        self.dir = Path(self.run.dir).parent if self.run is not None else None

    def log(self, scalars: dict, step: int) -> None:
        self.run.log(scalars, step=step)

    def summary(self, scalars: dict) -> None:
        for key, value in scalars.items():
            self.run.summary[key] = value

    def finish(self) -> None:
        self.run.finish(quiet=True) if _accepts_quiet(self.run.finish) else self.run.finish()


def _accepts_quiet(fn) -> bool:
    import inspect

    try:
        return "quiet" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _has_netrc_login() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def build_logger(cfg: dict | None, run_dir: str | os.PathLike, config: dict, name: str | None = None):
    """From the ``logger`` config group: {kind: wandb|none, mode, project, entity, group, tags}."""
    cfg = dict(cfg or {})
    kind = cfg.pop("kind", "none")
    if kind in (None, "none"):
        return NullLogger()
    if kind == "wandb":
        return WandbLogger(run_dir, config, name=name, **cfg)
    raise ValueError(f"unknown logger kind {kind!r} (wandb or none)")
