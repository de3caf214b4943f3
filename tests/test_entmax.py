"""Our sparsemax against the reference implementation of the ``entmax`` package, forward and backward."""

import pytest
import torch

import attention

entmax = pytest.importorskip("entmax")


@pytest.mark.parametrize(
    "shape,dim",
    [((7,), -1), ((5, 9), -1), ((5, 9), 0), ((3, 4, 6), 1), ((3, 4, 6), -1), ((2, 3, 4, 5), 2), ((64, 33), -1)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [0.3, 1.0, 5.0])
def test_sparsemax_matches_entmax(shape, dim, dtype, scale):
    g = torch.Generator().manual_seed(hash((shape, dim, scale)) % 2**31)
    x = (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    w = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    ours_x = x.clone().requires_grad_(True)
    ref_x = x.clone().requires_grad_(True)
    ours = attention.sparsemax(ours_x, dim=dim)
    ref = entmax.sparsemax(ref_x, dim=dim)
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(ours, ref, **tol)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(ours_x.grad, ref_x.grad, **tol)


@pytest.mark.parametrize("gamma", [0.2, 1.0, 4.0])
def test_gamma_is_a_temperature(gamma):
    """sparsemax(x, γ) = entmax.sparsemax(x / γ), and so is its gradient."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 10, generator=g, dtype=torch.float64)
    w = torch.randn(6, 10, generator=g, dtype=torch.float64)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ours = attention.sparsemax(a, gamma=gamma)
    ref = entmax.sparsemax(b / gamma)
    torch.testing.assert_close(ours, ref)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_masked_sparsemax_matches_entmax_with_minus_inf():
    """A mask is the same as scores of -inf for entmax (on rows with at least one unmasked entry)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(8, 7, generator=g) < 0.6
    mask[:, 3] = True
    w = torch.randn(8, 7, generator=g, dtype=torch.float64)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ours = attention.sparsemax(a, mask=mask)
    ref = entmax.sparsemax(b.masked_fill(~mask, -1e4))
    torch.testing.assert_close(ours, ref)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


# -- attention.entmax against the entmax package -------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.5, 1.2, 1.7, 2.0, 2.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,dim", [((5, 9), -1), ((3, 4, 6), 1), ((64, 33), -1)])
def test_entmax_matches_the_package(alpha, dtype, shape, dim):
    g = torch.Generator().manual_seed(int(alpha * 100) + len(shape))
    x = (torch.randn(*shape, generator=g, dtype=torch.float64) * 2).to(dtype)
    w = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    ours_x = x.clone().requires_grad_(True)
    ref_x = x.clone().requires_grad_(True)
    ours = attention.entmax(ours_x, alpha=alpha, dim=dim)
    if alpha == 1.5:
        ref = entmax.entmax15(ref_x, dim=dim)
    else:
        ref = entmax.entmax_bisect(ref_x, alpha=alpha, dim=dim, n_iter=100)
    tol = dict(atol=2e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(ours, ref, **tol)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(ours_x.grad, ref_x.grad, **tol)


def test_entmax_gamma_and_mask_match_the_package():
    """entmax(x, γ) = entmax.entmax15(x / γ); a mask is a score of -inf for the package."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(8, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(8, 7, generator=g) < 0.6
    mask[:, 2] = True
    for gamma in (0.3, 2.0):
        torch.testing.assert_close(attention.entmax(x, gamma=gamma, mask=mask),
                                   entmax.entmax15(x.masked_fill(~mask, -torch.inf) / gamma))
        torch.testing.assert_close(attention.entmax(x, alpha=1.3, gamma=gamma, mask=mask),
                                   entmax.entmax_bisect(x.masked_fill(~mask, -1e4) / gamma, alpha=1.3, n_iter=100))


@pytest.mark.parametrize("alpha", [1.1, 1.3, 1.7, 2.0])
def test_entmax_halley_matches_the_package_on_many_rows(alpha):
    """For 1 < alpha <= 2 the CPU kernel stops Halley's iteration early and corrects the last pass's powers to the
    final threshold (_entmax_norm_newton); on rows of every length, spread and with ties, y and the gradient equal
    the package's bisection run to float64 resolution."""
    g = torch.Generator().manual_seed(int(alpha * 10))
    rows, d = 1200, 300
    x = torch.randn(rows, d, generator=g, dtype=torch.float64)
    x = x * torch.tensor([0.01, 0.1, 1.0, 3.0, 10.0], dtype=torch.float64).repeat(rows // 5)[:, None]
    x[::3] = (x[::3] * 2).round() / 2  # ties
    x[1::7, : d // 2] = x[1::7, :1]  # a block of equal maxima
    lengths = torch.randint(1, d + 1, (rows,), generator=g)
    mask = torch.arange(d) < lengths[:, None]
    w = torch.randn(rows, d, generator=g, dtype=torch.float64)
    ours_x = x.clone().requires_grad_(True)
    ref_x = x.clone().requires_grad_(True)
    ours = attention.entmax(ours_x, alpha=alpha, mask=mask)
    ref = entmax.entmax_bisect(ref_x.masked_fill(~mask, -1e4), alpha=alpha, n_iter=100)
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-8)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(ours_x.grad, ref_x.grad, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("spread", [1e-3, 0.05, 0.3, 1.0])
def test_entmax15_full_support_shortcut_equals_the_sorted_threshold(spread):
    """Nearly uniform rows take the sort-free full-support threshold in the CPU kernel; rows with a smaller
    support fail its test and are sorted. Both equal the sort-based torch formula, masked rows included."""
    from attention import _torch

    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 300, generator=g, dtype=torch.float64) * spread
    lengths = torch.randint(1, 301, (64,), generator=g)
    mask = torch.arange(300) < lengths.unsqueeze(-1)
    y = attention.entmax(x, alpha=1.5, mask=mask)
    expected = _torch.entmax_forward(x, lengths, 1.5)
    torch.testing.assert_close(y, expected, atol=1e-12, rtol=0)
    if spread == 1e-3:
        assert ((y > 0) == mask).all()  # every valid entry in the support: the shortcut's case


def test_entmax_newton_start_is_left_of_the_threshold():
    """_entmax_start (the Newton start for 1 < alpha <= 2, from Jensen's inequality) is a point where
    f = sum (c - tau)_+^(1/(alpha-1)) - 1 >= 0, i.e. left of the threshold, on rows of every spread; and alpha-entmax
    from it equals the package's bisection on long rows (where the start is far from -1)."""
    import numpy as np

    from attention import _cpu

    rng = np.random.default_rng(0)
    for _ in range(2000):
        alpha = float(rng.choice([1.05, 1.3, 1.7, 2.0]))
        scale = alpha - 1.0
        m = int(rng.integers(1, 600))
        c = scale * rng.normal(size=m) * float(rng.choice([0.01, 1.0, 10.0]))
        c = c - c.max()
        c = c[c > -1.0]
        tau = _cpu._entmax_start(c, len(c), scale)
        assert (np.clip(c - tau, 0, None) ** (1.0 / scale)).sum() - 1.0 >= -1e-12
    x = torch.randn(6, 512, dtype=torch.float64) * torch.tensor([0.01, 0.3, 1.0, 3.0, 10.0, 1.0])[:, None]
    for alpha in (1.1, 1.3, 1.7):
        torch.testing.assert_close(attention.entmax(x, alpha=alpha), entmax.entmax_bisect(x, alpha=alpha, n_iter=100),
                                   atol=1e-10, rtol=1e-8)
