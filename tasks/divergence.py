"""A diverging run stops with an error, never a record or a checkpoint of non-finite weights.

The epoch's loss sum and the first step with a non-finite loss stay on the device (``LossTracker``): a training step
adds no device-to-host synchronisation; the trainer reads them (``problem``) at logging steps, before every
checkpoint and at epoch ends.
"""

from __future__ import annotations

from pathlib import Path

import torch


class TrainingDiverged(RuntimeError):
    """The training loss (or the validation metric) is not finite: training stopped, no record is written, the
    last checkpoint with finite weights is kept."""


class LossTracker:
    def __init__(self, loss_sum: float, step: int, device: torch.device):
        """``loss_sum``: the current epoch's so far; ``step``: the optimizer steps done (a resumed run's)."""
        self.loss_sum = torch.tensor(loss_sum, dtype=torch.float64, device=device)
        self.step_count = torch.tensor(step, dtype=torch.long, device=device)
        self.first_bad = torch.tensor(-1, dtype=torch.long, device=device)

    def add(self, loss: torch.Tensor) -> None:
        value = loss.detach().double()
        self.loss_sum += value
        self.step_count += 1
        first = (self.first_bad < 0) & ~torch.isfinite(value)
        self.first_bad = torch.where(first, self.step_count, self.first_bad)

    def epoch_loss_sum(self) -> float:
        return float(self.loss_sum)

    def new_epoch(self) -> None:
        self.loss_sum.zero_()

    def problem(self, model: torch.nn.Module, progress) -> str | None:
        """What is not finite: a training loss tracked so far (nan or inf), or the weights of ``model``; None when
        all is finite. One host synchronisation. ``progress`` (``tasks.trainer.Progress``) places the step in its
        epoch."""
        bad = int(self.first_bad)
        weights_ok = bad < 0 and bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())
        if bad < 0 and weights_ok:
            return None
        return (f"the training loss is not finite (nan or inf) at step {bad} (epoch {progress.epoch + 1}, batch "
                f"{progress.batch_in_epoch - (progress.step - bad)})" if bad >= 0
                else f"the weights are not finite at step {progress.step} (epoch {progress.epoch + 1})")


def stopped_here(last: Path, saved_step: int) -> str:
    """What is left of a diverged run (``last``, the checkpoint written at ``saved_step``) and what to try."""
    kept = (f"{last} (step {saved_step}) is kept, the last checkpoint before it" if last.exists()
            else "no checkpoint had been written")
    return (f"Training stopped: {kept}; no record is written. Lower trainer.optimizer.lr, or clip gradients "
            f"(trainer.grad_clip).")
