r"""The library's own mappings, each described once (``attention.Mapping``) and registered in this order.

Their forward and backward passes are in ``functions`` (the functional forms) and ``_ops`` (the kernels as torch
operators, with their closed-form backward); their default values in ``defaults``, which the functions'
signatures read. What is written here is the rest: the parameters' checks and parameterizations, Ω and the kind
of group. Ω of each row takes y (rows, d) with ``lengths[r]`` valid entries in front and zeros behind them.
"""

import torch

from . import functions
from .defaults import DEFAULTS
from .registry import EXP, SOFTPLUS_ABOVE_FLOOR, Mapping, Parameter, in_interval, nonnegative, one_of, register


def negative_entropy(y, lengths):
    return torch.where(y > 0, y * torch.log(torch.where(y > 0, y, 1)), 0).sum(-1)


def half_squared_norm(y, lengths):
    return 0.5 * (y * y).sum(-1)


def _valid(y, lengths):
    return torch.arange(y.shape[-1], device=y.device) < lengths.unsqueeze(-1)


def total_variation(y, lengths):
    """Σ |y_{i+1} - y_i| over the valid entries."""
    valid = _valid(y, lengths)
    both = valid[:, 1:] & valid[:, :-1]
    return ((y[:, 1:] - y[:, :-1]).abs() * both).sum(-1)


def oscar_penalty(y, lengths):
    """Σ_{i<j} max(|y_i|, |y_j|) = Σ_k (m - k) |y|_(k), k = 1..m, over the m valid entries."""
    d = y.shape[-1]
    a = torch.where(_valid(y, lengths), y.abs(), -1.0)  # invalid entries sorted last
    a_sorted = torch.sort(a, dim=-1, descending=True).values.clamp_min(0)
    k = torch.arange(1, d + 1, device=y.device, dtype=y.dtype)
    weights = (lengths.unsqueeze(-1).to(y.dtype) - k).clamp_min(0)
    return (weights * a_sorted).sum(-1)


def fused_omega(y, lengths, lam):
    return half_squared_norm(y, lengths) + lam * total_variation(y, lengths)


def oscar_omega(y, lengths, lam):
    return half_squared_norm(y, lengths) + lam * oscar_penalty(y, lengths)


def half_squared_pnorm(y, lengths, p):
    return 0.5 * y.abs().pow(p).sum(-1).pow(2.0 / p)


def tsallis_omega(y, lengths, alpha):
    if isinstance(alpha, torch.Tensor):  # 0-d or one per row (``regularizer``): learnable α
        alpha = alpha.to(y.dtype)
        a = alpha.unsqueeze(-1) if alpha.dim() else alpha
        powered = torch.where(y != 0, torch.where(y != 0, y.abs(), 1).pow(a), 0)  # 0^α = 0, with no nan in d/dα
        return (powered.sum(-1) - 1) / (alpha * (alpha - 1))
    return (y.abs().pow(alpha).sum(-1) - 1) / (alpha * (alpha - 1))


def _lam(name):
    return Parameter("lam", DEFAULTS[name]["lam"], nonnegative, learned=EXP)


def _alpha_check(mapping, name, value):
    return functions._check_alpha(value)


SOFTMAX = Mapping("softmax", functions.softmax, omega=negative_entropy)
SPARSEMAX = Mapping("sparsemax", functions.sparsemax, omega=half_squared_norm)
FUSEDMAX = Mapping("fusedmax", functions.fusedmax, (_lam("fusedmax"),), omega=fused_omega)
OSCARMAX = Mapping("oscarmax", functions.oscarmax, (
    _lam("oscarmax"),
    # "owl" (the authors' composition) is not the argmax, so max_omega and the losses refuse it
    Parameter("variant", DEFAULTS["oscarmax"]["variant"], one_of("exact", "owl"), in_omega=False, argmax=("exact",)),
), omega=oscar_omega, groups="clusters")
SQ_PNORM_MAX = Mapping("sq_pnorm_max", functions.sq_pnorm_max, (
    Parameter("p", DEFAULTS["sq_pnorm_max"]["p"], in_interval(1.0, 2.0)),
), omega=half_squared_pnorm)
# max_omega has no ∂/∂α: a tensor α works in entmax, regularizer and the losses
ENTMAX = Mapping("entmax", functions.entmax, (
    Parameter("alpha", DEFAULTS["entmax"]["alpha"], _alpha_check, learned=SOFTPLUS_ABOVE_FLOOR, in_max_omega=False),
), omega=tsallis_omega)

BUILTIN = (SOFTMAX, SPARSEMAX, FUSEDMAX, OSCARMAX, SQ_PNORM_MAX, ENTMAX)
for _mapping in BUILTIN:
    register(_mapping)
