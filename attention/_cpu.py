"""CPU kernels, and the exact one-row algorithms they are made of.

The row algorithms (``sparsemax_row``, ``tv_prox_row``, ``pav_decreasing_row``) are plain Python written once and
compiled twice: by numba here, run in parallel over rows, and by numba-cuda in ``_cuda.py``, one thread per row.
They allocate nothing (CUDA device functions cannot), write into the arrays they are given, and read only the first
``m`` entries of a row: the unmasked positions, moved to the front by the caller. Each prox also labels every entry
with the index of its group (a run of fused equal values for TV, a block of pooled values for the sorted prox):
those labels are all the backward pass needs.

Every kernel takes a C-contiguous (rows, d) float array and the number of valid entries of each row; entries past
a row's length are written as 0 (outputs) or -1 (group labels). Compiled on first use and cached on disk. The row
algorithms live in this file on purpose: numba's cache is invalidated by a change to the file that defines a
kernel, not to the files of the functions it calls, so a row algorithm kept elsewhere could be edited while stale
compiled kernels kept running.
"""

import numpy as np
from numba import njit, prange


# ---------------------------------------------------------------- row algorithms (plain Python, see above)

def sparsemax_row(z, out, m):
    """out[:m] = argmin_{y in simplex} ||y - z[:m]||^2, by Michelot's algorithm.

    The threshold tau only increases and the active set only shrinks, so the loop ends after at most m passes,
    each O(m); on real scores it takes a handful. It is exact: it stops when the set {i : z_i > tau} stops
    shrinking, i.e. reproduces tau (up to rounding).
    """
    if m == 0:
        return
    # tau is kept relative to the row's maximum: sums of large scores would otherwise lose the small ones
    top = z[0]
    for i in range(1, m):
        if z[i] > top:
            top = z[i]
    total = 0.0
    for i in range(m):
        total += z[i] - top
    tau = (total - 1.0) / m
    count = m
    while True:
        total = 0.0
        new_count = 0
        for i in range(m):
            if z[i] - top > tau:
                total += z[i] - top
                new_count += 1
        # exact arithmetic only ever shrinks the set; with rounding, an entry sitting on tau can flip back in, and
        # "stop when the count repeats" would then cycle forever (2, 3, 2, 3, ...): stop unless it shrinks
        if new_count >= count or new_count == 0:
            break
        count = new_count
        tau = (total - 1.0) / count
    for i in range(m):
        v = z[i] - top - tau
        out[i] = v if v > 0.0 else 0.0


