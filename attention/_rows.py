"""Exact one-row algorithms, written once and compiled twice: by numba for the CPU (``_cpu.py``) and by
numba-cuda for the GPU (``_cuda.py``), one thread per row.

They allocate nothing (CUDA device functions cannot), write their results into the arrays they are given, and
read only the first ``m`` entries of a row: the unmasked positions, moved to the front by the caller. Each prox
also labels every entry with the index of its group (``groups``): a run of fused equal values for TV, a block of
pooled values for the sorted prox. Those labels are all the backward pass needs.
"""

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
