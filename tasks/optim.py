"""The optimizer (``trainer.optimizer``: Adam, AdamW or SGD) and the learning-rate schedule (``trainer.lr_schedule``)
of a run; the decay on plateau (``trainer.lr_decay``) is the trainer's (tasks/trainer.py), since it follows
validation."""

from __future__ import annotations

import math

import torch


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
