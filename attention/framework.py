r"""The framework itself: the regularizers Ω, the smoothed max max_Ω and its gradient Π_Ω.

    max_Ω(x) = max_{y ∈ Δ} <y, x> - γ Ω(y),        ∇max_Ω(x) = Π_Ω(x)   (Danskin)

``regularizer(y, name)`` evaluates Ω on attention weights, ``max_omega(x, name)`` the value, whose autograd
gradient is the mapping (and whose Hessian-vector products are the mapping's Jacobian): the framework, not six
unrelated functions. Its gradients in a learnable γ or λ are the envelope theorem's -Ω(y) and -γ ∂Ω/∂λ(y).
"""

import torch
from torch.autograd import Function

from . import functions
from ._layout import check_parameter, to_rows
from .defaults import DEFAULTS, GAMMA

MAPPINGS = {
    "softmax": functions.softmax,
    "sparsemax": functions.sparsemax,
    "fusedmax": functions.fusedmax,
    "oscarmax": functions.oscarmax,
    "sq_pnorm_max": functions.sq_pnorm_max,
    "entmax": functions.entmax,
}
# the parameters of Ω itself (γ scales it; oscarmax's variant is how the mapping is computed, not Ω)
_OMEGA_PARAMS = {name: set(params) - {"gamma", "variant"} for name, params in DEFAULTS.items()}


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


def _param(name, params, key):
    value = params.get(key)
    return DEFAULTS[name][key] if value is None else value


def _omega_rows(y, lengths, name, params):
    """(Ω without its λ term, the λ-free penalty or None) of each row; y: rows with valid entries in front."""
    if name == "softmax":
        return torch.where(y > 0, y * torch.log(torch.where(y > 0, y, 1)), 0).sum(-1), None
    if name == "sq_pnorm_max":
        p = check_parameter("p", name, _param(name, params, "p"), positive=True, low=1.0, high=2.0)
        return 0.5 * y.abs().pow(p).sum(-1).pow(2.0 / p), None
    if name == "entmax":
        alpha = functions._check_alpha(_param(name, params, "alpha"))
        if isinstance(alpha, torch.Tensor):  # 0-d or one per row (``regularizer``): learnable α
            alpha = alpha.to(y.dtype)
            a = alpha.unsqueeze(-1) if alpha.dim() else alpha
            powered = torch.where(y != 0, torch.where(y != 0, y.abs(), 1).pow(a), 0)  # 0^α = 0, with no nan in d/dα
            return (powered.sum(-1) - 1) / (alpha * (alpha - 1)), None
        return (y.abs().pow(alpha).sum(-1) - 1) / (alpha * (alpha - 1)), None
    value = 0.5 * (y * y).sum(-1)
    if name in ("fusedmax", "oscarmax"):
        return value, _penalty_rows(y, lengths, name)
    return value, None


def regularizer(weights: torch.Tensor, name: str, dim: int = -1, mask: torch.Tensor | None = None,
                **params) -> torch.Tensor:
    """Ω(y) of each slice of ``weights`` along ``dim`` (γ not included): negative entropy, ½‖y‖², ½‖y‖² + λ TV,
    ½‖y‖² + λ Σ_{i<j} max(|y_i|, |y_j|), ½‖y‖_p², or the Tsallis (Σ y^α - 1) / (α(α-1)); the parameters
    (``lam``, ``p``, ``alpha``) as for the mapping, with its defaults (a tensor λ or α: one per slice, learnable).
    Masked entries are left out, as in the
    mappings; a slice with no unmasked entry gives 0."""
    if name not in MAPPINGS:
        raise unknown_name(name)
    unknown = set(params) - _OMEGA_PARAMS[name]
    if unknown:
        raise TypeError(f"regularizer({name!r}): unexpected parameters {sorted(unknown)}")
    rows = to_rows(weights, dim, mask, f"regularizer({name})")
    if isinstance(params.get("alpha"), torch.Tensor):  # one per row, broadcast as the mapping takes it
        params = {**params, "alpha": rows.per_row(params["alpha"], "alpha")}
    y = rows.values
    valid = torch.arange(y.shape[-1], device=y.device) < rows.lengths.unsqueeze(-1)
    y = torch.where(valid, y, 0)
    value, penalty = _omega_rows(y, rows.lengths, name, params)
    if penalty is not None:
        lam = check_parameter("lam", name, _param(name, params, "lam"), positive=False)
        value = value + rows.per_row(lam, "lam") * penalty
    value = torch.where(rows.lengths > 0, value, 0)  # no unmasked entry: 0, as max_omega defines it
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


def max_omega(scores: torch.Tensor, name: str, dim: int = -1, gamma: float | torch.Tensor = GAMMA,
              mask: torch.Tensor | None = None, **params) -> torch.Tensor:
    """max_{y ∈ Δ} <y, x> - γ Ω(y) of each slice along ``dim``; its gradient w.r.t. ``scores`` is Π_Ω(scores).

    An all-masked slice has no feasible y; its value is defined as 0 (and its gradient as 0, like the mapping's).
    A tensor γ or λ (broadcasting to the scores with size 1 along ``dim``) gets the envelope theorem's gradient:
    ∂/∂γ = -Ω(y), ∂/∂λ = -γ × the structured penalty of y.
    """
    if name not in MAPPINGS:
        raise unknown_name(name)
    if params.get("variant", DEFAULTS[name].get("variant", "exact")) != "exact":
        raise ValueError(
            f"max_omega: variant={params['variant']!r} is not the argmax of <y, x> - γΩ(y), so it is not the "
            "gradient of max_Ω; use variant='exact'"
        )
    gamma = check_parameter("gamma", name, gamma, positive=True)
    if isinstance(params.get("alpha"), torch.Tensor):  # (its ∂/∂α is not implemented here)
        raise TypeError("max_omega: alpha must be a number; a tensor (learnable) α works in attention.entmax, "
                        "attention.regularizer and the Fenchel–Young loss")
    y = MAPPINGS[name](scores, dim=dim, gamma=gamma, mask=mask, **params)
    omega_params = {k: v for k, v in params.items() if k != "variant"}
    rows = to_rows(y.detach(), dim, mask, f"max_omega({name})")
    yr = torch.where(torch.arange(rows.values.shape[-1], device=y.device) < rows.lengths.unsqueeze(-1), rows.values, 0)
    omega, penalty = _omega_rows(yr, rows.lengths, name, omega_params)
    omega = torch.where(rows.lengths > 0, omega, 0)
    lam = rows.per_row(_param(name, omega_params, "lam"), "lam") if penalty is not None else None
    gamma_rows = rows.per_row(gamma, "gamma")
    with torch.no_grad():
        total = omega if penalty is None else omega + _detached(lam) * penalty
        inner = torch.where(y > 0, y * scores, 0).sum(dim).reshape(-1)
        value = torch.where(rows.lengths > 0, inner - _detached(gamma_rows) * total, 0)
    shape = rows.shape[:-1]
    result = _Envelope.apply(scores, y, value.reshape(shape).to(scores.dtype), dim % scores.dim())
    # learnable γ, λ: terms whose value is 0 and whose gradient is the envelope theorem's
    if isinstance(gamma_rows, torch.Tensor) and gamma_rows.requires_grad:
        result = result - ((gamma_rows - gamma_rows.detach()) * total).reshape(shape).to(scores.dtype)
    if isinstance(lam, torch.Tensor) and lam.requires_grad:
        result = result - (_detached(gamma_rows) * (lam - lam.detach()) * penalty).reshape(shape).to(scores.dtype)
    return result


def _detached(value):
    return value.detach() if isinstance(value, torch.Tensor) else value
