"""The training loop, shared by every task. Read it top to bottom.

    trainer = Trainer(task, cfg.trainer, run_dir, seed=1, logger=logger)
    summary = trainer.fit()      # {"valid": {...best...}, "test": {...}, "epochs": n, "time_per_epoch_s": ...}

What it does, in order:
1. seeds python/numpy/torch, picks the device (``trainer.device=auto``: CUDA when present, else CPU),
   ``task.setup()``, ``task.build_model()``, the optimizer (Adam or SGD) and the LR-on-plateau scheduler;
2. resumes from ``run_dir/checkpoints/last.pt`` when it exists (``trainer.resume=true``, the default): model,
   optimizer, scheduler, grad scaler, every RNG state, epoch, position inside the epoch, global step, best metric,
   early-stopping counter, history. The checkpoint is read on the CPU (RNG states must stay CPU tensors) and the
   model and optimizer states are then copied to the device. The same command run again therefore continues where
   the killed run stopped;
3. for each epoch: the task's shuffled batches (``task.train_batches(epoch, generator)``, the generator seeded from
   (seed, epoch) so the order is the same after a resume; batches already done in this epoch are skipped),
   loss (under autocast when ``precision`` is bf16/fp16) -> backward (a GradScaler for fp16) -> gradient clipping
   -> optimizer step; a checkpoint every ``checkpoint_every_steps`` steps and every ``checkpoint_every_minutes`` of
   wall time (0: off), and at the end of every epoch, written atomically (``tasks/files.py``);
   SIGTERM / SIGUSR1 / SIGUSR2 (preemption, a scheduler's time limit, ``kill``) are caught: the step under way
   finishes, a checkpoint is written, then the process exits (``Preempted``) or, when the job was started by
   submitit (``launcher=slurm|submitit_local``), submitit requeues it; the same command continues it. During
   the task's setup (a data download can take hours) such a signal stops the run at once, with no record;
4. after each epoch: ``task.evaluate(model, "valid")``; the best model (on ``task.metric``, maximised) is saved to
   ``best.pt``; LR decay on plateau (``lr_decay.factor`` < 1; with ``lr_decay.start_at``, OpenNMT-py 0.x's rule:
   every epoch from ``start_at`` or from the first epoch without improvement); early stopping after ``patience``
   epochs without improvement;
5. at the end: the best checkpoint is loaded and evaluated on "valid" and "test"; ``task.on_test_end`` runs.
   When ``max_steps`` stopped inside an epoch, that partial epoch is not an epoch (no validation, not counted, not
   in ``history``): the model at the last step competes with best.pt on validation (``best_epoch`` None,
   ``best_step`` its step), and the same command with a larger ``max_steps`` continues inside that epoch.

Faults (each a clear error, never a wrong record):
- a non-finite training loss stops training (``TrainingDiverged``). The loss sum and the first non-finite step are
  kept on the device and read at logging steps, before every checkpoint (no checkpoint of non-finite weights) and
  at epoch ends, so a step adds no device-to-host sync; a non-finite validation metric stops it the same way;
- resume: ``last.pt`` missing while ``best.pt`` exists stops (``CheckpointError``): starting over would overwrite
  the best model. ``trainer.resume=false`` starts over and removes the old ``best.pt`` first (it must never stand
  for the new run). At an epoch end ``last.pt`` is written before ``best.pt``: when ``last.pt`` is the end of the
  best epoch itself, a missing, damaged or older ``best.pt`` (a kill between the two writes) is rewritten from it;
  otherwise such a ``best.pt`` stops the resume (not after more training) and the final evaluation; a damaged
  ``last.pt`` names the file and the way out;
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
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from tasks.files import UnsafeFileError, atomic_open, load_tensors, remove_orphan_temporaries, run_dir_lock

from .config import config_defaults

log = logging.getLogger(__name__)


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


# ---------------------------------------------------------------------------------------------------- helpers
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


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states of ``rng_state()``. They must be CPU ``ByteTensor``s (load checkpoints on the CPU: a
    ``map_location`` of "cuda" moves them and ``torch.set_rng_state`` then raises). CUDA states are restored for the
    devices both the saving and this machine have."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]][: torch.cuda.device_count()]
        for index, cuda_state in enumerate(cuda_states):
            torch.cuda.set_rng_state(cuda_state, index)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged or cannot be written; the message names the file and what to do."""


