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
      "best_epoch": 7,                                  # 1-based; null: the model at the last step (max_steps)
      "best_step": 1540,                                # the optimizer step of the model evaluated
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
      "host": "hostname",
      "environment": {"python": "3.11.2", "platform": "Linux-...", "packages": {"torch": "2.13.0", ...},
                      "cpu": "AMD EPYC 7763 64-Core Processor", "cpu_capability": "AVX2"}
    }

``environment`` names the versions of what shapes a result beyond the code and the config (the numerics, the
tokenizer, the metrics) and the CPU: its model and the instruction set torch's CPU kernels were picked for
(``torch.backends.cpu.get_cpu_capability()``: AVX512, AVX2, DEFAULT...), since floating-point sums vectorised
differently round differently from the first step on. Two clean runs of one commit and one config that differ are
told apart by it.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import logging
import math
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

from tasks.files import atomic_write

log = logging.getLogger(__name__)

SCHEMA = 1
KEYS = ("schema", "task", "attention", "run", "seed", "metric", "metrics", "best_epoch", "epochs", "steps",
        "time_per_epoch_s", "wall_time_s", "history", "resumed_from", "device", "git", "config", "started",
        "finished", "run_dir", "host")  # and "environment", in records written since it was added
# the packages whose version can change a number in a record: numerics, tokenization, metrics, configuration
PACKAGES = ("torch", "numba", "numpy", "sacremoses", "sacrebleu", "rouge-score", "hydra-core", "omegaconf")


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


def environment() -> dict:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": packages,
            "cpu": cpu_model(), "cpu_capability": cpu_capability()}


def cpu_model() -> str | None:
    """The CPU's model name ("AMD EPYC 7763 64-Core Processor"): /proc/cpuinfo on Linux, else the platform's."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def cpu_capability() -> str | None:
    """The instruction set torch dispatches its CPU kernels to (AVX512, AVX2, DEFAULT, ...; None: torch absent)."""
    try:
        import torch
    except ImportError:
        return None
    return str(torch.backends.cpu.get_cpu_capability())


# ---- which settings make a run: one rule, read by the resume identity (tasks/train.py) and the report's grouping
# of runs into table cells (tasks/report/runs.py). Patterns are fnmatch patterns over the dotted keys of the
# resolved config; a pattern also covers every key under it ("logger" covers "logger.kind").

# Settings that never change a run's result: where files live, how a run is shown, logged, launched or
# checkpointed, threads and devices, evaluation-only extras (more test sets, DUC-2004) and evaluation batch sizes.
NON_RESULT_KEYS = (
    "note", "run_name", "results_dir", "data_dir", "shared", "logger", "launcher", "hydra",
    "trainer.progress", "trainer.threads", "trainer.resume", "trainer.resume_unchecked",
    "trainer.log_every_steps", "trainer.signals",
    "trainer.checkpoint_every_steps", "trainer.checkpoint_every_minutes", "trainer.device", "trainer.eval_test",
    "trainer.deterministic", "task.threads", "task.progress", "task.eval.save_attention", "task.attention_examples",
    "task.eval.batch_size", "task.eval_batch_size", "task.decode.batch_size", "task.duc", "task.extra_test_sets",
    "*.root", "*.cache", "*.mirror", "*.path", "*.url", "*.check_md5", "*.sha256", "embeddings.member",
    "task.embeddings",
    "task.report",  # how the report shows a task's runs (tasks/report/sections.py), never what they compute
)
# How long a run trains: it changes the result, but a larger budget continues the same run (same identity).
BUDGET_KEYS = ("trainer.epochs", "trainer.max_steps")


def matches(key: str, patterns) -> bool:
    from fnmatch import fnmatchcase

    return any(fnmatchcase(key, p) or fnmatchcase(key, p + ".*") for p in patterns)


def changes_result(key: str) -> bool:
    """Whether a setting can change a run's result (``NON_RESULT_KEYS``: those that cannot)."""
    return not matches(key, NON_RESULT_KEYS)


def in_identity(key: str) -> bool:
    """Whether a setting is part of a run's identity: it changes the result and is not a budget."""
    return changes_result(key) and not matches(key, BUDGET_KEYS)


def get(mapping: Any, dotted: str, default=None):
    """``mapping["a"]["b"]`` for ``dotted`` "a.b"; ``default`` where a level is missing or not a dict."""
    for key in dotted.split("."):
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


def flatten(mapping: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": leaf} of a nested dict (lists stay leaves)."""
    if not isinstance(mapping, dict):
        return {prefix: mapping} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def record_path(results_dir: str | os.PathLike, task: str, attention: str, run: str) -> Path:
    safe = run.replace(os.sep, "_") or "default"
    return Path(results_dir) / task / attention / f"{safe}.json"


def evaluations_dir(record_file: str | os.PathLike) -> Path:
    """Where ``make evaluate`` puts a run's later evaluations beside its record: ``<record stem>.evaluations/``."""
    record_file = Path(record_file)
    return record_file.with_name(f"{record_file.stem}.evaluations")


class RecordError(ValueError):
    """A record that must not be written: its headline metric is not a finite number."""


def finite_json(obj, where: str = "", found: list | None = None):
    """``obj`` with every nan/inf float replaced by None (JSON has no NaN: ``json.dumps`` would write a bare
    ``NaN`` token that strict parsers reject); their dotted paths are appended to ``found``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        if found is not None:
            found.append(where)
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v, f"{where}.{k}" if where else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v, f"{where}[{i}]", found) for i, v in enumerate(obj)]
    return obj


def write_record(path: str | os.PathLike, record: dict) -> Path:
    """Write the record atomically as strict JSON. A headline metric (``metrics.valid|test.<metric>``) that is
    not a finite number is a ``RecordError`` (nothing is written: such a run is a failure, not a result); any
    other nan/inf becomes null, with a warning."""
    missing = [k for k in KEYS if k not in record]
    if missing:
        raise ValueError(f"run record lacks {missing}")
    path = Path(path)
    metric = record.get("metric")
    for split, values in (record.get("metrics") or {}).items():
        value = (values or {}).get(metric)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise RecordError(f"{path} not written: the {split} {metric} is {value!r}, not a result")
    found: list[str] = []
    text = json.dumps(finite_json(record, found=found), indent=2, default=str, allow_nan=False)
    if found:
        log.warning(f"{path}: not-finite values written as null: {', '.join(found[:10])}")
    return atomic_write(path, text)  # a failed write (a full disk) leaves no temporary file behind


def make_record(*, task: str, attention: dict, run: str, seed: int, metric: str, summary: dict, config: dict,
                started: str, wall_time_s: float, run_dir: str | os.PathLike) -> dict:
    attention = dict(attention)
    name = attention.pop("name")
    attention.pop("_target_", None)
    return {
        "schema": SCHEMA, "task": task, "attention": {"name": name, "params": attention}, "run": run,
        "seed": seed, "metric": metric,
        "metrics": {"valid": summary["valid"], "test": summary["test"]},
        "best_epoch": summary["best_epoch"], "best_step": summary.get("best_step"), "epochs": summary["epochs"],
        "steps": summary["steps"],
        "time_per_epoch_s": summary["time_per_epoch_s"], "wall_time_s": wall_time_s,
        "history": summary["history"], "resumed_from": summary["resumed_from"], "device": summary["device"],
        "git": git_info(), "config": config, "started": started, "finished": now(),
        "run_dir": str(Path(run_dir).resolve()), "host": socket.gethostname(), "environment": environment(),
    }
