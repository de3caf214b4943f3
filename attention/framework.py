r"""The framework itself: the regularizers Ω, the smoothed max max_Ω and its gradient Π_Ω.

    max_Ω(x) = max_{y ∈ Δ} <y, x> - γ Ω(y),        ∇max_Ω(x) = Π_Ω(x)   (Danskin)

``regularizer(y, name)`` evaluates Ω on attention weights, ``max_omega(x, name)`` the value, whose autograd
gradient is the mapping (and whose Hessian-vector products are the mapping's Jacobian): the framework, not six
unrelated functions. Its gradients in a learnable γ or λ are the envelope theorem's -Ω(y) and -γ ∂Ω/∂λ(y).
"""

import torch
from torch.autograd import Function

from ._layout import check_parameter, to_rows
from .defaults import GAMMA
from .registry import MAPPINGS, lookup, unknown_name  # noqa: F401 (MAPPINGS, unknown_name: their old home)


def _valid_rows(rows):
    """The rows of a ``_layout.Rows`` with their invalid entries zeroed, as every Ω reads them."""
    y = rows.values
    valid = torch.arange(y.shape[-1], device=y.device) < rows.lengths.unsqueeze(-1)
    return torch.where(valid, y, 0)


def _omega_arguments(mapping, params, rows, check):
    """The parameters Ω of ``mapping`` depends on, defaults filled in, a tensor broadcast to one value per row."""
    arguments = {}
    for key in mapping.omega_parameters:
        value = params.get(key)
        value = mapping.parameter(key).default if value is None else value
        if check:
            value = mapping.parameter(key).check(mapping.name, key, value)
        arguments[key] = rows.per_row(value, key)
    return arguments


def _require_omega(mapping, where):
    if mapping.omega is None:
        raise ValueError(f"{where}: {mapping.name} was registered without its regularizer Ω (Mapping(omega=...))")


def regularizer(weights: torch.Tensor, name: str, dim: int = -1, mask: torch.Tensor | None = None,
                **params) -> torch.Tensor:
    """Ω(y) of each slice of ``weights`` along ``dim`` (γ not included): negative entropy, ½‖y‖², ½‖y‖² + λ TV,
    ½‖y‖² + λ Σ_{i<j} max(|y_i|, |y_j|), ½‖y‖_p², or the Tsallis (Σ y^α - 1) / (α(α-1)) (a registered mapping:
    its ``Mapping.omega``); the parameters (``lam``, ``p``, ``alpha``) as for the mapping, with its defaults (a
    tensor λ or α: one per slice, learnable). Masked entries are left out, as in the
    mappings; a slice with no unmasked entry gives 0."""
    mapping = lookup(name)
    _require_omega(mapping, f"regularizer({name!r})")
    unknown = set(params) - set(mapping.omega_parameters)
    if unknown:
        raise TypeError(f"regularizer({name!r}): unexpected parameters {sorted(unknown)}")
    rows = to_rows(weights, dim, mask, f"regularizer({name})")
    value = mapping.omega(_valid_rows(rows), rows.lengths, **_omega_arguments(mapping, params, rows, check=True))
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
    mapping = lookup(name)
    _require_omega(mapping, "max_omega")
    reason = mapping.not_argmax(params)
    if reason is not None:
        raise ValueError(f"max_omega: {reason}, so it is not the gradient of max_Ω")
    gamma = check_parameter("gamma", name, gamma, positive=True)
    for key, value in params.items():
        if isinstance(value, torch.Tensor) and key in mapping.defaults and not mapping.parameter(key).in_max_omega:
            raise TypeError(f"max_omega: {key} must be a number; a tensor (learnable) {key} works in "
                            f"attention.{name}, attention.regularizer and the Fenchel–Young loss")
    y = mapping.function(scores, dim=dim, gamma=gamma, mask=mask, **params)
    rows = to_rows(y.detach(), dim, mask, f"max_omega({name})")
    yr = _valid_rows(rows)
    omega_params = _omega_arguments(mapping, params, rows, check=False)  # the mapping checked them
    gamma_rows = rows.per_row(gamma, "gamma")
    with torch.no_grad():
        total = torch.where(rows.lengths > 0, mapping.omega(yr, rows.lengths, **_detached_values(omega_params)), 0)
        inner = torch.where(y > 0, y * scores, 0).sum(dim).reshape(-1)
        value = torch.where(rows.lengths > 0, inner - _detached(gamma_rows) * total, 0)
    shape = rows.shape[:-1]
    result = _Envelope.apply(scores, y, value.reshape(shape).to(scores.dtype), dim % scores.dim())
    # learnable γ, λ: terms whose value is 0 and whose gradient is the envelope theorem's
    if isinstance(gamma_rows, torch.Tensor) and gamma_rows.requires_grad:
        result = result - ((gamma_rows - gamma_rows.detach()) * total).reshape(shape).to(scores.dtype)
    if any(isinstance(v, torch.Tensor) and v.requires_grad for v in omega_params.values()):
        live = mapping.omega(yr, rows.lengths, **omega_params)  # ∂/∂λ: -γ ∂Ω/∂λ(y) at the fixed argmax y
        result = result - (_detached(gamma_rows) * (live - live.detach())).reshape(shape).to(scores.dtype)
    return result


def _detached_values(params: dict) -> dict:
    return {k: _detached(v) for k, v in params.items()}


def _detached(value):
    return value.detach() if isinstance(value, torch.Tensor) else value
