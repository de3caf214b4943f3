r"""The four mappings Π_Ω(x) = argmax_{y ∈ Δ} <y, x> - γ Ω(y), as functions and autograd Functions.

Dividing the objective by γ turns every one of them into a Euclidean problem on z = x / γ:

    softmax    Ω = Σ y log y                     Π = softmax(z)
    sparsemax  Ω = ½‖y‖²                         Π = proj_Δ(z)
    fusedmax   Ω = ½‖y‖² + λ Σ |y_{i+1} - y_i|    Π = proj_Δ(prox_{λ TV}(z))
    oscarmax   Ω = ½‖y‖² + λ Σ_{i<j} max(|y_i|, |y_j|)
                                                 Π = proj_Δ(prox_{λ S}(z)),  S(u) = Σ_k (m - k) u_(k)

The compositions are exact; see ``fusedmax`` and ``oscarmax`` for why. Each backward is a closed-form
Jacobian-vector product: the prox Jacobians average over the groups that the forward pass found, the sparsemax
Jacobian centres on the support, and the chain rule divides by γ.
"""

import warnings

import numba
import torch
from torch.autograd import Function

from . import _cpu, _torch
from ._layout import check_parameter, to_rows

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


class SparsemaxFunction(Function):
    """y = proj_Δ(z) on the first ``lengths[r]`` entries of each row of a (rows, d) tensor; 0 elsewhere."""

    @staticmethod
    def forward(ctx, z, lengths):
        if z.device.type == "cpu":
            _follow_torch_threads()
            y = torch.empty_like(z)
            _cpu.sparsemax_forward(_np(z), _np(lengths), y.numpy())
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
        if grad_y.device.type == "cpu":
            _follow_torch_threads()
            grad_z = torch.empty_like(grad_y)
            _cpu.sparsemax_backward(_np(grad_y), _np(y), _np(lengths), grad_z.numpy())
        else:
            grad_z = _torch.sparsemax_backward(grad_y, y)
        return grad_z, None


_warned_cuda_fallback = False


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
    y, groups, scale = _cpu_prox_forward(z_cpu, lengths.cpu(), lam, variant)
    return y.to(z.device), groups.to(z.device), scale.to(z.device)


def _cpu_prox_forward(z, lengths, lam, variant):
    _follow_torch_threads()
    y = torch.empty_like(z)
    groups = torch.empty(z.shape, dtype=torch.int64)
    scale = torch.empty_like(z)
    _cpu.prox_sparsemax_forward(_np(z), _np(lengths), lam, variant, y.numpy(), groups.numpy(), scale.numpy())
    return y, groups, scale


class ProxSparsemaxFunction(Function):
    """y = proj_Δ(prox(z)) row by row, for prox = TV (fusedmax), the sorted weighted sum (oscarmax) or OWL."""

    @staticmethod
    def forward(ctx, z, lengths, lam, variant):
        if z.device.type == "cpu":
            y, groups, scale = _cpu_prox_forward(z, lengths, lam, variant)
        else:
            y, groups, scale = _prox_forward_elsewhere(z, lengths, lam, variant)
        ctx.save_for_backward(y, groups, scale, lengths)
        ctx.mark_non_differentiable(lengths)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        # chain rule: z -> u = prox(z) -> y = proj_Δ(u). Both Jacobians are symmetric, so the vector-Jacobian
        # product applies the sparsemax Jacobian at u (centre on supp y), then the prox Jacobian D A D
        # (average over each fused run / pooled block, with OWL's signs in D)
        y, groups, scale, lengths = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        if grad_y.device.type == "cpu":
            _follow_torch_threads()
            grad_z = torch.empty_like(grad_y)
            _cpu.prox_sparsemax_backward(
                _np(grad_y), _np(y), _np(groups), _np(scale), _np(lengths), grad_z.numpy()
            )
        else:
            grad_z = _torch.prox_sparsemax_backward(grad_y, y, groups, scale, lengths)
        return grad_z, None, None, None


def softmax(scores, dim=-1, gamma=1.0, mask=None):
    """softmax(x / γ), the argmax of <y, x> - γ Σ y log y over the simplex; masked entries get exactly 0."""
    gamma = check_parameter("gamma", "softmax", gamma, positive=True)
    rows = to_rows(scores, dim, mask, "softmax")
    z = rows.values / gamma
    valid = _torch.valid_positions(rows.lengths, z.shape[-1])
    # a finite fill keeps all-masked rows NaN-free (uniform before the final zeroing)
    z = torch.where(valid, z, torch.finfo(z.dtype).min)
    y = torch.softmax(z, dim=-1) * valid
    return rows.restore(y)


def sparsemax(scores, dim=-1, gamma=1.0, mask=None):
    """proj_Δ(x / γ), the argmax of <y, x> - (γ/2)‖y‖² over the simplex (Martins & Astudillo, 2016)."""
    gamma = check_parameter("gamma", "sparsemax", gamma, positive=True)
    rows = to_rows(scores, dim, mask, "sparsemax")
    return rows.restore(SparsemaxFunction.apply(rows.values / gamma, rows.lengths))


def fusedmax(scores, dim=-1, gamma=1.0, lam=0.1, mask=None):
    r"""argmax_{y ∈ Δ} <y, x> - γ (½‖y‖² + λ Σ_i |y_{i+1} - y_i|): sparse, and fused into runs of equal weight.

    Computed as proj_Δ(prox_{λ TV}(x / γ)), which is exact. Proof: let u = prox_{λTV}(z), y = proj_Δ(u) =
    max(u - τ, 0). Optimality of u gives z - u ∈ λ∂TV(u); of y, u - y ∈ N_Δ(y). Since t ↦ max(t - τ, 0) is
    non-decreasing, sign(y_{i+1} - y_i) is sign(u_{i+1} - u_i) or 0, so ∂TV(u) ⊆ ∂TV(y) and
    z - y = (z - u) + (u - y) ∈ λ∂TV(y) + N_Δ(y): y solves min_{y ∈ Δ} ½‖y - z‖² + λ TV(y). With a mask, TV runs
    over the unmasked entries in order, as if the masked ones were not there.
    """
    gamma = check_parameter("gamma", "fusedmax", gamma, positive=True)
    lam = check_parameter("lam", "fusedmax", lam, positive=False)
    rows = to_rows(scores, dim, mask, "fusedmax")
    y = ProxSparsemaxFunction.apply(rows.values / gamma, rows.lengths, lam, _cpu.PROX_TV)
    return rows.restore(y)


def oscarmax(scores, dim=-1, gamma=1.0, lam=0.01, mask=None, variant="exact"):
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
    rows = to_rows(scores, dim, mask, "oscarmax")
    y = ProxSparsemaxFunction.apply(rows.values / gamma, rows.lengths, lam, _VARIANTS[variant])
    return rows.restore(y)
