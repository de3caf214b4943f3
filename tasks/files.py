"""Atomic file writes: a file the harness writes is its old content or its new content, never half of either.

    atomic_write(path, text_or_bytes)            # a record, a table, a vocabulary, a data file
    with atomic_open(path) as f:                 # anything that writes to a file object: torch.save(obj, f)
        torch.save(obj, f)
    move_into_place(part, dest)                  # a file written elsewhere (a resumable download's .part)
    load_tensors(path)                           # torch.load that never runs code from the file
    with run_dir_lock(run_dir):                  # one process trains in a run dir at a time


The bytes go to ``<path>.tmp-<pid>`` in the same folder (a rename is atomic only within one file system), are
flushed to disk (fsync), then renamed onto ``path``, and the folder is fsync'd so that the rename survives a power
cut too. Any failure (a full disk, a read-only folder, an exception of the writer, a KeyboardInterrupt) removes the
temporary file, leaves ``path`` as it was, and raises the error unchanged. ``.tmp-<pid>`` files that a kill -9 left
behind are removed by ``remove_orphan_temporaries`` (the trainer calls it at start on its checkpoint folder).

Every ``.pt`` file the harness reads (checkpoints, the parsed GloVe table, ``attention_test.pt``) goes through
``load_tensors``: ``torch.load(weights_only=True)``, so a file planted in a run dir or a data cache cannot run code
(a pickle names any callable, ``os.system`` included); what these files hold besides tensors and plain containers
(numpy's RNG state in checkpoints) is allow-listed by name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def temporary_path(path: str | os.PathLike) -> Path:
    """Where ``path`` is written before its rename: same folder, the writer's pid in the name."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """A file object (``mode`` "wb" or "w", utf-8) whose content replaces ``path`` when the block ends without an
    exception; on an exception ``path`` is unchanged and no temporary file is left."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        # a Python file object: a writer such as torch.save then raises the OSError of a failed write itself
        with open(tmp, mode) if mode == "wb" else open(tmp, mode, encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (a str is written as utf-8) to ``path`` atomically and durably; return ``path``."""
    if not isinstance(data, (bytes, bytearray, memoryview, str)):
        raise TypeError(f"atomic_write({path}): data must be bytes or str, not {type(data).__name__}")
    with atomic_open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def move_into_place(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Rename the complete file ``src`` onto ``dest`` (same file system) durably: ``src`` flushed to disk first,
    the folder after the rename."""
    src, dest = Path(src), Path(dest)
    with open(src, "rb") as f:
        os.fsync(f.fileno())
    os.replace(src, dest)
    fsync_dir(dest.parent)
    return dest


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (POSIX: the directory entry is flushed with the directory)."""
    with contextlib.suppress(OSError):  # not supported everywhere (some network file systems)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_orphan_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``*.tmp-<pid>`` files in ``folder`` that no running process is writing: what a kill -9 during a
    write leaves behind (a live writer's file, e.g. another process on the same run dir, is left alone)."""
    removed = []
    for tmp in Path(folder).glob("*.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[-1]
        if not pid.isdigit() or (int(pid) != os.getpid() and _process_alive(int(pid))):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class UnsafeFileError(ValueError):
    """A ``.pt`` file holding Python objects other than tensors, numpy arrays and plain containers: not loaded."""


def _allowed_globals() -> list:
    """What checkpoints legitimately hold besides tensors and containers: numpy's RNG state (an ndarray of uint32
    inside ``np.random.get_state()``'s tuple) is pickled through these names."""
    import numpy as np

    reconstruct = np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
    return [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32)), type(np.dtype(np.float64))]


def load_tensors(path: str | os.PathLike, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with numpy's arrays allowed: nothing in the file ever runs. A file
    naming any other callable or class (a pickle planted to run a command) is an ``UnsafeFileError`` naming the
    file and what it names. Other failures (a damaged file, random bytes) are torch's errors, unchanged."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower() and "weights_only" not in str(error):
            raise
        found = ""
        with contextlib.suppress(Exception):  # zip-format files only
            found = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)[:5])
        found = found or _first_global(str(error))
        if not found:  # no callable named: damaged (random bytes, an unknown opcode), refused all the same
            raise
        raise UnsafeFileError(
            f"{path} holds Python objects, not only tensors and plain containers ({found}): not "
            f"loaded, since loading it could run code planted in it. The harness never writes such a file: "
            f"delete it (or replace it with a copy you trust).") from None


def _first_global(message: str) -> str:
    """The callable that torch's weights-only unpickler refused, from its message ("... GLOBAL posix.system ...")."""
    import re

    match = re.search(r"GLOBAL ([\w.]+)", message)
    return match.group(1) if match else ""


class RunDirInUse(RuntimeError):
    """Another process holds the run dir's lock (``run_dir_lock``); the message names the folder and its pid."""


LOCK_NAME = ".lock"
_held: dict[str, int] = {}  # run dirs this process holds: a nested or repeated lock of the same one is a no-op


@contextlib.contextmanager
def run_dir_lock(folder: str | os.PathLike) -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on ``<folder>/.lock`` for the block, holding this process's pid: a second
    process on the same run dir (the same command typed twice, two sweeps over one folder) gets ``RunDirInUse``
    at once instead of training the same run alongside. The kernel drops the lock when the holder dies (even
    ``kill -9``), so a stale file never blocks; the file itself stays."""
    import fcntl

    folder = Path(folder)
    key = str(folder.resolve())
    if key in _held:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunDirInUse(f"{folder} is in use by another process (pid {holder}, holding {lock}): two processes "
                          f"would train the same run. Wait for it to end (or stop it: kill {holder}), or give this "
                          f"run its own folder with run_name=NAME.") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = fd
    try:
        yield
    finally:
        del _held[key]
        os.close(fd)  # (closing releases the lock)
