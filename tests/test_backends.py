"""The device-agnostic torch kernels (attention/_torch.py, the CUDA path) against the numba CPU kernels.

Both take (rows, d) inputs with ``lengths[r]`` valid entries at the front of row r; on this CPU-only machine the
torch kernels are called directly, so the code that runs on CUDA tensors is exercised here.
"""

import numpy as np
import pytest
import torch
from numba import njit

import attention
from attention import _cpu, _torch
from attention._ops import cpu_prox_forward as _cpu_prox_forward
from attention._ops import sparsemax_forward

VARIANTS = {"tv": _cpu.PROX_TV, "sorted": _cpu.PROX_SORTED, "owl": _cpu.PROX_OWL}


def batch(seed, n=40, d=9, dtype=torch.float64, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, d, generator=g, dtype=torch.float64) * scale).to(dtype)
    lengths = torch.randint(0, d + 1, (n,), generator=g)
    lengths[:3] = torch.tensor([0, d, 1])  # always include the empty, full and single-entry rows
    grad = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    return z, lengths, grad


def tol(dtype):
    return dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [1, 2, 5, 17])
@pytest.mark.parametrize("seed", [0, 1])
def test_sparsemax_forward(dtype, d, seed):
    z, lengths, _ = batch(seed, d=d, dtype=dtype)
    cpu = sparsemax_forward(z, lengths, True)
    dev = _torch.sparsemax_forward(z, lengths)
    torch.testing.assert_close(dev, cpu, **tol(dtype))
    valid = _torch.valid_positions(lengths, d)
    assert (dev[~valid] == 0).all() and (dev >= 0).all()
    sums = dev.sum(-1)
    torch.testing.assert_close(sums[lengths > 0], torch.ones_like(sums[lengths > 0]), **tol(dtype))
    assert (sums[lengths == 0] == 0).all()


def test_sparsemax_forward_garbage_past_length():
    """Entries past a row's length are ignored, whatever they hold (huge, -inf, nan would be masked ones)."""
    z, lengths, _ = batch(3, d=6)
    valid = _torch.valid_positions(lengths, 6)
    junk = torch.where(valid, z, 1e30)
    torch.testing.assert_close(_torch.sparsemax_forward(junk, lengths), _torch.sparsemax_forward(z, lengths))
    out = torch.empty_like(z)
    _cpu.sparsemax_forward(junk.numpy(), lengths.numpy(), out.numpy())
    torch.testing.assert_close(out, _torch.sparsemax_forward(z, lengths))


