r"""The mappings Π_Ω(x) = argmax_{y ∈ Δ} <y, x> - γ Ω(y), as functions and autograd Functions.

Dividing the objective by γ turns every one of them into a problem on z = x / γ:

    softmax       Ω = Σ y log y                     Π = softmax(z)
    sparsemax     Ω = ½‖y‖²                         Π = proj_Δ(z)
    fusedmax      Ω = ½‖y‖² + λ Σ |y_{i+1} - y_i|    Π = proj_Δ(prox_{λ TV}(z))
    oscarmax      Ω = ½‖y‖² + λ Σ_{i<j} max(|y_i|, |y_j|)
                                                    Π = proj_Δ(prox_{λ S}(z)),  S(u) = Σ_k (m - k) u_(k)
    sq_pnorm_max  Ω = ½‖y‖_p², 1 < p <= 2            Π: y ∝ (z - τ)_+^{1/(p-1)}, τ by safeguarded Newton
    entmax        Ω = (Σ y^α - 1) / (α(α - 1)), α > 1    Π = ((α - 1) z - τ)_+^{1/(α-1)} (Peters et al., 2019)

The compositions are exact; see ``fusedmax`` and ``oscarmax`` for why. Each backward is a closed-form
Jacobian-vector product: the prox Jacobians average over the groups that the forward pass found, the sparsemax
Jacobian centres on the support, the smooth ones invert their regularizer's Hessian on the support (implicit
differentiation), and the chain rule divides by γ.

γ and λ may be tensors (one value per row, head, layer: anything that broadcasts to the scores with size 1 along
``dim``) that require grad: γ's gradient is the chain rule through z = x / γ; λ's is closed form (``_torch``).
"""

import warnings

import numba
import numpy as np
import torch
from torch.autograd import Function

from . import _cpu, _torch
from . import _layout
from ._layout import check_parameter, checks_enabled, to_rows, validate_scores

_VARIANTS = {"exact": _cpu.PROX_SORTED, "owl": _cpu.PROX_OWL}


def _np(t: torch.Tensor):
    return t.detach().numpy()


_NUMBA_MAX_THREADS = numba.config.NUMBA_NUM_THREADS


def _follow_torch_threads():
    """Run the numba kernels on as many threads as torch uses (torch.set_num_threads is the one knob).

    Both may share one OpenMP runtime, where a numba launch with its own count would silently reset torch's.
    """
    torch_threads = torch.get_num_threads()
    current = numba.get_num_threads()  # the first call starts numba's threads, which may reset OpenMP's count
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    wanted = max(1, min(torch_threads, _NUMBA_MAX_THREADS))
    if current != wanted:
        numba.set_num_threads(wanted)


def _prepare(rows, mapping):
    """Off the CPU the kernels do not count non-finite scores, so a check (and its sync) happens here, if asked."""
    if not _layout.on_host(rows.values.device) and checks_enabled(rows.values.device):
        validate_scores(rows.source, rows.mask, mapping)


# ---------------------------------------------------------------------------------------------------- sparsemax


class SparsemaxFunction(Function):
    """y = proj_Δ(z) on the first ``lengths[r]`` entries of each row of a (rows, d) tensor; 0 elsewhere."""

    @staticmethod
    def forward(ctx, z, lengths, rows=None):
        if _layout.on_host(z.device):
            _follow_torch_threads()
            y = torch.empty_like(z)
            bad = _cpu.sparsemax_forward(_np(z), _np(lengths), y.numpy())
            if bad and rows is not None:
                rows.non_finite(bad)
        else:
            y = _torch.sparsemax_forward(z, lengths)
        ctx.save_for_backward(y, lengths)
        ctx.mark_non_differentiable(lengths)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        # J = diag(s) - s sᵀ/|S|, s = 1 on the support S of y: keep the gradient on S and remove its mean there
        y, lengths = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        if _layout.on_host(grad_y.device):
            _follow_torch_threads()
            grad_z = torch.empty_like(grad_y)
            _cpu.sparsemax_backward(_np(grad_y), _np(y), _np(lengths), grad_z.numpy())
        else:
            grad_z = _torch.sparsemax_backward(grad_y, y)
        return grad_z, None, None


# ---------------------------------------------------------------------------------------------------- prox + sparsemax

