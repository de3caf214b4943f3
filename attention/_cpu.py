"""CPU kernels, and the exact one-row algorithms they are made of.

The full-row algorithms (``sparsemax_row``, ``tv_prox_row``, ``pav_decreasing_row``) are plain Python written once
and compiled twice: by numba here, and by numba-cuda in ``_cuda.py``, one thread per row. They allocate nothing
(CUDA device functions cannot), write into the arrays they are given, and read only the first ``m`` entries of a
row: the unmasked positions, moved to the front by the caller. Each prox also labels every entry with its group
(a run of fused equal values for TV, a block of pooled values for the sorted prox): those labels are all the
backward pass needs.

The CPU kernels screen each row before solving (see "numba CPU kernels" below): every mapping's threshold is at
least max(z) - 1, so entries far below the maximum get weight 0 whatever the rest does, and the full-row
algorithms then run on the few candidates left. Each screening rule is proved where it is used.

Every kernel takes a C-contiguous (rows, d) float array and the number of valid entries of each row; entries past
a row's length are written as 0 (outputs) or -1 (group labels). The forward kernels return how many rows held a
nan or inf among their valid scores (written as nan; the caller raises the detailed error). Compiled on first use
and cached on disk. The row algorithms live in this file on purpose: numba's cache is invalidated by a change to
the file that defines a kernel, not to the files of the functions it calls, so a row algorithm kept elsewhere
could be edited while stale compiled kernels kept running.
"""

import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from ._numba import njit  # numba.njit whose disk cache never stops an import or a call (read-only, damaged)

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


@njit(cache=True, nogil=True, inline="always")
def _write_segment(out, groups, k0, last, value, segment):
    """out[k0..last] = value in group ``segment`` (at least one entry, as Condat's do-while); returns last + 1."""
    while True:
        out[k0] = value
        groups[k0] = segment
        k0 += 1
        if k0 > last:
            return k0


@njit(cache=True, nogil=True)
def _tv_prox_sums(z, out, groups, m, lam):
    """_tv_prox_runs with run indices for labels (0, 1, ...: tv_prox_row's) and its own table of reciprocals: the
    sweep on its own, for tests and callers outside the kernels."""
    recip = np.empty(m + 1, dtype=np.float64)
    _fill_reciprocals(recip, m + 1)
    _tv_prox_runs(z, out, groups, m, lam, recip, 0, False)


@njit(cache=True, nogil=True)
def _fill_reciprocals(recip, count):
    """recip[i] = 1.0 / i for 1 <= i < count (recip[0] = inf): the divisions of the TV sweep, made once. The table
    holds the same correctly rounded quotients the sweep would compute, so reading it changes no bit."""
    if count > 0:
        recip[0] = np.inf
    for i in range(1, count):
        recip[i] = 1.0 / np.float64(i)


@njit(cache=True, nogil=True)
def _tv_prox_runs(z, out, groups, m, lam, recip, base, heads):
    """tv_prox_row's prox and groups (Condat's direct algorithm, the same sweep, restarts and segment ends), for
    the CPU kernels: its slack variables are kept as one running sum, so the sweep's common step has no branch
    that data decide and no division on its critical path.

    In Condat's sweep, umin = s - n vmin and umax = s - n vmax, where s is the sum of z over the open segment
    (k0..k, n entries) plus the offset its start carries (0 at the row's start, +lam after a negative jump, -lam
    after a positive one). His tests become comparisons of the bounds lo = (s - lam) / n and hi = (s + lam) / n
    with vmin and vmax: umin < -lam is hi < vmin (a negative jump), umax > lam is lo > vmax (a positive one),
    umin >= lam is lo >= vmin, whose update vmin += (umin - lam) / n is vmin = lo (so vmin = max(vmin, lo)), and
    likewise vmax = min(vmax, hi); at the row's end umin < 0 is s / n < vmin, umax > 0 is s / n > vmax, and the
    last segment's value vmin + umin / n is s / n. The running record updates are selects: on nearly uniform
    scores (an untrained model's) they are taken on a fifth of the entries at random, and as branches their
    mispredictions and the division on the slack's dependency chain cost 3-5x the rest of the sweep.

    1 / n is read from ``recip`` (recip[i] = 1.0 / i for i <= m, ``_fill_reciprocals``): the same quotient, so
    the same bits, without a division per step (its throughput, not the sums' latency, bounded the sweep: 1.75
    steps per entry on an untrained Llama's causal rows, where restarts rescan). Labels: with ``heads`` each entry
    gets base + the position in z of its run's first entry (the kernels' labels, for z a run of consecutive
    positions starting at ``base``), else the run's index (0, 1, ...).
    """
    if m == 0:
        return
    if lam == 0.0:
        for i in range(m):
            out[i] = z[i]
            groups[i] = base + i if heads else i
        return
    k = 0
    k0 = 0
    fplus = 0.0  # kplus and kminus, as floats (see below)
    fminus = 0.0
    segment = base if heads else 0
    s = np.float64(z[0])
    n = 1.0
    count = 1  # n, as an index into recip
    vmin = s - lam
    vmax = s + lam
    twolam = 2.0 * lam
    while True:
        while k == m - 1:  # right boundary: close the open segment(s)
            mean = s / n
            if mean < vmin:
                k0 = _write_segment(out, groups, k0, fminus, vmin, segment)
                if k0 >= m:  # only where rounding broke the sweep's invariant (huge scores): every entry is out
                    return
                segment = base + k0 if heads else segment + 1
                k = k0
                fminus = np.float64(k0)
                vmin = np.float64(z[k0])
                s = vmin + lam  # (vmax is kept, as in Condat's sweep)
                n = 1.0
                count = 1
            elif mean > vmax:
                k0 = _write_segment(out, groups, k0, fplus, vmax, segment)
                if k0 >= m:  # (as above)
                    return
                segment = base + k0 if heads else segment + 1
                k = k0
                fplus = np.float64(k0)
                vmax = np.float64(z[k0])
                s = vmax - lam
                n = 1.0
                count = 1
            else:
                _write_segment(out, groups, k0, k, mean, segment)
                return
        s1 = s + z[k + 1]
        n1 = n + 1.0
        inv = recip[count + 1]  # 1.0 / n1
        lo = (s1 - lam) * inv
        hi = (s1 + lam) * inv
        if hi < vmin:  # negative jump: the segment ends at kminus with value vmin
            k0 = _write_segment(out, groups, k0, fminus, vmin, segment)
            segment = base + k0 if heads else segment + 1
            k = k0
            fminus = np.float64(k0)
            fplus = fminus
            vmin = np.float64(z[k0])
            vmax = vmin + twolam
            s = vmin + lam
            n = 1.0
            count = 1
        elif lo > vmax:  # positive jump: the segment ends at kplus with value vmax
            k0 = _write_segment(out, groups, k0, fplus, vmax, segment)
            segment = base + k0 if heads else segment + 1
            k = k0
            fminus = np.float64(k0)
            fplus = fminus
            vmax = np.float64(z[k0])
            vmin = vmax - twolam
            s = vmax - lam
            n = 1.0
            count = 1
        else:
            k += 1
            s = s1
            n = n1
            count += 1
            # kminus = k where lo >= vmin, as arithmetic (k only grows, so the max is k or the old kminus): LLVM
            # turns an integer select into a branch, mispredicted on a fifth of the entries
            kf = np.float64(k)
            fminus = max(fminus, kf * np.float64(lo >= vmin))
            fplus = max(fplus, kf * np.float64(hi <= vmax))
            vmin = max(vmin, lo)
            vmax = min(vmax, hi)

PROX_TV = 0  # fusedmax: prox of lam * sum |u_{i+1} - u_i|
PROX_SORTED = 1  # oscarmax, exact: prox of sum_k w_k u_(k), w_k = lam (m - k), no absolute values
PROX_OWL = 2  # oscarmax as the authors computed it: prox of sum_k w_k |u|_(k), then sparsemax

# The CPU kernels below screen before they solve. Every mapping here has a threshold tau >= max(z) - 1 (no weight
# exceeds 1), so an entry far enough below the row's maximum gets weight 0 whatever the others do; the exact
# algorithm then runs on the few remaining candidates (a handful out of 64 or 1000 on real scores) instead of the
# whole row. Each rule is proved where it is used; a rule that only holds up to rounding is verified afterwards,
# with the whole row as the fallback. What is left per entry is a few linear passes (maximum, screening, output).
_SCREEN_MARGIN = 1e-6  # relative slack on every screening bound: never screen an entry that rounding might admit
# Rounding a bound such as max(z) - 1 - width errs by up to |max(z)| 2^-52, which must stay under the margin: rows
# whose maximum is larger in magnitude (scores of 1e16, or gamma = 1e-30) are solved whole, unscreened (at 1e16,
# max(z) - 1 - width rounds to max(z) itself and every entry, the maximum included, would be screened out).
_SCREEN_LIMIT = _SCREEN_MARGIN * 2.0 ** 52


_MAX_CHUNKS = 128


