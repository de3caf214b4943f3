"""The harness's defaults are owned by the config files in configs/ (what Hydra composes for a run). Code used
without Hydra (tests, a notebook constructing a task or a trainer with a partial dict) reads its defaults from the
same files, so each default is written once.

    >>> config_defaults("trainer/default.yaml")["patience"]          # 3
    >>> config_defaults("task/multi30k.yaml", "task", "decode")      # {"beam": 5, "batch_size": 50, ...}
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@lru_cache(maxsize=None)
def _load(path: str):
    from omegaconf import OmegaConf  # Hydra's own YAML reading (e.g. 1e-3 is a float)

    return OmegaConf.to_container(OmegaConf.load(CONFIGS / path), resolve=False)


def config_defaults(path: str, *keys: str):
    """The block ``keys`` of ``configs/<path>`` as plain Python, a fresh copy. Hydra's ``defaults`` list and
    interpolations (``${...}``) are not followed: read blocks that hold plain values."""
    node = _load(path)
    for key in keys:
        node = node[key]
    return copy.deepcopy(node)
