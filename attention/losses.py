r"""Fenchel–Young losses (Blondel, Martins & Niculae, 2020) for every mapping of the framework.

    L(θ; y) = max_Ω(θ) + γ Ω(y) - <θ, y>        ∇_θ L = Π_Ω(θ) - y

with max_Ω(θ) = max_{p ∈ Δ} <p, θ> - γ Ω(p) (``attention.max_omega``) and Π_Ω its argmax (the mapping). By the
Fenchel–Young inequality L ≥ 0, with equality exactly when y = Π_Ω(θ). softmax gives the Kullback–Leibler
divergence KL(y ‖ softmax(θ)), i.e. cross-entropy for one-hot targets; sparsemax and entmax give the entmax
package's ``sparsemax_loss`` / ``entmax15_loss`` / ``entmax_bisect_loss``; fusedmax, oscarmax and sq_pnorm_max
give losses that exist nowhere else.

The gradient in θ is the closed form Π_Ω(θ) - y (no autograd through a solver): the mapping runs once, in the
forward pass. A learnable γ or λ gets the envelope theorem's gradient, ∂L/∂γ = Ω(y) - Ω(Π_Ω(θ)) and
∂L/∂λ = γ (penalty(y) - penalty(Π_Ω(θ))); a target distribution that requires grad gets γ∇Ω(y) - θ.

    import attention
    loss = attention.fenchel_young_loss(logits, labels, "sparsemax")           # (N, C) scores, (N,) class indices
    loss = attention.fenchel_young_loss(logits, labels, "fusedmax", dim=1, lam=0.1)    # (N, C, T) and (N, T)
    criterion = attention.FenchelYoungLoss("entmax", alpha=1.5, ignore_index=0)      # an nn.Module
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd import Function

from . import _layout
from .defaults import GAMMA
from .framework import regularizer
from .registry import lookup

_REDUCTIONS = ("none", "mean", "sum")


def _inner(a: torch.Tensor, b: torch.Tensor, dim: int, mask: torch.Tensor | None) -> torch.Tensor:
    """<a, b> along ``dim`` over the unmasked entries (a masked score may be -inf: it takes no part)."""
    if mask is not None:
        b = torch.where(mask, b, 0)  # masking the factor, not the product, keeps 0 · inf out of the gradients
    return (a * b).sum(dim)


def _times_gamma(gamma, rows: torch.Tensor, dim: int) -> torch.Tensor:
    """γ (a number, or a tensor with size 1 along ``dim``) times per-row values (``dim`` removed)."""
    if not isinstance(gamma, torch.Tensor) or gamma.dim() == 0:
        return gamma * rows
    return (gamma * rows.unsqueeze(dim)).squeeze(dim)


def _gap(scores, weights, target, name, dim, gamma, mask, omega_params) -> torch.Tensor:
    """<Π - y, θ> - γ (Ω(Π) - Ω(y)) of each row: the loss, for Π the argmax; its autograd gradients in γ, λ, y (Π
    held fixed) are the loss's (envelope theorem)."""
    omega_weights = regularizer(weights, name, dim=dim, mask=mask, **omega_params)
    omega_target = regularizer(target, name, dim=dim, mask=mask, **omega_params)
    return _inner(weights - target, scores, dim, mask) - _times_gamma(gamma, omega_weights - omega_target, dim)


class FenchelYoungFunction(Function):
    """L(θ; y) of each row, given Π_Ω(θ) (``weights``, computed once, without a graph) and fixed γ, λ; backward:
    the closed form ∇_θ L = Π_Ω(θ) - y."""

    @staticmethod
    def forward(ctx, scores, weights, target, mask, name, dim, gamma, omega_params):
        work = scores.dtype if scores.dtype == torch.float64 else torch.float32  # half precision: sums in float32
        loss = _gap(scores.to(work), weights.to(work), target.to(work), name, dim, gamma, mask, omega_params)
        residual = weights - target.to(weights.dtype)
        if mask is not None:
            residual = torch.where(mask, residual, 0)  # masked scores take no part in the loss
        ctx.dim = dim
        ctx.save_for_backward(residual)
        return loss.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        (residual,) = ctx.saved_tensors
        # Danskin: ∇max_Ω(θ) = Π_Ω(θ); the other terms are constant or linear in θ
        return (grad_loss.unsqueeze(ctx.dim) * residual,) + (None,) * 7