@njit(cache=True)
def _chunks(n):
    """Split n rows into at most _MAX_CHUNKS contiguous chunks for prange; each allocates its scratch once.

    (A constant rather than numba.get_num_threads(): that would stop the kernels from being cached on disk.)
    """
    return max(1, min(n, _MAX_CHUNKS))


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def _max_and_sum(z, m):
    """(max, sum) of z[:m] in float64, the sum vectorized (reassociated). A nan or inf among them makes the sum
    non-finite: the caller tests it, and only a non-finite (or overflowing) sum pays for ``_all_finite``; this
    keeps the finiteness check off the loop's critical path. (No "no-nan" fast-math flag: LLVM would then be
    entitled to assume the sum finite and drop the test.)"""
    top = -np.inf
    total = 0.0
    for i in range(m):
        v = np.float64(z[i])
        top = max(top, v)
        total += v
    return top, total


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def _max_min_sum(z, m):
    """(max, min, sum) of z[:m] in float64, vectorized: ``_max_and_sum`` with the minimum (the same maximum and
    sum; min(z[:m]) = _min_of of the candidates when every entry is one)."""
    top = -np.inf
    low = np.inf
    total = 0.0
    for i in range(m):
        v = np.float64(z[i])
        top = max(top, v)
        low = min(low, v)
        total += v
    return top, low, total


@njit(cache=True, nogil=True)
def _all_finite(z, m):
    for i in range(m):
        if not abs(np.float64(z[i])) < np.inf:
            return False
    return True


@njit(cache=True, nogil=True)
def _row_top(z, m):
    """(max of z[:m], whether z[:m] is all finite)."""
    top, total = _max_and_sum(z, m)
    if total - total == 0.0:
        return top, True
    return top, _all_finite(z, m)


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def _min_of(val, k):
    """min(val[:k]) (inf for k = 0), vectorized."""
    low = np.inf
    for j in range(k):
        low = min(low, val[j])
    return low


@njit(cache=True, nogil=True)
def _keep_positions(z, m, bound, val, pos):
    """val[:k], pos[:k] = the entries of z[:m] above bound and their positions; returns k. Branch-free: every
    entry is written, and a rejected one is overwritten by the next."""
    k = 0
    for i in range(m):
        v = np.float64(z[i])
        val[k] = v
        pos[k] = i
        k += 1 if v > bound else 0
    return k


@njit(cache=True, nogil=True)
def _refine(val, pos, k, top, width, buf):
    """Trim candidates kept at top - 1 - width to those above tau(z) - width, tau(z) the sparsemax threshold of
    the scores themselves (>= top - 1, usually well above): any lower bound on tau(z) works in the screening rules
    below, and tau(z) is computed on the candidates alone. Returns (how many are kept, the level they are above).
    """
    if k == 0:
        return 0, top
    count = _screen_candidates(val, k, top, buf)[0]
    total = 0.0
    for j in range(count):
        total += buf[j]
    level = top + _michelot(buf, count, total) - width
    c = 0
    for j in range(k):
        v = val[j]
        val[c] = v
        pos[c] = pos[j]
        c += 1 if v > level else 0
    return c, level


@njit(cache=True, nogil=True)
def _non_finite_row(out, d):
    """A row with nan or inf among its valid scores: nan out (the caller raises unless checks are off)."""
    for i in range(d):
        out[i] = np.nan


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def _sum_above(buf, count, tau):
    """(sum, number) of the values in buf[:count] above tau, as float64. Branch-free, so it vectorizes: a branch on
    v > tau is taken about half the time and mispredicted as often, which cost more than the rest of a short row."""
    total = 0.0
    kept = 0.0
    for j in range(count):
        v = buf[j]
        keep = np.float64(v > tau)
        total += keep * v
        kept += keep
    return total, kept


@njit(cache=True, nogil=True)
def _michelot(buf, count, total):
    """The simplex threshold of the ``count`` values in buf (relative to their maximum, which is among them,
    ``total`` their sum), given that they contain the support: Michelot's algorithm.

    tau = (sum over the set - 1) / |set| stays below the true threshold for any superset of the support and rises
    to it as the set {v > tau} shrinks; the loop stops as soon as the set does not shrink (so it ends, and an entry
    sitting on tau under rounding cannot flip in and out). Each pass reads all ``count`` values (no compaction):
    they are few, and a branch-free pass over them is cheaper than a branchy one over fewer.
    """
    tau = (total - 1.0) / count
    size = np.float64(count)
    while True:
        total, kept = _sum_above(buf, count, tau)
        if kept >= size or kept == 0.0:
            return tau
        size = kept
        tau = (total - 1.0) / kept


@njit(cache=True, nogil=True)
def _screen_candidates(z, m, top, buf):
    """buf[:count] = z_i - top for the entries with z_i > top - 1, the only ones that can get weight under a
    threshold tau >= top - 1; returns (count, their sum). The pass over the row is branch-free (a rejected value
    is overwritten) and carries no floating-point sum (its latency would chain the iterations): the sum is taken
    over the few candidates afterwards."""
    count = 0
    for i in range(m):
        v = np.float64(z[i]) - top
        buf[count] = v
        count += 1 if v > -1.0 else 0
    total = 0.0
    for j in range(count):
        total += buf[j]
    return count, total


@njit(cache=True, nogil=True)
def _simplex_threshold(u, k, buf):
    """(top, tau): sum_j max(u[j] - top - tau, 0) = 1 over u[:k], k >= 1; the sparsemax threshold of u relative
    to its maximum, computed on the screened candidates only."""
    top = -np.inf
    for j in range(k):
        top = u[j] if u[j] > top else top
    count, total = _screen_candidates(u, k, top, buf)
    return top, _michelot(buf, count, total)


@njit(cache=True, nogil=True)
def _simplex_threshold_wide(u, k, buf):
    """_simplex_threshold(u, k, buf), the same (top, tau) bit for bit, for rows whose entries are mostly within 1
    of their maximum (fusedmax's prox of nearly uniform scores): when all are, the candidates are every entry, in
    order, and the branch-free compaction of ``_screen_candidates`` (a store and a counter per entry) is skipped;
    their sum is taken in the same order from the same 0.0."""
    top, low = _max_min(u, k)
    if not low - top > -1.0:  # (u - top is monotone in u: the minimum decides whether every entry passes)
        count, total = _screen_candidates(u, k, top, buf)
        return top, _michelot(buf, count, total)
    total = 0.0
    for j in range(k):
        v = u[j] - top
        buf[j] = v
        total += v
    return top, _michelot(buf, k, total)


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def _max_min(u, k):
    """(max, min) of u[:k], vectorized (exact: no rounding in either)."""
    top = -np.inf
    low = np.inf
    for j in range(k):
        top = max(top, u[j])
        low = min(low, u[j])
    return top, low


@njit(cache=True, nogil=True)
def _sparsemax_screened_row(z, out, m, d, buf):
    top, finite = _row_top(z, m)
    if not finite:
        _non_finite_row(out, d)
        return 1
    if m > 0:
        count, total = _screen_candidates(z, m, top, buf)
        tau = _michelot(buf, count, total)
        for i in range(m):
            v = z[i] - top - tau
            out[i] = v if v > 0.0 else 0.0
    for i in range(m, d):
        out[i] = 0.0
    return 0


@njit(cache=True, parallel=True)
def sparsemax_forward(z, lengths, out):
    """out = proj_Δ(z) row by row. Returns the number of rows with a non-finite valid score (their out is nan)."""
    n, d = z.shape
    n_chunks = _chunks(n)
    bad = 0
    for c in prange(n_chunks):
        buf = np.empty(d, dtype=np.float64)
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            bad += _sparsemax_screened_row(z[r], out[r], lengths[r], d, buf)
    return bad


# Reassociation lets LLVM vectorize the sums (the only flags used: no assumption about nan/inf).
_REDUCE = {"reassoc", "nsz", "contract"}


@njit(cache=True, nogil=True, fastmath=_REDUCE)
def _centre_on_support(grad, y, out, m, d):
    """out[:m] = grad - mean(grad over supp y) on supp y, 0 elsewhere (and past m): the sparsemax VJP."""
    total = 0.0
    count = 0.0
    for i in range(m):
        keep = y[i] > 0.0
        total += grad[i] if keep else 0.0
        count += 1.0 if keep else 0.0
    mean = total / count if count > 0.0 else 0.0
    for i in range(m):
        out[i] = grad[i] - mean if y[i] > 0.0 else 0.0
    for i in range(m, d):
        out[i] = 0.0


@njit(cache=True, parallel=True)
def sparsemax_backward(grad, y, lengths, out):
    # J = diag(s) - s s^T / |S| with s the support indicator: centre the gradient on the support, 0 elsewhere
    n, d = grad.shape
    n_chunks = _chunks(n)
    for c in prange(n_chunks):
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            _centre_on_support(grad[r], y[r], out[r], lengths[r], d)


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




