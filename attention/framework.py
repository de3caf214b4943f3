r"""The framework itself: the regularizers Ω, the smoothed max max_Ω and its gradient Π_Ω.

    max_Ω(x) = max_{y ∈ Δ} <y, x> - γ Ω(y),        ∇max_Ω(x) = Π_Ω(x)   (Danskin)

``regularizer(y, name)`` evaluates Ω on attention weights, ``max_omega(x, name)`` the value, whose autograd
gradient is the mapping (and whose Hessian-vector products are the mapping's Jacobian): the framework, not four
unrelated functions.
"""

import torch
from torch.autograd import Function

from . import functions
from ._layout import check_parameter, to_rows

MAPPINGS = {
    "softmax": functions.softmax,
    "sparsemax": functions.sparsemax,
    "fusedmax": functions.fusedmax,
    "oscarmax": functions.oscarmax,
}


def unknown_name(name) -> ValueError:
    return ValueError(f"unknown attention mapping {name!r}; valid names: {', '.join(MAPPINGS)}")


def _penalty_rows(y: torch.Tensor, lengths: torch.Tensor, name: str) -> torch.Tensor:
    """The λ-free structured penalty of each row of y (valid entries in front): TV or Σ_{i<j} max(y_i, y_j)."""
    d = y.shape[-1]
    valid = torch.arange(d, device=y.device) < lengths.unsqueeze(-1)
    if name == "fusedmax":
        both = valid[:, 1:] & valid[:, :-1]
        return ((y[:, 1:] - y[:, :-1]).abs() * both).sum(-1)
    # oscar: Σ_{i<j} max(|y_i|, |y_j|) = Σ_k (m - k) |y|_(k), k = 1..m, over the m valid entries
    a = torch.where(valid, y.abs(), -1.0)  # invalid entries sorted last
    a_sorted = torch.sort(a, dim=-1, descending=True).values.clamp_min(0)
    k = torch.arange(1, d + 1, device=y.device, dtype=y.dtype)
    weights = (lengths.unsqueeze(-1).to(y.dtype) - k).clamp_min(0)
    return (weights * a_sorted).sum(-1)


def regularizer(weights, name, dim=-1, lam=None, mask=None):
    """Ω(y) of each slice of ``weights`` along ``dim`` (γ not included): negative entropy, ½‖y‖², ½‖y‖² + λ TV,
    or ½‖y‖² + λ Σ_{i<j} max(|y_i|, |y_j|). Masked entries are left out, as in the mappings."""
    if name not in MAPPINGS:
        raise unknown_name(name)
    rows = to_rows(weights, dim, mask, f"regularizer({name})")
    y = rows.values
    valid = torch.arange(y.shape[-1], device=y.device) < rows.lengths.unsqueeze(-1)
    y = torch.where(valid, y, 0)
    if name == "softmax":
        value = torch.where(y > 0, y * torch.log(torch.where(y > 0, y, 1)), 0).sum(-1)
    else:
        value = 0.5 * (y * y).sum(-1)
        if name in ("fusedmax", "oscarmax"):
            default = 0.1 if name == "fusedmax" else 0.01
            lam = check_parameter("lam", name, default if lam is None else lam, positive=False)
            value = value + lam * _penalty_rows(y, rows.lengths, name)
    return value.reshape(rows.shape[:-1]).to(rows.dtype)


class _Envelope(Function):
    """Returns ``value``; its gradient w.r.t. ``scores`` is ``y`` (Danskin), and, since ``y`` keeps its graph, the
    second derivative is the mapping's Jacobian."""

    @staticmethod
    def forward(ctx, scores, y, value, dim):
        ctx.dim = dim
        ctx.save_for_backward(y)
        return value.clone()

    @staticmethod
    def backward(ctx, grad_value):
        (y,) = ctx.saved_tensors
        return grad_value.unsqueeze(ctx.dim) * y, None, None, None


def max_omega(scores, name, dim=-1, gamma=1.0, mask=None, **params):
    """max_{y ∈ Δ} <y, x> - γ Ω(y) of each slice along ``dim``; its gradient w.r.t. ``scores`` is Π_Ω(scores).

    An all-masked slice has no feasible y; its value is defined as 0 (and its gradient as 0, like the mapping's).
    """
    if name not in MAPPINGS:
        raise unknown_name(name)
    if params.get("variant", "exact") != "exact":
        raise ValueError(
            f"max_omega: variant={params['variant']!r} is not the argmax of <y, x> - γΩ(y), so it is not the "
            "gradient of max_Ω; use variant='exact'"
        )
    gamma = check_parameter("gamma", name, gamma, positive=True)
    y = MAPPINGS[name](scores, dim=dim, gamma=gamma, mask=mask, **params)
    with torch.no_grad():
        inner = torch.where(y > 0, y * scores, 0).sum(dim)
        value = inner - gamma * regularizer(y, name, dim=dim, lam=params.get("lam"), mask=mask)
    return _Envelope.apply(scores, y, value.to(scores.dtype), dim % scores.dim())
