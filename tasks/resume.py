"""A run dir's checkpoints: ``checkpoints/last.pt`` (the whole training state) and ``checkpoints/best.pt`` (the best
epoch's model), and what they allow: continue the run, start it over, or stop with an error that says why.

- ``last.pt`` holds model, optimizer, scheduler, grad scaler, every RNG state, the run's progress (one entry), the
  seed and the run's identity (tasks/train.py ``run_identity``); a checkpoint of a run with other settings is a
  ``RunMismatchError``, one without an identity needs ``trainer.resume_unchecked=true``;
- ``last.pt`` missing while ``best.pt`` exists stops (starting over would overwrite the best model);
  ``trainer.resume=false`` removes the old ``best.pt`` first (it must never stand for the new run);
- ``best.pt`` must be the best epoch's model: at an epoch end ``last.pt`` is written first, so when ``last.pt`` is
  the end of the best epoch itself, a missing, damaged or older ``best.pt`` is rewritten from it; otherwise such a
  ``best.pt`` is an error, never a silent evaluation of another model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from tasks.files import remove_orphan_temporaries

from .checkpoints import CheckpointError, atomic_save, load_checkpoint_file, load_model_state, rng_state, set_rng_state

log = logging.getLogger("tasks.trainer")  # the trainer's log lines, under the name they have always had


class RunMismatchError(RuntimeError):
    """``last.pt`` in this run dir belongs to a run with other settings (see tasks/train.py ``run_identity``)."""

    def __init__(self, path: Path, saved: dict, wanted: dict):
        keys = sorted(k for k in set(saved) | set(wanted) if saved.get(k, "<absent>") != wanted.get(k, "<absent>"))
        shown = ", ".join(f"{k}: {saved.get(k, '<absent>')!r} -> {wanted.get(k, '<absent>')!r}" for k in keys[:8])
        super().__init__(
            f"{path} is a checkpoint of a run with other settings ({shown}{', ...' if len(keys) > 8 else ''}).\n"
            f"  Resuming would mix two runs. Start this one over with trainer.resume=false (the old checkpoint is "
            f"overwritten), or give it its own folder with run_name=NAME.")


class RunCheckpoints:
    """The checkpoints of one run dir. ``saved_step`` and ``saved_at`` (``time.monotonic``) say when ``last.pt``
    was last written or read, for wall-time checkpoints and for the messages of a run that stops."""

    def __init__(self, run_dir: Path, identity: dict | None, resume_unchecked: bool = False):
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "checkpoints"
        self.last, self.best = self.dir / "last.pt", self.dir / "best.pt"
        self.identity, self.resume_unchecked = identity, resume_unchecked
        self.saved_step, self.saved_at = 0, time.monotonic()

    # -- last.pt ----------------------------------------------------------------------------------------------
    def save_last(self, model: torch.nn.Module, optimizer, scheduler, scaler, progress: dict, seed: int) -> None:
        atomic_save({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng_state(), "progress": progress, "seed": seed,
            "identity": self.identity,
        }, self.last)
        self.saved_at, self.saved_step = time.monotonic(), progress["step"]

    def resume_or_start(self, resume: bool, model: torch.nn.Module, optimizer, scheduler, scaler) -> dict | None:
        """With ``resume`` and a ``last.pt``: its states loaded into ``model``, ``optimizer``, ``scheduler``,
        ``scaler`` and the RNGs, and its progress returned (a dict of ``Progress`` fields; those added later may be
        missing). None: the run starts from scratch."""
        if self.dir.is_dir():
            for orphan in remove_orphan_temporaries(self.dir):
                log.info(f"removed {orphan}, left by a process killed while writing it")
        if resume and self.last.exists():
            state = self.read_last()
            load_model_state(model, state, self.last,
                             "Run it with the code and config that wrote it, or start this run over with "
                             "trainer.resume=false (this overwrites its checkpoints).")
            optimizer.load_state_dict(state["optimizer"])  # moves its state to the parameters' device
            scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            progress = state["progress"] if "progress" in state else state  # before Progress: at the top level
            self.saved_step = progress["step"]
            return progress
        if resume and self.best.exists():
            raise CheckpointError(
                f"{self.best} exists but {self.last} is missing: this run dir holds a run that cannot be continued "
                f"(best.pt has the best model's weights only: no optimizer state, RNG states or position), and "
                f"starting over would overwrite its best.pt. To start over: trainer.resume=false; to keep it, move "
                f"{self.run_dir} away or give the new run its own folder with run_name=NAME.")
        if self.best.exists():
            log.warning(f"trainer.resume=false: starting over; removing {self.best} of the earlier run in this folder")
            self.best.unlink()
        return None

    def read_last(self) -> dict:
        """``last.pt``, read on the CPU (``load_state_dict`` copies to the device) and checked to be this run's."""
        state = load_checkpoint_file(self.last, remedy=self._damaged_last_remedy())
        saved = state.get("identity")
        if saved is not None:  # read by today's rule: a setting since found not to change a result never blocks
            from .records import in_identity

            saved = {k: v for k, v in saved.items() if in_identity(k)}
        if self.identity is not None and saved is not None and saved != self.identity:
            raise RunMismatchError(self.last, saved, self.identity)
        if self.identity is not None and saved is None and not self.resume_unchecked:
            raise CheckpointError(
                f"{self.last} has no run identity (written by an older version): whether it was made with these "
                f"settings cannot be checked, and resuming it under other settings would mix two runs. Continue it "
                f"anyway with trainer.resume_unchecked=true (only if the settings are those it was made with), or "
                f"start over with trainer.resume=false.")
        return state

    def _damaged_last_remedy(self) -> str:
        other = (f" {self.best} is not affected: `make evaluate RUN={self.run_dir}` evaluates that best model."
                 if self.best.exists() else "")
        return (f"The run cannot continue from it: start it over with trainer.resume=false (this overwrites the "
                f"run's checkpoints), or restore {self.last.name} from a copy.{other}")

    # -- best.pt ----------------------------------------------------------------------------------------------
    def save_best(self, model: torch.nn.Module, epoch: int, valid: dict) -> None:
        """best.pt: the model at the end of epoch ``epoch`` (0-based), the best one, with its validation metrics."""
        atomic_save({"model": model.state_dict(), "epoch": epoch, "valid": valid}, self.best)

    def reconcile_best(self, progress: Any, model: torch.nn.Module) -> None:
        """On resume: best.pt must be the best epoch's model. When last.pt was written at the end of that very epoch
        (a kill between the two writes of an epoch end, or a lost best.pt), ``model`` (resumed from it) is the best
        model: best.pt is rewritten from it; otherwise a missing, damaged or other epoch's best.pt is an error."""
        if progress.batch_in_epoch == 0 and progress.epoch == progress.best_epoch + 1:
            try:
                self.read_best(progress.best_epoch)
            except CheckpointError:
                log.warning(f"{self.best} is not the model of the best epoch {progress.best_epoch + 1} (missing, "
                            f"damaged or older): rewritten from last.pt, saved at the end of that epoch")
                self.save_best(model, progress.best_epoch, progress.history[progress.best_epoch]["valid"])
            return
        self.read_best(progress.best_epoch)

    def read_best(self, best_epoch: int) -> dict:
        """best.pt read and matched against the run's best epoch (0-based, from ``last.pt``): a missing, damaged or
        other epoch's best.pt is an error, never a silent evaluation of another model."""
        start_over = "start the run over with trainer.resume=false (this retrains it)"
        if not self.best.exists():
            raise CheckpointError(
                f"{self.best} is missing, but {self.last} says epoch {best_epoch + 1} was this run's best: the best "
                f"model's weights are lost, and evaluating another model under that epoch's name would be a wrong "
                f"record. Restore {self.best.name} from a copy, or {start_over}.")
        state = load_checkpoint_file(self.best, remedy=f"Restore it from a copy, or {start_over}.")
        if state.get("epoch") != best_epoch:
            raise CheckpointError(
                f"{self.best} holds the model of epoch {int(state.get('epoch', -2)) + 1}, but this run's best epoch "
                f"is {best_epoch + 1} ({self.last}): it is not this run's best model. Restore the right "
                f"{self.best.name}, or {start_over}.")
        return state

    def load_best(self, model: torch.nn.Module, best_epoch: int) -> None:
        load_model_state(model, self.read_best(best_epoch), self.best, "Run it with the code and config that wrote it.")