@njit(cache=True, nogil=True)
def _tv_sparsemax_row(z, y, groups, m, d, lam, zc, uc, gc, pos, buf, recip):
    """y[:m] = proj_Δ(prox_{lam TV}(z[:m])), screened; groups[i] = the position of the first entry of i's group.

    Screening rule: z_i <= t - 4 lam implies y_i = 0, for t = the sparsemax threshold of z, or any lower bound
    such as max(z) - 1. The TV prox moves no entry by more than 2 lam (u = z - Dᵀw with |w| <= lam), and
    t = (sum_S z - 1) / |S| for a set S (the support of sparsemax(z)), so the threshold of u is
    tau >= (sum_S u - 1) / |S| >= t - 2 lam >= z_i + 2 lam >= u_i. With those entries fixed at 0, the problem
    splits: each run of consecutive candidates keeps its own TV, and a screened neighbour adds
    lam |y_j - 0| = lam y_j, a linear term on the simplex, i.e. z_j shifted by -lam. The composition
    proj_Δ ∘ prox (see ``fusedmax``) holds for that TV on a union of chains as for one chain, so the candidates
    get proj_Δ of the per-run prox of the shifted scores.
    """
    top, low, total = _max_min_sum(z, m)
    if not (total - total == 0.0 or _all_finite(z, m)):
        _non_finite_row(y, d)
        for i in range(d):
            groups[i] = -1 if i >= m else i
        return 1
    width = 4.0 * lam + _SCREEN_MARGIN * (1.0 + 4.0 * lam)
    if abs(top) <= _SCREEN_LIMIT:
        if low > top - 1.0 - width:  # every entry kept (nearly uniform scores): _keep_positions' output, vectorized
            for i in range(m):
                zc[i] = np.float64(z[i])
                pos[i] = i
            k = m
        else:
            k = _keep_positions(z, m, top - 1.0 - width, zc, pos)
            low = _min_of(zc, k)
        # _refine keeps the candidates above a level <= top - width (its threshold is below top): when all are
        # (nearly uniform scores, an untrained model's), the pass that finds the level is skipped
        if low <= top - width:
            k = _refine(zc, pos, k, top, width, buf)[0]
    else:  # too large for the screening bounds to be exact: every entry is a candidate
        k = _keep_positions(z, m, -np.inf, zc, pos)
    if k < m:  # (with every entry a candidate, each is written below)
        for i in range(m):
            y[i] = 0.0
            groups[i] = i  # a screened entry is a group of its own, outside the support
    a = 0
    while a < k:
        if pos[k - 1] - pos[a] == k - 1 - a:  # the candidates left are consecutive: one run (every entry kept)
            b = k
        else:
            b = a + 1
            while b < k and pos[b] == pos[b - 1] + 1:
                b += 1
        if pos[a] > 0:
            zc[a] -= lam
        if pos[b - 1] < m - 1:
            zc[b - 1] -= lam
        if b - a == 1:  # most runs: the prox of one entry is itself (no slices, no call)
            uc[a] = zc[a]
            gc[a] = pos[a]
        elif b - a == 2:  # two entries fuse when they are within 2 lam, else move lam towards each other
            diff = zc[a] - zc[a + 1]
            if abs(diff) <= 2.0 * lam:
                uc[a] = uc[a + 1] = 0.5 * (zc[a] + zc[a + 1])
                gc[a] = gc[a + 1] = pos[a]
            else:
                step = lam if diff > 0.0 else -lam
                uc[a] = zc[a] - step
                uc[a + 1] = zc[a + 1] + step
                gc[a] = pos[a]
                gc[a + 1] = pos[a + 1]
        elif abs(top) <= _SCREEN_LIMIT:  # labels: the position of each run's first entry, written by the sweep
            _tv_prox_runs(zc[a:b], uc[a:b], gc[a:b], b - a, lam, recip, pos[a], True)
        else:  # scores so large that a running sum loses lam: Condat's sweep, on differences
            _tv_prox_row(zc[a:b], uc[a:b], gc[a:b], b - a, lam)
            previous = -1
            head = 0
            for j in range(a, b):  # segment index -> position of the segment's first entry, unique in the row
                if gc[j] != previous:
                    previous = gc[j]
                    head = pos[j]
                gc[j] = head
        a = b
    if k == m and k > 0:  # every entry a candidate (pos[j] = j): the same values, written in place, vectorized
        top_u, tau = _simplex_threshold_wide(uc, k, buf)
        for j in range(k):
            v = uc[j] - top_u - tau
            y[j] = v if v > 0.0 else 0.0
            groups[j] = gc[j]
    elif k > 0:
        top_u, tau = _simplex_threshold(uc, k, buf)
        for j in range(k):
            v = uc[j] - top_u - tau
            y[pos[j]] = v if v > 0.0 else 0.0
            groups[pos[j]] = gc[j]
    for i in range(m, d):
        y[i] = 0.0
        groups[i] = -1
    return 0


_POOL_BUCKETS = 64


@njit(cache=True, nogil=True)
def _pools_into_one_block(z, m, lam, total, sums, counts):
    """Whether the sorted prox of z[:m] is one block (all entries equal, so oscarmax's weights are uniform), proved
    without sorting; False may also mean "not proved".

    Pool adjacent violators on v_k = z_(k) - lam (m - k) gives one block iff no prefix has a larger mean than the
    whole: S_j / j - mean(z) <= lam (m - j) / 2 for every j, S_j the sum of the j largest scores. A histogram of
    the scores (count and exact sum per value bucket) gives S_j exactly where j ends a bucket, and within a bucket
    with upper edge h, S_j <= S_j0 + (j - j0) h; the bound over j is then convex (S_j0 >= j0 h), so checking each
    bucket's two ends suffices. This is the regime of long rows with a lam large against the scores' spread
    (d = 1000, lam = 0.01 on standard scores), where every weight is 1/m and there is nothing to sort.
    """
    low = np.inf
    high = -np.inf
    for i in range(m):
        v = np.float64(z[i])
        low = v if v < low else low
        high = v if v > high else high
    mean = total / m
    if high == low:
        return True
    buckets = min(_POOL_BUCKETS, m)
    step = (high - low) / buckets
    per_step = buckets / (high - low)
    for b in range(buckets):
        sums[b] = 0.0
        counts[b] = 0
    for i in range(m):
        v = np.float64(z[i])
        b = min(int((v - low) * per_step), buckets - 1)
        sums[b] += v
        counts[b] += 1
    slack = 1e-9 * (1.0 + abs(high) + abs(low))
    j0 = 0
    s0 = 0.0
    for b in range(buckets - 1, -1, -1):
        c = counts[b]
        if c == 0:
            continue
        edge = low + (b + 1) * step if b < buckets - 1 else high
        for j, bound in ((j0 + 1, s0 + edge), (j0 + c, s0 + c * edge)):
            if bound / j - mean > 0.5 * lam * (m - j) + slack and j < m:
                return False
        if j0 + c == m and c > 2:
            # the lowest bucket ends at j = m, where the bound proves nothing (its test is skipped above), so the
            # convexity argument does not cover the j inside it. There the test reads, with R the m - j smallest
            # scores (all in this bucket, so their mean is at least low): mean - mean(R) <= lam j / 2, which
            # mean - low <= lam (j0 + 1) / 2 guarantees for every such j. (Without this, a row of zeros and three
            # scores near -2 within one bucket, m = 400, lam = 0.01, was called one block when PAV gives two.)
            if mean - low > 0.5 * lam * (j0 + 1) + slack:
                return False
        j0 += c
        s0 += sums[b]
    return True


_FIRST_RANKS = 16  # the first screen keeps entries within lam * 16 of the sparsemax threshold (see below)
_WIDEN = 8.0  # each failed screen widens by this factor, up to the proven width lam (m - 1)
_POOLING_SPREAD = 0.7  # rows with top - mean <= this * lam (m - 1) start at the proven width (see below)
_BUCKET_SPAN = 1.0 - 1e-6  # bucket width / lam: below 1 by far more than the bucket index's rounding (~B 2^-52)