def tv_prox_row(z, out, groups, m, lam):
    """out[:m] = argmin_u 0.5 ||u - z[:m]||^2 + lam * sum_i |u_{i+1} - u_i|, and the run index of each entry.

    Condat's direct algorithm (L. Condat, "A direct algorithm for 1D total variation denoising", IEEE SPL 2013):
    it sweeps the row once, keeping the range [vmin, vmax] that the current segment's value may still take and
    the dual variable's slack; when the slack leaves [-lam, lam] the segment is closed at the bound it hit and the
    sweep restarts after it. O(m) in practice, exact up to rounding.
    """
    if m == 0:
        return
    if lam == 0.0:
        for i in range(m):
            out[i] = z[i]
            groups[i] = i
        return
    k = 0
    k0 = 0
    kplus = 0
    kminus = 0
    segment = 0
    umin = lam
    umax = -lam
    vmin = z[0] - lam
    vmax = z[0] + lam
    twolam = 2.0 * lam
    while True:
        while k == m - 1:
            # right boundary: close the open segment(s)
            if umin < 0.0:
                while True:
                    out[k0] = vmin
                    groups[k0] = segment
                    k0 += 1
                    if k0 > kminus:
                        break
                segment += 1
                k = k0
                kminus = k0
                vmin = z[k0]
                umin = lam
                umax = vmin + umin - vmax
            elif umax > 0.0:
                while True:
                    out[k0] = vmax
                    groups[k0] = segment
                    k0 += 1
                    if k0 > kplus:
                        break
                segment += 1
                k = k0
                kplus = k0
                vmax = z[k0]
                umax = -lam
                umin = vmax + umax - vmin
            else:
                vmin += umin / (k - k0 + 1)
                while True:
                    out[k0] = vmin
                    groups[k0] = segment
                    k0 += 1
                    if k0 > k:
                        break
                return
        umin += z[k + 1] - vmin
        if umin < -lam:
            # negative jump: the segment ends at kminus with value vmin
            while True:
                out[k0] = vmin
                groups[k0] = segment
                k0 += 1
                if k0 > kminus:
                    break
            segment += 1
            k = k0
            kminus = k0
            kplus = k0
            vmin = z[k0]
            vmax = vmin + twolam
            umin = lam
            umax = -lam
        else:
            umax += z[k + 1] - vmax
            if umax > lam:
                # positive jump: the segment ends at kplus with value vmax
                while True:
                    out[k0] = vmax
                    groups[k0] = segment
                    k0 += 1
                    if k0 > kplus:
                        break
                segment += 1
                k = k0
                kminus = k0
                kplus = k0
                vmax = z[k0]
                vmin = vmax - twolam
                umin = lam
                umax = -lam
            else:
                k += 1
                if umin >= lam:
                    kminus = k
                    vmin += (umin - lam) / (kminus - k0 + 1)
                    umin = lam
                if umax <= -lam:
                    kplus = k
                    vmax += (umax + lam) / (kplus - k0 + 1)
                    umax = -lam


def pav_decreasing_row(v, out, groups, m):
    """out[:m] = the non-increasing sequence closest to v[:m] (isotonic regression, pool adjacent violators).

    Blocks live in place: ``groups[b]`` holds the end (exclusive) of block b and ``out[b]`` its sum while the
    pass runs; adjacent blocks are pooled while the earlier mean is not larger than the later one, so equal
    neighbouring means end up in one block. A last sweep writes block means and block indices.
    """
    if m == 0:
        return
    n_blocks = 0
    for i in range(m):
        # a new block holding v[i] alone
        block_sum = v[i]
        block_start = i
        # pool with previous blocks while their mean <= this block's mean
        while n_blocks > 0:
            prev = n_blocks - 1
            prev_start = 0 if prev == 0 else groups[prev - 1]
            prev_len = block_start - prev_start
            cur_len = i + 1 - block_start
            if out[prev] * cur_len <= block_sum * prev_len:
                block_sum += out[prev]
                block_start = prev_start
                n_blocks -= 1
            else:
                break
        out[n_blocks] = block_sum
        groups[n_blocks] = i + 1
        n_blocks += 1
    # expand from the last block backwards so block b's record is read before position b is overwritten
    for b in range(n_blocks - 1, -1, -1):
        start = 0 if b == 0 else groups[b - 1]
        end = groups[b]
        mean = out[b] / (end - start)
        for i in range(end - 1, start - 1, -1):
            out[i] = mean
            groups[i] = b
    return


def unsort_prox_row(z, pooled, blocks, order, u, groups, scale, m, variant):
    """Put the sorted prox back in place: position order[k] gets pooled[k] and block blocks[k].

    For ``PROX_OWL`` (the prox was computed on |z|) the value is clipped at 0 and takes z's sign; ``scale`` keeps
    that sign (0 where clipped) for the backward pass. For the exact prox, ``scale`` is 1.
    """
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


def clear_tail_row(y, groups, scale, m, d):
    """Entries past a row's length: weight 0, no group, no scale."""
    for i in range(m, d):
        y[i] = 0.0
        groups[i] = -1
        scale[i] = 0.0


# ---------------------------------------------------------------- numba CPU kernels

_sparsemax_row = njit(cache=True, nogil=True)(sparsemax_row)
_tv_prox_row = njit(cache=True, nogil=True)(tv_prox_row)
_pav_decreasing_row = njit(cache=True, nogil=True)(pav_decreasing_row)
_unsort_prox_row = njit(cache=True, nogil=True)(unsort_prox_row)
_clear_tail_row = njit(cache=True, nogil=True)(clear_tail_row)