_warned_cuda_fallback = False


def _lam_values(lam, n):
    """λ for the kernels: a float64 array of one value, or of one value per row."""
    if isinstance(lam, torch.Tensor):
        return lam.detach().to(dtype=torch.float64).reshape(-1).cpu().numpy()
    return np.full(1, lam, dtype=np.float64)


def _cpu_prox_forward(z, lengths, lam, variant):
    """(y, groups, scale, number of non-finite rows); ``scale`` is only filled for OWL (a 1x1 stub otherwise)."""
    _follow_torch_threads()
    n = z.shape[0]
    y = torch.empty_like(z)
    groups = torch.empty(z.shape, dtype=torch.int32)
    scale = torch.empty_like(z) if variant == _cpu.PROX_OWL else torch.zeros(1, 1, dtype=z.dtype)
    bad = _cpu.prox_sparsemax_forward(_np(z), _np(lengths), _lam_values(lam, n), variant, y.numpy(),
                                      groups.numpy(), scale.numpy())
    return y, groups, scale, bad


def _prox_forward_elsewhere(z, lengths, lam, variant):
    """The prox forward for a non-CPU tensor: the numba-cuda kernel, or the CPU kernel with a copy each way."""
    global _warned_cuda_fallback
    if z.device.type == "cuda":
        from . import _cuda

        if _cuda.available():
            return _cuda.prox_sparsemax_forward(z, lengths, lam, variant)
        if not _warned_cuda_fallback:
            warnings.warn(
                "attention: numba-cuda is not installed, so the fusedmax/oscarmax prox forward runs on the CPU "
                "(one copy each way); `pip install numba-cuda` for the GPU kernel",
                RuntimeWarning,
                stacklevel=4,
            )
            _warned_cuda_fallback = True
    z_cpu = z.detach().cpu().contiguous()
    lam_cpu = lam.detach().cpu() if isinstance(lam, torch.Tensor) else lam
    y, groups, scale, _ = _cpu_prox_forward(z_cpu, lengths.cpu(), lam_cpu, variant)
    return y.to(z.device), groups.to(z.device), scale.to(z.device)


class ProxSparsemaxFunction(Function):
    """y = proj_Δ(prox(z)) row by row, for prox = TV (fusedmax), the sorted weighted sum (oscarmax) or OWL.

    ``lam``: a float, or a tensor of one value or one value per row (then it gets a gradient).
    """

    @staticmethod
    def forward(ctx, z, lengths, lam, variant, rows=None):
        if _layout.on_host(z.device):
            y, groups, scale, bad = _cpu_prox_forward(z, lengths, lam, variant)
            if bad and rows is not None:
                rows.non_finite(bad)
        else:
            y, groups, scale = _prox_forward_elsewhere(z, lengths, lam, variant)
        ctx.save_for_backward(y, groups, scale, lengths)
        ctx.mark_non_differentiable(lengths)
        ctx.variant = variant
        ctx.lam_shape = lam.shape if isinstance(lam, torch.Tensor) else None
        return y

    @staticmethod
    def backward(ctx, grad_y):
        # chain rule: z -> u = prox(z) -> y = proj_Δ(u). Both Jacobians are symmetric, so the vector-Jacobian
        # product applies the sparsemax Jacobian at u (centre on supp y), then the prox Jacobian D A D
        # (average over each fused run / pooled block, with OWL's signs in D)
        y, groups, scale, lengths = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        if _layout.on_host(grad_y.device):
            _follow_torch_threads()
            grad_z = torch.empty_like(grad_y)
            if ctx.variant == _cpu.PROX_OWL:
                _cpu.owl_sparsemax_backward(_np(grad_y), _np(y), _np(groups), _np(scale), _np(lengths),
                                            grad_z.numpy())
            else:
                _cpu.prox_sparsemax_backward(_np(grad_y), _np(y), _np(groups), _np(lengths), grad_z.numpy())
        else:
            grad_z = _torch.prox_sparsemax_backward(grad_y, y, groups, scale if ctx.variant == _cpu.PROX_OWL else None,
                                                    lengths)
        grad_lam = None
        if ctx.needs_input_grad[2]:
            per_row = _torch.prox_lambda_grad(grad_z, y, groups, lengths, ctx.variant)
            grad_lam = per_row.sum() if len(ctx.lam_shape) == 0 else per_row
        return grad_z, None, grad_lam, None, None


