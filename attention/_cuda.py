"""GPU kernels for the prox forward passes: the row algorithms of ``_cpu.py`` compiled by numba-cuda, one thread
per row, reading and writing torch's CUDA memory in place (``__cuda_array_interface__``) on torch's current stream.

Optional: needs ``pip install numba-cuda`` (``structured-attention[cuda]``). Without it, ``_ops.py`` runs the
prox forward on the CPU kernels. The sorting that the oscar prox needs is done by ``torch.sort`` on the GPU before
the kernel; everything else (the prox, sparsemax, group labels) happens in one kernel launch. The backward passes
are plain torch (``_torch.py``). Under ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in numba's CUDA simulator
on CPU tensors, which is how the test suite checks them on machines without a GPU.

Kernels launch on the tensor's own GPU (``cuda:1`` included: numba's context for that device, torch's current
stream of that device). numba-cuda installed but unusable (no NVVM/libdevice, a driver too old for it): ``_ops.py``
warns once and every call then runs the CPU kernels (one copy each way), as without numba-cuda.
"""

import functools
import os

import torch

try:  # a module global, not a local: the CUDA simulator swaps the `cuda` global seen by kernels
    from numba import cuda
except ImportError:  # numba-cuda not installed
    cuda = None

from . import _cpu
from ._cpu import PROX_OWL, PROX_TV

THREADS_PER_BLOCK = 64


def simulated() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


@functools.cache
def available() -> bool:
    if cuda is None:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver or toolkit: fall back to the CPU kernels rather than fail
        return False


@functools.cache
def _kernels():
    sparsemax_row = cuda.jit(device=True)(_cpu.sparsemax_row)
    tv_prox_row = cuda.jit(device=True)(_cpu.tv_prox_row)
    pav_decreasing_row = cuda.jit(device=True)(_cpu.pav_decreasing_row)
    unsort_prox_row = cuda.jit(device=True)(_cpu.unsort_prox_row)
    clear_tail_row = cuda.jit(device=True)(_cpu.clear_tail_row)

    @cuda.jit
    def tv_sparsemax(z, lengths, lam, u, y, groups, scale):
        r = cuda.grid(1)
        if r >= z.shape[0]:
            return
        m = lengths[r]
        tv_prox_row(z[r], u[r], groups[r], m, lam[0] if lam.shape[0] == 1 else lam[r])
        for i in range(m):
            scale[r, i] = 1.0
        sparsemax_row(u[r], y[r], m)
        clear_tail_row(y[r], groups[r], scale[r], m, z.shape[1])

    @cuda.jit
    def sorted_sparsemax(z, z_sorted, order, lengths, lam, variant, u, pooled, blocks, y, groups, scale):
        # z_sorted[r, :m]: z (or |z| for OWL) in decreasing order; order[r, k]: its position in z
        r = cuda.grid(1)
        if r >= z.shape[0]:
            return
        m = lengths[r]
        lam_r = lam[0] if lam.shape[0] == 1 else lam[r]
        for k in range(m):
            u[r, k] = z_sorted[r, k] - lam_r * (m - 1 - k)
        pav_decreasing_row(u[r], pooled[r], blocks[r], m)
        unsort_prox_row(z[r], pooled[r], blocks[r], order[r], u[r], groups[r], scale[r], m, variant)
        sparsemax_row(u[r], y[r], m)
        clear_tail_row(y[r], groups[r], scale[r], m, z.shape[1])

    return tv_sparsemax, sorted_sparsemax


def _launch(kernel, n, device, *tensors_and_scalars):
    blocks = (n + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    if simulated():
        args = [a.numpy() if isinstance(a, torch.Tensor) else a for a in tensors_and_scalars]
        kernel[blocks, THREADS_PER_BLOCK](*args)
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    with cuda.gpus[index]:  # the tensors' GPU, not the current one
        args = [cuda.as_cuda_array(a.detach()) if isinstance(a, torch.Tensor) else a for a in tensors_and_scalars]
        stream = cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)
        kernel[blocks, THREADS_PER_BLOCK, stream](*args)


def prox_sparsemax_forward(z, lengths, lam, variant):
    """Same contract as ``_cpu.prox_sparsemax_forward``: (y, groups, scale) on z's device; raises whatever
    numba-cuda raises where it cannot compile or launch (``_ops`` then falls back to the CPU kernels, once).

    The GPU kernels: each row's whole prox (one thread per row), with no screening: that pays on the CPU, where
    a row's cost is its number of entries, and would only add divergent branches here. ``lam``: a float, or a
    tensor of one value or one per row."""
    tv_sparsemax, sorted_sparsemax = _kernels()
    z = z.detach().contiguous()
    n, d = z.shape
    if isinstance(lam, torch.Tensor):
        lam = lam.detach().to(device=z.device, dtype=torch.float64).reshape(-1).contiguous()
    else:
        lam = torch.full((1,), float(lam), dtype=torch.float64, device=z.device)
    u = torch.empty_like(z)
    y = torch.empty_like(z)
    groups = torch.empty(z.shape, dtype=torch.int32, device=z.device)
    scale = torch.empty_like(z)
    if n == 0:
        return y, groups, scale
    if variant == PROX_TV:
        _launch(tv_sparsemax, n, z.device, z, lengths, lam, u, y, groups, scale)
        return y, groups, scale
    valid = torch.arange(d, device=z.device) < lengths.unsqueeze(-1)
    key = z.abs() if variant == PROX_OWL else z
    key = torch.where(valid, key, -torch.inf)
    z_sorted, order = torch.sort(key, dim=-1, descending=True, stable=True)
    pooled = torch.empty_like(z)
    blocks = torch.empty(z.shape, dtype=torch.int64, device=z.device)
    _launch(sorted_sparsemax, n, z.device, z, z_sorted.contiguous(), order.contiguous(), lengths, lam, int(variant),
            u, pooled, blocks, y, groups, scale)
    return y, groups, scale
