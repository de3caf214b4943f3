"""Run records from Weights & Biases: a project through the public API, or offline run directories.

Both end in the record structure of ``tasks.records`` (task, attention, seed, config, metrics …), so the tables
do not know where a run came from. The mapping from a W&B run:

- ``config``: the resolved Hydra config the harness logged (``wandb.init(config=...)``); task, attention and seed
  are read from it (``task.name``, ``attention.name`` + its parameters, ``seed``).
- ``summary``: the final metrics. Keys ``test/<metric>`` / ``best_valid/<metric>`` or ``valid/<metric>`` (the
  trainer logs ``test/`` and ``best_valid/``; also ``test_<metric>``,
  ``test.<metric>`` or a nested ``{"test": {...}}``) become ``metrics["test"][<metric>]`` …; other summary keys
  that name a record field (``epochs``, ``time_per_epoch_s``, ``wall_time_s``) are copied as they are.

**The run record first.** The harness uploads its whole run record as ``record.json`` into the W&B run's files
(tasks/loggers.py). When a run has it (an online run through ``run.file("record.json").download``, an offline
folder in ``files/record.json``), that record is used as it is, so a run read from W&B carries every key the local
record carries; the mapping below is the fallback for runs without it.

**Resumed offline runs.** Each start of a resumed offline run writes its own ``offline-run-<time>-<id>`` folder;
the folders of one id are parts of one run and are merged (config and record of the latest part, history of all).

The public API cannot see offline runs, so :func:`read_offline_run` reads an offline run's transaction log
(``run-<id>.wandb``: the LevelDB-style log of protobuf records that ``wandb sync`` uploads) with wandb's own
protobuf classes: config updates, summary updates and history rows (the summary of a key defaults to its last
logged value, as W&B does).
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from tasks.records import get

SPLITS = ("test", "valid")
RECORD_FILE = "record.json"  # the harness's run record in the run's files (tasks/loggers.py)
RECORD_FIELDS = ("epochs", "time_per_epoch_s", "wall_time_s", "git_commit", "started", "finished")

# ---- the .wandb transaction log: a LevelDB log (32 KiB blocks, 7-byte record headers) after a 7-byte file header

_FILE_HEADER = b":W&B"
_HEADER_LEN = 7
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _log_payloads(path: Path) -> Iterator[bytes]:
    """The payloads of a .wandb file, fragments joined. A truncated tail (a run killed mid-write) ends the scan."""
    data = Path(path).read_bytes()
    if not data.startswith(_FILE_HEADER):
        raise ValueError(f"{path}: not a W&B transaction log (no ':W&B' header)")
    pos, pending = _HEADER_LEN, b""
    while pos + _HEADER_LEN <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER_LEN:  # block trailer: zero padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER_LEN])
        start = pos + _HEADER_LEN
        if kind == 0 and length == 0:  # zero padding
            pos += left_in_block
            continue
        if start + length > len(data):
            return
        chunk = data[start : start + length]
        pos = start + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
        else:
            return


def _set_nested(target: dict, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            return
    target[keys[-1]] = value


def _item_keys(item) -> list[str]:
    return list(item.nested_key) if len(item.nested_key) else [item.key]


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def read_offline_run(run_dir: str | os.PathLike) -> dict:
    """``{"id", "name", "project", "config", "summary", "path"}`` of an offline run directory
    (``.../wandb/offline-run-<time>-<id>``) or of its ``run-<id>.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    log = run_dir if run_dir.suffix == ".wandb" else next(iter(sorted(run_dir.glob("run-*.wandb"))), None)
    if log is None:
        raise FileNotFoundError(f"{run_dir}: no run-<id>.wandb transaction log in this directory")
    run: dict = {"id": None, "name": None, "project": None, "config": {}, "summary": {}, "path": str(log.parent)}
    history: dict = {}
    explicit: dict = {}
    for payload in _log_payloads(log):
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except Exception:  # noqa: BLE001 - a damaged record: skip it, keep the rest
            continue
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["id"] = record.run.run_id or run["id"]
            run["name"] = record.run.display_name or run["name"]
            run["project"] = record.run.project or run["project"]
            for item in record.run.config.update:
                _set_nested(run["config"], _item_keys(item), _loads(item.value_json))
            for item in record.run.summary.update:
                _set_nested(explicit, _item_keys(item), _loads(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                _set_nested(run["config"], _item_keys(item), _loads(item.value_json))
            for item in record.config.remove:
                run["config"].pop(_item_keys(item)[0], None)
        elif kind == "history":
            for item in record.history.item:
                if item.value_json:
                    _set_nested(history, _item_keys(item), _loads(item.value_json))
        elif kind == "summary":
            for item in record.summary.update:
                _set_nested(explicit, _item_keys(item), _loads(item.value_json))
            for item in record.summary.remove:
                explicit.pop(_item_keys(item)[0], None)
    run["config"].pop("_wandb", None)
    # a config value is stored as {"value": v} only in config.yaml; here values are plain already
    run["history"] = history
    run["explicit"] = explicit
    run["summary"] = {k: v for k, v in {**history, **explicit}.items() if not k.startswith("_")}
    run["record"] = _read_json(log.parent / "files" / RECORD_FILE)
    return run


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def offline_run_dirs(root: str | os.PathLike) -> list[Path]:
    """Every offline run directory under ``root`` (a ``wandb/`` folder, a folder that holds one, or a run dir)."""
    root = Path(root)
    if list(root.glob("run-*.wandb")):
        return [root]
    return sorted({p.parent for p in root.rglob("run-*.wandb")})


def _run_id_of(folder: Path) -> str:
    """``offline-run-20250101_120000-<id>`` -> ``<id>`` (the folder itself when it is not named so)."""
    name = folder.name
    return name.rsplit("-", 1)[-1] if name.startswith(("offline-run-", "run-")) else str(folder)


def merged_offline_runs(root: str | os.PathLike) -> list[dict]:
    """The offline runs under ``root``, the parts of a resumed run (one id, several folders) merged into one:
    history of every part in order, config and explicit summary of the later parts over the earlier ones, the
    record of the latest part that has one."""
    groups: dict[str, list[Path]] = {}
    for folder in offline_run_dirs(root):
        groups.setdefault(_run_id_of(folder), []).append(folder)
    runs = []
    for folders in groups.values():
        parts = [read_offline_run(f) for f in sorted(folders, key=lambda f: f.name)]
        run = dict(parts[-1])
        history, explicit, config = {}, {}, {}
        for part in parts:
            history.update(part["history"])
            explicit.update(part["explicit"])
            config.update(part["config"])
        run["config"] = config
        run["summary"] = {k: v for k, v in {**history, **explicit}.items() if not k.startswith("_")}
        run["record"] = next((p["record"] for p in reversed(parts) if p["record"] is not None), None)
        run["parts"] = [p["path"] for p in parts]
        runs.append(run)
    return runs


# ---- mapping a W&B run (config + summary) to a run record


def _unwrap_config(config: dict) -> dict:
    """config.yaml style ``{"key": {"value": v, "desc": ...}}`` to ``{"key": v}``; plain dicts pass through."""
    if config and all(isinstance(v, dict) and "value" in v and set(v) <= {"value", "desc"} for v in config.values()):
        return {k: v["value"] for k, v in config.items()}
    return config


def _unflatten(config: dict) -> dict:
    """``{"attention.name": "x"}`` (a flattened config) to ``{"attention": {"name": "x"}}``."""
    out: dict = {}
    for key, value in config.items():
        if isinstance(key, str) and "." in key:
            _set_nested(out, key.split("."), value)
        else:
            out[key] = value
    return out


def _split_metrics(summary: dict) -> dict:
    """``{"test": {...}, "valid": {...}}`` from summary keys; ``best_valid/`` (the best checkpoint) wins over
    ``valid/`` (the last epoch's value)."""
    metrics: dict = {split: {} for split in SPLITS}
    ranked = []  # (priority, split, metric, value): higher priority wins
    for key, value in summary.items():
        if key in SPLITS and isinstance(value, dict):
            ranked += [(2, key, k, v) for k, v in value.items()]
            continue
        for split, prefix, priority in (("test", "test", 1), ("valid", "best_valid", 1), ("valid", "valid", 0)):
            sep = next((sep for sep in ("/", "_", ".") if key.startswith(prefix + sep)), None)
            if sep is not None:
                ranked.append((priority, split, key[len(prefix) + 1 :], value))
                break
    for _, split, metric, value in sorted(ranked, key=lambda item: item[0]):
        metrics[split][metric] = value
    return metrics


def to_record(config: dict, summary: dict, *, name: str | None = None, source: str = "wandb",
              record: dict | None = None) -> dict | None:
    """A run record from a W&B run: its uploaded ``record.json`` when there is one, else mapped from its config
    and summary; None if it names no task or no attention."""
    summary = dict(summary)
    if record is None and isinstance(summary.get("record"), dict):  # a whole record logged in the summary
        record = summary["record"]
    if isinstance(record, dict) and "task" in record and "attention" in record:
        record = dict(record)
        record.setdefault("source", source)
        return record
    config = _unflatten(_unwrap_config(dict(config)))
    task = get(config, "task.name", config.get("task"))
    attention = get(config, "attention", None)
    if isinstance(attention, str):
        attention = {"name": attention}
    if not isinstance(task, str) or not isinstance(attention, dict) or "name" not in attention:
        return None
    attention = {k: v for k, v in attention.items() if not k.startswith("_")}
    record = {
        "task": task,
        "attention": attention,
        "seed": config.get("seed"),
        "config": config,
        "metrics": _split_metrics(summary),
        "run": name,
        "source": source,
    }
    for field in RECORD_FIELDS:
        if field in summary:
            record[field] = summary[field]
    return record


def offline_records(root: str | os.PathLike) -> list[dict]:
    records = []
    for run in merged_offline_runs(root):
        run_dir = run["path"]
        record = to_record(run["config"], run["summary"], name=run["name"] or run["id"],
                           source=f"wandb-offline:{run_dir}", record=run["record"])
        if record is not None:
            records.append(record)
        else:
            print(f"[report] skipping {run_dir}: its log names no task/attention (not a harness run, or still "
                  "being written: `wandb.finish()` flushes it)", file=sys.stderr)
    return records


def api_records(project: str, *, api=None, filters: dict | None = None) -> list[dict]:
    """The finished runs of a W&B project (``entity/project`` or ``project``) as run records (needs login)."""
    if api is None:
        import wandb

        api = wandb.Api(timeout=60)
    records = []
    for run in api.runs(project, filters=filters or {}):
        if getattr(run, "state", "finished") not in ("finished", None):
            continue
        summary = getattr(run.summary, "_json_dict", None) or dict(run.summary)
        record = to_record(dict(run.config), summary, name=getattr(run, "name", None),
                           source=f"wandb:{project}/{run.id}", record=_api_record_file(run))
        if record is not None:
            records.append(record)
    return records


def _api_record_file(run) -> dict | None:
    """The run's uploaded ``record.json`` (None when it has none or it cannot be read)."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            run.file(RECORD_FILE).download(root=tmp, replace=True)
            return _read_json(Path(tmp) / RECORD_FILE)
    except Exception:  # noqa: BLE001 - no such file (older runs), no access: fall back to the mapping
        return None


def load(project_or_dir: str, **kwargs) -> list[dict]:
    """Records of a W&B project, or of the offline runs under a directory when ``project_or_dir`` is one."""
    if Path(project_or_dir).is_dir():
        return offline_records(project_or_dir)
    return api_records(project_or_dir, **kwargs)


def iter_records(sources: Iterable[str]) -> Iterator[dict]:
    for source in sources:
        yield from load(source)