# ---------------------------------------------------------------------------------------------------- smooth-on-support


class SqPnormFunction(Function):
    """y = argmax_{y ∈ Δ} <y, z> - ½‖y‖_p² row by row (p fixed)."""

    @staticmethod
    def forward(ctx, z, lengths, p, rows=None):
        if _layout.on_host(z.device):
            _follow_torch_threads()
            y = torch.empty_like(z)
            bad = _cpu.sq_pnorm_forward(_np(z), _np(lengths), p, y.numpy())
            if bad and rows is not None:
                rows.non_finite(bad)
        else:
            y = _torch.sq_pnorm_forward(z, lengths, p)
        ctx.save_for_backward(y, lengths)
        ctx.mark_non_differentiable(lengths)
        ctx.p = p
        return y

    @staticmethod
    def backward(ctx, grad_y):
        # implicit differentiation of ∇Ω(y) = z - τ on the support: J = H⁻¹ - H⁻¹1 1ᵀH⁻¹ / 1ᵀH⁻¹1 with H the
        # Hessian of ½‖y‖_p² there (diagonal plus rank one); see _torch.sq_pnorm_backward
        y, lengths = ctx.saved_tensors
        if _layout.on_host(grad_y.device):
            _follow_torch_threads()
            grad_y = grad_y.contiguous()
            grad_z = torch.empty_like(grad_y)
            _cpu.sq_pnorm_backward(_np(grad_y), _np(y), _np(lengths), ctx.p, grad_z.numpy())
            return grad_z, None, None, None
        return _torch.sq_pnorm_backward(grad_y, y, ctx.p), None, None, None


class EntmaxFunction(Function):
    """y = α-entmax(z) row by row (α fixed)."""

    @staticmethod
    def forward(ctx, z, lengths, alpha, rows=None):
        if _layout.on_host(z.device):
            _follow_torch_threads()
            y = torch.empty_like(z)
            bad = _cpu.entmax_forward(_np(z), _np(lengths), alpha, y.numpy())
            if bad and rows is not None:
                rows.non_finite(bad)
        else:
            y = _torch.entmax_forward(z, lengths, alpha)
        ctx.save_for_backward(y, lengths)
        ctx.mark_non_differentiable(lengths)
        ctx.alpha = alpha
        return y

    @staticmethod
    def backward(ctx, grad_y):
        # implicit differentiation: on the support dy/dz = diag(s) - s sᵀ / Σs with s = y^(2-α)
        y, lengths = ctx.saved_tensors
        if _layout.on_host(grad_y.device):
            _follow_torch_threads()
            grad_y = grad_y.contiguous()
            grad_z = torch.empty_like(grad_y)
            _cpu.entmax_backward(_np(grad_y), _np(y), _np(lengths), ctx.alpha, grad_z.numpy())
            return grad_z, None, None, None
        return _torch.entmax_backward(grad_y, y, ctx.alpha), None, None, None


# ---------------------------------------------------------------------------------------------------- functional API


