r"""The mappings Π_Ω(x) = argmax_{y ∈ Δ} <y, x> - γ Ω(y), as functions (their kernels: ``_ops``).

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

γ, λ and entmax's α may be tensors (one value per row, head, layer: anything that broadcasts to the scores with
size 1 along ``dim``) that require grad: γ's gradient is the chain rule through z = x / γ; λ's and α's are closed
form (``_torch``). The kernels and their backward passes are torch operators (``_ops``: torch.compile, torch.export,
double backward).
"""

import torch

from . import _cpu, _layout, _ops, _torch
from ._layout import check_inputs, check_parameter, checks_enabled, to_rows, validate_scores
from .defaults import DEFAULTS, GAMMA

_VARIANTS = {"exact": _cpu.PROX_SORTED, "owl": _cpu.PROX_OWL}


def _check(rows) -> bool:
    """Whether the kernels check the values (see ``_layout.set_checks``)."""
    return checks_enabled(rows.values.device)


def _split(value, rows, name):
    """(tensor of one value or one per row, or None; float) for an op's parameter that is a float or a tensor."""
    if isinstance(value, torch.Tensor):
        return rows.per_row(value, name), 0.0
    return None, value


# ---------------------------------------------------------------------------------------------------- functional API


def softmax(scores: torch.Tensor, dim: int = -1, gamma: float | torch.Tensor = GAMMA,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(x / γ), the argmax of <y, x> - γ Σ y log y over the simplex; masked entries get exactly 0."""
    gamma = check_parameter("gamma", "softmax", gamma, positive=True)
    if isinstance(gamma, torch.Tensor):  # one γ per row: the (rows, d) layout broadcasts and checks it
        return _softmax_rows(scores, dim, gamma, mask)
    # torch.softmax normalizes along any dim and a where broadcasts the mask: no (rows, d) copy, no lengths, and the
    # mask stays the shape it was given (a causal (T, T) mask is not expanded to the batch)
    dim, mask = check_inputs(scores, dim, mask, "softmax")
    finite = False
    if checks_enabled(scores.device) and not torch.compiler.is_compiling():  # no branch on values in a graph
        finite = validate_scores(scores, mask, "softmax")
    z = scores if scores.dtype in (torch.float32, torch.float64) else scores.to(torch.float32)
    z = z if gamma == 1.0 else z / gamma
    if mask is None:
        y = torch.softmax(z, dim=dim)
        return y if y.dtype == scores.dtype else y.to(scores.dtype)  # (a no-op .to still costs a dispatch)
    # -inf at masked entries: exp gives them exactly 0 wherever the row has a valid entry (the max is then finite).
    # A row with none gets 0 instead (finite: no nan, also not in the backward) and is zeroed after the softmax.
    # The mask as stored (transformers passes a causal mask broadcast to the batch with stride 0): the where's
    # below then read and write the (T, T) once, not once per batch entry; they broadcast to the same values.
    if mask.numel() >= _layout.NUMBA_MASK_ENTRIES and not torch.compiler.is_compiling():  # (~6 us of views)
        mask = _layout.stored(mask)
    alive = mask.any(dim, keepdim=True)
    fill = torch.where(alive, -torch.inf, 0.0).to(z.dtype)
    if finite:
        # every score finite (masked ones too): add 0 / -inf, a tensor of the mask's size. The add's backward
        # passes the gradient through with no pass over it, and the softmax backward gives exactly 0 where y = 0.
        y = torch.softmax(z + torch.where(mask, 0.0, fill), dim=dim)
    else:  # a masked score may be inf or nan (or nothing was checked): replace, do not add
        y = torch.softmax(torch.where(mask, z, fill), dim=dim)
    # on the CPU, reading whether a row is empty costs no sync; elsewhere and in a graph the zeroing always runs
    # (through the module: tests route CPU tensors off the host by replacing it)
    if not _layout.on_host(scores.device) or torch.compiler.is_compiling() or not bool(alive.all()):
        y = torch.where(alive, y, 0)
    return y if y.dtype == scores.dtype else y.to(scores.dtype)


def _softmax_rows(scores, dim, gamma, mask):
    """softmax with a tensor γ, in the (rows, d) layout."""
    rows = to_rows(scores, dim, mask, "softmax")
    if checks_enabled(rows.values.device) and not torch.compiler.is_compiling():
        validate_scores(scores, rows.mask, "softmax")
    z = rows.scaled(gamma)
    if rows.mask is None:
        return rows.restore(torch.softmax(z, dim=-1))
    valid = _torch.valid_positions(rows.lengths, z.shape[-1])
    # a finite fill keeps all-masked rows NaN-free (uniform before the final zeroing)
    z = torch.where(valid, z, torch.finfo(z.dtype).min)
    y = torch.softmax(z, dim=-1) * valid
    return rows.restore(y)


def sparsemax(scores: torch.Tensor, dim: int = -1, gamma: float | torch.Tensor = GAMMA,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """proj_Δ(x / γ), the argmax of <y, x> - (γ/2)‖y‖² over the simplex (Martins & Astudillo, 2016)."""
    gamma = check_parameter("gamma", "sparsemax", gamma, positive=True)
    rows = to_rows(scores, dim, mask, "sparsemax", for_op=True)
    return rows.restore(_ops.apply(_ops.sparsemax, rows, rows.scaled(gamma), rows.lengths, _check(rows)))


def fusedmax(scores: torch.Tensor, dim: int = -1, gamma: float | torch.Tensor = GAMMA,
             lam: float | torch.Tensor = DEFAULTS["fusedmax"]["lam"], mask: torch.Tensor | None = None) -> torch.Tensor:
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
    lam = check_parameter("lam", "fusedmax", lam, positive=False, values=False)
    rows = to_rows(scores, dim, mask, "fusedmax", for_op=True)
    y, _, _ = _ops.apply(_ops.prox_sparsemax, rows, rows.scaled(gamma), rows.lengths, *_split(lam, rows, "lam"),
                         _cpu.PROX_TV, _check(rows))
    return rows.restore(y)


def oscarmax(scores: torch.Tensor, dim: int = -1, gamma: float | torch.Tensor = GAMMA,
             lam: float | torch.Tensor = DEFAULTS["oscarmax"]["lam"], mask: torch.Tensor | None = None,
             variant: str = DEFAULTS["oscarmax"]["variant"]) -> torch.Tensor:
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
    lam = check_parameter("lam", "oscarmax", lam, positive=False, values=False)
    if variant not in _VARIANTS:
        raise ValueError(f"oscarmax: variant must be one of {sorted(_VARIANTS)}, got {variant!r}")
    if variant == "owl" and isinstance(lam, torch.Tensor) and lam.requires_grad:
        raise ValueError("oscarmax: a learnable lam (a tensor that requires grad) needs variant='exact'")
    rows = to_rows(scores, dim, mask, "oscarmax", for_op=True)
    y, _, _ = _ops.apply(_ops.prox_sparsemax, rows, rows.scaled(gamma), rows.lengths, *_split(lam, rows, "lam"),
                         _VARIANTS[variant], _check(rows))
    return rows.restore(y)


def sq_pnorm_max(scores: torch.Tensor, dim: int = -1, gamma: float | torch.Tensor = GAMMA,
                 p: float = DEFAULTS["sq_pnorm_max"]["p"], mask: torch.Tensor | None = None) -> torch.Tensor:
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
    rows = to_rows(scores, dim, mask, "sq_pnorm_max", for_op=True)
    return rows.restore(_ops.apply(_ops.sq_pnorm_max, rows, rows.scaled(gamma), rows.lengths, p, _check(rows)))


def _check_alpha(alpha, values=True):
    """α: a number > 1, or a floating tensor (learnable; its values are checked where ``values``, else by the op)."""
    if isinstance(alpha, torch.Tensor):
        return check_parameter("alpha", "entmax", alpha, positive=True, low=1.0, values=values)
    if not isinstance(alpha, (int, float)):
        raise TypeError(f"entmax: alpha must be a number or a floating-point tensor, got {alpha!r}")
    alpha = float(alpha)
    if not alpha > 1.0 or alpha == float("inf"):
        raise ValueError(f"entmax: alpha must be > 1 and finite, got {alpha} (alpha = 1 is softmax: use "
                         "attention.softmax; alpha = 2 is sparsemax)")
    return alpha


def entmax(scores: torch.Tensor, alpha: float = DEFAULTS["entmax"]["alpha"], dim: int = -1,
           gamma: float | torch.Tensor = GAMMA, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""α-entmax of x / γ (Peters, Niculae & Martins, 2019): the argmax of <y, x> - γ Ω_α(y) over the simplex with
    Ω_α(y) = (Σ y^α - 1) / (α(α - 1)), the negative Tsallis α-entropy; y = ((α - 1) z - τ)_+^{1/(α-1)}.

    α → 1 is softmax, α = 2 sparsemax; α = 1.5 is exact (sort-based threshold), other α use safeguarded Newton
    (bisection when a Newton step would leave the bracket; on the CPU for α <= 2, Halley steps on the p-norm
    form of the same equation) to float64 resolution. Sparse for every α > 1.

    ``alpha`` may be a tensor that requires grad (one value, or one per head, row: anything that broadcasts to the
    scores with size 1 along ``dim``; every value > 1, e.g. 1 + softplus(θ)), learned as in Correia et al. (2019),
    "Adaptively Sparse Transformers": dy/dα is their closed form (``_torch.entmax_alpha_grad``).
    """
    alpha = _check_alpha(alpha, values=False)
    gamma = check_parameter("gamma", "entmax", gamma, positive=True)
    rows = to_rows(scores, dim, mask, "entmax", for_op=True)
    return rows.restore(_ops.apply(_ops.entmax, rows, rows.scaled(gamma), rows.lengths, *_split(alpha, rows, "alpha"),
                                   _check(rows)))
