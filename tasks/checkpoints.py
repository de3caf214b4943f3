"""One checkpoint file: written atomically, read safely, and the RNG states it carries.

``atomic_save`` never leaves a half-written file; ``load_checkpoint_file`` reads on the CPU through
``tasks.files.load_tensors`` (weights_only: a planted pickle never runs) and turns a damaged file into a
``CheckpointError`` that names it and the way out; ``load_model_state`` does the same for a checkpoint of another
model. What a run dir's ``last.pt`` and ``best.pt`` mean for a run (resume, refuse, repair) is tasks/resume.py's job.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks.files import UnsafeFileError, atomic_open, load_tensors


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged or cannot be written; the message names the file and what to do."""


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


def _describe_os_error(error: OSError) -> str:
    return os.strerror(error.errno) if error.errno else str(error)


def _exception_chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__
