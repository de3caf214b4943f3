"""Re-evaluate a finished run's best checkpoint, e.g. on another test set: ``make evaluate RUN=<run dir> [ARGS=...]``.

    python -m tasks.evaluate outputs/gigaword/fusedmax/seed=1 task.test_set=duc2004 task.duc.root=DIR/DUC2004

The task is rebuilt from the run dir's ``.hydra/config.yaml`` (the config the run was made with, its
``${hydra:...}`` values resolved against the run's own ``.hydra/hydra.yaml``), with ``key=value`` overrides on top;
its ``setup()`` rebuilds the data and vocabulary, the checkpoint of the model the run's record scored is loaded
(``checkpoints/best.pt``, or ``last.pt`` when ``max_steps`` ended the run inside an epoch and the model at that
step was evaluated: ``best_epoch`` null in the record) and ``task.evaluate(model, split)`` runs (``split=test`` by
default; ``--split valid``). The result is printed and written to ``<run dir>/evaluations/<split>[,<overrides>].json``;
the run and its record are left as they are.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from . import records
from .build import build_task
from .checkpoints import CheckpointError, load_checkpoint_file, load_model_state
from .files import atomic_write
from .resolvers import register_resolvers
from .runtime import pick_device

register_resolvers()  # before a run's saved config is resolved


def load_run_config(run_dir: str | os.PathLike, overrides=()) -> dict:
    """The resolved config of a run, with ``key=value`` overrides (``+key=value`` adds a key)."""
    from hydra.core.utils import setup_globals

    run_dir = Path(run_dir)
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.exists():
        raise FileNotFoundError(f"{saved} not found: RUN must be a run dir made by tasks.train (it has .hydra/)")
    cfg = OmegaConf.load(saved)
    for item in overrides:
        key, _, value = str(item).partition("=")
        OmegaConf.update(cfg, key.lstrip("+"), OmegaConf.from_dotlist([f"v={value}"]).v, force_add=True)
    hydra_yaml = run_dir / ".hydra" / "hydra.yaml"
    saved_hydra = OmegaConf.load(hydra_yaml).hydra if hydra_yaml.exists() else OmegaConf.create()
    # ${hydra:runtime.cwd} & co. as the run had them (Hydra's own resolver reads the live HydraConfig)
    OmegaConf.register_new_resolver("hydra", lambda key: OmegaConf.select(saved_hydra, key), replace=True)
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    finally:
        OmegaConf.clear_resolver("hydra")
        setup_globals()  # Hydra's resolvers back


def evaluate_run(run_dir: str | os.PathLike, overrides=(), split: str = "test", device: str = "auto") -> dict:
    run_dir = Path(run_dir)
    config = load_run_config(run_dir, overrides)
    task = build_task(config)
    task.device = pick_device(device if device != "auto" else config.get("trainer", {}).get("device", "auto"))
    task.setup()
    record = records.record_path(config["results_dir"], task.name, config["attention"]["name"], config["run_name"])
    recorded = json.loads(record.read_text()) if record.exists() else None
    checkpoint = scored_checkpoint(run_dir, recorded)
    state = load_checkpoint_file(checkpoint)
    model = task.build_model()
    load_model_state(model, state, checkpoint, "Evaluate it with the code and config that wrote it.")
    model.to(task.device).eval()
    with torch.no_grad():
        metrics = task.evaluate(model, split)
    metrics = {k: float(v) if isinstance(v, (int, float, torch.Tensor)) and not isinstance(v, bool) else v
               for k, v in metrics.items()}
    result = {"run_dir": str(run_dir.resolve()), "task": task.name, "attention": config["attention"]["name"],
              "split": split, "overrides": list(overrides), "best_epoch": int(state.get("epoch", -1)) + 1,
              "metric": task.metric, "metrics": metrics, "git": records.git_info(), "finished": records.now(),
              "checkpoint": checkpoint.name}
    if checkpoint.name == "last.pt":  # the model at the run's last step: no epoch (as in its record)
        result["best_epoch"] = recorded.get("best_epoch") if recorded else None
    name = re.sub(r"[/\\:*?\"<>| ]+", "_", ",".join([split, *overrides]))[:200]
    text = json.dumps(result, indent=2, default=str)
    out = atomic_write(run_dir / "evaluations" / f"{name}.json", text)
    result["path"] = str(out)
    # beside the run's record too, where the report finds it (tasks/report/runs.py: attach_evaluations)
    if record.exists():
        beside = atomic_write(records.evaluations_dir(record) / f"{name}.json", text)
        result["beside_record"] = str(beside)
    return result


def scored_checkpoint(run_dir: Path, record: dict | None) -> Path:
    """The checkpoint of the model a finished run's record scored: ``last.pt`` when the record says ``best_epoch``
    null (``max_steps`` stopped inside an epoch and the model at that step was evaluated), else ``best.pt``."""
    best, last = run_dir / "checkpoints" / "best.pt", run_dir / "checkpoints" / "last.pt"
    if record is not None and record.get("best_epoch") is None and last.exists():
        return last
    if best.exists():
        return best
    raise FileNotFoundError(f"{best} not found{'' if record else ', and the run has no record'}: the run has not "
                            f"finished (run its command again to continue it), or its checkpoints were moved")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    split = "test"
    if "--split" in args:
        i = args.index("--split")
        split = args[i + 1]
        del args[i : i + 2]
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m tasks.evaluate RUN_DIR [--split test|valid|<test set>] [key=value ...]\n"
              "  e.g. task.extra_test_sets=[test_2017_flickr,test_2017_mscoco] (Multi30k's WMT17 test sets)",
              file=sys.stderr)
        return 0 if args else 2
    try:
        result = evaluate_run(args[0], args[1:], split=split)
    except (FileNotFoundError, CheckpointError) as error:  # one line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({k: result[k] for k in ("task", "attention", "split", "overrides", "metrics")}, indent=1,
                     default=str))
    print(f"written to {result['path']}" + (f" and {result['beside_record']}" if "beside_record" in result else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
