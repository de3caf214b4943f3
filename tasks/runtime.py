"""Where and how a run computes: seeds, CPU threads, the device, batches moved to it, and the precision
(``trainer.seed``/``threads``/``device``/``precision``). Used by the trainer (tasks/trainer.py), by evaluation
(tasks/evaluate.py) and by the tasks."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(n: int | None) -> None:
    """Intra-op CPU threads (the attention library's numba kernels follow torch's count). On a loaded machine more
    threads than free cores make every step many times slower (OpenMP spinning): use 1 there."""
    if n:
        torch.set_num_threads(int(n))


def pick_device(name: str = "auto") -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def move_to(obj: Any, device: torch.device) -> Any:
    """Tensors inside (nested) dicts, lists, tuples, namedtuples and dataclasses, moved to ``device``."""
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return type(obj)((k, move_to(v, device)) for k, v in obj.items())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: move_to(getattr(obj, f.name), device)
                                           for f in dataclasses.fields(obj) if f.init})
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(move_to(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to(v, device) for v in obj)
    return obj


# trainer.precision: the names accepted (tasks/train.py checks a value against them) and the autocast dtype of each
PRECISIONS = {"fp32": None, "32": None, "bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16,
              "fp16": torch.float16, "16": torch.float16, "16-mixed": torch.float16}


def autocast_dtype(precision: str | None) -> torch.dtype | None:
    key = str(precision or "fp32").lower()
    if key not in PRECISIONS:
        raise ValueError(f"trainer.precision={precision!r}: use fp32, bf16 or fp16")
    return PRECISIONS[key]