def softmax(scores: torch.Tensor, dim: int = -1, gamma: float | torch.Tensor = 1.0,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(x / γ), the argmax of <y, x> - γ Σ y log y over the simplex; masked entries get exactly 0."""
    gamma = check_parameter("gamma", "softmax", gamma, positive=True)
    rows = to_rows(scores, dim, mask, "softmax")
    if checks_enabled(rows.values.device):
        validate_scores(scores, rows.mask, "softmax")
    z = rows.scaled(gamma)
    if rows.mask is None:
        return rows.restore(torch.softmax(z, dim=-1))
    valid = _torch.valid_positions(rows.lengths, z.shape[-1])
    # a finite fill keeps all-masked rows NaN-free (uniform before the final zeroing)
    z = torch.where(valid, z, torch.finfo(z.dtype).min)
    y = torch.softmax(z, dim=-1) * valid
    return rows.restore(y)


def sparsemax(scores: torch.Tensor, dim: int = -1, gamma: float | torch.Tensor = 1.0,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """proj_Δ(x / γ), the argmax of <y, x> - (γ/2)‖y‖² over the simplex (Martins & Astudillo, 2016)."""
    gamma = check_parameter("gamma", "sparsemax", gamma, positive=True)
    rows = to_rows(scores, dim, mask, "sparsemax")
    _prepare(rows, "sparsemax")
    return rows.restore(SparsemaxFunction.apply(rows.scaled(gamma), rows.lengths, rows))


def fusedmax(scores: torch.Tensor, dim: int = -1, gamma: float | torch.Tensor = 1.0, lam: float | torch.Tensor = 0.1,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""argmax_{y ∈ Δ} <y, x> - γ (½‖y‖² + λ Σ_i |y_{i+1} - y_i|): sparse, and fused into runs of equal weight.

    Computed as proj_Δ(prox_{λ TV}(x / γ)), which is exact. Proof: let u = prox_{λTV}(z), y = proj_Δ(u) =
    max(u - τ, 0). Optimality of u gives z - u ∈ λ∂TV(u); of y, u - y ∈ N_Δ(y). Since t ↦ max(t - τ, 0) is
    non-decreasing, sign(y_{i+1} - y_i) is sign(u_{i+1} - u_i) or 0, so ∂TV(u) ⊆ ∂TV(y) and
    z - y = (z - u) + (u - y) ∈ λ∂TV(y) + N_Δ(y): y solves min_{y ∈ Δ} ½‖y - z‖² + λ TV(y). With a mask, TV runs
    over the unmasked entries in order, as if the masked ones were not there.

    A learnable λ (a tensor that requires grad) gets dy/dλ in closed form: a fused run's prox value moves by
    -(s_left + s_right) / |run| per unit of λ, s the signs of the jumps at its two ends.
    """
    gamma = check_parameter("gamma", "fusedmax", gamma, positive=True)
    lam = check_parameter("lam", "fusedmax", lam, positive=False)
    rows = to_rows(scores, dim, mask, "fusedmax")
    _prepare(rows, "fusedmax")
    y = ProxSparsemaxFunction.apply(rows.scaled(gamma), rows.lengths, rows.per_row(lam, "lam"), _cpu.PROX_TV, rows)
    return rows.restore(y)


def oscarmax(scores: torch.Tensor, dim: int = -1, gamma: float | torch.Tensor = 1.0, lam: float | torch.Tensor = 0.01,
             mask: torch.Tensor | None = None, variant: str = "exact") -> torch.Tensor:
    r"""argmax_{y ∈ Δ} <y, x> - γ (½‖y‖² + λ Σ_{i<j} max(|y_i|, |y_j|)): sparse, and clustered into equal weights.

    ``variant="exact"`` (default) solves that problem. On the simplex y ≥ 0, so the penalty is
    Σ_{i<j} max(y_i, y_j) = Σ_k (m - k) y_(k) =: S(y), with y_(1) ≥ … ≥ y_(m) and m unmasked entries: the k-th
    largest entry is the maximum of the m - k pairs it forms with smaller ones. Two facts give the algorithm.

    1. prox_{λS}(z) = unsort(PAV↓(z_(k) - λ(m - k))): S(u) = max_π <w_π, u> with w_k = λ(m - k) decreasing
       (rearrangement inequality, valid for any signs), a support function of the permutahedron P(w). Its prox is
       a sort, a subtraction and a non-increasing isotonic regression (pool adjacent violators), with no absolute
       value and no clipping at 0.
    2. proj_Δ ∘ prox_{λS} is the argmax. As for fusedmax, with u = prox_{λS}(z) and y = max(u - τ, 0):
       ∂S(u) is the face of P(w) maximising <·, u>, fixed by the equalities Σ_{i∈T} s_i = Σ_{k≤|T|} w_k over the
       upper level sets T of u. Every upper level set of y is one of u (t ↦ max(t - τ, 0) is non-decreasing and
       y's lowest level set is everything), so y's equalities are a subset of u's and ∂S(u) ⊆ ∂S(y). Then
       z - y = (z - u) + (u - y) ∈ λ∂S(y) + N_Δ(y).

    A learnable λ gets dy/dλ in closed form: a pooled block's prox value moves by minus the mean of its weights
    (m - k) per unit of λ (exact variant only).

    ``variant="owl"`` is the authors' composition (Niculae & Blondel's ``oscarmax``): proj_Δ of the OWL prox,
    whose penalty Σ_k w_k |u|_(k) disagrees with S off the non-negative orthant and whose prox clips at 0 before
    the projection. It differs from the argmax above mostly when some scores are negative, sometimes also with
    small non-negative scores (tests/test_against_solver.py measures both); keep it to compare with their results.
    It is not shift-invariant, and ``max_omega`` refuses it (it is not the gradient of max_Ω).
    """
    gamma = check_parameter("gamma", "oscarmax", gamma, positive=True)
    lam = check_parameter("lam", "oscarmax", lam, positive=False)
    if variant not in _VARIANTS:
        raise ValueError(f"oscarmax: variant must be one of {sorted(_VARIANTS)}, got {variant!r}")
    if variant == "owl" and isinstance(lam, torch.Tensor) and lam.requires_grad:
        raise ValueError("oscarmax: a learnable lam (a tensor that requires grad) needs variant='exact'")
    rows = to_rows(scores, dim, mask, "oscarmax")
    _prepare(rows, "oscarmax")
    y = ProxSparsemaxFunction.apply(rows.scaled(gamma), rows.lengths, rows.per_row(lam, "lam"), _VARIANTS[variant],
                                    rows)
    return rows.restore(y)


def sq_pnorm_max(scores: torch.Tensor, dim: int = -1, gamma: float | torch.Tensor = 1.0, p: float = 1.5,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""argmax_{y ∈ Δ} <y, x> - (γ/2)‖y‖_p², 1 < p ≤ 2: the paper's squared p-norm regularizer (its Figure 2).

    Sparse for every p; p = 2 is sparsemax, and p → 1 approaches the hard argmax. No closed form: on the support,
    ∇½‖y‖_p² = ‖y‖_p^{2-p} y^{p-1} = z - τ gives y ∝ (z - τ)_+^{1/(p-1)}, and τ is the root of a strictly
    decreasing function on [max(z) - 1, max(z)), found to float64 resolution by safeguarded Newton (Newton steps
    inside a shrinking bracket, bisection otherwise; see ``_cpu._sq_pnorm_row`` for why it converges). The
    backward differentiates those optimality conditions (implicit function theorem), with no autograd through
    the iterations.
    """
    gamma = check_parameter("gamma", "sq_pnorm_max", gamma, positive=True)
    p = check_parameter("p", "sq_pnorm_max", p, positive=True, low=1.0, high=2.0)
    if isinstance(p, torch.Tensor):
        raise TypeError("sq_pnorm_max: p must be a number")
    rows = to_rows(scores, dim, mask, "sq_pnorm_max")
    _prepare(rows, "sq_pnorm_max")
    return rows.restore(SqPnormFunction.apply(rows.scaled(gamma), rows.lengths, p, rows))


def _check_alpha(alpha) -> float:
    if isinstance(alpha, torch.Tensor) or not isinstance(alpha, (int, float)):
        raise TypeError(f"entmax: alpha must be a number, got {alpha!r}")
    alpha = float(alpha)
    if not alpha > 1.0 or alpha == float("inf"):
        raise ValueError(f"entmax: alpha must be > 1 and finite, got {alpha} (alpha = 1 is softmax: use "
                         "attention.softmax; alpha = 2 is sparsemax)")
    return alpha


def entmax(scores: torch.Tensor, alpha: float = 1.5, dim: int = -1, gamma: float | torch.Tensor = 1.0,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""α-entmax of x / γ (Peters, Niculae & Martins, 2019): the argmax of <y, x> - γ Ω_α(y) over the simplex with
    Ω_α(y) = (Σ y^α - 1) / (α(α - 1)), the negative Tsallis α-entropy; y = ((α - 1) z - τ)_+^{1/(α-1)}.

    α → 1 is softmax, α = 2 sparsemax; α = 1.5 is exact (sort-based threshold), other α use safeguarded Newton
    (bisection when a Newton step would leave the bracket) to float64 resolution. Sparse for every α > 1.
    """
    alpha = _check_alpha(alpha)
    gamma = check_parameter("gamma", "entmax", gamma, positive=True)
    rows = to_rows(scores, dim, mask, "entmax")
    _prepare(rows, "entmax")
    return rows.restore(EntmaxFunction.apply(rows.scaled(gamma), rows.lengths, alpha, rows))
