"""Device-agnostic kernels in plain torch, for tensors that are not on the CPU (CUDA first of all).

Same contracts as ``_cpu.py``: (rows, d) inputs, ``lengths`` valid entries per row at the front.
The sparsemax forward is the sort-based one (Held et al. 1974; Martins & Astudillo 2016); the backward passes
are group averages written with ``scatter_add``. The prox forward passes (TV, sorted) are sequential within a
row; they run in the numba-cuda kernels of ``_cuda.py`` when numba-cuda is installed, else on the CPU kernels
with one copy each way (``_ops.py`` decides). The backward passes are differentiable torch expressions of the
saved output, which is how double backward works on every device (``_ops.py``).
"""

import torch


def valid_positions(lengths: torch.Tensor, d: int) -> torch.Tensor:
    return torch.arange(d, device=lengths.device) < lengths.unsqueeze(-1)


def sparsemax_forward(z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    d = z.shape[-1]
    valid = valid_positions(lengths, d)
    # invalid entries sorted last, with a value that keeps cumsums finite
    lowest = torch.finfo(z.dtype).min / 4
    z = torch.where(valid, z, lowest)
    z = z - z.max(dim=-1, keepdim=True).values.clamp_min(lowest)
    z_sorted = torch.sort(z, dim=-1, descending=True).values
    rho = torch.arange(1, d + 1, device=z.device, dtype=z.dtype)
    cumsum = torch.where(valid, z_sorted, 0).cumsum(-1) - 1
    support = (rho * z_sorted > cumsum) & valid
    k = support.sum(dim=-1, keepdim=True).clamp_min(1)
    tau = cumsum.gather(-1, k - 1) / k.to(z.dtype)
    return torch.where(valid, (z - tau).clamp_min(0), 0)


def sparsemax_backward(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    support = y > 0
    grad = torch.where(support, grad, 0)
    count = support.sum(dim=-1, keepdim=True).clamp_min(1)
    mean = grad.sum(dim=-1, keepdim=True) / count.to(grad.dtype)
    return torch.where(support, grad - mean, 0)


def prox_sparsemax_backward(grad, y, groups, scale, lengths):
    """D A D applied after the sparsemax backward (``scale`` None: D = I, the exact proxes); see the CPU kernels.

    Labels are any integers in [0, d) that identify a row's groups (-1 past the row's length).
    """
    n, d = grad.shape
    g = sparsemax_backward(grad, y)
    if scale is not None:
        g = g * scale
    valid = groups >= 0
    flat = (groups.clamp_min(0).to(torch.int64) + d * torch.arange(n, device=grad.device).unsqueeze(-1)).reshape(-1)
    sums = torch.zeros(n * d, dtype=grad.dtype, device=grad.device).index_add_(0, flat, g.reshape(-1))
    sizes = torch.zeros(n * d, dtype=grad.dtype, device=grad.device).index_add_(
        0, flat, valid.reshape(-1).to(grad.dtype)
    )
    averaged = (sums / sizes.clamp_min(1))[flat].reshape(n, d)
    if scale is not None:
        averaged = averaged * scale
    return torch.where(valid, averaged, 0)


def prox_lambda_grad(grad_z, y, groups, lengths, variant):
    """dL/dλ per row for y = proj_Δ(prox_λ(z)), from the backward's output grad_z (on the support, the centred
    gradient averaged over each group: Σ_{i∈G} g_i = |G| grad_z[G]) and the forward's y and group labels.

    Both proxes move a group's value linearly in λ while the groups and signs stay: dL/dλ = Σ_G (du_G/dλ) Σ_{i∈G} g_i.

    - TV: u_G = mean(z_G) - λ (s_left + s_right) / |G|, s the signs of the jumps u_G - u_neighbour at G's ends
      (0 at the row's ends). On the support a neighbour in the support has the sign of y_G - y_neighbour, and one
      outside it is lower (+1). So dL/dλ = -Σ_{ends e of support groups} s_e grad_z[e].
    - sorted: u_G = mean_{k∈G}(z_(k) - λ (m - 1 - k)), k the 0-based ranks of G, which on the support are fixed
      by y: a_G = #{y > y_G}, b_G = a_G + |G| - 1. So du_G/dλ = -(m - 1 - (a_G + b_G) / 2).
    """
    n, d = y.shape
    support = y > 0
    valid = valid_positions(lengths, d)
    if variant == 0:  # TV
        zero = torch.zeros(n, 1, dtype=torch.bool, device=y.device)
        first = torch.ones_like(support)
        first[:, 1:] = groups[:, 1:] != groups[:, :-1]
        last = torch.ones_like(support)
        last[:, :-1] = groups[:, :-1] != groups[:, 1:]
        has_left = torch.cat([zero, valid[:, :-1]], -1) & valid
        has_right = torch.cat([valid[:, 1:], zero], -1) & valid
        y_left = torch.cat([y.new_zeros(n, 1), y[:, :-1]], -1)
        y_right = torch.cat([y[:, 1:], y.new_zeros(n, 1)], -1)
        s_left = torch.where(y_left > 0, torch.sign(y - y_left), 1.0) * has_left
        s_right = torch.where(y_right > 0, torch.sign(y - y_right), 1.0) * has_right
        ends = s_left * first + s_right * last
        return -(torch.where(support, ends * grad_z, 0)).sum(-1)
    # sorted: ranks from the sorted support values
    ascending = torch.sort(torch.where(support, y, 0), dim=-1).values.contiguous()
    yc = torch.where(support, y, 0).contiguous()
    above = d - torch.searchsorted(ascending, yc, right=True)  # #{y_j > y_i}
    at_or_above = d - torch.searchsorted(ascending, yc, right=False)  # #{y_j >= y_i}
    mean_rank = (above + at_or_above - 1).to(y.dtype) / 2
    slope = -((lengths.unsqueeze(-1) - 1).to(y.dtype) - mean_rank)
    return torch.where(support, slope * grad_z, 0).sum(-1)


# ---------------------------------------------------------------------------------------------------- smooth mappings

_BISECTION_STEPS = 64  # the brackets below have width <= 1: 2^-64 is below float64 resolution


def _relative_candidates(z, lengths, scale=1.0):
    """(c, valid): c = scale * z - max over the valid entries (so max 0), -inf where invalid."""
    valid = valid_positions(lengths, z.shape[-1])
    x = torch.where(valid, scale * z, -torch.inf)
    top = x.max(dim=-1, keepdim=True).values
    top = torch.where(torch.isfinite(top), top, 0)
    return torch.where(valid, x - top, -torch.inf), valid


def sq_pnorm_forward(z: torch.Tensor, lengths: torch.Tensor, p: float) -> torch.Tensor:
    """Same as ``_cpu.sq_pnorm_forward``, batched in torch: bisection on the same h(τ) in [-1, 0)."""
    q = 1.0 / (p - 1.0)
    c, valid = _relative_candidates(z, lengths)
    lo = torch.full_like(c[:, :1], -1.0)
    hi = torch.zeros_like(lo)
    for _ in range(_BISECTION_STEPS):
        tau = (lo + hi) / 2
        t = ((c - tau) / -tau).clamp_min(0)
        a = t.pow(q).sum(-1, keepdim=True)
        b = t.pow(q + 1).sum(-1, keepdim=True)
        h = (q + 1) * (torch.log(-tau) + torch.log(a)) - (q - 1) * torch.log(b)
        lo = torch.where(h > 0, tau, lo)
        hi = torch.where(h > 0, hi, tau)
    tau = (lo + hi) / 2
    w = ((c - tau) / -tau).clamp_min(0).pow(q) * valid
    return w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


def sq_pnorm_backward(grad: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    """Jᵀ grad for y = argmax_{y ∈ Δ} <y, z> - ½‖y‖_p², by implicit differentiation (J is symmetric).

    On the support S, ∇Ω(y) = z - τ1 with H = ∇²Ω(y) = κ diag(y^(p-2)) + (2-p) N^(2-2p) v vᵀ, v = y^(p-1),
    N = ‖y‖_p, κ = (p-1) N^(2-p). Differentiating, dy = J dz with J = H⁻¹ - H⁻¹1 1ᵀH⁻¹ / 1ᵀH⁻¹1 (the simplex
    constraint), and by Sherman-Morrison κ H⁻¹x = y^(2-p) x - (2-p) y (yᵀx) / N^p (using Σ y^p = N^p).
    Differentiable in grad and y (the powers see 1 off the support), which double backward uses.
    """
    support = y > 0
    base = torch.where(support, y, 1)  # no 0^(negative) in the derivative of the powers
    g = torch.where(support, grad, 0)
    yp = torch.where(support, y, 0)
    norm_p = torch.where(support, base.pow(p), 0).sum(-1, keepdim=True)  # N^p
    norm_p = torch.where(norm_p > 0, norm_p, 1)  # a row with no support: any positive value (its output is 0)
    w = torch.where(support, base.pow(2 - p), 0)
    coef = (2 - p) / norm_p
    a = w * g - coef * yp * (yp * g).sum(-1, keepdim=True)
    b = w - coef * yp  # H⁻¹1 up to κ, with Σ y = 1
    kappa = (p - 1) * norm_p.pow((2 - p) / p)
    out = (a - b * a.sum(-1, keepdim=True) / b.sum(-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)) / kappa
    return torch.where(support, out, 0)


def entmax_forward(z: torch.Tensor, lengths: torch.Tensor, alpha) -> torch.Tensor:
    """Same as ``_cpu.entmax_forward``, batched in torch: α = 1.5 sort-based, otherwise bisection. ``alpha``: a
    float, or a tensor of one value per row, shape (rows, 1)."""
    c, valid = _relative_candidates(z, lengths, scale=alpha - 1.0)
    if not isinstance(alpha, torch.Tensor) and alpha == 1.5:
        c_sorted = torch.sort(c, dim=-1, descending=True).values
        finite = torch.isfinite(c_sorted)
        cs = torch.where(finite, c_sorted, 0)
        rho = torch.arange(1, c.shape[-1] + 1, device=c.device, dtype=c.dtype)
        mean = cs.cumsum(-1) / rho
        mean_sq = (cs * cs).cumsum(-1) / rho
        ss = rho * (mean_sq - mean * mean)
        delta = ((1 - ss) / rho).clamp_min(0)
        tau = mean - torch.sqrt(delta)
        size = ((tau <= c_sorted) & finite).sum(-1, keepdim=True).clamp_min(1)
        tau_star = tau.gather(-1, size - 1)
        return torch.where(valid, (c - tau_star).clamp_min(0) ** 2, 0)
    power = 1.0 / (alpha - 1.0)
    count = valid.sum(-1, keepdim=True).clamp_min(1).to(c.dtype)
    lo = torch.full_like(c[:, :1], -1.0)
    hi = -(1.0 / count) ** (alpha - 1.0)
    for _ in range(_BISECTION_STEPS):
        tau = (lo + hi) / 2
        f = (c - tau).clamp_min(0).pow(power).sum(-1, keepdim=True) - 1
        lo = torch.where(f >= 0, tau, lo)
        hi = torch.where(f >= 0, hi, tau)
    w = (c - (lo + hi) / 2).clamp_min(0).pow(power) * valid
    return w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


def entmax_backward(grad: torch.Tensor, y: torch.Tensor, alpha) -> torch.Tensor:
    """Jᵀ grad for α-entmax: s = y^(2-α) on the support, J = diag(s) - s sᵀ / Σs (symmetric). ``alpha``: a float
    or a (rows, 1) tensor. Differentiable in grad, y and α (double backward)."""
    support = y > 0
    s = torch.where(support, torch.where(support, y, 1).pow(2 - alpha), 0)
    out = grad * s
    return out - s * (out.sum(-1, keepdim=True) / s.sum(-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny))


def entmax_alpha_grad(grad: torch.Tensor, y: torch.Tensor, alpha) -> torch.Tensor:
    """dL/dα per row for y = α-entmax(z), from dL/dy (Correia, Niculae & Martins, 2019, "Adaptively Sparse
    Transformers", appendix B). With y_i = ((α-1) z_i - τ)^β on the support, β = 1/(α-1), differentiating
    log y_i and Σ y = 1 in α gives

        dy_i/dα = β² (y_i - s̃_i) - β (y_i log y_i - s̃_i Σ_j y_j log y_j),    s̃ = y^(2-α) / Σ y^(2-α),

    0 off the support. ``alpha``: a float or a (rows, 1) tensor. Differentiable (double backward)."""
    support = y > 0
    base = torch.where(support, y, 1)
    s = torch.where(support, base.pow(2 - alpha), 0)
    s = s / s.sum(-1, keepdim=True).clamp_min(torch.finfo(y.dtype).tiny)
    y_log_y = torch.where(support, y * torch.log(base), 0)
    beta = 1.0 / (alpha - 1.0)
    dy = beta * beta * (y - s) - beta * (y_log_y - s * y_log_y.sum(-1, keepdim=True))
    return (grad * torch.where(support, dy, 0)).sum(-1)
