"""CPU kernels: the row algorithms of ``_rows.py`` compiled by numba and run in parallel over rows.

Every kernel takes a C-contiguous (rows, d) float array and the number of valid (unmasked, moved-to-front)
entries of each row; entries past a row's length are written as 0 (outputs) or -1 (group labels).
Compiled on first use and cached on disk next to this file, so a second process starts instantly.
"""

import numpy as np
from numba import njit, prange

from . import _rows

_sparsemax_row = njit(cache=True, nogil=True)(_rows.sparsemax_row)
_tv_prox_row = njit(cache=True, nogil=True)(_rows.tv_prox_row)
_pav_decreasing_row = njit(cache=True, nogil=True)(_rows.pav_decreasing_row)

PROX_TV = 0  # fusedmax: prox of lam * sum |u_{i+1} - u_i|
PROX_SORTED = 1  # oscarmax, exact: prox of sum_k w_k u_(k), w_k = lam (m - k), no absolute values
PROX_OWL = 2  # oscarmax as the authors computed it: prox of sum_k w_k |u|_(k), then sparsemax


@njit(cache=True, parallel=True)
def sparsemax_forward(z, lengths, out):
    n, d = z.shape
    for r in prange(n):
        m = lengths[r]
        _sparsemax_row(z[r], out[r], m)
        for i in range(m, d):
            out[r, i] = 0.0


@njit(cache=True, parallel=True)
def sparsemax_backward(grad, y, lengths, out):
    # J = diag(s) - s s^T / |S| with s the support indicator: centre the gradient on the support
    n, d = grad.shape
    for r in prange(n):
        m = lengths[r]
        total = 0.0
        count = 0
        for i in range(m):
            if y[r, i] > 0.0:
                total += grad[r, i]
                count += 1
        mean = total / count if count > 0 else 0.0
        for i in range(d):
            out[r, i] = grad[r, i] - mean if (i < m and y[r, i] > 0.0) else 0.0


@njit(cache=True, nogil=True)
def _sorted_prox_row(z, u, groups, scale, m, lam, variant, order, v, pooled, blocks):
    """u[:m] = prox of the sorted weighted sum sum_k lam (m - k) x_(k) at z (see ``oscarmax``'s proof).

    ``variant == PROX_OWL`` gives the authors' OWL prox instead: the same on |z|, clipped at 0, signs restored.
    ``scale`` is the sign pattern the backward pass needs (1 for the exact prox; sign(z) or 0 for OWL).
    """
    if variant == PROX_OWL:
        for i in range(m):
            v[i] = -abs(z[i])
    else:
        for i in range(m):
            v[i] = -z[i]
    order[:m] = np.argsort(v[:m], kind="mergesort")  # decreasing order of z (or |z|), ties by position
    for k in range(m):  # u holds the sorted, shifted values until the last loop overwrites it
        u[k] = -v[order[k]] - lam * (m - 1 - k)
    _pav_decreasing_row(u, pooled, blocks, m)
    for k in range(m):
        i = order[k]
        value = pooled[k]
        groups[i] = blocks[k]
        if variant == PROX_OWL:
            if value <= 0.0:
                u[i] = 0.0
                scale[i] = 0.0
            else:
                sign = 1.0 if z[i] >= 0.0 else -1.0
                u[i] = sign * value
                scale[i] = sign
        else:
            u[i] = value
            scale[i] = 1.0


@njit(cache=True, parallel=True)
def prox_sparsemax_forward(z, lengths, lam, variant, y, groups, scale):
    """y = sparsemax(prox(z)) row by row; groups and scale describe the prox's Jacobian for the backward."""
    n, d = z.shape
    for r in prange(n):
        m = lengths[r]
        u = np.empty(m, dtype=z.dtype)
        if variant == PROX_TV:
            _tv_prox_row(z[r], u, groups[r], m, lam)
            for i in range(m):
                scale[r, i] = 1.0
        else:
            order = np.empty(m, dtype=np.int64)
            v = np.empty(m, dtype=z.dtype)
            pooled = np.empty(m, dtype=z.dtype)
            blocks = np.empty(m, dtype=groups.dtype)
            _sorted_prox_row(z[r], u, groups[r], scale[r], m, lam, variant, order, v, pooled, blocks)
        _sparsemax_row(u, y[r], m)
        for i in range(m, d):
            y[r, i] = 0.0
            groups[r, i] = -1
            scale[r, i] = 0.0


@njit(cache=True, parallel=True)
def prox_sparsemax_backward(grad, y, groups, scale, lengths, out):
    """Vector-Jacobian product of y = sparsemax(prox(z)); both Jacobians are symmetric, so VJP = JVP.

    sparsemax: centre the gradient on the support of y. prox: J = D A D, with A averaging over each group of the
    prox output (fused run or pooled block) and D = diag(scale) (1, or the signs and zeros of the OWL prox).
    """
    n, d = grad.shape
    for r in prange(n):
        m = lengths[r]
        total = 0.0
        count = 0
        for i in range(m):
            if y[r, i] > 0.0:
                total += grad[r, i]
                count += 1
        mean = total / count if count > 0 else 0.0
        sums = np.zeros(m, dtype=grad.dtype)
        sizes = np.zeros(m, dtype=np.int64)
        for i in range(m):
            g = grad[r, i] - mean if y[r, i] > 0.0 else 0.0
            sums[groups[r, i]] += scale[r, i] * g
            sizes[groups[r, i]] += 1
        for i in range(m):
            out[r, i] = scale[r, i] * sums[groups[r, i]] / sizes[groups[r, i]]
        for i in range(m, d):
            out[r, i] = 0.0
