"""Loggers: W&B (offline by default, never a login prompt or a hang) or none.

``logger=wandb`` (default): ``mode: offline`` unless the environment sets ``WANDB_MODE``; the run is written under
``<run_dir>/wandb/``. ``logger=wandb_online``: ``mode: online`` (needs ``WANDB_API_KEY`` or a prior ``wandb login``;
without credentials it fails at once instead of prompting). ``logger=none``: nothing but the local record
(tasks/records.py).

**One run, however often it is resumed.** The W&B run id is derived from the run dir, and ``wandb.init`` is called
with ``resume="allow"``: online, a resumed run appends to the same W&B run. Offline, W&B writes one
``offline-run-<time>-<id>`` folder per start (a killed and resumed run has several, with one id); they are parts of
one run and must be uploaded together, oldest first, which ``wandb sync`` does when it is given all of them in one
command. ``python -m tasks.loggers sync DIR`` (``make sync RUNS=DIR``) does exactly that for every run under DIR;
syncing a single part alone would leave the W&B run with only that part. The report's offline reader
(tasks/report/wandb_source.py) merges the parts the same way.

**What W&B gets at the end.** ``record(record)`` puts the whole run record (tasks/records.py) in the run's files as
``record.json`` (offline runs keep it in their folder and ``wandb sync`` uploads it) and copies ``finished``,
``git_commit``, ``git_dirty``, ``best_epoch``, ``epochs``, ``steps``, ``time_per_epoch_s``, ``wall_time_s`` and the
final metrics (``best_valid/<metric>``, ``test/<metric>``) to the run summary: ``make tables SOURCE=wandb`` reads
``record.json`` first, so W&B sees exactly what the local record says, whatever keys it has.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

RECORD_FILE = "record.json"
SUMMARY_FIELDS = ("best_epoch", "epochs", "steps", "time_per_epoch_s", "wall_time_s", "started", "finished")


class NullLogger:
    """``logger=none``, and a Trainer's logger when it is given none: the interface of every logger, doing nothing
    (the run record, tasks/records.py, is written either way)."""

    def log(self, scalars: dict, step: int) -> None: ...
    def summary(self, scalars: dict) -> None: ...
    def record(self, record: dict) -> None: ...
    def finish(self, exit_code: int = 0) -> None: ...


class LoggerError(RuntimeError):
    """The logger cannot start (W&B online without credentials); the message says what to set."""


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

        if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _has_netrc_login()):
            raise LoggerError("logger=wandb_online needs W&B credentials: set WANDB_API_KEY (or run `wandb login` "
                               "once), or use logger=wandb (offline) / logger=none")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
        settings = wandb.Settings(silent=True, console="off", disable_git=True, disable_code=True,
                                  x_disable_stats=True, x_disable_machine_info=True, init_timeout=init_timeout)
        self.run = wandb.init(project=project, entity=entity, name=name, group=group, tags=list(tags),
                              config=config, dir=str(run_dir), mode=mode, id=run_id, resume="allow",
                              settings=settings, reinit="finish_previous")
        self.dir = Path(self.run.dir).parent if self.run is not None else None

    def log(self, scalars: dict, step: int) -> None:
        self.run.log(scalars, step=step)

    def summary(self, scalars: dict) -> None:
        for key, value in scalars.items():
            self.run.summary[key] = value

    def record(self, record: dict) -> None:
        """The run record: as ``record.json`` in the run's files, and its main fields in the summary."""
        path = Path(self.run.dir) / RECORD_FILE
        path.write_text(json.dumps(record, indent=1, default=str, allow_nan=True))
        self.run.save(str(path), base_path=self.run.dir, policy="now")
        git = record.get("git") or {}
        self.summary({"git_commit": git.get("commit"), "git_dirty": git.get("dirty"),
                      **{k: record[k] for k in SUMMARY_FIELDS if k in record},
                      **{f"{'best_valid' if split == 'valid' else split}/{k}": v
                         for split, metrics in (record.get("metrics") or {}).items()
                         for k, v in (metrics or {}).items() if isinstance(v, (int, float))}})

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


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


# ---- uploading offline runs: every part of a resumed run together, oldest first


def offline_parts(root: str | os.PathLike) -> dict[str, list[Path]]:
    """``{run id: [offline-run folders, oldest first]}`` under ``root``: the parts of each (resumed) run."""
    runs: dict[str, list[Path]] = {}
    for folder in sorted(Path(root).rglob("offline-run-*")):
        if folder.is_dir() and list(folder.glob("run-*.wandb")):
            run_id = folder.name.rsplit("-", 1)[-1]
            runs.setdefault(run_id, []).append(folder)
    # the folder name starts with offline-run-YYYYMMDD_HHMMSS: sorting names sorts start times
    return {run_id: sorted(parts, key=lambda p: p.name) for run_id, parts in runs.items()}


def sync_commands(root: str | os.PathLike, extra: list[str] | tuple = ()) -> list[list[str]]:
    """One ``wandb sync`` per run, with all of its parts (``wandb sync`` uploads the parts of one run in order)."""
    return [["wandb", "sync", "--include-synced", *extra, *map(str, parts)] for parts in offline_parts(root).values()]


def sync(root: str | os.PathLike, extra: list[str] | tuple = (), dry_run: bool = False) -> int:
    commands = sync_commands(root, extra)
    if not commands:
        print(f"no offline W&B runs under {root}", file=sys.stderr)
    failed = 0
    for command in commands:
        print(" ".join(command))
        if not dry_run:
            failed += subprocess.run(command).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":  # python -m tasks.loggers sync DIR [--dry-run] [wandb sync options...]
    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "sync":
        sys.exit("usage: python -m tasks.loggers sync DIR [--dry-run] [-p PROJECT] [-e ENTITY]")
    dry = "--dry-run" in args
    sys.exit(sync(args[1], [a for a in args[2:] if a != "--dry-run"], dry_run=dry))