def load_checkpoint_file(path: str | os.PathLike, remedy: str = "") -> dict:
    """A checkpoint read on the CPU, whatever device wrote it (``load_state_dict`` then copies to the model's
    device; RNG states must stay on the CPU). A damaged file (truncated, overwritten, empty) is a
    ``CheckpointError`` naming it, followed by ``remedy`` (what to do); so is a file holding anything but tensors
    and plain containers (``tasks.files.load_tensors``: a planted pickle never runs)."""
    path = Path(path)
    try:
        state = load_tensors(path)
    except FileNotFoundError:
        raise
    except UnsafeFileError as error:
        raise CheckpointError(f"{error} {remedy}".rstrip()) from None
    except Exception as error:  # PytorchStreamReader (truncated zip), UnpicklingError (random bytes), EOFError (empty)
        reason = (str(error).strip().splitlines() or [""])[0].split(". ")[0][:200]  # the first sentence
        size = path.stat().st_size if path.exists() else 0
        raise CheckpointError(f"{path} is damaged and cannot be read ({size:,} bytes; {type(error).__name__}"
                              f"{': ' + reason if reason else ''}). {remedy}".rstrip()) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of this trainer (no model state). {remedy}".rstrip())
    return state


def load_model_state(model: torch.nn.Module, state: dict, path: str | os.PathLike, remedy: str) -> None:
    """``model.load_state_dict(state["model"])``; a checkpoint of another model (other parameter names or shapes:
    another code version, another model config) is a ``CheckpointError`` naming the file, the first differences
    and ``remedy``, not torch's multi-line traceback."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        if "state_dict" not in str(error):
            raise
        saved, wanted = state["model"], model.state_dict()
        missing, unexpected = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
        shapes = sorted(k for k in set(saved) & set(wanted) if getattr(saved[k], "shape", None) != wanted[k].shape)
        shown = "; ".join(f"{what}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}" for what, keys in (
            ("missing", missing), ("unexpected", unexpected), ("other shape", shapes)) if keys)
        raise CheckpointError(f"{path} holds another model than this code builds ({shown}): written by another "
                              f"code version or model config. {remedy}".rstrip()) from None


def _describe_os_error(error: OSError) -> str:
    return os.strerror(error.errno) if error.errno else str(error)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through ``tasks.files.atomic_open`` (temporary file, fsync, rename, fsync of the folder): never a
    half-written checkpoint, even after a power cut. A failed write (a full disk, a read-only folder) is a
    ``CheckpointError`` that says what happened and where; the previous ``path`` is left as it was."""
    try:
        with atomic_open(path) as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as error:
        # torch's writer meets the OSError, then fails again closing the archive ("enforce fail ... unexpected
        # pos"): the OSError is in the exception's context
        cause = next((e for e in _exception_chain(error) if isinstance(e, OSError)), None)
        if cause is None:
            raise
        kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
        raise CheckpointError(f"cannot write the checkpoint {path}: {_describe_os_error(cause)} ({kept}). "
                              f"Free space or fix the folder's permissions, then run the same command again "
                              f"to continue.") from error


def _exception_chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def build_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    name = cfg["name"].lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.9, 0.999))),
                                weight_decay=cfg.get("weight_decay", 0.0))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.9, 0.999))),
                                 weight_decay=cfg.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.0),
                               weight_decay=cfg.get("weight_decay", 0.0))
    raise ValueError(f"unknown optimizer {cfg['name']!r} (adam, adamw or sgd)")


class NullLogger:
    def log(self, scalars: dict, step: int) -> None: ...
    def summary(self, scalars: dict) -> None: ...
    def record(self, record: dict) -> None: ...
    def finish(self, exit_code: int = 0) -> None: ...


class Stop(Exception):
    """Raised by a ``on_step`` hook to stop training at once, as a kill would (no checkpoint is written)."""