@njit(cache=True, nogil=True)
def _pool_buckets(zc, k, m, lam, low, per, nb, bcount, bsum, psum, pcnt, pend):
    """Pool adjacent violators for the sorted prox of the top k scores zc[:k] (ranks 0..k-1 of a row of m), without
    sorting them: returns (number of blocks, top_u, tau), tau the simplex threshold of the pooled values relative to
    their maximum top_u. Afterwards bucket b holds its value in bsum[b] and its block in bcount[b].

    The scores go into nb buckets of width 1 / per <= lam by value (the index is monotone in the value, so the
    buckets hold consecutive ranks). Two consecutive sorted scores in one bucket differ by at most lam, so their
    shifted values v_k = z_(k) - lam (m - 1 - k) do not decrease (v_(k+1) - v_k = lam - (z_(k) - z_(k+1)) >= 0),
    and pool adjacent violators pools such a pair (the optimal isotonic fit is constant on it). A bucket therefore
    lies inside one block, and PAV over the buckets as weighted units (count, sum of v over their ranks) gives the
    same blocks as PAV over the sorted entries: a sort of the k entries becomes one pass and a scan of nb buckets.
    """
    for b in range(nb):
        bcount[b] = 0
        bsum[b] = 0.0
    for j in range(k):
        b = int((zc[j] - low) * per)
        bcount[b] += 1
        bsum[b] += zc[j]
    n_blocks = 0
    rank = 0
    for b in range(nb - 1, -1, -1):  # from the largest scores down: rank order
        c = bcount[b]
        if c == 0:
            continue
        # the sum of v over ranks rank .. rank + c - 1: sum z - lam sum (m - 1 - r)
        s = bsum[b] - lam * (c * (m - 1 - rank) - 0.5 * c * (c - 1))
        rank += c
        while n_blocks > 0 and psum[n_blocks - 1] * c <= s * pcnt[n_blocks - 1]:  # as in _pav_decreasing_row
            n_blocks -= 1
            s += psum[n_blocks]
            c += pcnt[n_blocks]
        psum[n_blocks] = s
        pcnt[n_blocks] = c
        pend[n_blocks] = b  # the block's lowest bucket
        n_blocks += 1
    # each bucket's value and block (empty buckets too: never read)
    start = nb - 1
    for i in range(n_blocks):
        mean = psum[i] / pcnt[i]
        for b in range(start, pend[i] - 1, -1):
            bsum[b] = mean
            bcount[b] = i
        start = pend[i] - 1
    # the simplex threshold over the blocks, which come in decreasing order: a block is in the support iff its value
    # exceeds the threshold of the blocks up to it (equal values are never split)
    top_u = psum[0] / pcnt[0]
    total = 0.0
    count = 0
    for i in range(n_blocks):
        rel = psum[i] / pcnt[i] - top_u
        new_total = total + pcnt[i] * rel
        new_count = count + pcnt[i]
        if not rel > (new_total - 1.0) / new_count:
            break
        total = new_total
        count = new_count
    return n_blocks, top_u, (total - 1.0) / count


_BOUND_BUCKETS = 64


@njit(cache=True, nogil=True)
def _screened_v_bound(z, m, theta, lam, full, counts, highs):
    """An upper bound on v_k = z_(k) - lam (m - 1 - k) over the entries screened at theta (z <= theta), no sort.

    An entry's rank k is at most m - 1 - (the number of entries below it), so v <= z - lam * below. The entries
    go into _BOUND_BUCKETS buckets by value, over [theta - full, theta] (lower ones into the last bucket); every
    entry of a later bucket is strictly below every entry of an earlier one, so a bucket's largest value minus lam
    times the count of the later buckets bounds v over the bucket. Much tighter than theta (v <= z <= theta) when
    lam (m - 1) is large: the low entries, ranked last, are hardly shifted, but they are far below the threshold.
    """
    per = _BOUND_BUCKETS / full
    for b in range(_BOUND_BUCKETS):
        counts[b] = 0
        highs[b] = -np.inf
    for i in range(m):
        x = np.float64(z[i])
        if x <= theta:
            b = min(int((theta - x) * per), _BOUND_BUCKETS - 1)
            counts[b] += 1
            highs[b] = x if x > highs[b] else highs[b]
    bound = -np.inf
    below = 0
    for b in range(_BOUND_BUCKETS - 1, -1, -1):  # no test for empty buckets (-inf, count 0: no effect): a branch
        v = highs[b] - lam * below  # on a random pattern in a row's sparse upper buckets
        bound = v if v > bound else bound
        below += counts[b]
    return bound


@njit(cache=True, nogil=True)
def _sorted_sparsemax_row(z, y, groups, m, d, lam, negc, uc, pooled, blocks, pos, order, keys, keys_tmp, order_tmp,
                          hist, buf, bcount, bsum, psum, pcnt, pend):
    """y[:m] = proj_Δ(prox_{lam S}(z[:m])) with S(u) = sum_k (m - k) u_(k) (``oscarmax``'s exact variant), screened;
    groups[i] = the position of one entry of i's pooled block (the first sorted one where the candidates are sorted).

    Screening at a level theta: the candidates are the entries above theta, the top k of the row, so their ranks,
    hence their weights lam (m - rank), are known without sorting the rest. Pool adjacent violators on the
    candidates alone gives the final blocks of every block whose mean exceeds theta: a screened entry has
    v = z - lam (m - 1 - rank) <= z <= theta, so a later block's mean never exceeds max(theta, the means it absorbs)
    and it cannot absorb such a block; what it may absorb ends at most at theta. Hence if the threshold found on the
    candidates is >= theta, it is the threshold of the whole row and the screened entries get 0: the test below,
    whatever theta was. theta = t - lam (m - 1) (t as for fusedmax: the prox lowers every entry by between 0 and
    lam (m - 1), so tau >= (sum_S u - 1) / |S| >= t - lam (m - 1)) always passes in exact arithmetic, but it keeps
    most of a row of a few hundred standard-normal scores at lam = 0.01 (2.55 below t at m = 256), whose support is
    a handful of entries: the first screen is narrower (lam * _FIRST_RANKS below t), and widens on failure.
    A row that pools heavily (top - mean within _POOLING_SPREAD lam (m - 1), near the one-block regime below) has a
    large support: it starts at the proven width. (Standard-normal rows at lam = 0.01 show where that regime starts:
    with top - mean below 0.6 lam (m - 1) most supports are hundreds, between 0.7 and 1 a handful (means 2-8, from
    256 to 512 keys); at a factor of 1, a quarter of the rows of 256 keys sorted or bucketed ~200 candidates for
    that handful, a third of the kernel's time.) The candidates are then sorted (insertion or radix sort), or
    bucketed by value where buckets of width lam are few (``_pool_buckets``: no sort at all).
    """
    full = lam * (m - 1)
    top, total = _max_and_sum(z, m)
    if not (total - total == 0.0 or _all_finite(z, m)):
        _non_finite_row(y, d)
        for i in range(d):
            groups[i] = -1 if i >= m else i
        return 1
    if m > 1 and top - total / m <= 0.5 * full and _pools_into_one_block(z, m, lam, total, buf, pos):
        for i in range(m):
            y[i] = 1.0 / m
            groups[i] = 0
        for i in range(m, d):
            y[i] = 0.0
            groups[i] = -1
        return 0
    top_u = 0.0
    tau = 0.0
    low = 0.0
    per = 0.0
    bucketed = False
    screen = abs(top) <= _SCREEN_LIMIT  # else the bounds are not exact: the whole row at once
    # narrow first only where the proven width is wide against the sparsemax region (1 below the top) and the row
    # is not near the one-block regime; else a failed first screen costs more than it saves
    width = full if full <= 1.0 or top - total / m <= _POOLING_SPREAD * full else min(full, lam * _FIRST_RANKS)
    theta = -np.inf
    for i in range(m):
        y[i] = 0.0
        groups[i] = i  # a screened entry is a group of its own, outside the support
    while True:
        if screen:
            margin = width + _SCREEN_MARGIN * (1.0 + width)
            k = _keep_positions(z, m, top - 1.0 - margin, negc, pos)
            k, theta = _refine(negc, pos, k, top, margin, buf)
        else:  # rounding defeated the screen: the whole row
            k = m
            theta = -np.inf
            for i in range(m):
                negc[i] = z[i]
                pos[i] = i
        if k == 0:
            break
        bucketed = False
        if k > _INSERTION_SORT_MAX and lam > 0.0:
            low = negc[0]
            for j in range(1, k):
                low = negc[j] if negc[j] < low else low
            per = 1.0 / (lam * _BUCKET_SPAN)
            span = (top - low) * per
            bucketed = span < 4.0 * k and span < bcount.shape[0] - 1  # (False for nan or inf)
        if bucketed:
            nb = int((top - low) * per) + 1  # the largest index the pass gives, to the bit (the same expression)
            top_u, tau = _pool_buckets(negc, k, m, lam, low, per, nb, bcount, bsum, psum, pcnt, pend)[1:]
        else:
            for j in range(k):
                negc[j] = -negc[j]
            _stable_argsort(negc, k, order, keys, keys_tmp, order_tmp, hist)  # decreasing z, ties by position
            for j in range(k):
                uc[j] = -negc[order[j]] - lam * (m - 1 - j)
            _pav_decreasing_row(uc, pooled, blocks, k)
            top_u, tau = _simplex_threshold(pooled, k, buf)
        if k == m or top_u + tau >= theta:  # theta >= every screened score
            break
        # a tighter bound on the screened entries' v than theta: enough unless tau is really lower
        slack = _SCREEN_MARGIN * (1.0 + abs(top) + full)
        if full > 0.0 and top_u + tau >= _screened_v_bound(z, m, theta, lam, full, pcnt, psum) + slack:
            break
        if width < full:
            width = min(full, width * _WIDEN)
        else:
            screen = False
    if bucketed:
        for i in range(k):
            pend[i] = -1  # block -> label: the position of its first member met below
        for j in range(k):
            b = int((negc[j] - low) * per)
            block = bcount[b]
            i = pos[j]
            if pend[block] < 0:
                pend[block] = i
            v = bsum[b] - top_u - tau
            y[i] = v if v > 0.0 else 0.0
            groups[i] = pend[block]
    else:
        previous = -1
        head = 0
        for j in range(k):
            i = pos[order[j]]
            if blocks[j] != previous:
                previous = blocks[j]
                head = i
            v = pooled[j] - top_u - tau
            y[i] = v if v > 0.0 else 0.0
            groups[i] = head
    for i in range(m, d):
        y[i] = 0.0
        groups[i] = -1
    return 0


