"""Masks that broadcast (a causal (T, T) mask shared by a batch and its heads) take the fast paths of issue 27:
the lengths and the prefix test read the mask as given, softmax works on the scores' own layout. Every result
must be exactly what the expanded mask gives, and softmax what the (rows, d) formula gave before."""

import pytest
import torch
from conftest import CASES, mapping_of, randn

import attention
from attention import _layout


def run(case, x, **kw):
    fn, _, params = mapping_of(case)
    return fn(x, **params, **kw)


def masks(t):
    """(name, mask) for (b, h, t, t) scores: prefix and non-prefix, with fully masked rows, one size 1 along dim."""
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    empty_rows = causal.clone()
    empty_rows[1] = False
    keys = torch.tensor([True, False] * (t // 2) + [True] * (t % 2))
    return [("causal", causal), ("anti-causal", causal.T.contiguous()), ("empty rows", empty_rows),
            ("keys", keys), ("queries", (torch.arange(t) % 3 > 0).unsqueeze(-1)),
            ("per batch", torch.rand(2, 1, t, t, generator=torch.Generator().manual_seed(0)) < 0.5)]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("which", range(6))
def test_broadcast_mask_equals_the_expanded_mask(case, which, gen):
    """Values and gradients with the mask as given equal those with the mask expanded and copied, bit for bit."""
    x = randn(gen, 2, 3, 7, 7)
    g = randn(gen, 2, 3, 7, 7)
    _, mask = masks(7)[which]
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = run(case, xa, mask=mask)
    yb = run(case, xb, mask=mask.expand(x.shape).clone())
    torch.testing.assert_close(ya, yb, atol=0, rtol=0)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, atol=0, rtol=0)
    assert (ya[~mask.expand(x.shape)] == 0).all()


@pytest.mark.parametrize("which", range(6))
@pytest.mark.parametrize("dim", [-1, 1])
def test_rows_of_a_broadcast_mask(which, dim, gen):
    """to_rows from the mask as given: the lengths, the gather order and the values of the expanded mask."""
    x = randn(gen, 2, 3, 7, 7)
    _, mask = masks(7)[which]
    a = _layout.to_rows(x, dim, mask, "test")
    b = _layout.to_rows(x, dim, mask.expand(x.shape).clone(), "test")
    assert torch.equal(a.lengths, b.lengths)
    assert (a.order is None) == (b.order is None)
    assert a.order is None or torch.equal(a.order, b.order)
    assert torch.equal(a.values, b.values)
    assert torch.equal(a.mask, b.mask)


def _softmax_rows(x, dim, gamma, mask):
    """The formula softmax used before (the (rows, d) layout, a finite fill, the output times the mask)."""
    rows = _layout.to_rows(x, dim, mask, "softmax")
    z = rows.values / gamma
    if mask is None:
        return rows.restore(torch.softmax(z, dim=-1))
    valid = torch.arange(z.shape[-1]) < rows.lengths.unsqueeze(-1)
    return rows.restore(torch.softmax(torch.where(valid, z, torch.finfo(z.dtype).min), dim=-1) * valid)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [-1, 2, 0])
@pytest.mark.parametrize("gamma", [1.0, 0.3])
def test_softmax_equals_the_rows_formula(dtype, dim, gamma, gen):
    x = randn(gen, 2, 3, 7, 7).to(dtype)
    g = randn(gen, 2, 3, 7, 7).to(dtype)
    for _, mask in [("none", None), *masks(7)]:
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya = attention.softmax(xa, dim=dim, gamma=gamma, mask=mask)
        yb = _softmax_rows(xb, dim, gamma, mask)
        assert ya.dtype == dtype
        tol = 0 if dtype == torch.bfloat16 else 1e-6 if dtype == torch.float32 else 1e-15
        torch.testing.assert_close(ya, yb, atol=tol, rtol=0)
        ya.backward(g)
        yb.backward(g)
        # bfloat16 gradients: one rounding apart where the order of the float32 operations differs
        torch.testing.assert_close(xa.grad, xb.grad, atol=4 * tol, rtol=2 ** -7 if dtype == torch.bfloat16 else 0)


def test_softmax_empty_rows_stay_finite_under_anomaly_detection(gen):
    """A row with no valid entry: zeros and a zero gradient, with no nan anywhere in the backward."""
    x = randn(gen, 2, 4, 5).requires_grad_()
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[2] = False
    with torch.autograd.detect_anomaly():
        y = attention.softmax(x, mask=mask)
        y.backward(randn(gen, 2, 4, 5))
    assert (y[:, 2] == 0).all() and (x.grad[:, 2] == 0).all()
    assert torch.isfinite(x.grad).all()


def test_softmax_checks_only_unmasked_scores(gen):
    """The one-sum check over every score falls back to the masked check when a masked score is not finite."""
    x = randn(gen, 3, 5)
    mask = torch.ones(3, 5, dtype=torch.bool).tril()
    x[0, 3] = torch.inf
    x[1, 4] = torch.nan
    y = attention.softmax(x, mask=mask)
    assert torch.isfinite(y).all()
    x[2, 1] = torch.nan
    with pytest.raises(ValueError, match=r"nan at index \(2, 1\)"):
        attention.softmax(x, mask=mask)


@pytest.mark.parametrize("which", range(6))
def test_softmax_add_and_replace_paths_agree(which, gen):
    """Finite scores get 0 / -inf added at masked entries; unchecked ones (or a masked inf) a where: the same
    values and gradients, bit for bit."""
    x = randn(gen, 2, 3, 7, 7)
    g = randn(gen, 2, 3, 7, 7)
    _, mask = masks(7)[which]
    results = []
    for mode in ("auto", False):
        previous = attention.set_checks(mode)
        try:
            xr = x.clone().requires_grad_()
            y = attention.softmax(xr, mask=mask)
            y.backward(g)
        finally:
            attention.set_checks(previous)
        results.append((y.detach(), xr.grad))
    torch.testing.assert_close(results[0], results[1], atol=0, rtol=0)
    assert (results[0][1][~mask.expand(x.shape)] == 0).all()
