"""The interpolations the configs use, and the one function that registers them with OmegaConf:

    ${run_name_from:${hydra:overrides.task}}     configs/train.yaml: the run name (``run_name_from``)
    ${attention_default:fusedmax,lam}            configs/attention/*.yaml: the library owns the mappings' defaults

Every entry point calls ``register_resolvers()`` at import (tasks/train.py, stage.py, evaluate.py,
seq2seq/align.py): Hydra resolves the config before the app's function runs, and a job process of a launcher
(submitit) imports the entry point's module without running its ``__main__`` block.
"""

from __future__ import annotations

import re

from omegaconf import OmegaConf

from . import records

# group choices left out of the run name: task and attention are in the run dir's path already
# (<task>/<attention>/<run_name>); `attention=fusedmax` is a choice, `attention.lam=0.2` is not
_GROUP_CHOICES = {"task", "attention", "logger", "launcher"}


def _not_identity(key: str) -> bool:
    key = key.lstrip("+~")
    if key.startswith("hydra") or key in _GROUP_CHOICES:
        return True
    return not records.in_identity(key)


def run_name_from(overrides) -> str:
    """A file-name-safe run name from the command-line overrides (Hydra's ``hydra.overrides.task``) less those of
    a run's identity (``records.in_identity``), sorted ("default" when none is left). A string is taken as Hydra's
    override dirname."""
    if isinstance(overrides, str):
        items = [overrides] if overrides else []
    else:
        items = sorted(str(o).lstrip("+") for o in overrides if not _not_identity(str(o).split("=", 1)[0]))
    name = re.sub(r"[/\\:*?\"<>| ]+", "_", ",".join(items)).strip("_.")
    return name[:200] or "default"


def attention_default(name: str, key: str):
    """``${attention_default:fusedmax,lam}``: the default of one parameter of one mapping (``attention.DEFAULTS``)."""
    import attention

    return attention.DEFAULTS[name][key]


def register_resolvers() -> None:
    """Register the configs' resolvers; calling it again is harmless."""
    for name, resolver in (("run_name_from", run_name_from), ("attention_default", attention_default)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