class TrainingDiverged(RuntimeError):
    """The training loss (or the validation metric) is not finite: training stopped, no record is written, the
    last checkpoint with finite weights is kept."""


class Preempted(Exception):
    """Training stopped on a signal (SIGTERM, SIGUSR1/2) after writing a checkpoint; the same command continues."""

    def __init__(self, signum: int, step: int, in_setup: bool = False):
        self.signum, self.step = signum, step
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} during the setup (data, model), before training: nothing was trained, "
                         f"no record written; run the same command to start again" if in_setup else
                         f"stopped by {name} at step {step}: checkpoint written, run the same command to continue")


# trainer.lr_schedule (optional; absent: the optimizer's lr throughout, changed only by lr_decay): a linear warmup
# over `warmup_steps` steps, then `decay`: "none" (constant) or "inverse_sqrt" (Vaswani et al. 2017: lr * sqrt(warmup /
# step)). A function of the step alone, so a resumed run continues it exactly.
LR_SCHEDULES = ("none", "inverse_sqrt")


def scheduled_lr(lr: float, step: int, schedule: dict | None) -> float:
    """The learning rate of optimizer step ``step`` (1-based) under ``schedule`` ({warmup_steps, decay})."""
    if not schedule:
        return lr
    warmup = int(schedule.get("warmup_steps") or 0)
    if warmup and step < warmup:
        return lr * step / warmup
    if schedule.get("decay", "none") == "inverse_sqrt":
        return lr * math.sqrt(max(warmup, 1) / step)
    return lr


PRECISIONS = {"fp32": None, "32": None, "bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16,
              "fp16": torch.float16, "16": torch.float16, "16-mixed": torch.float16}


def autocast_dtype(precision: str | None) -> torch.dtype | None:
    key = str(precision or "fp32").lower()
    if key not in PRECISIONS:
        raise ValueError(f"trainer.precision={precision!r}: use fp32, bf16 or fp16")
    return PRECISIONS[key]


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
    def from_checkpoint(cls, state: dict) -> "Progress":
        """The progress of a checkpoint; one written before this class holds the fields at its top level, those
        added later (decaying, stopped_early, epoch_batches) possibly missing: their defaults."""
        saved = state["progress"] if "progress" in state else state
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})