def _check_arguments(mapping, reduction, params, where):
    description = lookup(mapping)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{where}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    reason = description.not_argmax(params)
    if reason is not None:
        raise ValueError(f"{where}: {reason}, so it has no Fenchel–Young loss")
    unknown = set(params) - {p.name for p in description.parameters}
    if unknown:
        raise TypeError(f"{where}: unexpected parameters {sorted(unknown)}")
    return description


def _check_mask(mask, scores, where):
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"{where}: mask must be a bool tensor (True = the class takes part), got {got}")
    try:
        ok = torch.broadcast_shapes(mask.shape, scores.shape) == scores.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{where}: mask of shape {tuple(mask.shape)} does not broadcast to scores of shape "
                         f"{tuple(scores.shape)}")
    return mask.to(scores.device).expand(scores.shape)


def _one_hot(scores, target, dim, ignore_index, mask, where):
    """(the one-hot targets, the rows that count) from class indices; an ignored row's one-hot is at class 0."""
    expected = scores.shape[:dim] + scores.shape[dim + 1:]
    if target.shape != expected:
        raise ValueError(
            f"{where}: class-index target of shape {tuple(target.shape)} must have the scores' shape without dim, "
            f"{tuple(expected)} (scores {tuple(scores.shape)}, dim={dim}; for CrossEntropyLoss's (N, C, d1, ...) "
            "layout pass dim=1)")
    target = target.to(scores.device).long()
    keep = target != ignore_index
    index = torch.where(keep, target, 0).unsqueeze(dim)
    n_classes = scores.shape[dim]
    check = _layout.checks_enabled(scores.device)  # by default on the CPU only: elsewhere, a device-to-host sync
    if check:
        bad = keep & ((target < 0) | (target >= n_classes))
        if bad.any():
            first = tuple(torch.nonzero(bad)[0].tolist())
            raise ValueError(f"{where}: target class {int(target[first])} at index {first} is out of range for "
                             f"{n_classes} classes (ignore_index={ignore_index})")
    one_hot = torch.zeros_like(scores).scatter(dim, index, 1)
    if mask is not None and check:
        masked = keep & ~mask.gather(dim, index).squeeze(dim) & mask.any(dim)  # a fully masked row adds 0
        if masked.any():
            first = tuple(torch.nonzero(masked)[0].tolist())
            raise ValueError(f"{where}: target class {int(target[first])} at index {first} is masked out: its "
                             "loss would be infinite (unmask it, or set it to ignore_index)")
    return one_hot, keep


def _check_distribution(scores, target, mask, where):
    """Rows on the simplex (``dim`` last here), checked where checks are on (``attention.set_checks``)."""
    if target.shape != scores.shape:
        raise ValueError(f"{where}: a target distribution must have the scores' shape {tuple(scores.shape)}, got "
                         f"{tuple(target.shape)} (class indices must be an integer tensor)")
    if not _layout.checks_enabled(target.device):
        return
    tol = 4 * torch.finfo(target.dtype).eps ** 0.5
    live = target if mask is None else torch.where(mask, target, 0)
    if mask is not None and bool((live != target).any()):
        raise ValueError(f"{where}: the target gives weight to masked-out entries; zero them")
    off = ~((live.sum(-1) - 1).abs() <= tol)  # nan included
    if mask is not None:
        off &= mask.any(-1)  # a row with no unmasked entry adds nothing
    if bool((live < -tol).any()) or bool(off.any()):
        raise ValueError(f"{where}: each target row must be a probability distribution (entries ≥ 0 summing to 1 "
                         "over its unmasked entries); for a row with no target, mask it out or use class indices "
                         "and ignore_index")