@pytest.mark.parametrize("offset", [1e3, 1e5])
def test_sparsemax_forward_large_offset(offset):
    z, lengths, _ = batch(4, d=8, scale=1.0)
    torch.testing.assert_close(
        _torch.sparsemax_forward(z + offset, lengths), _torch.sparsemax_forward(z, lengths), atol=1e-9, rtol=0
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparsemax_backward(dtype, seed):
    z, lengths, grad = batch(seed, dtype=dtype)
    y = sparsemax_forward(z, lengths, True)
    cpu = torch.empty_like(grad)
    _cpu.sparsemax_backward(grad.numpy(), y.numpy(), lengths.numpy(), cpu.numpy())
    torch.testing.assert_close(_torch.sparsemax_backward(grad, y), cpu, **tol(dtype))


def _cpu_forward(z, lengths, lam, variant):
    y, groups, scale, bad = _cpu_prox_forward(z, lengths, lam, variant)
    assert bad == 0
    return y, groups, (scale if variant == _cpu.PROX_OWL else None)


def _cpu_backward(grad, y, groups, scale, lengths):
    out = torch.empty_like(grad)
    if scale is None:
        _cpu.prox_sparsemax_backward(grad.numpy(), y.numpy(), groups.numpy(), lengths.numpy(), out.numpy())
    else:
        _cpu.owl_sparsemax_backward(grad.numpy(), y.numpy(), groups.numpy(), scale.numpy(), lengths.numpy(),
                                    out.numpy())
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("lam", [0.0, 0.1, 0.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [1, 4, 11])
def test_prox_sparsemax_backward(variant, lam, dtype, d):
    z, lengths, grad = batch(int(10 * lam) + d, d=d, dtype=dtype)
    y, groups, scale = _cpu_forward(z, lengths, lam, VARIANTS[variant])
    cpu = _cpu_backward(grad, y, groups, scale, lengths)
    dev = _torch.prox_sparsemax_backward(grad, y, groups, scale, lengths)
    torch.testing.assert_close(dev, cpu, **tol(dtype))
    assert (dev[~_torch.valid_positions(lengths, d)] == 0).all()


def test_prox_forward_labels():
    """The groups/scale contract the torch backward relies on: -1 (and scale 0) past each row's length, labels in
    [0, m), one label per group; an exact prox's group lies wholly inside or outside the support."""
    z, lengths, _ = batch(7, d=10)
    for variant in VARIANTS.values():
        y, groups, scale = _cpu_forward(z, lengths, 0.3, variant)
        valid = _torch.valid_positions(lengths, 10)
        assert (groups[~valid] == -1).all() and (y[~valid] == 0).all()
        if scale is not None:
            assert (scale[~valid] == 0).all()
        assert (groups[valid] >= 0).all()
        assert (groups < lengths.unsqueeze(-1).clamp_min(1)).all()
        if variant != _cpu.PROX_OWL:
            for r in range(z.shape[0]):
                for label in groups[r][valid[r]].unique():
                    members = y[r][groups[r] == label]
                    assert (members > 0).all() or (members == 0).all()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_torch_backward_is_the_jacobian(variant):
    """The torch prox backward, fed with the CPU forward's groups, is the transpose Jacobian of the CPU forward
    (checked against finite differences of the forward, row by row)."""
    z, lengths, grad = batch(8, n=6, d=7)
    lam = 0.2
    y, groups, scale = _cpu_forward(z, lengths, lam, VARIANTS[variant])
    vjp = _torch.prox_sparsemax_backward(grad, y, groups, scale, lengths)
    eps = 1e-6
    numeric = torch.zeros_like(z)
    for j in range(z.shape[1]):
        step = torch.zeros_like(z)
        step[:, j] = eps
        plus = _cpu_forward(z + step, lengths, lam, VARIANTS[variant])[0]
        minus = _cpu_forward(z - step, lengths, lam, VARIANTS[variant])[0]
        numeric[:, j] = ((plus - minus) / (2 * eps) * grad).sum(-1)
    torch.testing.assert_close(vjp, numeric, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_prox_forward_fallback_copy_path(variant):
    """The non-CPU prox forward without numba-cuda copies to the CPU kernel and back: same results."""
    from attention import _ops

    z, lengths, _ = batch(11, d=8)
    got = _ops.prox_forward_off_host(z, lengths, 0.25, VARIANTS[variant])
    want = _cpu_prox_forward(z, lengths, 0.25, VARIANTS[variant])[:3]
    for a, b in zip(got, want):
        assert a.device == z.device
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# -- the smooth mappings: torch versions (the CUDA path) against the CPU kernels ------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [1, 3, 12, 130])
@pytest.mark.parametrize("kind,value", [("p", 1.5), ("p", 1.15), ("p", 2.0), ("alpha", 1.5), ("alpha", 1.3),
                                        ("alpha", 2.4)])
def test_smooth_forward_torch_matches_cpu(dtype, d, kind, value):
    z, lengths, _ = batch(5 + d, d=d, dtype=dtype)
    cpu = torch.empty_like(z)
    if kind == "p":
        _cpu.sq_pnorm_forward(z.numpy(), lengths.numpy(), value, cpu.numpy())
        dev = _torch.sq_pnorm_forward(z, lengths, value)
    else:
        _cpu.entmax_forward(z.numpy(), lengths.numpy(), np.full(1, value), cpu.numpy())
        dev = _torch.entmax_forward(z, lengths, value)
    torch.testing.assert_close(dev, cpu, atol=1e-5 if dtype == torch.float32 else 1e-10, rtol=1e-5)
    valid = _torch.valid_positions(lengths, d)
    assert (dev[~valid] == 0).all() and (cpu[~valid] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind,value", [("p", 1.5), ("p", 1.2), ("p", 2.0), ("alpha", 1.5), ("alpha", 1.3),
                                        ("alpha", 2.4)])
def test_smooth_backward_torch_matches_cpu(dtype, kind, value):
    z, lengths, grad = batch(21, d=9, dtype=dtype)
    y = torch.empty_like(z)
    cpu = torch.empty_like(z)
    if kind == "p":
        _cpu.sq_pnorm_forward(z.numpy(), lengths.numpy(), value, y.numpy())
        _cpu.sq_pnorm_backward(grad.numpy(), y.numpy(), lengths.numpy(), value, cpu.numpy())
        dev = _torch.sq_pnorm_backward(grad, y, value)
    else:
        _cpu.entmax_forward(z.numpy(), lengths.numpy(), np.full(1, value), y.numpy())
        _cpu.entmax_backward(grad.numpy(), y.numpy(), lengths.numpy(), np.full(1, value), cpu.numpy())
        dev = _torch.entmax_backward(grad, y, value)
    torch.testing.assert_close(dev, cpu, **tol(dtype))


def test_one_block_test_is_sound():
    """_pools_into_one_block says True only when pool adjacent violators on the sorted row gives one block, and it
    does say True in the regime it is for (long rows, lam (m - 1) large against the spread)."""
    import numpy as np

    rng = np.random.default_rng(0)
    said_yes = 0
    for _ in range(400):
        m = int(rng.integers(2, 200))
        z = rng.normal(size=m) * rng.choice([0.1, 1.0, 3.0])
        lam = float(rng.choice([0.001, 0.01, 0.05, 0.2]))
        yes = _cpu._pools_into_one_block(z, m, lam, z.sum(), np.empty(m), np.empty(m, np.int64))
        v = np.sort(z)[::-1] - lam * (m - 1 - np.arange(m))
        pooled, blocks = np.empty(m), np.empty(m, np.int64)
        _cpu._pav_decreasing_row(np.ascontiguousarray(v), pooled, blocks, m)
        if yes:
            said_yes += 1
            assert blocks.max() == 0, (m, lam)
    assert said_yes > 40
    z = rng.normal(size=1000)
    assert _cpu._pools_into_one_block(z, 1000, 0.01, z.sum(), np.empty(1000), np.empty(1000, np.int64))


def test_one_block_test_is_sound_inside_the_lowest_bucket():
    """Zeros and three scores near -2 that share the lowest value bucket, m = 400, lam = 0.01: PAV gives two blocks
    (the lowest score alone) and the test must not say one, which it did when it checked the lowest bucket's inner
    ranks by a convexity argument whose upper end (j = m) it skips; the kernel then equals the whole-row solution."""
    import numpy as np

    lam, m = 0.01, 400
    hits = 0
    for delta in np.linspace(0.02, 0.03, 6):
        for total in np.linspace(5.95, 6.05, 11):
            x = (total - delta) / 3
            z = np.zeros(m)
            z[:3] = [-x - delta, -x, -x]
            v = np.sort(z)[::-1] - lam * (m - 1 - np.arange(m))
            pooled, blocks = np.empty(m), np.empty(m, np.int64)
            _cpu._pav_decreasing_row(np.ascontiguousarray(v), pooled, blocks, m)
            if blocks.max() == 0:
                continue
            hits += 1
            assert not _cpu._pools_into_one_block(z, m, lam, z.sum(), np.empty(m), np.empty(m, np.int64)), (delta, x)
            y = _cpu_prox_forward(torch.tensor(z[None]), torch.tensor([m]), lam, _cpu.PROX_SORTED)[0]
            np.testing.assert_allclose(y[0].numpy(), _whole_row_oscarmax(z.copy(), lam), atol=1e-12)
    assert hits > 10  # rows of two blocks, the case this is about


def _whole_row_oscarmax(z, lam):
    """The exact oscarmax of one row without screening or buckets: a stable sort, PAV, sparsemax (reference)."""
    m = len(z)
    u, groups, scale = np.empty(m), np.empty(m, np.int64), np.empty(m)
    order, v, pooled, blocks = np.empty(m, np.int64), np.empty(m), np.empty(m), np.empty(m, np.int64)
    keys, keys_tmp, order_tmp = np.empty(m, np.uint64), np.empty(m, np.uint64), np.empty(m, np.int64)
    _cpu._sorted_prox_row(z, u, groups, scale, m, lam, _cpu.PROX_SORTED, order, v, pooled, blocks, keys, keys_tmp,
                          order_tmp, np.empty((8, 256), np.int64))
    y = np.empty(m)
    _cpu._sparsemax_row(u, y, m)
    return y


@pytest.mark.parametrize("d", [64, 128, 200, 256, 384, 512, 1024])
def test_oscarmax_long_rows_match_the_whole_row_solution(d):
    """Rows of 64-1024 entries, where oscarmax's screen starts narrow and widens, where its candidates are pooled by
    value buckets instead of sorted and where the screened entries' bound decides (issue 27): the kernel equals
    the unscreened sort + PAV + sparsemax on every row, masked rows and tied scores included, and its group labels
    give one value per group."""
    rng = np.random.default_rng(d)
    for lam in (0.001, 0.01, 0.03, 0.1, 0.5):
        for scale in (0.3, 1.0, 3.0):
            z = rng.normal(size=(6, d)) * scale
            z[1] = np.round(z[1], 1)  # ties
            z[2] += 5.0
            lengths = np.array([d, d, d, d - 37, d // 2, 1], dtype=np.int64)
            y, groups, _, bad = _cpu_prox_forward(torch.tensor(z), torch.tensor(lengths), lam, _cpu.PROX_SORTED)
            assert bad == 0
            for r, m in enumerate(lengths):
                want = _whole_row_oscarmax(z[r, :m].copy(), lam)
                np.testing.assert_allclose(y[r, :m].numpy(), want, atol=1e-12, err_msg=f"d={d} λ={lam} row {r}")
                assert (y[r, m:] == 0).all() and (groups[r, m:] == -1).all()
                for label in groups[r, :m].unique():
                    members = y[r, :m][groups[r, :m] == label]
                    assert members.max() - members.min() <= 1e-12


def test_oscarmax_rows_between_the_pooling_regimes():
    """Rows whose spread top - mean lies between _POOLING_SPREAD and 1 times lam (m - 1) start at the narrow screen
    (most have a handful of weights; 256 standard-normal keys at lam = 0.01 put a quarter of their rows there), and
    those of them that pool into a large support must widen it: every row equals the whole-row solution."""
    rng = np.random.default_rng(5)
    band = large = 0
    for d in (256, 384, 448, 512):
        lam = 0.01
        z = rng.normal(size=(400, d))
        spread = (z.max(1) - z.mean(1)) / (lam * (d - 1))
        z = z[(spread > _cpu._POOLING_SPREAD) & (spread <= 1.0)]
        band += len(z)
        y = _cpu_prox_forward(torch.tensor(z), torch.full((len(z),), d), lam, _cpu.PROX_SORTED)[0].numpy()
        for r in range(len(z)):
            np.testing.assert_allclose(y[r], _whole_row_oscarmax(z[r].copy(), lam), atol=1e-12, err_msg=f"d={d}")
            large += (y[r] > 0).sum() > 20
    assert band > 300 and large > 0  # the band's rows, and some that the narrow screen cannot hold


def test_screened_v_bound_is_an_upper_bound():
    """_screened_v_bound bounds z_(k) - lam (m - 1 - k) over the entries at or below theta, by sorted ranks."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        m = int(rng.integers(2, 600))
        lam = float(rng.choice([0.001, 0.01, 0.1]))
        z = np.round(rng.normal(size=m) * rng.choice([0.3, 1.0, 3.0]), int(rng.integers(1, 4)))
        theta = float(np.quantile(z, rng.random()))
        order = np.argsort(-z, kind="stable")
        v = z[order] - lam * (m - 1 - np.arange(m))
        screened = z[order] <= theta
        bound = _cpu._screened_v_bound(z, m, theta, lam, lam * (m - 1), np.empty(64, np.int64), np.empty(64))
        if screened.any():
            assert v[screened].max() <= bound + 1e-12


@pytest.mark.parametrize("d", [200, 512])
def test_oscarmax_long_rows_gradcheck(d):
    """The gradient at the lengths where the bucketed / bound-checked paths run, by finite differences."""
    g = torch.Generator().manual_seed(d)
    x = (torch.randn(2, d, generator=g, dtype=torch.float64)).requires_grad_()
    mask = torch.ones(2, d, dtype=torch.bool)
    mask[1, d // 3:] = False
    for lam in (0.01, 0.1):
        assert torch.autograd.gradcheck(lambda v: attention.oscarmax(v, lam=lam, mask=mask), (x,))


def _tv_rows(rng, count=600):
    """Rows for the TV kernels: 1-300 entries, nearly uniform (an untrained model's scores: one or a few fused
    runs over the whole row) to spread out (many short runs), some with tied scores."""
    for i in range(count):
        m = int(rng.integers(1, 300))
        scale = float(rng.choice([0.001, 0.01, 0.03, 0.1, 1.0, 10.0]))
        lam = float(rng.choice([1e-9, 0.01, 0.1, 0.5]))
        z = rng.normal(size=m) * scale
        tied = i % 5 == 0
        if tied:
            z = np.round(z, 1)
        yield z, lam, tied


def test_tv_prox_sums_is_condats_sweep():
    """_tv_prox_sums (the CPU kernels' TV prox: Condat's sweep with its slack kept as a running sum, branch-free
    record updates) gives tv_prox_row's values, and its groups on untied scores; on tied scores (where a
    boundary between two runs of equal value may or may not be drawn) one value per group."""
    rng = np.random.default_rng(27)
    for z, lam, tied in _tv_rows(rng, 3000):
        m = len(z)
        want, want_groups = np.empty(m), np.empty(m, np.int64)
        got, got_groups = np.empty(m), np.empty(m, np.int64)
        _cpu._tv_prox_row(z, want, want_groups, m, lam)
        _cpu._tv_prox_sums(z, got, got_groups, m, lam)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14 * (1.0 + np.abs(z).max()))
        if not tied:
            assert (got_groups == want_groups).all(), (m, lam)
        assert got_groups[0] == 0 and (np.diff(got_groups) >= 0).all() and (np.diff(got_groups) <= 1).all()
        for label in np.unique(got_groups):
            assert np.ptp(got[got_groups == label]) == 0.0


def test_fusedmax_kernel_matches_the_whole_row_solution_on_nearly_uniform_rows():
    """The screened fusedmax kernel against Condat's sweep on the whole row and sparsemax (no screening), on the
    rows of an untrained model (every entry a candidate, one run over the row) and on spread-out ones, masked
    (causal lengths) or not; its backward (tv_sparsemax_backward) equals the generic one bit for bit."""
    rng = np.random.default_rng(5)
    for d in (7, 64, 256, 300):
        for scale, lam in ((0.01, 0.1), (0.003, 0.01), (0.05, 0.1), (1.0, 0.1), (0.01, 0.001)):
            for dtype in (torch.float64, torch.float32):
                z = torch.tensor(rng.normal(size=(d, d)) * scale).to(dtype)
                z[1] = torch.round(z[1], decimals=2)
                lengths = torch.arange(1, d + 1)
                lengths[-3:] = torch.tensor([d, 0, d])
                y, groups, _, bad = _cpu_prox_forward(z, lengths, lam, _cpu.PROX_TV)
                assert bad == 0
                for r in range(d):
                    m = int(lengths[r])
                    zr = z[r, :m].double().numpy()
                    u, ug = np.empty(m), np.empty(m, np.int64)
                    _cpu._tv_prox_row(zr, u, ug, m, lam)
                    want = np.empty(m)
                    _cpu._sparsemax_row(u, want, m)
                    np.testing.assert_allclose(y[r, :m].double().numpy(), want, **tol(dtype),
                                               err_msg=f"d={d} scale={scale} λ={lam} row {r}")
                    assert (y[r, m:] == 0).all() and (groups[r, m:] == -1).all()
                    for label in groups[r, :m].unique():
                        members = y[r, :m][groups[r, :m] == label]
                        assert members.max() == members.min()
                grad = torch.tensor(rng.normal(size=(d, d))).to(dtype)
                generic, tv = torch.empty_like(grad), torch.empty_like(grad)
                args = (grad.numpy(), y.numpy(), groups.numpy(), lengths.numpy())
                _cpu.prox_sparsemax_backward(*args, generic.numpy())
                _cpu.tv_sparsemax_backward(*args, tv.numpy())
                assert torch.equal(tv, generic)


def test_tv_prox_sweep_stays_in_its_row_when_rounding_breaks_it():
    """Scores so large that adding lam changes nothing broke the running-sum sweep's invariant and it ran past the
    row's end (a segfault in the suite). It must write only the row's m entries, and fusedmax of equal scores is
    uniform at any scale."""
    for value, lam in [(-5e29, 1.5), (5e29, 1.5), (1e300, 0.05), (-1e16, 0.3)]:
        m = 3
        z = np.full(m + 4, value)
        out = np.full(m + 4, 7.0)
        groups = np.full(m + 4, -7, dtype=np.int32)
        _cpu._tv_prox_sums(z, out, groups, m, lam)
        assert (out[m:] == 7.0).all() and (groups[m:] == -7).all(), (value, lam)
        for dtype in (torch.float32, torch.float64):
            scores = torch.full((m,), max(min(value, 1e37), -1e37) if dtype == torch.float32 else value, dtype=dtype)
            y = attention.fusedmax(scores, lam=lam)
            torch.testing.assert_close(y, torch.full_like(y, 1 / m))


def _scattered_prox_backward(grad, y, groups, lengths):
    """prox_sparsemax_backward as it was before its register sum (issue 27): the support's gradient, centred by the
    kernel's own _centre_on_support, summed per label by scattered float64 sums in position order (plain Python
    floats: IEEE double, the same additions in the same order), then divided by the label's size."""
    out = np.zeros_like(grad)
    for r, m in enumerate(lengths):
        centred = np.empty_like(grad[r])
        _cpu._centre_on_support(grad[r], y[r], centred, m, grad.shape[1])
        sums, sizes = {}, {}
        support = [i for i in range(m) if y[r, i] > 0.0]
        for i in support:
            label = int(groups[r, i])
            sums[label] = sums.get(label, 0.0) + float(centred[i])
            sizes[label] = sizes.get(label, 0) + 1
        for i in support:
            label = int(groups[r, i])
            out[r, i] = sums[label] / sizes[label]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prox_backward_register_sum_is_the_scattered_sum(dtype):
    """The sorted prox's backward sums the middle support entry's label in a register and scatters the others: bit
    for bit the scattered sums of every label, on thousands of rows of 1-700 keys (masked lengths, tied scores,
    supports of one pooled block, of many blocks and of singletons)."""
    rng = np.random.default_rng(27)
    rows = 0
    for trial in range(60):
        d = int(rng.choice([3, 17, 64, 128, 300, 512, 700]))
        n = int(rng.integers(20, 80))
        z = rng.normal(size=(n, d)) * float(rng.choice([0.01, 0.3, 1.0, 3.0]))
        if trial % 3 == 0:
            z = np.round(z, 1)
        z = z.astype(dtype)
        lengths = rng.integers(0, d + 1, size=n).astype(np.int64)
        lengths[: n // 2] = d
        lam = np.array([float(rng.choice([0.001, 0.01, 0.05, 0.3]))])
        y, groups = np.empty_like(z), np.empty(z.shape, np.int32)
        assert _cpu.prox_sparsemax_forward(z, lengths, lam, _cpu.PROX_SORTED, y, groups, np.zeros((1, 1), dtype)) == 0
        grad = rng.normal(size=(n, d)).astype(dtype)
        got = np.empty_like(grad)
        _cpu.prox_sparsemax_backward(grad, y, groups, lengths, got)
        want = _scattered_prox_backward(grad, y, groups, lengths)
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), (trial, d, lam)
        rows += n
    assert rows > 2000


def test_short_stable_argsort_is_a_stable_argsort():
    """Rows of up to _INSERTION_SORT_MAX entries are ranked by counting (issue 27): the same permutation as a stable
    sort, ties (and -0.0 against 0.0) in position order, float32 and float64."""
    rng = np.random.default_rng(5)
    for trial in range(3000):
        m = int(rng.integers(1, _cpu._INSERTION_SORT_MAX + 1))
        v = rng.normal(size=m)
        if trial % 2:
            v = np.round(v, int(rng.integers(0, 2)))
        if trial % 7 == 0:
            v[rng.random(m) < 0.3] = -0.0
        v = v.astype(np.float32 if trial % 3 == 0 else np.float64)
        order = np.full(m, -1, np.int64)
        keys, keys_tmp = np.empty(m, np.uint64), np.empty(m, np.uint64)
        _cpu._stable_argsort(v, m, order, keys, keys_tmp, np.empty(m, np.int64), np.empty((8, 256), np.int64))
        want = np.argsort(v.astype(np.float64) + 0.0, kind="stable")  # + 0.0: -0.0 ties with 0.0, as in the sort
        assert np.array_equal(order, want), (trial, v)


# fusedmax's forward row kernel and TV sweep as they were before issue 27's fifth round (table of reciprocals in the
# sweep, which labels runs by their first position; the all-candidates paths of the screen and of the simplex
# threshold), for the bit-for-bit tests below; docstrings and comments dropped (see git history for them)
@njit
def _old_tv_prox_sums(z, out, groups, m, lam):
    if m == 0:
        return
    if lam == 0.0:
        for i in range(m):
            out[i] = z[i]
            groups[i] = i
        return
    k = 0
    k0 = 0
    fplus = 0.0  # kplus and kminus, as floats (see below)
    fminus = 0.0
    segment = 0
    s = np.float64(z[0])
    n = 1.0
    vmin = s - lam
    vmax = s + lam
    twolam = 2.0 * lam
    while True:
        while k == m - 1:  # right boundary: close the open segment(s)
            mean = s / n
            if mean < vmin:
                k0 = _cpu._write_segment(out, groups, k0, fminus, vmin, segment)
                if k0 >= m:  # only where rounding broke the sweep's invariant (huge scores): every entry is out
                    return
                segment += 1
                k = k0
                fminus = np.float64(k0)
                vmin = np.float64(z[k0])
                s = vmin + lam  # (vmax is kept, as in Condat's sweep)
                n = 1.0
            elif mean > vmax:
                k0 = _cpu._write_segment(out, groups, k0, fplus, vmax, segment)
                if k0 >= m:  # (as above)
                    return
                segment += 1
                k = k0
                fplus = np.float64(k0)
                vmax = np.float64(z[k0])
                s = vmax - lam
                n = 1.0
            else:
                _cpu._write_segment(out, groups, k0, k, mean, segment)
                return
        s1 = s + z[k + 1]
        n1 = n + 1.0
        inv = 1.0 / n1  # one division, off the sum's dependency chain
        lo = (s1 - lam) * inv
        hi = (s1 + lam) * inv
        if hi < vmin:  # negative jump: the segment ends at kminus with value vmin
            k0 = _cpu._write_segment(out, groups, k0, fminus, vmin, segment)
            segment += 1
            k = k0
            fminus = np.float64(k0)
            fplus = fminus
            vmin = np.float64(z[k0])
            vmax = vmin + twolam
            s = vmin + lam
            n = 1.0
        elif lo > vmax:  # positive jump: the segment ends at kplus with value vmax
            k0 = _cpu._write_segment(out, groups, k0, fplus, vmax, segment)
            segment += 1
            k = k0
            fminus = np.float64(k0)
            fplus = fminus
            vmax = np.float64(z[k0])
            vmin = vmax - twolam
            s = vmax - lam
            n = 1.0
        else:
            k += 1
            s = s1
            n = n1
            kf = np.float64(k)
            fminus = max(fminus, kf * np.float64(lo >= vmin))
            fplus = max(fplus, kf * np.float64(hi <= vmax))
            vmin = max(vmin, lo)
            vmax = min(vmax, hi)


@njit
def _old_tv_sparsemax_row(z, y, groups, m, d, lam, zc, uc, gc, pos, buf):
    top, finite = _cpu._row_top(z, m)
    if not finite:
        _cpu._non_finite_row(y, d)
        for i in range(d):
            groups[i] = -1 if i >= m else i
        return 1
    width = 4.0 * lam + _cpu._SCREEN_MARGIN * (1.0 + 4.0 * lam)
    if abs(top) <= _cpu._SCREEN_LIMIT:
        k = _cpu._keep_positions(z, m, top - 1.0 - width, zc, pos)
        if _cpu._min_of(zc, k) <= top - width:
            k = _cpu._refine(zc, pos, k, top, width, buf)[0]
    else:  # too large for the screening bounds to be exact: every entry is a candidate
        k = _cpu._keep_positions(z, m, -np.inf, zc, pos)
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
        else:
            if abs(top) <= _cpu._SCREEN_LIMIT:
                _old_tv_prox_sums(zc[a:b], uc[a:b], gc[a:b], b - a, lam)
            else:  # scores so large that a running sum loses lam: Condat's sweep, on differences
                _cpu._tv_prox_row(zc[a:b], uc[a:b], gc[a:b], b - a, lam)
            previous = -1
            head = 0
            for j in range(a, b):  # segment index -> position of the segment's first entry, unique in the row
                if gc[j] != previous:
                    previous = gc[j]
                    head = pos[j]
                gc[j] = head
        a = b
    if k > 0:
        top_u, tau = _cpu._simplex_threshold(uc, k, buf)
        for j in range(k):
            v = uc[j] - top_u - tau
            y[pos[j]] = v if v > 0.0 else 0.0
            groups[pos[j]] = gc[j]
    for i in range(m, d):
        y[i] = 0.0
        groups[i] = -1
    return 0


def _old_tv_forward(z, lengths, lam):
    n, d = z.shape
    y, groups = np.empty_like(z), np.empty(z.shape, np.int32)
    zc, uc, buf = np.empty(d), np.empty(d), np.empty(d)
    gc, pos = np.empty(d, np.int64), np.empty(d, np.int64)
    bad = 0
    for r in range(n):
        bad += _old_tv_sparsemax_row(z[r], y[r], groups[r], lengths[r], d, lam, zc, uc, gc, pos, buf)
    return y, groups, bad


def test_tv_prox_runs_is_the_dividing_sweep():
    """_tv_prox_runs reads 1 / n from a table: bit for bit the sweep that divided, with the same run indices, or
    with ``heads`` base + the position of each run's first entry."""
    rng = np.random.default_rng(31)
    rows = list(_tv_rows(rng, 2000)) + [(np.full(5, v), lam, True) for v, lam in [(5e29, 1.5), (-1e16, 0.3)]]
    for z, lam, _ in rows:
        m = len(z)
        want, want_groups = np.empty(m), np.empty(m, np.int64)
        _old_tv_prox_sums(z, want, want_groups, m, lam)
        got, got_groups = np.empty(m), np.empty(m, np.int64)
        _cpu._tv_prox_sums(z, got, got_groups, m, lam)
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8)) and (got_groups == want_groups).all()
        recip = np.empty(m + 1)
        _cpu._fill_reciprocals(recip, m + 1)
        heads = np.empty(m, np.int64)
        _cpu._tv_prox_runs(z, got, heads, m, lam, recip, 7, True)
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
        first = np.searchsorted(want_groups, want_groups)  # the position of each run's first entry
        assert (heads == 7 + first).all(), (m, lam)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fusedmax_kernel_is_the_previous_kernel_bit_for_bit(dtype):
    """prox_sparsemax_forward for TV against the row kernel as it was (compiled above): the same weights and labels
    bit for bit, on causal and full rows of an untrained model's scores (every entry a candidate, the fast paths),
    spread-out ones (screened, several runs), rows where a few entries are far below (screened but all within 1
    after the prox), ties, and huge scores (unscreened)."""
    rng = np.random.default_rng(53)
    cases = 0
    for d in (1, 5, 64, 256, 300):
        for scale, lam in ((0.05, 0.1), (0.01, 0.1), (0.003, 0.01), (0.3, 0.1), (1.0, 0.1), (3.0, 0.5), (0.01, 1e-9)):
            z = rng.normal(size=(2 * d + 4, d)) * scale
            z[1] = np.round(z[1], 2)
            z[2, ::7] -= 2.0  # a few entries screened out of a nearly uniform row
            z[3] *= 1e17  # too large to screen
            z = z.astype(dtype)
            lengths = np.concatenate([np.arange(1, d + 1), np.full(d, d), [0, d, 1, d]]).astype(np.int64)
            y, groups = np.empty_like(z), np.empty(z.shape, np.int32)
            bad = _cpu.prox_sparsemax_forward(z, lengths, np.array([lam]), _cpu.PROX_TV, y, groups,
                                              np.zeros((1, 1), dtype))
            want_y, want_groups, want_bad = _old_tv_forward(z, lengths, lam)
            assert bad == want_bad == 0
            assert np.array_equal(y.view(np.uint8), want_y.view(np.uint8)), (d, scale, lam)
            assert np.array_equal(groups, want_groups), (d, scale, lam)
            cases += 1
    assert cases == 35