PROX_TV = 0  # fusedmax: prox of lam * sum |u_{i+1} - u_i|
PROX_SORTED = 1  # oscarmax, exact: prox of sum_k w_k u_(k), w_k = lam (m - k), no absolute values
PROX_OWL = 2  # oscarmax as the authors computed it: prox of sum_k w_k |u|_(k), then sparsemax


_MAX_CHUNKS = 128


@njit(cache=True)
def _chunks(n):
    """Split n rows into at most _MAX_CHUNKS contiguous chunks for prange; each allocates its scratch once.

    (A constant rather than numba.get_num_threads(): that would stop the kernels from being cached on disk.)
    """
    return max(1, min(n, _MAX_CHUNKS))


@njit(cache=True, parallel=True)
def sparsemax_forward(z, lengths, out):
    n, d = z.shape
    n_chunks = _chunks(n)
    for c in prange(n_chunks):
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            m = lengths[r]
            _sparsemax_row(z[r], out[r], m)
            for i in range(m, d):
                out[r, i] = 0.0


@njit(cache=True, parallel=True)
def sparsemax_backward(grad, y, lengths, out):
    # J = diag(s) - s s^T / |S| with s the support indicator: centre the gradient on the support
    n, d = grad.shape
    n_chunks = _chunks(n)
    for c in prange(n_chunks):
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
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


_INSERTION_SORT_MAX = 96  # below this length a stable insertion sort beats the radix sort's fixed cost
_SIGN = np.uint64(1) << np.uint64(63)


@njit(cache=True, nogil=True)
def _stable_argsort(v, m, order, keys, keys_tmp, order_tmp, hist):
    """order[:m] = the stable ascending argsort of v[:m] (what np.argsort(v[:m], kind="mergesort") returns).

    Short rows: insertion sort. Long rows: LSD radix sort, 8 bits a pass, on the float64 bit patterns made
    order-preserving as unsigned integers (-0.0 first turned into 0.0, so that the two tie as they compare);
    passes where every key has the same byte are skipped (float32 inputs leave the low 29 bits zero).
    """
    if m <= _INSERTION_SORT_MAX:
        sorted_v = keys[:m].view(np.float64)  # the values in sorted order, next to order: no gathers
        for j in range(m):
            vj = np.float64(v[j])
            i = j - 1
            while i >= 0 and sorted_v[i] > vj:
                sorted_v[i + 1] = sorted_v[i]
                order[i + 1] = order[i]
                i -= 1
            sorted_v[i + 1] = vj
            order[i + 1] = j
        return
    fkeys = keys[:m].view(np.float64)
    for i in range(m):
        x = np.float64(v[i])
        fkeys[i] = x if x != 0.0 else 0.0
    hist[:, :] = 0
    for i in range(m):
        key = keys[i]
        key = ~key if key & _SIGN else key | _SIGN
        keys[i] = key
        for b in range(8):
            hist[b, (key >> np.uint64(8 * b)) & np.uint64(255)] += 1
        order[i] = i
    src_k, dst_k, src_o, dst_o = keys, keys_tmp, order, order_tmp
    swapped = False
    for b in range(8):
        h = hist[b]
        trivial = False
        for j in range(256):
            if h[j] == m:
                trivial = True
                break
            if h[j] != 0:
                break
        if trivial:
            continue
        total = 0
        for j in range(256):
            count = h[j]
            h[j] = total
            total += count
        shift = np.uint64(8 * b)
        for i in range(m):
            key = src_k[i]
            digit = (key >> shift) & np.uint64(255)
            at = h[digit]
            h[digit] = at + 1
            dst_k[at] = key
            dst_o[at] = src_o[i]
        src_k, dst_k, src_o, dst_o = dst_k, src_k, dst_o, src_o
        swapped = not swapped
    if swapped:
        for i in range(m):
            order[i] = src_o[i]


