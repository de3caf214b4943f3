"""Device-agnostic kernels in plain torch, for tensors that are not on the CPU (CUDA first of all).

Same contracts as ``_cpu.py``: (rows, d) inputs, ``lengths`` valid entries per row at the front.
The sparsemax forward is the sort-based one (Held et al. 1974; Martins & Astudillo 2016); the backward passes
are group averages written with ``scatter_add``. The prox forward passes (TV, sorted) are sequential within a
row; they run in the numba-cuda kernels of ``_cuda.py`` when numba-cuda is installed, else on the CPU kernels
with one copy each way (``functions.py`` decides).
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
    """D A D applied after the sparsemax backward; see ``_cpu.prox_sparsemax_backward``."""
    n, d = grad.shape
    g = sparsemax_backward(grad, y) * scale
    valid = groups >= 0
    flat = (groups.clamp_min(0) + d * torch.arange(n, device=grad.device).unsqueeze(-1)).reshape(-1)
    sums = torch.zeros(n * d, dtype=grad.dtype, device=grad.device).index_add_(0, flat, g.reshape(-1))
    sizes = torch.zeros(n * d, dtype=grad.dtype, device=grad.device).index_add_(
        0, flat, valid.reshape(-1).to(grad.dtype)
    )
    averaged = (sums / sizes.clamp_min(1))[flat].reshape(n, d)
    return torch.where(valid, averaged * scale, 0)
