"""The training loop, shared by every task. Read it top to bottom: ``Trainer.fit`` and what it calls, in order.

    trainer = Trainer(task, cfg.trainer, run_dir, seed=1, logger=logger)
    summary = trainer.fit()      # {"valid": {...best...}, "test": {...}, "epochs": n, "time_per_epoch_s": ...}

What it does, in order:
1. seeds python/numpy/torch, picks the device (``trainer.device=auto``: CUDA when present, else CPU) and the
   precision (tasks/runtime.py), ``task.setup()``, ``task.build_model()`` (the ``Task`` protocol: tasks/task.py),
   the optimizer (Adam, AdamW or SGD; the optional warmup schedule: tasks/optim.py) and the LR-on-plateau scheduler;
2. resumes from ``run_dir/checkpoints/last.pt`` when it exists (``trainer.resume=true``, the default): model,
   optimizer, scheduler, grad scaler, every RNG state, and the run's ``Progress`` (epoch, position inside the epoch,
   global step, best metric, early-stopping counter, history). The same command run again therefore continues
   where the killed run stopped. What a run dir's checkpoints allow (continue, start over, refuse, repair best.pt)
   is tasks/resume.py; one checkpoint file (atomic writes, safe reads, RNG states) is tasks/checkpoints.py;
3. for each epoch: the task's shuffled batches (``task.train_batches(epoch, generator)``, the generator seeded from
   (seed, epoch) so the order is the same after a resume; batches already done in this epoch are skipped),
   loss (under autocast when ``precision`` is bf16/fp16) -> backward (a GradScaler for fp16) -> gradient clipping
   -> optimizer step; a checkpoint every ``checkpoint_every_steps`` steps and every ``checkpoint_every_minutes`` of
   wall time (0: off), and at the end of every epoch. SIGTERM / SIGUSR1 / SIGUSR2 (tasks/preemption.py) let the
   step under way finish, then a checkpoint is written and the run stops (``Preempted``); during the task's setup
   such a signal stops the run at once, with no record;
4. after each epoch: ``task.evaluate(model, "valid")``; the best model (on ``task.metric``, maximised) is saved to
   ``best.pt`` (after ``last.pt``: tasks/resume.py repairs a kill in between); LR decay on plateau
   (``lr_decay.factor`` < 1; with ``lr_decay.start_at``, OpenNMT-py 0.x's rule: every epoch from ``start_at`` or
   from the first epoch without improvement); early stopping after ``patience`` epochs without improvement;
5. at the end: the best checkpoint is loaded and evaluated on "valid" and "test"; ``task.on_test_end`` runs.
   When ``max_steps`` stopped inside an epoch, that partial epoch is not an epoch (no validation, not counted, not
   in ``history``): the model at the last step competes with best.pt on validation (``best_epoch`` None,
   ``best_step`` its step), and the same command with a larger ``max_steps`` continues inside that epoch.

Faults (each a clear error, never a wrong record):
- a non-finite training loss or validation metric stops training (``TrainingDiverged``, tasks/divergence.py); the
  loss is checked at logging steps, before every checkpoint (no checkpoint of non-finite weights) and at epoch ends,
  so a step adds no device-to-host sync;
- damaged, missing or foreign checkpoints: ``CheckpointError`` / ``RunMismatchError`` naming the file and the way
  out (tasks/resume.py);
- two processes on one run dir: ``fit`` holds ``<run dir>/.lock`` (``tasks.files.run_dir_lock``); a second one
  gets ``RunDirInUse`` naming the folder and the holder's pid before anything is read or written;
- writes: checkpoints are fsync'd before the rename; a full disk or read-only folder is a ``CheckpointError``
  saying so, the previous checkpoint kept; ``*.tmp-<pid>`` files of dead processes are removed at start.

Same seed, same result on CPU (tests/test_harness_trainer.py asserts it, and that kill + resume gives the same
weights as an uninterrupted run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tasks.files import run_dir_lock

from .config import config_defaults
from .divergence import LossTracker, TrainingDiverged, stopped_here
from .loggers import NullLogger
from .optim import build_optimizer, scheduled_lr
from .preemption import Preemption
from .resume import RunCheckpoints
from .runtime import autocast_dtype, move_to, pick_device, seed_everything, set_threads
from .task import Task

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- defaults
# the harness defaults, owned by configs/trainer/default.yaml (what Hydra loads first); read here for a Trainer made
# without Hydra: a partial cfg is merged over them
DEFAULTS: dict[str, Any] = config_defaults("trainer/default.yaml")


def merged(defaults: dict, cfg: dict | None) -> dict:
    out = dict(defaults)
    for key, value in (cfg or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------- trainer
@dataclasses.dataclass
class Progress:
    """Where a run is: saved in every checkpoint as one entry (``progress``) and restored from it as a whole."""

    epoch: int = 0                # epochs done
    batch_in_epoch: int = 0       # batches done in the current epoch
    step: int = 0                 # optimizer steps done
    best_metric: float = -math.inf
    best_epoch: int = -1          # 0-based; -1: none yet
    bad_epochs: int = 0           # epochs since the last improvement (early stopping)
    history: list[dict] = dataclasses.field(default_factory=list)  # one entry per epoch
    epoch_times: list[float] = dataclasses.field(default_factory=list)
    epoch_partial: dict = dataclasses.field(  # the current epoch so far (a resume inside an epoch continues it)
        default_factory=lambda: {"loss_sum": 0.0, "batches": 0, "seconds": 0.0})
    finished: bool = False
    stopped_early: bool = False   # by early stopping (a larger budget does not continue it)
    decaying: bool = False        # OpenNMT-py-style decay has started (lr_decay.start_at)
    epoch_batches: int | None = None  # batches in the current epoch (when the task's batches have a length)

    @classmethod
    def from_saved(cls, saved: dict) -> "Progress":
        """The progress a checkpoint saved; the fields added later (decaying, stopped_early, epoch_batches) may be
        missing from an older one: their defaults."""
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})


class Trainer:
    def __init__(self, task: Task, cfg: dict | None, run_dir: str | os.PathLike, seed: int = 1, logger=None,
                 identity: dict | None = None):
        self.task, self.seed = task, seed
        self.cfg = merged(DEFAULTS, cfg)
        self.run_dir = Path(run_dir)
        self.logger = logger or NullLogger()
        self.identity = identity  # what makes this run this run (tasks/train.py); checked on resume
        self.preemption = Preemption(self.cfg["signals"])

    def fit(self) -> dict:
        with run_dir_lock(self.run_dir):  # before anything is read or written there: RunDirInUse if held
            with self.preemption.catching():
                self.setup()
                log.info(f"{self.task.name} on {self.device}, {self.n_params:,} trainable parameters, "
                         f"run dir {self.run_dir}")
                if self.progress.finished and 0 < self.progress.batch_in_epoch == self.progress.epoch_batches:
                    self.end_of_epoch()  # max_steps hit the epoch's last batch, then a kill before its epoch end
                while not self.progress.finished:
                    self.train_one_epoch()  # (returns at the epoch end, or raises Preempted)
                    if self.progress.finished:
                        break
                    self.end_of_epoch()  # (ends with a checkpoint)
                    self.preemption.stop(self.progress.step)
            # signals act as usual again: last.pt says "finished", so a killed evaluation is redone by the same command
            return self.final_evaluation()

    # -- setup ------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Seeds, device, the task's data, model, optimizer, scheduler; then the resume from ``last.pt``. A signal
        (SIGTERM...) during all this stops it at once (``Preempted``): nothing to checkpoint yet."""
        with self.preemption.immediate():
            self.build()
            self.resume()
        if self.preemption.received is not None:  # a signal between the setup's end and here
            self.save_checkpoint()
            self.preemption.stop(self.progress.step)

    def build(self) -> None:
        cfg, task = self.cfg, self.task
        seed_everything(self.seed)
        set_threads(cfg["threads"])
        if cfg["deterministic"]:
            torch.use_deterministic_algorithms(True)
        self.device = pick_device(cfg["device"])
        self.amp_dtype = autocast_dtype(cfg["precision"])
        task.device = self.device
        task.setup()
        self.model = task.build_model().to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.n_params = sum(p.numel() for p in params)
        self.optimizer = build_optimizer(params, cfg["optimizer"])
        decay = cfg["lr_decay"]
        if cfg.get("lr_schedule") and decay["factor"] < 1:
            raise ValueError(f"trainer.lr_schedule={cfg['lr_schedule']} and trainer.lr_decay.factor="
                             f"{decay['factor']}: choose one way to change the learning rate (lr_decay.factor=1.0)")
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=decay["factor"] if decay["factor"] < 1 else 0.5,  # only stepped when < 1
            patience=decay["patience"], min_lr=decay["min_lr"], threshold=0.0, eps=0.0)
        self.scaler = torch.amp.GradScaler(self.device.type if self.device.type in ("cuda", "cpu") else "cpu",
                                           enabled=self.amp_dtype == torch.float16)

    def resume(self) -> None:
        """The run's progress: from ``last.pt`` (with every state) when there is one to continue, else a new run."""
        self.progress, self.resumed_from = Progress(), None
        self.checkpoints = RunCheckpoints(self.run_dir, self.identity, self.cfg["resume_unchecked"])
        saved = self.checkpoints.resume_or_start(self.cfg["resume"], self.model, self.optimizer, self.scheduler,
                                                 self.scaler)
        if saved is not None:
            progress = self.progress = Progress.from_saved(saved)
            # a finished run continues if it was stopped by the epoch/step budget and the budget is now larger
            progress.finished = (progress.stopped_early or progress.epoch >= self.cfg["epochs"]
                                 or self.should_stop_steps())
            self.resumed_from = {key: getattr(progress, key) for key in ("epoch", "batch_in_epoch", "step")}
            log.info(f"resumed from {self.checkpoints.last}: epoch {progress.epoch}, batch {progress.batch_in_epoch}, "
                     f"step {progress.step}")
            if progress.best_epoch >= 0:  # fail now, not after the remaining epochs
                self.checkpoints.reconcile_best(progress, self.model)
        self.losses = LossTracker(self.progress.epoch_partial["loss_sum"], self.progress.step, self.device)

    # -- an epoch ---------------------------------------------------------------------------------------------
    def train_one_epoch(self) -> None:
        cfg, progress = self.cfg, self.progress
        if progress.epoch >= cfg["epochs"] or self.should_stop_steps():
            progress.finished = True
            self.save_checkpoint()
            return
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + progress.epoch)
        batches = self.task.train_batches(progress.epoch, generator)
        total = len(batches) if hasattr(batches, "__len__") else None
        progress.epoch_batches = total
        self.model.train()
        part = progress.epoch_partial
        start = time.perf_counter() - part["seconds"]
        bar = tqdm(total=total, initial=progress.batch_in_epoch, desc=f"epoch {progress.epoch + 1}/{cfg['epochs']}",
                   disable=not cfg["progress"], leave=False, dynamic_ncols=True)
        iterator = iter(batches)
        for i, batch in enumerate(iterator):
            if i < progress.batch_in_epoch:
                continue  # done before the checkpoint this run resumed from
            loss, scalars = self.train_step(move_to(batch, self.device))
            progress.batch_in_epoch = i + 1
            part["batches"] += 1
            bar.update(1)
            if cfg["log_every_steps"] and progress.step % cfg["log_every_steps"] == 0:
                self.log_step(loss, scalars, bar)
            stop_now = self.should_stop_steps()
            if stop_now or self.checkpoint_due() or self.preemption.received is not None:
                part["seconds"] = time.perf_counter() - start
                self.save_checkpoint()
                self.preemption.stop(progress.step)  # a signal arrived during this step: stop (or requeue) here
            if stop_now:
                # max_steps inside the epoch: not an epoch end (no validation, no epoch counted); the same command
                # with a larger max_steps continues this epoch where it stopped
                more = progress.batch_in_epoch < total if total is not None else next(iterator, None) is not None
                progress.finished = more
                break
        bar.close()
        part["seconds"] = time.perf_counter() - start
        self.check_finite()
        part["loss_sum"] = self.losses.epoch_loss_sum()

    def train_step(self, batch: Any) -> tuple[torch.Tensor, dict]:
        """One optimizer step on ``batch``; the loss and the scalars to log (tensors: read only when logged)."""
        cfg, model = self.cfg, self.model
        if cfg.get("lr_schedule"):
            for group in self.optimizer.param_groups:
                group["lr"] = scheduled_lr(cfg["optimizer"]["lr"], self.progress.step + 1, cfg["lr_schedule"])
        try:
            with self.autocast():
                loss, scalars = self.task.training_loss(model, batch)
        except (ValueError, RuntimeError):
            self.check_finite()  # non-finite weights fail the attention's checks first (CPU): say so instead
            raise
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg["grad_clip"]:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            scalars = {**scalars, "grad_norm": grad_norm}
        self.scaler.step(self.optimizer)  # skipped (fp16) when the gradients overflowed
        self.scaler.update()
        self.progress.step += 1
        self.losses.add(loss)  # on the device: no synchronisation here
        return loss, scalars

    def log_step(self, loss: torch.Tensor, scalars: dict, bar) -> None:
        progress = self.progress
        self.check_finite()
        bar.set_postfix(loss=f"{self.losses.epoch_loss_sum() / progress.epoch_partial['batches']:.4f}",
                        best=f"{progress.best_metric:.4f}" if progress.best_epoch >= 0 else "-")
        self.logger.log({"train/loss": float(loss.detach()), "train/lr": self.lr,
                         **{f"train/{k}": float(v) for k, v in scalars.items()}}, step=progress.step)

    def should_stop_steps(self) -> bool:
        return self.cfg["max_steps"] is not None and self.progress.step >= self.cfg["max_steps"]

    def checkpoint_due(self) -> bool:
        every_steps, every_minutes = self.cfg["checkpoint_every_steps"], self.cfg["checkpoint_every_minutes"]
        return bool((every_steps and self.progress.step % every_steps == 0)
                    or (every_minutes and time.monotonic() - self.checkpoints.saved_at >= 60 * every_minutes))

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # -- the end of an epoch ----------------------------------------------------------------------------------
    def end_of_epoch(self) -> None:
        cfg, progress, part = self.cfg, self.progress, self.progress.epoch_partial
        train_loss = part["loss_sum"] / max(part["batches"], 1)
        train_seconds = part["seconds"]
        eval_start = time.perf_counter()
        valid = self.evaluate("valid")
        metric = valid[self.task.metric]
        if not math.isfinite(metric):  # never a best model, never a record
            raise TrainingDiverged(f"validation {self.task.metric} is {metric} after epoch {progress.epoch + 1}: "
                                   f"the model's outputs are not finite. {self.stopped_here()}")
        improved = metric > progress.best_metric
        if improved:  # best.pt is written after last.pt (below): a kill in between is repaired on resume
            progress.best_metric, progress.best_epoch, progress.bad_epochs = metric, progress.epoch, 0
        else:
            progress.bad_epochs += 1
        self.decay_lr(metric, improved)
        seconds = train_seconds + time.perf_counter() - eval_start
        progress.epoch_times.append(seconds)
        progress.history.append({"epoch": progress.epoch + 1, "step": progress.step, "train_loss": train_loss,
                                 "lr": self.lr, "train_seconds": train_seconds, "epoch_seconds": seconds,
                                 "valid": valid})
        self.logger.log({"epoch": progress.epoch + 1, "train/epoch_loss": train_loss, "epoch_seconds": seconds,
                         **{f"valid/{k}": v for k, v in valid.items() if isinstance(v, float)}}, step=progress.step)
        stats = " ".join(f"{k} {valid[k]:.3f}" for k in ("support", "groups") if k in valid)
        log.info(f"epoch {progress.epoch + 1}: train loss {train_loss:.4f}, valid {self.task.metric} "
                 f"{metric:.4f}{' (best)' if improved else ''} {stats}, {seconds:.1f}s")
        progress.epoch += 1
        progress.batch_in_epoch = 0
        progress.epoch_partial = {"loss_sum": 0.0, "batches": 0, "seconds": 0.0}
        self.losses.new_epoch()
        if cfg["patience"] and progress.bad_epochs >= cfg["patience"]:
            log.info(f"early stopping: no improvement for {progress.bad_epochs} epochs")
            progress.finished = progress.stopped_early = True
        if progress.epoch >= cfg["epochs"] or self.should_stop_steps():
            progress.finished = True
        self.save_checkpoint()
        if improved:
            self.checkpoints.save_best(self.model, progress.best_epoch, progress.history[progress.best_epoch]["valid"])

    def decay_lr(self, metric: float, improved: bool) -> None:
        decay = self.cfg["lr_decay"]
        if decay["factor"] < 1 and decay.get("start_at"):
            # OpenNMT-py 0.x (Optim.updateLearningRate): decay starts at epoch `start_at` or at the first epoch
            # that does not improve on validation, and from then on the LR is multiplied by `factor` every epoch
            progress = self.progress
            progress.decaying = progress.decaying or progress.epoch + 1 >= decay["start_at"] or not improved
            if progress.decaying:
                for group in self.optimizer.param_groups:
                    group["lr"] = max(group["lr"] * decay["factor"], decay["min_lr"])
        elif decay["factor"] < 1:
            self.scheduler.step(metric)

    def evaluate(self, split: str) -> dict:
        self.model.eval()
        with torch.no_grad(), self.autocast():
            metrics = self.task.evaluate(self.model, split)
        self.model.train()
        return {k: float(v) if isinstance(v, (int, float, np.floating, torch.Tensor)) else v
                for k, v in metrics.items()}

    # -- checkpoints and divergence ---------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        self.check_finite()  # never a checkpoint of weights that a non-finite loss has touched
        self.progress.epoch_partial["loss_sum"] = self.losses.epoch_loss_sum()
        self.checkpoints.save_last(self.model, self.optimizer, self.scheduler, self.scaler,
                                   dataclasses.asdict(self.progress), self.seed)

    def check_finite(self) -> None:
        problem = self.losses.problem(self.model, self.progress)
        if problem is not None:
            raise TrainingDiverged(f"training diverged: {problem}. {self.stopped_here()}")

    def stopped_here(self) -> str:
        return stopped_here(self.checkpoints.last, self.checkpoints.saved_step)

    # -- the end ----------------------------------------------------------------------------------------------
    def final_evaluation(self) -> dict:
        """The best model on validation, evaluated on valid and test: best.pt (the best epoch end), or, when
        ``max_steps`` stopped inside an epoch, the model at that last step if it does better on validation (or if
        no epoch ended). ``best_epoch`` (1-based) names the epoch of best.pt, None for the last-step model;
        ``best_step`` is the step of the model evaluated either way."""
        metric, progress = self.task.metric, self.progress
        best_epoch, best_step, valid = None, progress.step, None
        if progress.batch_in_epoch > 0:  # stopped by max_steps inside an epoch: its last model is a candidate too
            valid = self.evaluate("valid")
            if not math.isfinite(valid[metric]) and progress.best_epoch < 0:
                raise TrainingDiverged(f"validation {metric} is {valid[metric]} at step {progress.step}: the "
                                       f"model's outputs are not finite. {self.stopped_here()}")
            if progress.best_epoch < 0 or valid[metric] > progress.best_metric:
                log.info(f"max_steps stopped epoch {progress.epoch + 1} after {progress.batch_in_epoch} "
                         f"batches: the model at step {progress.step} is evaluated "
                         f"(valid {metric} {valid[metric]:.4f})")
            else:
                valid = None
        if valid is None and progress.best_epoch >= 0:
            self.checkpoints.load_best(self.model, progress.best_epoch)
            best_epoch = progress.best_epoch + 1
            best_step = progress.history[progress.best_epoch]["step"]
            valid = self.evaluate("valid")
        elif valid is None:  # no step was taken and no epoch ended
            valid = self.evaluate("valid")
        test = self.evaluate("test") if self.cfg["eval_test"] else {}
        self.task_end()
        summary = {
            "valid": valid, "test": test, "best_epoch": best_epoch, "best_step": best_step,
            "epochs": len(progress.history),
            "steps": progress.step, "precision": str(self.cfg["precision"]),
            "time_per_epoch_s": float(np.mean(progress.epoch_times)) if progress.epoch_times else None,
            "history": progress.history, "resumed_from": self.resumed_from, "device": str(self.device),
        }
        self.logger.summary({**{f"best_valid/{k}": v for k, v in valid.items() if isinstance(v, float)},
                             **{f"test/{k}": v for k, v in test.items() if isinstance(v, float)}})
        log.info(f"best epoch {summary['best_epoch']} (step {best_step}): valid {metric} "
                 f"{valid.get(metric, float('nan')):.4f}"
                 + (f", test {metric} {test.get(metric, float('nan')):.4f}" if test else ""))
        return summary

    def task_end(self) -> None:
        hook = getattr(self.task, "on_test_end", None)
        if hook is not None:
            self.model.eval()
            with torch.no_grad():
                hook(self.model, self.run_dir)