@njit(cache=True, nogil=True)
def _owl_sparsemax_row(z, y, groups, scale, m, d, lam, u, order, v, pooled, blocks, keys, keys_tmp, order_tmp, hist,
                       gbuf):
    """The authors' OWL composition on the whole row (no screening: OWL is not shift invariant)."""
    top, finite = _row_top(z, m)
    if not finite:
        _non_finite_row(y, d)
        for i in range(d):
            groups[i] = -1 if i >= m else i
            scale[i] = 0.0
        return 1
    _sorted_prox_row(z, u, gbuf, scale, m, lam, PROX_OWL, order, v, pooled, blocks, keys, keys_tmp, order_tmp,
                     hist)
    for i in range(m):
        groups[i] = gbuf[i]
    _sparsemax_row(u, y, m)
    _clear_tail_row(y, groups, scale, m, d)
    return 0


@njit(cache=True, parallel=True)
def prox_sparsemax_forward(z, lengths, lam, variant, y, groups, scale):
    """y = sparsemax(prox(z)) row by row; groups (and, for OWL, scale) describe the prox's Jacobian.

    ``lam`` holds one value, or one per row. Returns the number of rows with a non-finite valid score.
    """
    n, d = z.shape
    n_chunks = _chunks(n)
    bad = 0
    for c in prange(n_chunks):
        # scratch, once per chunk: the sort's buffers only where a sort runs, the radix sort's for long rows. Two
        # allocations cut into pieces: fifteen separate ones cost more than the rows of a short chunk
        ds = 0 if variant == PROX_TV else d
        dr = ds if d > _INSERTION_SORT_MAX else 0
        hr = 8 * 256 if dr else 0
        db = 2 * d + 2 + _BOUND_BUCKETS if variant == PROX_SORTED else 0  # _pool_buckets', _screened_v_bound's
        dt = d + 1 if variant == PROX_TV else 0  # the TV sweep's reciprocals (_fill_reciprocals)
        floats = np.empty(3 * d + ds + 2 * db + dt, dtype=np.float64)
        zc = floats[:d]
        uc = floats[d:2 * d]
        buf = floats[2 * d:3 * d]
        pooled = floats[3 * d:3 * d + ds]
        bsum = floats[3 * d + ds:3 * d + ds + db]
        psum = floats[3 * d + ds + db:3 * d + ds + 2 * db]
        recip = floats[3 * d + ds + 2 * db:]
        _fill_reciprocals(recip, dt)
        ints = np.empty(2 * d + 3 * ds + 2 * dr + hr + 3 * db, dtype=np.int64)
        gc = ints[:d]
        pos = ints[d:2 * d]
        at = 2 * d
        order = ints[at:at + ds]
        blocks = ints[at + ds:at + 2 * ds]
        keys = ints[at + 2 * ds:at + 3 * ds].view(np.uint64)
        at += 3 * ds
        keys_tmp = ints[at:at + dr].view(np.uint64)
        order_tmp = ints[at + dr:at + 2 * dr]
        hist = ints[at + 2 * dr:at + 2 * dr + hr].reshape((hr // 256, 256))
        at += 2 * dr + hr
        bcount = ints[at:at + db]
        pcnt = ints[at + db:at + 2 * db]
        pend = ints[at + 2 * db:at + 3 * db]
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            m = lengths[r]
            lam_r = lam[0] if lam.shape[0] == 1 else lam[r]
            if variant == PROX_TV:
                bad += _tv_sparsemax_row(z[r], y[r], groups[r], m, d, lam_r, zc, uc, gc, pos, buf, recip)
            elif variant == PROX_SORTED:
                bad += _sorted_sparsemax_row(z[r], y[r], groups[r], m, d, lam_r, zc, uc, pooled, blocks, pos, order,
                                             keys, keys_tmp, order_tmp, hist, buf, bcount, bsum, psum, pcnt, pend)
            else:
                bad += _owl_sparsemax_row(z[r], y[r], groups[r], scale[r], m, d, lam_r, uc, order, zc, pooled,
                                          blocks, keys, keys_tmp, order_tmp, hist, gc)
    return bad


@njit(cache=True, parallel=True)
def prox_sparsemax_backward(grad, y, groups, lengths, out):
    """Vector-Jacobian product of y = sparsemax(prox(z)) for the exact proxes (TV, sorted); J is symmetric.

    sparsemax: centre the gradient on the support of y. prox: average it over each group (fused run or pooled
    block). A group shares one prox value, so it lies wholly inside or wholly outside the support: only the
    support's groups are visited, and everything else is 0.
    """
    n, d = grad.shape
    n_chunks = _chunks(n)
    for c in prange(n_chunks):
        ints = np.empty(2 * d, dtype=np.int64)  # one allocation, two pieces (see prox_sparsemax_forward)
        sup = ints[:d]
        sizes = ints[d:]
        sums = np.empty(d, dtype=np.float64)
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            m = lengths[r]
            _centre_on_support(grad[r], y[r], out[r], m, d)
            s = 0
            for i in range(m):  # the support, compacted (branch-free: a rejected position is overwritten)
                sup[s] = i
                s += 1 if y[r, i] > 0.0 else 0
            if s == 0:
                continue
            if s > 16:  # labels are < m: clearing them all is cheaper than visiting the support once more
                sums[:m] = 0.0
                sizes[:m] = 0
            else:
                for t in range(s):
                    label = groups[r, sup[t]]
                    sums[label] = 0.0
                    sizes[label] = 0
            # A long row's support is mostly one pooled block (nearly all of it from 512 keys), whose scattered
            # sum chained every entry through one memory slot. The label in the middle of the support is summed
            # in a register instead, in the same order from the same 0.0 (adding 0.0 for the others changes no
            # bit: a sum from 0.0 is never -0.0), and only the other labels scatter: a branch, taken the same way
            # for most entries of such a row (a select and a store to a spare slot cost more than the chain). A
            # short support (mostly singletons) would mispredict it: no label is taken out there (big = -1).
            big = groups[r, sup[s // 2]] if s > 16 else -1
            total = 0.0
            count = 0
            for t in range(s):
                i = sup[t]
                label = groups[r, i]
                x = out[r, i]
                mine = label == big
                total += x if mine else 0.0
                count += 1 if mine else 0
                if not mine:
                    sums[label] += x
                    sizes[label] += 1
            mean = total / count if count > 0 else 0.0
            for t in range(s):
                i = sup[t]
                label = groups[r, i]
                if label == big:
                    out[r, i] = mean
                else:
                    out[r, i] = sums[label] / sizes[label]


@njit(cache=True, parallel=True)
def tv_sparsemax_backward(grad, y, groups, lengths, out):
    """prox_sparsemax_backward for the TV prox (fusedmax), bit for bit: its groups are runs of consecutive
    positions (a fused run, or a screened entry alone), so each run of the support is summed in one register, in
    the same order as the scattered sums there, and written back once. On nearly uniform rows (an untrained
    model: one or two runs hold the whole row) the scattered sums chained every entry through one memory slot."""
    n, d = grad.shape
    n_chunks = _chunks(n)
    for c in prange(n_chunks):
        sup = np.empty(d, dtype=np.int64)
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            m = lengths[r]
            _centre_on_support(grad[r], y[r], out[r], m, d)
            s = 0
            for i in range(m):  # the support, compacted (branch-free: a rejected position is overwritten)
                sup[s] = i
                s += 1 if y[r, i] > 0.0 else 0
            t = 0
            while t < s:
                first = sup[t]
                label = groups[r, first]
                total = 0.0
                end = first
                while end < m and groups[r, end] == label:  # the run: every entry of it is in the support
                    total += out[r, end]
                    end += 1
                mean = total / (end - first)
                for i in range(first, end):
                    out[r, i] = mean
                t += end - first


@njit(cache=True, parallel=True)
def owl_sparsemax_backward(grad, y, groups, scale, lengths, out):
    """The same for the OWL prox, whose Jacobian is D A D with D = diag(scale) (signs, 0 where clipped): its
    blocks pool |u|, so a block may straddle the support and every entry is visited."""
    n, d = grad.shape
    n_chunks = _chunks(n)
    for c in prange(n_chunks):
        sums = np.empty(d, dtype=np.float64)
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
            for k in range(m):
                sums[k] = 0.0
                sizes[k] = 0
            for i in range(m):
                g = grad[r, i] - mean if y[r, i] > 0.0 else 0.0
                k = groups[r, i]
                sums[k] += scale[r, i] * g
                sizes[k] += 1
            # one division a group; scale is 1, -1 or 0, so scale * (s / n) is (scale * s) / n bit for bit
            for k in range(m):
                if sizes[k] > 0:
                    sums[k] = sums[k] / sizes[k]
            for i in range(m):
                out[r, i] = scale[r, i] * sums[groups[r, i]]
            for i in range(m, d):
                out[r, i] = 0.0


# ---------------------------------------------------------------- sq-pnorm-max and alpha-entmax

_NEWTON_MAX_STEPS = 200
_NEWTON_TOL = 1e-15  # on tau, which lives in [-1, 0) relative to the row's maximum: float64 resolution
_ENTMAX_X_MAX = 1e-6  # see _entmax_norm_newton: (power * delta / t)^3 under float64 resolution


@njit(cache=True, nogil=True)
def _drop_at_or_below(buf, count, tau):
    """Compact buf[:count] to the values above tau (a lower bound of the threshold); returns how many."""
    c = 0
    for j in range(count):
        v = buf[j]
        buf[c] = v
        c += 1 if v > tau else 0
    return c


@njit(cache=True, nogil=True)
def _pnorm_h(buf, k, tau, q):
    """h(tau) = (q + 1) log A - (q - 1) log B and h'(tau), A = sum d^q, B = sum d^(q+1), d = (c - tau)_+.

    Evaluated with d / delta, delta = -tau = the largest d, so that A, B >= 1 never under- or overflow.
    """
    delta = -tau
    a = 0.0
    b = 0.0
    cc = 0.0
    for j in range(k):
        t = (buf[j] - tau) / delta
        if t > 0.0:
            tq = np.exp(q * np.log(t))
            a += tq
            b += tq * t
            cc += tq / t
    h = (q + 1.0) * (np.log(delta) + np.log(a)) - (q - 1.0) * np.log(b)
    dh = (q + 1.0) / delta * (-q * cc / a + (q - 1.0) * a / b)
    return h, dh


@njit(cache=True, nogil=True)
def _sq_pnorm_row(z, out, m, d, p, buf, spare):
    """out[:m] = argmax_{y in simplex} <y, z> - ½‖y‖_p² for 1 < p <= 2 (``sq_pnorm_max``).

    On the support, ∇½‖y‖_p² = ‖y‖_p^(2-p) y^(p-1) = z - tau, so y = w / sum(w) with w = (z - tau)_+^q,
    q = 1/(p-1), and the normalisation forces sum(w) = ‖w‖_p^(2-p), i.e. h(tau) = 0 for h as in ``_pnorm_h``.
    h is strictly decreasing (h' has the sign of (q-1) A² - q B C < 0 by Cauchy-Schwarz, A² <= B C), positive at
    tau = max(z) - 1 (all d <= 1 there, so B <= A and A >= 1) and -> -inf at max(z): one root, and the entries
    below max(z) - 1 are screened out. Safeguarded Newton keeps the bracket [lo, hi] around the root, takes the
    Newton step when it lands inside and bisects otherwise: it always converges (the bracket shrinks), and
    quadratically near the root (h is smooth with h' < 0 there). Stops when a step moves tau by < 1e-15.
    """
    top, finite = _row_top(z, m)
    if not finite:
        _non_finite_row(out, d)
        return 1
    if m > 0:
        count, total = _screen_candidates(z, m, top, buf)
        q = 1.0 / (p - 1.0)
        # start from the sparsemax threshold (the root for p = 2; Michelot compacts its input, hence the copy)
        for j in range(count):
            spare[j] = buf[j]
        tau = _michelot(spare, count, total)
        lo = -1.0
        hi = 0.0
        for step in range(_NEWTON_MAX_STEPS):
            if not (lo <= tau < hi):
                tau = 0.5 * (lo + hi)
            h, dh = _pnorm_h(buf, count, tau, q)
            if h == 0.0:
                break
            if h > 0.0:
                lo = tau
                count = _drop_at_or_below(buf, count, tau)  # tau < root: those never enter the support
            else:
                hi = tau
            new = tau - h / dh
            if abs(new - tau) < _NEWTON_TOL:  # before the bracket test: at the root, new == tau == lo or hi
                tau = new
                break
            tau = new if lo < new < hi else 0.5 * (lo + hi)
        delta = -tau
        total = 0.0
        for i in range(m):
            t = (z[i] - top - tau) / delta
            w = np.exp(q * np.log(t)) if t > 0.0 else 0.0
            out[i] = w
            total += w
        for i in range(m):
            out[i] = out[i] / total
    for i in range(m, d):
        out[i] = 0.0
    return 0


@njit(cache=True, parallel=True)
def sq_pnorm_forward(z, lengths, p, out):
    """out = argmax_{y in simplex} <y, z> - ½‖y‖_p² row by row; returns the number of non-finite rows."""
    n, d = z.shape
    n_chunks = _chunks(n)
    bad = 0
    for c in prange(n_chunks):
        buf = np.empty(d, dtype=np.float64)
        spare = np.empty(d, dtype=np.float64)
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            bad += _sq_pnorm_row(z[r], out[r], lengths[r], d, p, buf, spare)
    return bad


@njit(cache=True, nogil=True)
def _entmax_f(buf, k, tau, power):
    """f(tau) = sum (c - tau)_+^power - 1 and f'(tau)."""
    f = -1.0
    df = 0.0
    for j in range(k):
        t = buf[j] - tau
        if t > 0.0:
            tp = np.exp(power * np.log(t))
            f += tp
            df -= power * tp / t
    return f, df


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def _entmax_start(buf, k, scale):
    """A point left of the entmax threshold (f >= 0 there, f as in _entmax_f with power = 1 / scale >= 1), from
    Jensen's inequality: for any set S of the values c in buf[:k], sum_S (c - tau)_+^power >= |S| (mean_S c -
    tau)_+^power, which is 1 at tau = mean_S c - |S|^(-scale); the largest such tau over S = {c > level}, for
    the levels -3/4, -1/2, -1/4, -1/8, -1/16 and S = all, from one branch-free pass (the values are <= 0, their
    maximum is 0)."""
    total = 0.0
    t1 = t2 = t3 = t4 = t5 = 0.0
    n1 = n2 = n3 = n4 = n5 = 0.0
    for j in range(k):
        v = buf[j]
        total += v
        a1 = np.float64(v > -0.75)
        a2 = np.float64(v > -0.5)
        a3 = np.float64(v > -0.25)
        a4 = np.float64(v > -0.125)
        a5 = np.float64(v > -0.0625)
        t1 += a1 * v
        t2 += a2 * v
        t3 += a3 * v
        t4 += a4 * v
        t5 += a5 * v
        n1 += a1
        n2 += a2
        n3 += a3
        n4 += a4
        n5 += a5
    best = total / k - np.exp(-scale * np.log(np.float64(k)))
    for t, c in ((t1, n1), (t2, n2), (t3, n3), (t4, n4), (t5, n5)):
        if c > 0.0:
            best = max(best, t / c - np.exp(-scale * np.log(c)))
    return best


@intrinsic
def _f2i(typingctx, x):
    """The bits of a float64 as an int64 (a bitcast: no instruction, vectorizes)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))
    return types.int64(types.float64), codegen


@intrinsic
def _i2f(typingctx, x):
    """The float64 with the bits of an int64."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))
    return types.float64(types.int64), codegen


_FAST = {"reassoc", "nsz", "contract"}


@njit(cache=True, inline="always", fastmath=_FAST, error_model="numpy")
def _pow_fast(t, a):
    """t^a = exp(a log t) for t > 0 and a log t <= 709, branch-free, so that loops of it vectorize: libm's
    exp and log are calls, which do not (no SVML here), and they were most of entmax's time. The error is that of
    exp(a * log(t)) in libm, |a log t| * 1e-16 relative: log t = e ln 2 + 2 atanh(s), s = (m - 1) / (m + 1) for
    the mantissa m in [sqrt(1/2), sqrt(2)) (|s| <= 0.172: 12 odd terms reach 1e-18), exp y = 2^k exp(r), |r| <=
    ln(2) / 2 (Cody-Waite's split of ln 2; 14 Taylor terms reach 4e-18). int64 <-> float64 conversions do not
    vectorize without AVX-512, so the exponents go through the low bits of 2^52 + n. Divisions in this function
    must not check for zero (error_model numpy): the check is a branch, which stops vectorization."""
    tiny = t < 1e-290  # subnormals (and their neighbours) scaled by 2^64 first, so that the bits hold e and m
    t = t * 18446744073709551616.0 if tiny else t
    bits = _f2i(t)
    e = _i2f((bits >> 52) | 0x4330000000000000) - (4503599627371583.0 if tiny else 4503599627371519.0)
    m = _i2f((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > 1.4142135623730951
    m = m * 0.5 if big else m
    e = e + 1.0 if big else e
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    q = 1.0 / 23.0  # Horner written out: a loop over a tuple of coefficients stops vectorization
    q = q * s2 + 1.0 / 21.0
    q = q * s2 + 1.0 / 19.0
    q = q * s2 + 1.0 / 17.0
    q = q * s2 + 1.0 / 15.0
    q = q * s2 + 1.0 / 13.0
    q = q * s2 + 1.0 / 11.0
    q = q * s2 + 1.0 / 9.0
    q = q * s2 + 1.0 / 7.0
    q = q * s2 + 1.0 / 5.0
    q = q * s2 + 1.0 / 3.0
    y = a * (e * 0.6931471805599453 + 2.0 * s + 2.0 * s * s2 * q)
    k = np.floor(y * 1.4426950408889634 + 0.5)
    r = (y - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10
    x = 1.0 / 6227020800.0
    x = x * r + 1.0 / 479001600.0
    x = x * r + 1.0 / 39916800.0
    x = x * r + 1.0 / 3628800.0
    x = x * r + 1.0 / 362880.0
    x = x * r + 1.0 / 40320.0
    x = x * r + 1.0 / 5040.0
    x = x * r + 1.0 / 720.0
    x = x * r + 1.0 / 120.0
    x = x * r + 1.0 / 24.0
    x = x * r + 1.0 / 6.0
    x = x * r + 1.0 / 2.0
    x = x * r + 1.0 / 1.0
    x = x * r + 1.0 / 1.0
    # 2^k from the low bits of 2^52 + 1023 + k; below e^-708 the result is 0 (libm: subnormal, below 5e-324 0)
    return x * _i2f(_f2i((k if k > -1022.0 else -1022.0) + 4503599627371519.0) << 52) if y > -708.0 else 0.0


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _pow_fast_inplace(x, k, a):
    """x[:k] = x[:k]^a for x > 0, vectorized (``_pow_fast``)."""
    for j in range(k):
        x[j] = _pow_fast(x[j], a)


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _entmax_norm_pass(buf, k, tau, power, w):
    """S = sum t^power, D = sum t^(power - 1) and E = sum t^(power - 2), t = (c - tau)_+; w[:k] = t^power.
    Branch-free (t <= 0 is computed as t = 1 and masked), so the one power a candidate vectorizes (``_pow_fast``;
    a running minimum would not: numba's min is NaN-aware)."""
    s = 0.0
    dsum = 0.0
    esum = 0.0
    for j in range(k):
        t = buf[j] - tau
        # selects, not min/max (NaN-aware in numba: they do not vectorize)
        keep = 1.0 if t > 0.0 else 0.0
        t = t if t > 0.0 else 1.0
        u2 = keep * _pow_fast(t, power - 2.0)
        u = u2 * t
        tp = u * t
        w[j] = tp
        s += tp
        dsum += u
        esum += u2
    return s, dsum, esum


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def _entmax_correct(buf, w, k, tau, delta, power):
    """w[:k] = (t - delta)^power to second order from w = t^power, t = (c - tau)_+ (see _entmax_norm_newton);
    returns their sum. Branch-free (w = 0 where t <= 0), so it vectorizes."""
    c2 = 0.5 * power * (power - 1.0)
    total = 0.0
    for j in range(k):
        t = buf[j] - tau
        x = delta / (t if t > 0.0 else 1.0)
        v = w[j] * (1.0 - x * (power - c2 * x))
        w[j] = v
        total += v
    return total


@njit(cache=True, nogil=True)
def _smallest_above(buf, k, tau):
    """The smallest c - tau > 0 over buf[:k] (1 if none)."""
    tmin = 1.0
    for j in range(k):
        t = buf[j] - tau
        if 0.0 < t < tmin:
            tmin = t
    return tmin


@njit(cache=True, nogil=True)
def _drop_with_index(buf, order, w, count, tau):
    """_drop_at_or_below, moving order[:count] and w[:count] along with buf."""
    c = 0
    for j in range(count):
        v = buf[j]
        buf[c] = v
        order[c] = order[j]
        w[c] = w[j]
        c += 1 if v > tau else 0
    return c


@njit(cache=True, nogil=True)
def _entmax15_tau(buf, k, order, keys, keys_tmp, order_tmp, hist, neg):
    """The 1.5-entmax threshold of buf[:k] (relative values, max 0), exactly: sort-based (Peters et al., 2019).

    With the values sorted decreasingly, a support of size j has tau_j = mean_j - sqrt((1 - ss_j) / j), ss_j the
    sum of squared deviations from mean_j; the support size is the number of j with tau_j <= the j-th value.

    First, without sorting: when tau_k, the threshold of all k values as the support, lies at or below the lowest
    of them, it is the threshold (f(tau) = sum (v - tau)_+^2 - 1 is then 0 at tau_k, and it has one root). Nearly
    uniform rows (an untrained model's attention) end here; a sparse row fails the test after one pass.
    """
    if k > 0:
        total = 0.0
        total_sq = 0.0
        low = buf[0]
        for j in range(k):
            v = buf[j]
            total += v
            total_sq += v * v
            low = min(low, v)
        mean = total / k
        delta = (1.0 - (total_sq - k * mean * mean)) / k
        if delta >= 0.0:
            tau = mean - np.sqrt(delta)
            if tau <= low:
                return tau
    for j in range(k):
        neg[j] = -buf[j]
    _stable_argsort(neg, k, order, keys, keys_tmp, order_tmp, hist)
    total = 0.0
    total_sq = 0.0
    support = 0
    tau_star = 0.0
    for j in range(k):
        v = buf[order[j]]
        total += v
        total_sq += v * v
        size = j + 1.0
        mean = total / size
        ss = total_sq - size * mean * mean
        delta = (1.0 - ss) / size
        tau = mean - np.sqrt(delta if delta > 0.0 else 0.0)
        if tau <= v:
            support += 1
            tau_star = tau
    return tau_star if support > 0 else -1.0


@njit(cache=True, nogil=True)
def _entmax_norm_newton(out, m, buf, count, scale, order, w):
    """alpha-entmax for 1 < alpha <= 2 (power = 1 / scale >= 1) on the candidates buf[:count] (relative values, max
    0; order holds their positions), by Halley's method on g(tau) = ||(c - tau)_+||_power - 1 rather than Newton
    on f = g^power - 1. g is convex and decreasing (a norm of a convex, nonnegative vector; g'' >= 0 is
    Cauchy-Schwarz below) and nearly linear (exactly so while the support holds one entry) where f is as curved as
    t^power, and Halley's step converges cubically: about three passes instead of six, each an exp and a log per
    candidate left (g'' costs two products more). From a point left of the root, Halley's step is at least
    Newton's (g > 0, g'' >= 0); when it would be more than twice Newton's (g'' large: an entry just above tau),
    Newton's is taken, which stays left of the root.

    The last pass's powers w = t^power are reused for the output: at the last step delta (tau + delta the final
    threshold), (t - delta)^power = w (1 - power x + power (power - 1) / 2 x^2 + O(x^3)), x = delta / t, and the
    iteration stops when power * delta <= _ENTMAX_X_MAX * the smallest t in the support, where the neglected
    terms (and Halley's own error, O(delta^3 / t^2)) are far below float64 resolution of the weights: the
    separate output pass of exps and logs is saved. Returns -1; or, if Halley has not converged in
    _NEWTON_MAX_STEPS, having written nothing, the number of candidates left in buf (only those at or below a
    point left of the root were dropped) for the caller's safeguarded Newton on f."""
    power = 1.0 / scale
    lo = max(-1.0, _entmax_start(buf, count, scale))
    hi = -np.exp(scale * np.log(1.0 / count))
    tau = lo
    # the passes compute the power of every entry (branch-free): those at or below the start first leave
    count = _drop_with_index(buf, order, w, count, lo)
    for step in range(_NEWTON_MAX_STEPS):
        s, dsum, esum = _entmax_norm_pass(buf, count, tau, power, w)
        if s >= 1.0:
            lo = tau
            count = _drop_with_index(buf, order, w, count, tau)  # tau <= root: those never enter the support
        else:
            hi = tau
        if dsum > 0.0:
            # g = s^scale - 1, g' = -dsum s^(scale - 1), g'' = (power - 1) s^(scale - 2) (esum s - dsum^2)
            sr = np.exp(scale * np.log(s))
            g = sr - 1.0
            dg = -dsum * sr / s
            ddg = (power - 1.0) * sr / (s * s) * (esum * s - dsum * dsum)
            newton = -g / dg
            den = 2.0 * dg * dg - g * ddg
            delta = 2.0 * g * -dg / den if den > dg * dg else newton
        else:
            delta = 0.5 * (lo + hi) - tau
        new = tau + delta
        if s == 1.0 or (dsum > 0.0 and power * abs(delta) <= _ENTMAX_X_MAX and
                        power * abs(delta) <= _ENTMAX_X_MAX * _smallest_above(buf, count, tau)):
            for i in range(m):
                out[i] = 0.0
            total = _entmax_correct(buf, w, count, tau, delta, power)
            for j in range(count):
                out[order[j]] = w[j] / total
            return -1
        tau = new if lo < new < hi else 0.5 * (lo + hi)
    return count


@njit(cache=True, nogil=True)
def _entmax_row(z, out, m, d, alpha, buf, order, keys, keys_tmp, order_tmp, hist, neg):
    """out[:m] = alpha-entmax(z[:m]) = argmax_{y in simplex} <y, z> + H_alpha^T(y) (Peters et al., 2019):
    y = ((alpha - 1) z - tau)_+^(1/(alpha - 1)), tau such that sum(y) = 1.

    tau >= max((alpha - 1) z) - 1 (no weight exceeds 1), so only the entries above are candidates. alpha = 1.5:
    the exact sort-based threshold on the candidates. Otherwise f(tau) = sum(y) - 1 is strictly decreasing on
    the bracket [max - 1, max - k^(1 - alpha)] (f >= 0 at the left end, <= 0 at the right), and the same
    safeguarded Newton as ``_sq_pnorm_row`` (bisection when a Newton step leaves the bracket) converges; y is then
    divided by its sum, as the entmax package does. For alpha <= 2 Halley's method on the p-norm form of the same
    equation runs first (``_entmax_norm_newton``); the Newton iteration on f is its fallback and alpha > 2's.
    """
    scale = alpha - 1.0
    top, finite = _row_top(z, m)
    if not finite:
        _non_finite_row(out, d)
        return 1
    if m > 0:
        top = scale * top
        count = 0
        for i in range(m):
            v = scale * z[i] - top
            buf[count] = v
            order[count] = i
            if v > -1.0:
                count += 1
        power = 1.0 / scale
        if alpha == 1.5:
            tau = _entmax15_tau(buf, count, order, keys, keys_tmp, order_tmp, hist, neg)
            for i in range(m):
                t = scale * z[i] - top - tau
                out[i] = t * t if t > 0.0 else 0.0
        else:
            lo = -1.0
            hi = -np.exp(scale * np.log(1.0 / count))
            if hi > lo and alpha <= 2.0:
                count = _entmax_norm_newton(out, m, buf, count, scale, order, neg)
                if count < 0:
                    for i in range(m, d):
                        out[i] = 0.0
                    return 0
                hi = -np.exp(scale * np.log(1.0 / count))
            # f is convex for alpha <= 2 (power >= 1), concave above: Newton from the left end, resp. the right
            # end, then moves monotonically towards the root and never needs the safeguard in exact arithmetic
            tau = lo if alpha <= 2.0 else hi
            if hi > lo and alpha <= 2.0:
                # a start nearer the root: fewer Newton steps, each an exp and a log per candidate left
                tau = max(lo, _entmax_start(buf, count, scale))
                lo = tau
            if hi > lo:
                for step in range(_NEWTON_MAX_STEPS):
                    f, df = _entmax_f(buf, count, tau, power)
                    if f == 0.0:
                        break
                    if f > 0.0:
                        lo = tau
                        count = _drop_at_or_below(buf, count, tau)  # tau < root: those never enter the support
                    else:
                        hi = tau
                    new = tau - f / df if df < 0.0 else 0.5 * (lo + hi)
                    if abs(new - tau) < _NEWTON_TOL:  # before the bracket test: at the root, new == lo or hi
                        tau = new
                        break
                    tau = new if lo < new < hi else 0.5 * (lo + hi)
            else:
                tau = lo
            total = 0.0
            for i in range(m):
                t = scale * z[i] - top - tau
                w = np.exp(power * np.log(t)) if t > 0.0 else 0.0
                out[i] = w
                total += w
            for i in range(m):
                out[i] = out[i] / total
    for i in range(m, d):
        out[i] = 0.0
    return 0


@njit(cache=True, parallel=True)
def entmax_forward(z, lengths, alpha, out):
    """out = alpha-entmax(z) row by row; ``alpha`` holds one value, or one per row. Returns the number of
    non-finite rows."""
    n, d = z.shape
    n_chunks = _chunks(n)
    bad = 0
    for c in prange(n_chunks):
        # two allocations cut into pieces (see prox_sparsemax_forward)
        dr = d if d > _INSERTION_SORT_MAX else 0
        hr = 8 * 256 if dr else 0
        floats = np.empty(2 * d, dtype=np.float64)
        buf = floats[:d]
        neg = floats[d:]
        ints = np.empty(2 * d + 2 * dr + hr, dtype=np.int64)
        order = ints[:d]
        keys = ints[d:2 * d].view(np.uint64)
        keys_tmp = ints[2 * d:2 * d + dr].view(np.uint64)
        order_tmp = ints[2 * d + dr:2 * d + 2 * dr]
        hist = ints[2 * d + 2 * dr:].reshape((hr // 256, 256))
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            alpha_r = alpha[0] if alpha.shape[0] == 1 else alpha[r]
            bad += _entmax_row(z[r], out[r], lengths[r], d, alpha_r, buf, order, keys, keys_tmp, order_tmp, hist,
                               neg)
    return bad


@njit(cache=True, parallel=True)
def entmax_backward(grad, y, lengths, alpha, out):
    """Jᵀ grad for alpha-entmax: s = y^(2 - alpha) on the support, J = diag(s) - s sᵀ / sum(s). Only the
    support is visited (the power is taken there only). ``alpha``: one value, or one per row."""
    n, d = grad.shape
    n_chunks = _chunks(n)
    for c in prange(n_chunks):
        sup = np.empty(d, dtype=np.int64)
        sv = np.empty(d, dtype=np.float64)
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            m = lengths[r]
            alpha_r = alpha[0] if alpha.shape[0] == 1 else alpha[r]
            k = 0
            for i in range(m):
                sup[k] = i
                k += 1 if y[r, i] > 0.0 else 0
            for i in range(d):
                out[r, i] = 0.0
            total_s = 0.0
            total_gs = 0.0
            for t in range(k):
                sv[t] = np.float64(y[r, sup[t]])
            if alpha_r == 1.5:
                for t in range(k):
                    sv[t] = np.sqrt(sv[t])
            else:
                _pow_fast_inplace(sv, k, 2.0 - alpha_r)
            for t in range(k):
                total_s += sv[t]
                total_gs += grad[r, sup[t]] * sv[t]
            if k > 0:
                q = total_gs / total_s
                for t in range(k):
                    out[r, sup[t]] = (grad[r, sup[t]] - q) * sv[t]


@njit(cache=True, parallel=True)
def sq_pnorm_backward(grad, y, lengths, p, out):
    """Jᵀ grad for sq-pnorm-max (see ``_torch.sq_pnorm_backward`` for the formula), on the support only."""
    n, d = grad.shape
    n_chunks = _chunks(n)
    for c in prange(n_chunks):
        sup = np.empty(d, dtype=np.int64)
        wv = np.empty(d, dtype=np.float64)
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            m = lengths[r]
            k = 0
            for i in range(m):
                sup[k] = i
                k += 1 if y[r, i] > 0.0 else 0
            for i in range(d):
                out[r, i] = 0.0
            if k == 0:
                continue
            norm_p = 0.0
            yg = 0.0
            for t in range(k):
                v = np.float64(y[r, sup[t]])
                lv = np.log(v)
                norm_p += np.exp(p * lv)
                wv[t] = np.exp((2.0 - p) * lv)
                yg += v * grad[r, sup[t]]
            coef = (2.0 - p) / norm_p
            sum_a = 0.0
            sum_b = 0.0
            for t in range(k):
                v = np.float64(y[r, sup[t]])
                sum_a += wv[t] * grad[r, sup[t]] - coef * v * yg
                sum_b += wv[t] - coef * v
            ratio = sum_a / sum_b
            kappa = (p - 1.0) * np.exp((2.0 - p) / p * np.log(norm_p))
            for t in range(k):
                v = np.float64(y[r, sup[t]])
                a = wv[t] * grad[r, sup[t]] - coef * v * yg
                b = wv[t] - coef * v
                out[r, sup[t]] = (a - ratio * b) / kappa


# ---------------------------------------------------------------- the rows' order (``_layout.valid_first_order``)


@njit(cache=True, parallel=True)
def valid_first_order(valid, order):
    """order[r, k] = the position that goes to slot k of row r of the bool (rows, d) ``valid``: the valid ones
    first, each group in its original order (a stable sort of the "is masked" flags), in one pass per row."""
    n, d = valid.shape
    for r in prange(n):
        slot = 0
        for j in range(d):
            if valid[r, j]:
                order[r, slot] = j
                slot += 1
        for j in range(d):
            if not valid[r, j]:
                order[r, slot] = j
                slot += 1


# ------------------------------------------------ a mask's lengths and prefix test (``_layout.to_rows``)


@njit(cache=True)
def mask_lengths(valid, lengths):
    """lengths[r] = the number of True entries of row r of the (rows, d) ``valid`` (a bool mask viewed as uint8:
    0/1); returns whether every row is a prefix (no False followed by a True), in one pass (torch needs a sum and
    a shifted and/any pass). Branch-free in the inner loop, so it vectorizes."""
    n, d = valid.shape
    rises = 0
    for r in range(n):
        count = np.int64(valid[r, 0])
        rise = np.int64(0)
        for j in range(1, d):
            count += valid[r, j]
            rise += valid[r, j] & (valid[r, j - 1] ^ 1)  # a True right after a False
        lengths[r] = count
        rises += rise
    return rises == 0


@njit(cache=True)
def all_true(valid):
    """Whether every entry of the flat bool ``valid`` is True, stopping at the first False."""
    for i in range(valid.shape[0]):
        if not valid[i]:
            return False
    return True
