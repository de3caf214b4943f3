"""The ``Task`` protocol: what the trainer (tasks/trainer.py) drives. Each task package (tasks/snli/, tasks/seq2seq/)
implements it; tasks/README.md, "Adding a task", walks through one."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Task(Protocol):
    """What the trainer drives. A task owns its data, its model and its metrics.

    ``device`` is set by the trainer before ``setup()``; tasks move their evaluation batches there. Training batches
    are moved by the trainer (``move_to``: tensors inside dicts, lists, tuples and dataclasses).
    """

    name: str    # "snli", "multi30k", ...: results/<name>/...
    metric: str  # the validation metric to maximise (a key of evaluate()'s dict), e.g. "accuracy" or "bleu"
    device: torch.device

    def setup(self) -> None:
        """Load (or download) the data, build the vocabulary. Called once, before build_model()."""

    def build_model(self) -> torch.nn.Module:
        """A fresh model (the trainer moves it to the device and may load a checkpoint into it)."""

    def train_batches(self, epoch: int, generator: torch.Generator) -> Iterable:
        """The training batches of one epoch, shuffled with ``generator`` only (never the global RNG), so that
        the order is reproducible and a resumed epoch can skip the batches already done."""

    def training_loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict]:
        """The loss to minimise on ``batch`` (a scalar tensor) and scalars to log (floats, or 0-d tensors: those
        are read only at logging steps, so a step needs no device-to-host sync)."""

    def evaluate(self, model: torch.nn.Module, split: str) -> dict:
        """Metrics on ``split`` in {"valid", "test"}: {metric: float, "support": ..., "groups": ..., ...}.
        Called with the model in eval mode under torch.no_grad()."""

    def on_test_end(self, model: torch.nn.Module, run_dir: Path) -> None:
        """Optional: save attention maps, predictions... after the final test evaluation (best model)."""