@njit(cache=True, nogil=True)
def _sorted_prox_row(z, u, groups, scale, m, lam, variant, order, v, pooled, blocks, keys, keys_tmp, order_tmp,
                     hist):
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
    _stable_argsort(v, m, order, keys, keys_tmp, order_tmp, hist)  # decreasing z (or |z|), ties by position
    for k in range(m):  # u holds the sorted, shifted values until the last loop overwrites it
        u[k] = -v[order[k]] - lam * (m - 1 - k)
    _pav_decreasing_row(u, pooled, blocks, m)
    _unsort_prox_row(z, pooled, blocks, order, u, groups, scale, m, variant)


@njit(cache=True, parallel=True)
def prox_sparsemax_forward(z, lengths, lam, variant, y, groups, scale):
    """y = sparsemax(prox(z)) row by row; groups and scale describe the prox's Jacobian for the backward."""
    n, d = z.shape
    n_chunks = _chunks(n)
    for c in prange(n_chunks):
        # scratch buffers, once per chunk: the sorted prox's only where it runs, the radix sort's for long rows
        u = np.empty(d, dtype=z.dtype)
        ds = 0 if variant == PROX_TV else d
        dr = ds if d > _INSERTION_SORT_MAX else 0
        order = np.empty(ds, dtype=np.int64)
        v = np.empty(ds, dtype=z.dtype)
        pooled = np.empty(ds, dtype=z.dtype)
        blocks = np.empty(ds, dtype=groups.dtype)
        keys = np.empty(ds, dtype=np.uint64)
        keys_tmp = np.empty(dr, dtype=np.uint64)
        order_tmp = np.empty(dr, dtype=np.int64)
        hist = np.empty((8 if dr else 0, 256), dtype=np.int64)
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            m = lengths[r]
            if variant == PROX_TV:
                _tv_prox_row(z[r], u, groups[r], m, lam)
                for i in range(m):
                    scale[r, i] = 1.0
            else:
                _sorted_prox_row(z[r], u, groups[r], scale[r], m, lam, variant, order, v, pooled, blocks, keys,
                                 keys_tmp, order_tmp, hist)
            _sparsemax_row(u, y[r], m)
            _clear_tail_row(y[r], groups[r], scale[r], m, d)


@njit(cache=True, parallel=True)
def prox_sparsemax_backward(grad, y, groups, scale, lengths, out):
    """Vector-Jacobian product of y = sparsemax(prox(z)); both Jacobians are symmetric, so VJP = JVP.

    sparsemax: centre the gradient on the support of y. prox: J = D A D, with A averaging over each group of the
    prox output (fused run or pooled block) and D = diag(scale) (1, or the signs and zeros of the OWL prox).
    """
    n, d = grad.shape
    n_chunks = _chunks(n)
    for c in prange(n_chunks):
        sums = np.empty(d, dtype=grad.dtype)
        sizes = np.empty(d, dtype=np.int64)
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            m = lengths[r]
            total = 0.0
            count = 0
            for i in range(m):
                if y[r, i] > 0.0:
                    total += grad[r, i]
                    count += 1
            mean = total / count if count > 0 else 0.0
            n_groups = 0
            for i in range(m):
                if groups[r, i] >= n_groups:
                    n_groups = groups[r, i] + 1
            for k in range(n_groups):
                sums[k] = 0.0
                sizes[k] = 0
            for i in range(m):
                g = grad[r, i] - mean if y[r, i] > 0.0 else 0.0
                k = groups[r, i]
                sums[k] += scale[r, i] * g
                sizes[k] += 1
            # one division a group; scale is 1, -1 or 0, so scale * (s / n) is (scale * s) / n bit for bit
            for k in range(n_groups):
                if sizes[k] > 0:
                    sums[k] = sums[k] / sizes[k]
            for i in range(m):
                out[r, i] = scale[r, i] * sums[groups[r, i]]
            for i in range(m, d):
                out[r, i] = 0.0
