"""Input checks and the move from (any shape, any dim, any mask) to (rows, d) with valid entries in front.

Every mapping acts on 2-D float32/float64 rows plus a per-row count of valid entries; this module builds that
view with differentiable torch ops (movedim, reshape, gather) and maps the result back, so autograd sees through
it and the kernels never deal with strides, masks or half precision.
"""

import math
from dataclasses import dataclass

import torch


def check_parameter(name: str, mapping: str, value, *, positive: bool) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{mapping}: {name} must be a number, got {value!r}") from None
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{mapping}: {name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{mapping}: {name} must be > 0, got {value} (it scales the regularizer: gamma > 0)")
    if not positive and value < 0:
        raise ValueError(f"{mapping}: {name} must be >= 0, got {value} (a negative penalty is not convex)")
    return value


@dataclass
class Rows:
    """(n, d) scores with each row's valid entries first, and how to put results back."""

    values: torch.Tensor  # (n, d), float32 or float64, contiguous
    lengths: torch.Tensor  # (n,), int64, on values.device
    shape: torch.Size  # scores' shape with `dim` moved last
    dim: int
    dtype: torch.dtype
    order: torch.Tensor | None  # (n, d) positions gathered into each row, or None when the mask is a prefix

    def restore(self, rows: torch.Tensor) -> torch.Tensor:
        if self.order is not None:
            rows = torch.zeros_like(rows).scatter(-1, self.order, rows)
        return rows.reshape(self.shape).movedim(-1, self.dim).to(self.dtype)


def to_rows(scores: torch.Tensor, dim: int, mask: torch.Tensor | None, mapping: str) -> Rows:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{mapping}: scores must be a torch.Tensor, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(f"{mapping}: scores must be a floating-point tensor, got {scores.dtype}")
    if scores.dim() == 0:
        raise ValueError(f"{mapping}: scores must have at least one dimension, got a scalar")
    if not -scores.dim() <= dim < scores.dim():
        raise ValueError(f"{mapping}: dim={dim} is out of range for scores of shape {tuple(scores.shape)}")
    dim = dim % scores.dim()

    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"{mapping}: mask must be a bool tensor (True = may receive attention), got {got}")
        try:
            shape = torch.broadcast_shapes(mask.shape, scores.shape)
        except RuntimeError:
            shape = None
        if shape != scores.shape:
            raise ValueError(
                f"{mapping}: mask of shape {tuple(mask.shape)} does not broadcast to scores of shape "
                f"{tuple(scores.shape)}"
            )
        mask = mask.to(scores.device).expand(scores.shape)
    check_finite(scores, mask, mapping)

    work_dtype = scores.dtype if scores.dtype == torch.float64 else torch.float32
    moved = scores.movedim(dim, -1)
    shape = moved.shape
    d = shape[-1]
    values = moved.reshape(-1, d).to(work_dtype)
    n = values.shape[0]
    order = None
    if mask is None:
        lengths = torch.full((n,), d, dtype=torch.int64, device=scores.device)
    else:
        valid = mask.movedim(dim, -1).reshape(n, d)
        lengths = valid.sum(-1)
        is_prefix = bool((valid == (torch.arange(d, device=valid.device) < lengths.unsqueeze(-1))).all())
        if not is_prefix:
            # valid entries to the front, in their original order (a stable sort of the "is masked" flags)
            order = torch.sort((~valid).to(torch.uint8), dim=-1, stable=True).indices
            values = values.gather(-1, order)
    return Rows(values.contiguous(), lengths, shape, dim, scores.dtype, order)


def check_finite(scores: torch.Tensor, mask: torch.Tensor | None, mapping: str) -> None:
    bad = ~torch.isfinite(scores)
    if mask is not None:
        bad &= mask
    if bool(bad.any()):
        where = torch.nonzero(bad)
        first = tuple(where[0].tolist())
        kind = "nan" if torch.isnan(scores[first]) else "inf"
        raise ValueError(
            f"{mapping}: scores contain {kind} at index {first} ({len(where)} non-finite unmasked entries in "
            f"scores of shape {tuple(scores.shape)}); fix the model or mask those positions out"
        )