class Trainer:
    def __init__(self, task: Task, cfg: dict | None, run_dir: str | os.PathLike, seed: int = 1, logger=None,
                 on_step: Callable[[int], None] | None = None, identity: dict | None = None):
        self.task, self.seed = task, seed
        self.cfg = merged(DEFAULTS, cfg)
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.logger = logger or NullLogger()
        self.on_step = on_step  # test hook: called after every optimizer step with the global step
        self.identity = identity  # what makes this run this run (tasks/train.py); checked on resume
        self.signal: int | None = None  # the signal received, handled at the next step boundary
        self.in_setup = False  # during setup() a signal stops at once: a download has no step boundary

    # -- checkpoints ------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng_state(),
            "progress": dataclasses.asdict(self.progress), "seed": self.seed, "identity": self.identity,
        }

    def save_checkpoint(self) -> None:
        self.check_finite()  # never a checkpoint of weights that a non-finite loss has touched
        self.progress.epoch_partial["loss_sum"] = float(self._loss_sum)
        atomic_save(self.state(), self.ckpt_dir / "last.pt")
        self.last_save = time.monotonic()
        self.saved_step = self.progress.step

    def load_checkpoint(self, path: Path) -> None:
        # on the CPU; load_state_dict copies to the device
        state = load_checkpoint_file(path, remedy=self._damaged_last_remedy(path))
        saved = state.get("identity")
        if saved is not None:  # read by today's rule: a setting since found not to change a result never blocks
            from .records import in_identity

            saved = {k: v for k, v in saved.items() if in_identity(k)}
        if self.identity is not None and saved is not None and saved != self.identity:
            raise RunMismatchError(path, saved, self.identity)
        if self.identity is not None and saved is None and not self.cfg["resume_unchecked"]:
            raise CheckpointError(
                f"{path} has no run identity (written by an older version): whether it was made with these settings "
                f"cannot be checked, and resuming it under other settings would mix two runs. Continue it anyway "
                f"with trainer.resume_unchecked=true (only if the settings are those it was made with), or start "
                f"over with trainer.resume=false.")
        load_model_state(self.model, state, path,
                         "Run it with the code and config that wrote it, or start this run over with "
                         "trainer.resume=false (this overwrites its checkpoints).")
        self.optimizer.load_state_dict(state["optimizer"])  # moves its state to the parameters' device
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress.from_checkpoint(state)
        set_rng_state(state["rng"])
        # a finished run continues if it was stopped by the epoch/step budget and the budget is now larger
        progress = self.progress
        progress.finished = progress.stopped_early or progress.epoch >= self.cfg["epochs"] or self.should_stop_steps()
        self.saved_step = self.progress.step

    def _damaged_last_remedy(self, path: Path) -> str:
        best = self.ckpt_dir / "best.pt"
        other = (f" {best} is not affected: `make evaluate RUN={self.run_dir}` evaluates that best model."
                 if best.exists() else "")
        return (f"The run cannot continue from it: start it over with trainer.resume=false (this overwrites the "
                f"run's checkpoints), or restore {path.name} from a copy.{other}")

    def reconcile_best_checkpoint(self) -> None:
        """On resume: best.pt must be the best epoch's model. When last.pt was written at the end of that very epoch
        (a kill between the two writes of an epoch end, or a lost best.pt), its model is the best model: best.pt is
        rewritten from it; otherwise a missing, damaged or other epoch's best.pt is an error."""
        if self.progress.batch_in_epoch == 0 and self.progress.epoch == self.progress.best_epoch + 1:
            try:
                self.check_best_checkpoint()
            except CheckpointError:
                log.warning(f"{self.ckpt_dir / 'best.pt'} is not the model of the best epoch "
                            f"{self.progress.best_epoch + 1} (missing, damaged or older): rewritten from last.pt, "
                            f"saved at the end of that epoch")
                self.save_best()
            return
        self.check_best_checkpoint()

    def check_best_checkpoint(self, state: dict | None = None) -> dict:
        """best.pt read and matched against the run's best epoch (``last.pt``): a missing, damaged or other
        epoch's best.pt is an error, never a silent evaluation of another model."""
        best = self.ckpt_dir / "best.pt"
        start_over = "start the run over with trainer.resume=false (this retrains it)"
        best_epoch = self.progress.best_epoch
        if not best.exists():
            raise CheckpointError(
                f"{best} is missing, but {self.ckpt_dir / 'last.pt'} says epoch {best_epoch + 1} was this run's "
                f"best: the best model's weights are lost, and evaluating another model under that epoch's name "
                f"would be a wrong record. Restore {best.name} from a copy, or {start_over}.")
        state = state or load_checkpoint_file(best, remedy=f"Restore it from a copy, or {start_over}.")
        if state.get("epoch") != best_epoch:
            raise CheckpointError(
                f"{best} holds the model of epoch {int(state.get('epoch', -2)) + 1}, but this run's best epoch is "
                f"{best_epoch + 1} ({self.ckpt_dir / 'last.pt'}): it is not this run's best model. Restore the "
                f"right {best.name}, or {start_over}.")
        return state

    # -- non-finite losses ------------------------------------------------------------------------------------
    def start_loss_tracking(self) -> None:
        """The epoch's loss sum and the first step with a non-finite loss, kept on the device: a step adds no
        host synchronisation; they are read at logging steps, checkpoints and epoch ends (``check_finite``)."""
        self._loss_sum = torch.tensor(self.progress.epoch_partial["loss_sum"], dtype=torch.float64, device=self.device)
        self._step_count = torch.tensor(self.progress.step, dtype=torch.long, device=self.device)
        self._first_bad = torch.tensor(-1, dtype=torch.long, device=self.device)

    def track_loss(self, loss: torch.Tensor) -> None:
        value = loss.detach().double()
        self._loss_sum += value
        self._step_count += 1
        first = (self._first_bad < 0) & ~torch.isfinite(value)
        self._first_bad = torch.where(first, self._step_count, self._first_bad)

    def check_finite(self) -> None:
        """Raise ``TrainingDiverged`` when a training loss since the last check was nan or inf, or the weights are
        not finite (one host synchronisation)."""
        bad = int(self._first_bad)
        weights_ok = bad < 0 and bool(torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all())
        if bad < 0 and weights_ok:
            return
        what = (f"the training loss is not finite (nan or inf) at step {bad} (epoch {self.progress.epoch + 1}, batch "
                f"{self.progress.batch_in_epoch - (self.progress.step - bad)})" if bad >= 0
                else f"the weights are not finite at step {self.progress.step} (epoch {self.progress.epoch + 1})")
        raise TrainingDiverged(f"training diverged: {what}. {self._stopped_here()}")

    def _stopped_here(self) -> str:
        last = self.ckpt_dir / "last.pt"
        kept = (f"{last} (step {self.saved_step}) is kept, the last checkpoint before it" if last.exists()
                else "no checkpoint had been written")
        return (f"Training stopped: {kept}; no record is written. Lower trainer.optimizer.lr, or clip gradients "
                f"(trainer.grad_clip).")

    # -- signals (preemption, time limits) --------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if self.in_setup:  # the data may take hours to fetch and nothing is lost: stop now (the download's lock and
            raise Preempted(signum, 0, in_setup=True)  # temporary files are released by their finally blocks)
        if self.signal is None:
            log.warning(f"{signal.Signals(signum).name} received: finishing this step, then checkpoint")
        self.signal = signum

    @contextlib.contextmanager
    def catching_signals(self):
        """SIGTERM/SIGUSR1/SIGUSR2 (``trainer.signals``) set ``self.signal`` instead of killing the process; the
        previous handlers (submitit's among them) are kept and restored."""
        self.previous_handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for name in self.cfg["signals"] or ():
                signum = getattr(signal, str(name), None)
                if signum is not None:
                    self.previous_handlers[signum] = signal.signal(signum, self._on_signal)
        try:
            yield
        finally:
            for signum, handler in self.previous_handlers.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def handle_signal(self, saved: bool = False) -> None:
        """At a step boundary after a signal: checkpoint, then stop (``Preempted``)."""
        if self.signal is None:
            return
        signum = self.signal
        if not saved:
            self.save_checkpoint()
        log.warning(f"checkpoint written at step {self.progress.step} ({signal.Signals(signum).name})")
        # run by submitit, tasks/train.py closes the logger, then lets submitit requeue the job (requeueing kills
        # the job's other processes, W&B's service among them)
        raise Preempted(signum, self.progress.step)

    # -- mixed precision --------------------------------------------------------------------------------------
    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # -- the loop ----------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Seeds, device, the task's data, model, optimizer, scheduler; then the resume from ``last.pt``. A signal
        (SIGTERM...) during the task's setup stops it at once (``Preempted``): nothing to checkpoint yet."""
        self.in_setup = True
        try:
            self._setup()
        finally:
            self.in_setup = False
        self.handle_signal()  # (a signal between the setup's end and here: a checkpoint, then stop)

    def _setup(self) -> None:
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
        self.progress = Progress()
        self.last_save = time.monotonic()
        self.saved_step = 0
        last, best = self.ckpt_dir / "last.pt", self.ckpt_dir / "best.pt"
        self.resumed_from = None
        if self.ckpt_dir.is_dir():
            for orphan in remove_orphan_temporaries(self.ckpt_dir):
                log.info(f"removed {orphan}, left by a process killed while writing it")
        if cfg["resume"] and last.exists():
            self.load_checkpoint(last)
            self.resumed_from = {key: getattr(self.progress, key) for key in ("epoch", "batch_in_epoch", "step")}
            log.info(f"resumed from {last}: epoch {self.progress.epoch}, batch {self.progress.batch_in_epoch}, "
                  f"step {self.progress.step}")
            if self.progress.best_epoch >= 0:  # fail now, not after the remaining epochs
                self.reconcile_best_checkpoint()
        elif cfg["resume"] and best.exists():
            raise CheckpointError(
                f"{best} exists but {last} is missing: this run dir holds a run that cannot be continued (best.pt "
                f"has the best model's weights only: no optimizer state, RNG states or position), and starting over "
                f"would overwrite its best.pt. To start over: trainer.resume=false; to keep it, move {self.run_dir} "
                f"away or give the new run its own folder with run_name=NAME.")
        elif best.exists():  # trainer.resume=false: the old run's best.pt must never stand for this run's
            log.warning(f"trainer.resume=false: starting over; removing {best} of the earlier run in this folder")
            best.unlink()
        self.start_loss_tracking()

    def fit(self) -> dict:
        with run_dir_lock(self.run_dir):  # before anything is read or written there: RunDirInUse if held
            return self._fit()

    def _fit(self) -> dict:
        with self.catching_signals():
            self.setup()
            log.info(f"{self.task.name} on {self.device}, {self.n_params:,} trainable parameters, "
                     f"run dir {self.run_dir}")
            if self.progress.finished and 0 < self.progress.batch_in_epoch == self.progress.epoch_batches:
                self.end_of_epoch()  # max_steps hit the epoch's last batch, then a kill before its epoch end
            while not self.progress.finished:
                self.train_one_epoch()  # (returns at the epoch end, or raises Stop / Preempted)
                if self.progress.finished:
                    break
                self.end_of_epoch()  # (ends with a checkpoint)
                self.handle_signal(saved=True)
        # signals act as usual again: last.pt says "finished", so a killed evaluation is redone by the same command
        return self.final_evaluation()

    def should_stop_steps(self) -> bool:
        return self.cfg["max_steps"] is not None and self.progress.step >= self.cfg["max_steps"]

    def train_one_epoch(self) -> None:
        cfg, task, model = self.cfg, self.task, self.model
        if self.progress.epoch >= cfg["epochs"] or self.should_stop_steps():
            self.progress.finished = True
            self.save_checkpoint()
            return
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.progress.epoch)
        batches = task.train_batches(self.progress.epoch, generator)
        total = len(batches) if hasattr(batches, "__len__") else None
        self.progress.epoch_batches = total
        model.train()
        start = time.perf_counter() - self.progress.epoch_partial["seconds"]
        bar = tqdm(total=total, initial=self.progress.batch_in_epoch,
                   desc=f"epoch {self.progress.epoch + 1}/{cfg['epochs']}",
                   disable=not cfg["progress"], leave=False, dynamic_ncols=True)
        part = self.progress.epoch_partial
        iterator = iter(batches)
        for i, batch in enumerate(iterator):
            if i < self.progress.batch_in_epoch:
                continue  # done before the checkpoint this run resumed from
            batch = move_to(batch, self.device)
            if cfg.get("lr_schedule"):
                for group in self.optimizer.param_groups:
                    group["lr"] = scheduled_lr(cfg["optimizer"]["lr"], self.progress.step + 1, cfg["lr_schedule"])
            try:
                with self.autocast():
                    loss, scalars = task.training_loss(model, batch)
            except (ValueError, RuntimeError):
                self.check_finite()  # non-finite weights fail the attention's checks first (CPU): say so instead
                raise
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg["grad_clip"]:
                self.scaler.unscale_(self.optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
                scalars = {**scalars, "grad_norm": grad_norm}  # a tensor: read only when logged
            self.scaler.step(self.optimizer)  # skipped (fp16) when the gradients overflowed
            self.scaler.update()
            self.progress.step += 1
            self.progress.batch_in_epoch = i + 1
            self.track_loss(loss)  # on the device: no synchronisation here
            part["batches"] += 1
            bar.update(1)
            if cfg["log_every_steps"] and self.progress.step % cfg["log_every_steps"] == 0:
                self.check_finite()
                bar.set_postfix(loss=f"{float(self._loss_sum) / part['batches']:.4f}",
                                best=f"{self.progress.best_metric:.4f}" if self.progress.best_epoch >= 0 else "-")
                self.logger.log({"train/loss": float(loss.detach()), "train/lr": self.lr,
                                 **{f"train/{k}": float(v) for k, v in scalars.items()}}, step=self.progress.step)
            if self.on_step is not None:
                self.on_step(self.progress.step)  # may raise Stop (a simulated kill)
            stop_now = self.should_stop_steps()
            every_steps = cfg["checkpoint_every_steps"] and self.progress.step % cfg["checkpoint_every_steps"] == 0
            every_minutes = (cfg["checkpoint_every_minutes"]
                             and time.monotonic() - self.last_save >= 60 * cfg["checkpoint_every_minutes"])
            if stop_now or every_steps or every_minutes or self.signal is not None:
                part["seconds"] = time.perf_counter() - start
                self.save_checkpoint()
                self.handle_signal(saved=True)  # a signal arrived during this step: stop (or requeue) here
            if stop_now:
                # max_steps inside the epoch: not an epoch end (no validation, no epoch counted); the same command
                # with a larger max_steps continues this epoch where it stopped
                more = self.progress.batch_in_epoch < total if total is not None else next(iterator, None) is not None
                self.progress.finished = more
                break
        bar.close()
        part["seconds"] = time.perf_counter() - start
        self.check_finite()
        part["loss_sum"] = float(self._loss_sum)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def evaluate(self, split: str) -> dict:
        self.model.eval()
        with torch.no_grad(), self.autocast():
            metrics = self.task.evaluate(self.model, split)
        self.model.train()
        return {k: float(v) if isinstance(v, (int, float, np.floating, torch.Tensor)) else v
                for k, v in metrics.items()}

    def end_of_epoch(self) -> None:
        cfg, part = self.cfg, self.progress.epoch_partial
        train_loss = part["loss_sum"] / max(part["batches"], 1)
        train_seconds = part["seconds"]
        eval_start = time.perf_counter()
        valid = self.evaluate("valid")
        metric = valid[self.task.metric]
        if not math.isfinite(metric):  # never a best model, never a record
            raise TrainingDiverged(f"validation {self.task.metric} is {metric} after epoch {self.progress.epoch + 1}: "
                                   f"the model's outputs are not finite. {self._stopped_here()}")
        improved = metric > self.progress.best_metric
        if improved:  # best.pt is written after last.pt (below): a kill in between is repaired on resume
            self.progress.best_metric, self.progress.best_epoch, self.progress.bad_epochs = (
                metric, self.progress.epoch, 0)
        else:
            self.progress.bad_epochs += 1
        decay = cfg["lr_decay"]
        if decay["factor"] < 1 and decay.get("start_at"):
            # OpenNMT-py 0.x (Optim.updateLearningRate): decay starts at epoch `start_at` or at the first epoch
            # that does not improve on validation, and from then on the LR is multiplied by `factor` every epoch
            self.progress.decaying = (self.progress.decaying or self.progress.epoch + 1 >= decay["start_at"]
                                      or not improved)
            if self.progress.decaying:
                for group in self.optimizer.param_groups:
                    group["lr"] = max(group["lr"] * decay["factor"], decay["min_lr"])
        elif decay["factor"] < 1:
            self.scheduler.step(metric)
        seconds = train_seconds + time.perf_counter() - eval_start
        self.progress.epoch_times.append(seconds)
        record = {"epoch": self.progress.epoch + 1, "step": self.progress.step, "train_loss": train_loss, "lr": self.lr,
                  "train_seconds": train_seconds, "epoch_seconds": seconds, "valid": valid}
        self.progress.history.append(record)
        self.logger.log({"epoch": self.progress.epoch + 1, "train/epoch_loss": train_loss, "epoch_seconds": seconds,
                         **{f"valid/{k}": v for k, v in valid.items() if isinstance(v, float)}},
                        step=self.progress.step)
        stats = " ".join(f"{k} {valid[k]:.3f}" for k in ("support", "groups") if k in valid)
        log.info(f"epoch {self.progress.epoch + 1}: train loss {train_loss:.4f}, valid {self.task.metric} "
              f"{metric:.4f}{' (best)' if improved else ''} {stats}, {seconds:.1f}s")
        self.progress.epoch += 1
        self.progress.batch_in_epoch = 0
        self.progress.epoch_partial = {"loss_sum": 0.0, "batches": 0, "seconds": 0.0}
        self._loss_sum.zero_()
        patience = cfg["patience"]
        if patience and self.progress.bad_epochs >= patience:
            log.info(f"early stopping: no improvement for {self.progress.bad_epochs} epochs")
            self.progress.finished = self.progress.stopped_early = True
        if self.progress.epoch >= cfg["epochs"] or self.should_stop_steps():
            self.progress.finished = True
        self.save_checkpoint()
        if improved:
            self.save_best()

    def save_best(self) -> None:
        """best.pt: the model at the end of the best epoch (``progress.best_epoch``), which must be the current one."""
        atomic_save({"model": self.model.state_dict(), "epoch": self.progress.best_epoch,
                     "valid": self.progress.history[self.progress.best_epoch]["valid"]}, self.ckpt_dir / "best.pt")

    def final_evaluation(self) -> dict:
        """The best model on validation, evaluated on valid and test: best.pt (the best epoch end), or, when
        ``max_steps`` stopped inside an epoch, the model at that last step if it does better on validation (or if
        no epoch ended). ``best_epoch`` (1-based) names the epoch of best.pt, None for the last-step model;
        ``best_step`` is the step of the model evaluated either way."""
        metric = self.task.metric
        best_epoch, best_step, valid = None, self.progress.step, None
        if self.progress.batch_in_epoch > 0:  # stopped by max_steps inside an epoch: its last model is a candidate too
            valid = self.evaluate("valid")
            if not math.isfinite(valid[metric]) and self.progress.best_epoch < 0:
                raise TrainingDiverged(f"validation {metric} is {valid[metric]} at step {self.progress.step}: the "
                                       f"model's outputs are not finite. {self._stopped_here()}")
            if self.progress.best_epoch < 0 or valid[metric] > self.progress.best_metric:
                log.info(f"max_steps stopped epoch {self.progress.epoch + 1} after {self.progress.batch_in_epoch} "
                         f"batches: the model at step {self.progress.step} is evaluated "
                         f"(valid {metric} {valid[metric]:.4f})")
            else:
                valid = None
        if valid is None and self.progress.best_epoch >= 0:
            load_model_state(self.model, self.check_best_checkpoint(), self.ckpt_dir / "best.pt",
                             "Run it with the code and config that wrote it.")
            best_epoch = self.progress.best_epoch + 1
            best_step = self.progress.history[self.progress.best_epoch]["step"]
            valid = self.evaluate("valid")
        elif valid is None:  # no step was taken and no epoch ended
            valid = self.evaluate("valid")
        test = self.evaluate("test") if self.cfg["eval_test"] else {}
        self.task_end()
        summary = {
            "valid": valid, "test": test, "best_epoch": best_epoch, "best_step": best_step,
            "epochs": len(self.progress.history),
            "steps": self.progress.step, "precision": str(self.cfg["precision"]),
            "time_per_epoch_s": float(np.mean(self.progress.epoch_times)) if self.progress.epoch_times else None,
            "history": self.progress.history, "resumed_from": self.resumed_from, "device": str(self.device),
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


class RunMismatchError(RuntimeError):
    """``last.pt`` in this run dir belongs to a run with other settings (see tasks/train.py ``run_identity``)."""

    def __init__(self, path: Path, saved: dict, wanted: dict):
        keys = sorted(k for k in set(saved) | set(wanted) if saved.get(k, "<absent>") != wanted.get(k, "<absent>"))
        shown = ", ".join(f"{k}: {saved.get(k, '<absent>')!r} -> {wanted.get(k, '<absent>')!r}" for k in keys[:8])
        super().__init__(
            f"{path} is a checkpoint of a run with other settings ({shown}{', ...' if len(keys) > 8 else ''}).\n"
            f"  Resuming would mix two runs. Start this one over with trainer.resume=false (the old checkpoint is "
            f"overwritten), or give it its own folder with run_name=NAME.")
