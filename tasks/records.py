"""The local record of a run: ``results/<task>/<attention>/<run>.json``, written atomically at the end of a run.

Keys (stable; the tables read them):

    {
      "schema": 1,
      "task": "snli",                                   # Task.name
      "attention": {"name": "fusedmax", "params": {"gamma": 1.0, "lam": 0.1}},
      "run": "seed=1",                                  # the run name (file stem); see configs/train.yaml
      "seed": 1,
      "metric": "accuracy",                             # Task.metric, the validation metric maximised
      "metrics": {
        "valid": {"accuracy": 0.71, "support": 3.2, "support_frac": 0.25, "segments": 2.1, "clusters": 2.0,
                  "groups": 2.1, "rows": 5000, ...},    # the best checkpoint, re-evaluated
        "test":  {...same keys...}                      # {} when trainer.eval_test=false
      },
      "best_epoch": 7,                                  # 1-based
      "epochs": 9,                                      # epochs completed
      "steps": 1980,                                    # optimizer steps
      "time_per_epoch_s": 41.2,                         # mean over epochs (training + validation)
      "wall_time_s": 402.0,                             # this process, start to end (a resumed run: this part)
      "history": [{"epoch": 1, "step": 220, "train_loss": ..., "lr": ..., "train_seconds": ...,
                   "epoch_seconds": ..., "valid": {...}}, ...],
      "resumed_from": null | {"epoch": 3, "batch_in_epoch": 120, "step": 780},
      "device": "cpu",
      "git": {"commit": "c3c0765...", "dirty": true},   # commit null outside a git checkout
      "config": {...},                                  # the resolved Hydra config
      "started": "2025-01-01T12:00:00+00:00", "finished": "...",   # ISO 8601, UTC
      "run_dir": "/abs/path/outputs/snli/fusedmax/seed=1",
      "host": "hostname"
    }
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
from pathlib import Path

SCHEMA = 1
KEYS = ("schema", "task", "attention", "run", "seed", "metric", "metrics", "best_epoch", "epochs", "steps",
        "time_per_epoch_s", "wall_time_s", "history", "resumed_from", "device", "git", "config", "started",
        "finished", "run_dir", "host")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_info(cwd: str | os.PathLike | None = None) -> dict:
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def record_path(results_dir: str | os.PathLike, task: str, attention: str, run: str) -> Path:
    safe = run.replace(os.sep, "_") or "default"
    return Path(results_dir) / task / attention / f"{safe}.json"


def evaluations_dir(record_file: str | os.PathLike) -> Path:
    """Where ``make evaluate`` puts a run's later evaluations beside its record: ``<record stem>.evaluations/``."""
    record_file = Path(record_file)
    return record_file.with_name(f"{record_file.stem}.evaluations")


def write_record(path: str | os.PathLike, record: dict) -> Path:
    missing = [k for k in KEYS if k not in record]
    if missing:
        raise ValueError(f"run record lacks {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2, default=str, allow_nan=True))
    os.replace(tmp, path)
    return path


def make_record(*, task: str, attention: dict, run: str, seed: int, metric: str, summary: dict, config: dict,
                started: str, wall_time_s: float, run_dir: str | os.PathLike) -> dict:
    attention = dict(attention)
    name = attention.pop("name")
    attention.pop("_target_", None)
    return {
        "schema": SCHEMA, "task": task, "attention": {"name": name, "params": attention}, "run": run,
        "seed": seed, "metric": metric,
        "metrics": {"valid": summary["valid"], "test": summary["test"]},
        "best_epoch": summary["best_epoch"], "epochs": summary["epochs"], "steps": summary["steps"],
        "time_per_epoch_s": summary["time_per_epoch_s"], "wall_time_s": wall_time_s,
        "history": summary["history"], "resumed_from": summary["resumed_from"], "device": summary["device"],
        "git": git_info(), "config": config, "started": started, "finished": now(),
        "run_dir": str(Path(run_dir).resolve()), "host": socket.gethostname(),
    }
