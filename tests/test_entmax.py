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