def fenchel_young_loss(scores: torch.Tensor, target: torch.Tensor, mapping: str, dim: int = -1,
                       reduction: str = "mean", ignore_index: int = -100, mask: torch.Tensor | None = None,
                       gamma: float | torch.Tensor = GAMMA, **params) -> torch.Tensor:
    r"""The Fenchel–Young loss L(θ; y) = max_Ω(θ) + γΩ(y) - <θ, y> of ``mapping``, whose gradient is Π_Ω(θ) - y.

    ``target``: class indices (an integer tensor with the scores' shape without ``dim``, as ``CrossEntropyLoss``:
    scores (N, C) and target (N,), or scores (N, C, d1, ...) with ``dim=1`` and target (N, d1, ...); entries equal
    to ``ignore_index`` add nothing) or distributions (a float tensor of the scores' shape, rows on the simplex).
    ``mask`` (bool, broadcastable, True = takes part) removes classes as in the mappings; a row with no unmasked
    class adds 0. ``reduction``: "none" (one value per row: the scores' shape without ``dim``), "sum", or "mean"
    over the rows that count (not ignored, not fully masked; 0 when none does). ``gamma`` and the mapping's
    parameters (``lam``, ``p``, ``alpha``) as for the mapping, tensors that require grad included.

    softmax gives KL(y ‖ softmax(θ)), which is ``cross_entropy`` for class indices (and cross-entropy minus the
    target's entropy for distributions: the same gradient in θ). oscarmax's ``variant="owl"`` is refused: it is
    not an argmax, so it has no Fenchel–Young loss.
    """
    where = f"fenchel_young_loss({mapping!r})"
    description = _check_arguments(mapping, reduction, params, where)
    if not isinstance(scores, torch.Tensor) or not scores.is_floating_point() or scores.dim() == 0:
        raise TypeError(f"{where}: scores must be a floating-point tensor with at least one dimension")
    if not -scores.dim() <= dim < scores.dim():
        raise ValueError(f"{where}: dim={dim} is out of range for scores of shape {tuple(scores.shape)}")
    dim = dim % scores.dim()
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{where}: target must be a tensor (class indices or distributions)")
    mask = _check_mask(mask, scores, where)

    if target.is_floating_point():
        _check_distribution(scores.movedim(dim, -1), target.movedim(dim, -1),
                            None if mask is None else mask.movedim(dim, -1), where)
        keep = None
    elif target.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        target, keep = _one_hot(scores, target, dim, ignore_index, mask, where)
    else:
        raise TypeError(f"{where}: target must hold class indices (an integer tensor) or distributions (floats), "
                        f"got {target.dtype}")
    if mask is not None:
        keep = mask.any(dim) if keep is None else keep & mask.any(dim)

    gamma_fixed = gamma.detach() if isinstance(gamma, torch.Tensor) else gamma
    fixed = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in params.items()}
    with torch.no_grad():  # the mapping runs once, and no graph goes through it
        weights = description.function(scores, dim=dim, gamma=gamma_fixed, mask=mask, **fixed)
    omega_fixed = {k: v for k, v in fixed.items() if k in description.omega_parameters}
    loss = FenchelYoungFunction.apply(scores, weights, target.detach(), mask, mapping, dim, gamma_fixed, omega_fixed)

    if any(isinstance(v, torch.Tensor) and v.requires_grad for v in (gamma, target, *params.values())):
        # a term of value 0 whose gradients in γ, λ and the target are the loss's (envelope theorem: Π held fixed)
        omega_params = {k: v for k, v in params.items() if k in description.omega_parameters}
        extra = _gap(scores.detach(), weights, target, mapping, dim, gamma, mask, omega_params).to(loss.dtype)
        loss = loss + (extra - extra.detach())

    if keep is not None:
        loss = torch.where(keep, loss, 0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    count = loss.numel() if keep is None else keep.sum()
    return loss.sum() / (count.clamp_min(1) if isinstance(count, torch.Tensor) else max(count, 1))


class FenchelYoungLoss(nn.Module):
    """``fenchel_young_loss`` as an ``nn.Module``: ``FenchelYoungLoss("fusedmax", lam=0.1)(scores, target)``.

    γ and the mapping's parameters may be ``nn.Parameter``s: they are registered and learned with the model.
    """

    def __init__(self, mapping: str, dim: int = -1, reduction: str = "mean", ignore_index: int = -100,
                 gamma: float | torch.Tensor = GAMMA, **params):
        super().__init__()
        _check_arguments(mapping, reduction, params, f"FenchelYoungLoss({mapping!r})")
        from . import build  # the mapping's own checks of γ and its parameters, now rather than at the first call

        build(mapping, dim=dim, gamma=gamma, **params)
        self.mapping, self.dim, self.reduction, self.ignore_index = mapping, dim, reduction, ignore_index
        self.gamma = gamma  # an nn.Parameter is registered by the assignment
        self._param_names = tuple(params)
        for key, value in params.items():
            setattr(self, key, value)

    def forward(self, scores: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        params = {key: getattr(self, key) for key in self._param_names}
        return fenchel_young_loss(scores, target, self.mapping, dim=self.dim, reduction=self.reduction,
                                  ignore_index=self.ignore_index, mask=mask, gamma=self.gamma, **params)

    def extra_repr(self) -> str:
        params = "".join(f", {k}={getattr(self, k)!r}" for k in self._param_names)
        return f"{self.mapping!r}, dim={self.dim}, reduction={self.reduction!r}{params}"
