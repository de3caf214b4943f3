"""Preemption: SIGTERM / SIGUSR1 / SIGUSR2 (a scheduler's time limit, ``kill``, Slurm's warning before the end).

During training a signal is noted, not obeyed at once: the step under way finishes, the trainer writes a
checkpoint, and ``stop`` raises ``Preempted`` (the same command continues). Run by submitit, tasks/train.py then
closes the logger and lets submitit requeue the job: requeueing kills the job's other processes, W&B's service
among them, so it must come last. During the task's setup (a data download can take hours, and nothing is lost) a
signal stops the run at once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("tasks.trainer")  # the trainer's log lines, under the name they have always had


class Preempted(Exception):
    """Training stopped on a signal (SIGTERM, SIGUSR1/2) after writing a checkpoint; the same command continues."""

    def __init__(self, signum: int, step: int, in_setup: bool = False):
        self.signum, self.step = signum, step
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} during the setup (data, model), before training: nothing was trained, "
                         f"no record written; run the same command to start again" if in_setup else
                         f"stopped by {name} at step {step}: checkpoint written, run the same command to continue")


class Preemption:
    """The signals named in ``trainer.signals``, caught while ``catching()`` runs; ``received`` is the first one,
    until ``stop`` acts on it at a step boundary."""

    def __init__(self, names: Iterable[str] | None):
        self.names = list(names or ())
        self.received: int | None = None
        self.in_setup = False

    @contextlib.contextmanager
    def catching(self):
        """The handlers are installed (from the main thread only: Python allows no other) and the previous ones,
        submitit's among them, restored afterwards."""
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for name in self.names:
                signum = getattr(signal, str(name), None)
                if signum is not None:
                    previous[signum] = signal.signal(signum, self._on_signal)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    @contextlib.contextmanager
    def immediate(self):
        """A signal inside stops at once (``Preempted``): a download has no step boundary and nothing to save (its
        lock and temporary files are released by their finally blocks)."""
        self.in_setup = True
        try:
            yield
        finally:
            self.in_setup = False

    def _on_signal(self, signum, frame) -> None:
        if self.in_setup:
            raise Preempted(signum, 0, in_setup=True)
        if self.received is None:
            log.warning(f"{signal.Signals(signum).name} received: finishing this step, then checkpoint")
        self.received = signum

    def stop(self, step: int) -> None:
        """After a signal, once the checkpoint of ``step`` is written: stop (``Preempted``). Otherwise nothing."""
        if self.received is None:
            return
        log.warning(f"checkpoint written at step {step} ({signal.Signals(self.received).name})")
        raise Preempted(self.received, step)
