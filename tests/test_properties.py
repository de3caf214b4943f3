"""Property-based tests (hypothesis) of the four mappings: simplex, masks, invariances, dims, dtypes."""

import numpy as np
import pytest
import torch
from conftest import CASES, mapping_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import attention

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALL = list(CASES)

finite = st.floats(-5.0, 5.0, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def scores_and_mask(draw, max_rows=4, max_d=8):
    rows = draw(st.integers(1, max_rows))
    d = draw(st.integers(1, max_d))
    x = draw(arrays(np.float64, (rows, d), elements=finite))
    mask = draw(arrays(np.bool_, (rows, d)))
    return torch.tensor(x), torch.tensor(mask)


gammas = st.sampled_from([0.25, 1.0, 3.0])
lams = st.sampled_from([0.0, 0.05, 0.3, 1.5])


def run(case, x, lam=None, **kw):
    fn, name, params = mapping_of(case)
    if lam is not None and "lam" in params:
        params["lam"] = lam
    return fn(x, **params, **kw)


@pytest.mark.parametrize("case", ALL)
@SETTINGS
@given(data=scores_and_mask(), gamma=gammas, lam=lams)
def test_on_the_simplex(case, data, gamma, lam):
    x, mask = data
    y = run(case, x, lam=lam, gamma=gamma, mask=mask)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    assert (y >= 0).all()
    assert (y[~mask] == 0).all()
    sums = y.sum(-1)
    has = mask.any(-1)
    torch.testing.assert_close(sums[has], torch.ones_like(sums[has]), atol=1e-9, rtol=0)
    assert (sums[~has] == 0).all()
    # without a mask as well
    y = run(case, x, lam=lam, gamma=gamma)
    torch.testing.assert_close(y.sum(-1), torch.ones(x.shape[0], dtype=x.dtype), atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", ["fusedmax", "oscarmax"])
@SETTINGS
@given(data=scores_and_mask(), gamma=gammas)
def test_lambda_zero_is_sparsemax(name, data, gamma):
    x, mask = data
    expected = attention.sparsemax(x, gamma=gamma, mask=mask)
    torch.testing.assert_close(attention.MAPPINGS[name](x, gamma=gamma, lam=0.0, mask=mask), expected)
    if name == "oscarmax":
        torch.testing.assert_close(attention.oscarmax(x, gamma=gamma, lam=0.0, mask=mask, variant="owl"), expected)


@pytest.mark.parametrize("case", ALL)
@SETTINGS
@given(data=scores_and_mask(), gamma=gammas, lam=lams)
def test_mask_equals_compacted_row(case, data, gamma, lam):
    """Masked result = the mapping applied to the unmasked entries alone (in order), scattered back."""
    x, mask = data
    y = run(case, x, lam=lam, gamma=gamma, mask=mask)
    for r in range(x.shape[0]):
        if mask[r].any():
            alone = run(case, x[r][mask[r]], lam=lam, gamma=gamma)
            torch.testing.assert_close(y[r][mask[r]], alone, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("case", [c for c in ALL if c != "oscarmax-owl"])  # OWL is not (|·|, clipping at 0)
@SETTINGS
@given(data=scores_and_mask(), gamma=gammas, lam=lams, shift=st.floats(-50, 50))
def test_shift_invariance(case, data, gamma, lam, shift):
    x, mask = data
    a = run(case, x, lam=lam, gamma=gamma, mask=mask)
    b = run(case, x + shift, lam=lam, gamma=gamma, mask=mask)
    torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


@pytest.mark.parametrize("case", ALL)
@SETTINGS
@given(
    shape=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    dim_pick=st.integers(0, 3),
    seed=st.integers(0, 2**16),
    with_mask=st.booleans(),
)
def test_dim_equals_moving_the_dim(case, shape, dim_pick, seed, with_mask):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    mask = (torch.rand(*shape, generator=g) < 0.7) if with_mask else None
    dim = dim_pick % len(shape) - len(shape) * (dim_pick % 2)  # both positive and negative dims
    y = run(case, x, dim=dim, mask=mask)
    moved = run(case, x.movedim(dim, -1), mask=None if mask is None else mask.movedim(dim, -1))
    torch.testing.assert_close(y, moved.movedim(-1, dim), atol=1e-12, rtol=0)


@pytest.mark.parametrize("case", ALL)
@SETTINGS
@given(b=st.integers(1, 3), s=st.integers(1, 4), t=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_mask_broadcasting(case, b, s, t, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, s, t, generator=g, dtype=torch.float64)
    key_mask = torch.rand(b, 1, t, generator=g) < 0.6
    y = run(case, x, mask=key_mask)
    torch.testing.assert_close(y, run(case, x, mask=key_mask.expand(b, s, t).clone()), atol=0, rtol=0)
    # a 1-D mask over the last dim broadcasts too
    y = run(case, x, mask=key_mask[0, 0])
    torch.testing.assert_close(y, run(case, x, mask=key_mask[0, 0].expand(b, s, t).clone()), atol=0, rtol=0)


def _runs(values, tol=1e-10):
    """Indices where a run of (numerically) equal values starts."""
    return [0] + [i for i in range(1, len(values)) if abs(values[i] - values[i - 1]) > tol]


@SETTINGS
@given(x=arrays(np.float64, st.integers(2, 10), elements=finite), lam=st.sampled_from([0.2, 0.5, 1.0]))
def test_fusedmax_fuses_runs(x, lam):
    """fusedmax is constant on the runs of prox_TV; with a large λ it fuses neighbours sparsemax keeps apart."""
    y = attention.fusedmax(torch.tensor(x), lam=lam).numpy()
    # TV never breaks a run of equal neighbouring scores
    for i in range(1, len(x)):
        if x[i] == x[i - 1]:
            assert y[i] == pytest.approx(y[i - 1], abs=1e-12)
    # a large λ fuses everything on the support to one value
    big = attention.fusedmax(torch.tensor(x), lam=1e3).numpy()
    assert len(_runs(big[big > 0])) == 1
    assert np.allclose(big, 1.0 / len(x))  # prox_TV with huge λ is the mean: uniform weights


def test_fusedmax_has_runs_on_a_known_input():
    y = attention.fusedmax(torch.tensor([1.0, 1.1, 0.2, -1.0], dtype=torch.float64), lam=0.2)
    torch.testing.assert_close(y, torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64))
    x = torch.tensor([0.1, 0.9, 0.85, 0.95, 0.2, 0.3], dtype=torch.float64)
    y = attention.fusedmax(x, lam=0.1).numpy()
    assert y[1] == pytest.approx(y[2]) and y[2] == pytest.approx(y[3]) and y[1] > 0
    assert attention.sparsemax(x).numpy()[1:4].std() > 1e-3  # sparsemax does not fuse them


@SETTINGS
@given(x=arrays(np.float64, st.integers(2, 10), elements=finite), lam=st.sampled_from([0.05, 0.3]))
def test_oscarmax_groups(x, lam):
    """oscarmax keeps the order of the scores (x_i > x_j ⇒ y_i ≥ y_j), gives equal scores equal weights, and a
    large λ pools everything into one group (uniform weights)."""
    y = attention.oscarmax(torch.tensor(x), lam=lam).numpy()
    for i in range(len(x)):
        for j in range(len(x)):
            if x[i] > x[j]:
                assert y[i] >= y[j] - 1e-12
            if x[i] == x[j]:
                assert y[i] == pytest.approx(y[j], abs=1e-12)
    big = attention.oscarmax(torch.tensor(x), lam=1e3).numpy()
    np.testing.assert_allclose(big, 1.0 / len(x), atol=1e-9)


def test_oscarmax_groups_on_a_known_input():
    x = torch.tensor([0.5, 0.52, 0.1, 0.12, -2.0], dtype=torch.float64)
    y = attention.oscarmax(x, lam=0.05).numpy()
    assert y[0] == pytest.approx(y[1]) and y[0] > 0
    s = attention.sparsemax(x).numpy()
    assert abs(s[0] - s[1]) > 1e-3


@pytest.mark.parametrize("case", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@settings(SETTINGS, max_examples=12)
@given(data=scores_and_mask(), gamma=gammas)
def test_half_precision(case, dtype, data, gamma):
    x, mask = data
    x = x.to(dtype)
    y = run(case, x, gamma=gamma, mask=mask)
    assert y.dtype == dtype
    assert torch.isfinite(y).all()
    reference = run(case, x.float(), gamma=gamma, mask=mask)
    torch.testing.assert_close(y.float(), reference, atol=1e-2 if dtype == torch.bfloat16 else 2e-3, rtol=0)


@pytest.mark.parametrize("case", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_half_precision_backward(case, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, generator=g).to(dtype).requires_grad_(True)
    w = torch.randn(3, 6, generator=g)
    (run(case, x, mask=torch.rand(3, 6, generator=g) < 0.8) * w.to(dtype)).sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("case", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e4, 1e6])
def test_large_scores_stay_finite(case, dtype, scale):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(4, 9, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_(True)
    mask = torch.rand(4, 9, generator=g) < 0.7
    for kw in ({}, {"mask": mask}, {"gamma": 0.01}):
        y = run(case, x, **kw)
        assert torch.isfinite(y).all()
        assert (y >= 0).all()
        torch.testing.assert_close(y.sum(-1)[y.sum(-1) > 0], torch.ones(4, dtype=dtype)[y.sum(-1) > 0])
        (grad,) = torch.autograd.grad((y * torch.arange(9.0, dtype=dtype)).sum(), x)
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize("case", ALL)
def test_large_offset_keeps_small_differences(case):
    """Scores 1e4 + small: sparsemax-type mappings must not lose the small differences (thresholds are relative)."""
    base = torch.tensor([0.3, 0.1, -0.2, 0.25], dtype=torch.float32)
    a = run(case, base)
    b = run(case, base + 1e4)
    if case == "oscarmax-owl":
        return  # not shift invariant
    torch.testing.assert_close(a, b, atol=5e-3, rtol=0)


@pytest.mark.parametrize("name", ["sparsemax", "fusedmax", "oscarmax"])
def test_threshold_rounding_does_not_cycle(name):
    """An entry sitting on the threshold used to flip in and out of Michelot's active set under float64 rounding
    (counts 2, 3, 2, 3, ...) and the kernel never returned: prox_TV of this input is [0.633.., -0.333.., -0.3]."""
    x = torch.tensor([[0.9333333333333331, -0.9333333333333333, 0.0]], dtype=torch.float64)
    kw = {} if name == "sparsemax" else {"lam": 0.3}
    u = torch.tensor([[0.9333333333333331 - 0.3, -0.9333333333333333 + 0.6, 0.0 - 0.3]], dtype=torch.float64)
    y = attention.MAPPINGS[name](u if name == "sparsemax" else x, **kw)
    assert torch.isfinite(y).all() and abs(float(y.sum()) - 1) < 1e-12 and (y >= 0).all()


@pytest.mark.parametrize("case", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("x,gamma", [([1e16, 0.0], 1.0), ([0.0, 1e16, -3.0], 1.0), ([1.0, 0.0], 1e-30),
                                     ([-1e16, 0.0, 30.0], 1.0), ([1e30, 1e30 * (1 - 1e-6), 0.0], 1.0)])
def test_extreme_scores_give_a_point_of_the_simplex(case, dtype, x, gamma):
    """fusedmax and oscarmax gave [0, 0] for [1e16, 0] (and for gamma=1e-30): max(z) - 1 - width rounded to max(z)
    and the CPU kernels' screening dropped every entry. The largest score must get the weight sparsemax gives it."""
    z = torch.tensor(x, dtype=dtype)
    y = run(case, z, gamma=gamma)
    assert torch.isfinite(y).all() and (y >= 0).all()
    torch.testing.assert_close(y.sum(), torch.tensor(1.0, dtype=dtype))
    expected = attention.sparsemax(z, gamma=gamma)  # the gaps are huge: every mapping puts all weight on the top
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=0)


extreme = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False, width=64)


@pytest.mark.parametrize("case", ALL)
@SETTINGS
@given(x=arrays(np.float64, st.integers(1, 9), elements=extreme), lam=lams,
       scale=st.sampled_from([1e8, 1e12, 1e16, 1e30, 1e100, 1e300]), gamma=st.sampled_from([1.0, 1e-30]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_on_the_simplex_at_extreme_scales(case, x, lam, scale, gamma, dtype):
    """Every mapping returns a point of the simplex for every finite input whose division by gamma is finite
    (here up to 1e300 / gamma; within a few units of the float64 maximum, sums of scores overflow)."""
    z = torch.tensor(x * scale, dtype=torch.float64)
    if dtype == torch.float32 and (z.abs().max() > 1e37 or (z / gamma).abs().max() > 1e37):
        z = z / z.abs().max().clamp_min(1.0) * 1e37 * gamma  # a finite float32 input and quotient
    if not torch.isfinite(z / gamma).all():
        z = z * gamma
    z = z.to(dtype)
    y = run(case, z, lam=lam, gamma=gamma)
    assert torch.isfinite(y).all() and (y >= 0).all()
    torch.testing.assert_close(y.sum(), torch.tensor(1.0, dtype=dtype), atol=1e-6, rtol=0)
