"""Learnable γ and λ: tensors (one value, or one per row / head) that require grad get exact gradients.

Every gradient is checked by torch.autograd.gradcheck in float64 (finite differences of the forward), with masks
and other dims, and for λ against a finite difference of the kernels' closed form.
"""

import pytest
import torch
from conftest import randn
from torch.autograd import gradcheck

import attention

GC = dict(eps=1e-6, atol=1e-5, rtol=1e-4)

LAM_MAPPINGS = {"fusedmax": 0.3, "oscarmax": 0.1}
ALL = ["softmax", "sparsemax", "fusedmax", "oscarmax", "sq_pnorm_max", "entmax"]


def _mask(gen, shape):
    mask = torch.rand(*shape, generator=gen) < 0.75
    flat = mask.reshape(-1, shape[-1])
    flat[0] = False  # an all-masked row
    flat[1, 1::3] = False  # holes: not a prefix
    flat[1, 0] = True
    return mask


@pytest.mark.parametrize("name", ALL)
def test_gamma_scalar_tensor(name, gen):
    x = randn(gen, 4, 7).requires_grad_(True)
    gamma = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    mask = _mask(gen, (4, 7))
    fn = attention.MAPPINGS[name]
    assert gradcheck(lambda s, g: fn(s, gamma=g, mask=mask), (x, gamma), **GC)


@pytest.mark.parametrize("name", ALL)
def test_gamma_per_head(name, gen):
    """(batch, heads, queries, keys) scores, one γ per head (shape (heads, 1, 1)), attention over keys."""
    x = randn(gen, 2, 3, 4, 6).requires_grad_(True)
    gamma = (torch.rand(3, 1, 1, generator=gen, dtype=torch.float64) + 0.4).requires_grad_(True)
    mask = _mask(gen, (2, 1, 4, 6))
    fn = attention.MAPPINGS[name]
    assert gradcheck(lambda s, g: fn(s, gamma=g, mask=mask), (x, gamma), **GC)


@pytest.mark.parametrize("name", ALL)
def test_gamma_other_dim(name, gen):
    x = randn(gen, 5, 3, 2).requires_grad_(True)
    gamma = (torch.rand(1, 3, 2, generator=gen, dtype=torch.float64) + 0.5).requires_grad_(True)  # size 1 on dim
    fn = attention.MAPPINGS[name]
    assert gradcheck(lambda s, g: fn(s, dim=0, gamma=g), (x, gamma), **GC)


@pytest.mark.parametrize("name", list(LAM_MAPPINGS))
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_lam_scalar_tensor(name, scale, gen):
    x = randn(gen, 6, 8, scale=scale).requires_grad_(True)
    lam = torch.tensor(LAM_MAPPINGS[name], dtype=torch.float64, requires_grad=True)
    mask = _mask(gen, (6, 8))
    fn = attention.MAPPINGS[name]
    assert gradcheck(lambda s, lm: fn(s, lam=lm, mask=mask), (x, lam), **GC)


@pytest.mark.parametrize("name", list(LAM_MAPPINGS))
def test_lam_and_gamma_per_head(name, gen):
    x = randn(gen, 2, 3, 4, 9, scale=2.0).requires_grad_(True)
    lam = (torch.rand(3, 1, 1, generator=gen, dtype=torch.float64) * 0.3 + 0.02).requires_grad_(True)
    gamma = (torch.rand(3, 1, 1, generator=gen, dtype=torch.float64) + 0.5).requires_grad_(True)
    mask = _mask(gen, (2, 3, 4, 9))
    fn = attention.MAPPINGS[name]
    assert gradcheck(lambda s, lm, g: fn(s, lam=lm, gamma=g, mask=mask), (x, lam, gamma), **GC)


@pytest.mark.parametrize("name", list(LAM_MAPPINGS))
def test_lam_gradient_is_not_zero_and_other_dims(name, gen):
    """A check that could fail: the λ gradient is non-trivial (λ changes fused/pooled groups' values)."""
    x = randn(gen, 7, 5, scale=0.5).requires_grad_(True)
    lam = torch.full((1, 5), LAM_MAPPINGS[name], dtype=torch.float64, requires_grad=True)  # per column, dim=0
    fn = attention.MAPPINGS[name]
    assert gradcheck(lambda s, lm: fn(s, dim=0, lam=lm), (x, lam), **GC)
    y = fn(x, dim=0, lam=lam)
    (grad,) = torch.autograd.grad((y * torch.arange(35.0, dtype=torch.float64).reshape(7, 5)).sum(), lam)
    assert grad.abs().max() > 1e-3


def test_lam_gradient_closed_form_on_a_known_input():
    """fusedmax of [1, 1.1, 0.2, -1] with λ = 0.05: u = prox_TV fuses nothing; y = (0.45 + ..) on the top two.
    The two support entries form their own groups, the left one has a jump up to its right neighbour (sign -1)
    and none on its left (row end), the right one a jump down to each side (+1, +1). So du1/dλ = +1 and
    du2/dλ = -2; y = proj(u) centres: dy/dλ = (1.5, -1.5) over the support, 0 elsewhere."""
    x = torch.tensor([1.0, 1.1, 0.2, -1.0], dtype=torch.float64)
    lam = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
    y = attention.fusedmax(x, lam=lam)
    jac = torch.stack([torch.autograd.grad(y[i], lam, retain_graph=True)[0] for i in range(4)])
    torch.testing.assert_close(jac, torch.tensor([1.5, -1.5, 0.0, 0.0], dtype=torch.float64))


def test_parameters_in_modules_are_learned(gen):
    gamma = torch.nn.Parameter(torch.tensor([[0.8], [1.2], [1.0]], dtype=torch.float64))
    lam = torch.nn.Parameter(torch.tensor(0.2, dtype=torch.float64))
    module = attention.build("fusedmax", gamma=gamma, lam=lam)
    assert {id(p) for p in module.parameters()} == {id(gamma), id(lam)}
    assert "gamma=tensor(3, 1)" in repr(module)
    x = randn(gen, 3, 6)
    (module(x) * randn(gen, 3, 6)).sum().backward()
    assert gamma.grad is not None and lam.grad is not None and gamma.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["sparsemax", "fusedmax", "oscarmax", "entmax"])
def test_max_omega_envelope_gradients(name, gen):
    """∂max_Ω/∂γ = -Ω(y), ∂max_Ω/∂λ = -γ × penalty(y): gradcheck of max_omega in γ (and λ)."""
    x = randn(gen, 3, 6).requires_grad_(True)
    gamma = torch.tensor([[0.6], [1.0], [1.7]], dtype=torch.float64, requires_grad=True)
    mask = _mask(gen, (3, 6))
    if name in LAM_MAPPINGS:
        lam = torch.tensor(LAM_MAPPINGS[name], dtype=torch.float64, requires_grad=True)
        assert gradcheck(lambda s, g, lm: attention.max_omega(s, name, gamma=g, lam=lm, mask=mask), (x, gamma, lam),
                         **GC)
    else:
        assert gradcheck(lambda s, g: attention.max_omega(s, name, gamma=g, mask=mask), (x, gamma), **GC)


# -- errors -------------------------------------------------------------------------------------------------------


def test_tensor_parameter_errors():
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"gamma must be > 0.*exp\(log_gamma\)"):
        attention.sparsemax(x, gamma=torch.tensor([[1.0], [-0.5]]))
    with pytest.raises(ValueError, match=r"lam must be >= 0"):
        attention.fusedmax(x, lam=torch.tensor(-0.1))
    with pytest.raises(ValueError, match=r"gamma must be finite"):
        attention.entmax(x, gamma=torch.tensor(float("nan")))
    with pytest.raises(TypeError, match=r"gamma must be a float or a floating-point tensor"):
        attention.softmax(x, gamma=torch.tensor(1))
    with pytest.raises(ValueError, match=r"gamma of shape \(3,\) does not broadcast to one value per row"):
        attention.sparsemax(x, gamma=torch.ones(3))
    with pytest.raises(ValueError, match=r"lam of shape \(1, 4\) does not broadcast to one value per row"):
        attention.fusedmax(x, lam=torch.ones(1, 4))  # one value per key, not per row
    with pytest.raises(ValueError, match=r"learnable lam.*variant='exact'"):
        attention.oscarmax(x, lam=torch.tensor(0.1, requires_grad=True), variant="owl")


# -- learnable α (entmax) ------------------------------------------------------------------------------------------


def test_alpha_scalar_per_head_per_row_and_other_dim(gen):
    """dy/dα in closed form (Correia et al., 2019), gradchecked with masks, per head, per row, other dims."""
    x = randn(gen, 2, 3, 4, 7).requires_grad_(True)
    mask = _mask(gen, (2, 3, 4, 7))
    cases = [torch.tensor(1.4, dtype=torch.float64),  # one value
             1.1 + torch.rand(3, 1, 1, generator=gen, dtype=torch.float64) * 1.5,  # per head, some above 2
             1.2 + torch.rand(2, 3, 4, 1, generator=gen, dtype=torch.float64)]  # per row
    for alpha in cases:
        alpha.requires_grad_(True)
        assert gradcheck(lambda s, a: attention.entmax(s, alpha=a, mask=mask), (x, alpha), **GC)
    alpha = (1.3 + torch.rand(1, 3, 2, generator=gen, dtype=torch.float64)).requires_grad_(True)  # size 1 on dim 0
    assert gradcheck(lambda s, a, g: attention.entmax(s, alpha=a, gamma=g, dim=0),
                     (randn(gen, 5, 3, 2).requires_grad_(True), alpha,
                      torch.tensor(0.8, dtype=torch.float64, requires_grad=True)), **GC)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_alpha_gradient_equals_entmax_bisect(dtype, gen):
    """The α-gradient (and y, and the score gradient) of the entmax package's entmax_bisect, per head."""
    entmax_package = pytest.importorskip("entmax")
    x = randn(gen, 2, 3, 5, 9, scale=2.0, dtype=dtype)
    alpha = 1.05 + 1.6 * torch.rand(3, 1, 1, generator=gen, dtype=dtype)
    probe = randn(gen, 2, 3, 5, 9, dtype=dtype)
    results = []
    for f in (lambda s, a: attention.entmax(s, alpha=a),
              lambda s, a: entmax_package.entmax_bisect(s, a.expand(2, 3, 5, 1), dim=-1, n_iter=100)):
        s, a = x.clone().requires_grad_(True), alpha.clone().requires_grad_(True)
        y = f(s, a)
        results.append((y, *torch.autograd.grad((y * probe).sum(), (s, a))))
    tol = dict(atol=1e-9, rtol=1e-7) if dtype == torch.float64 else dict(atol=1e-4, rtol=1e-4)
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, **tol)
    assert results[0][2].abs().min() > 1e-3  # every head's α gets a gradient


def test_alpha_tensor_errors():
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"alpha must be > 1, got a tensor with min 0.9.*softplus"):
        attention.entmax(x, alpha=torch.tensor([[1.5], [0.9]]))
    with pytest.raises(ValueError, match=r"alpha must be finite"):
        attention.entmax(x, alpha=torch.tensor(float("nan")))
    with pytest.raises(ValueError, match=r"alpha of shape \(1, 4\) does not broadcast to one value per row"):
        attention.entmax(x, alpha=torch.full((1, 4), 1.5))
    with pytest.raises(TypeError, match=r"alpha must be a float or a floating-point tensor"):
        attention.entmax(x, alpha=torch.tensor(2))
    with pytest.raises(TypeError, match=r"max_omega: alpha must be a number; a tensor .* works in attention.entmax"):
        attention.max_omega(x, "entmax", alpha=torch.tensor(1.5))


def test_multihead_learn_alpha_stays_above_one_and_learns(gen):
    torch.manual_seed(0)
    layer = attention.MultiheadAttention(12, 3, batch_first=True, mapping="entmax", alpha=1.7, learn_alpha=True,
                                         dtype=torch.float64)
    assert layer.raw_alpha.shape == (3, 1, 1) and "alpha" not in layer.params
    torch.testing.assert_close(layer.mapping_params()["alpha"], torch.full((3, 1, 1), 1.7, dtype=torch.float64))
    x = randn(gen, 2, 5, 12)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    before = layer.raw_alpha.detach().clone()
    layer(x, x, x)[0].pow(2).sum().backward()
    assert layer.raw_alpha.grad is not None and (layer.raw_alpha.grad != 0).all()
    optimizer.step()
    assert not torch.equal(layer.raw_alpha, before)
    with torch.no_grad():  # however far an optimizer pushes it, α > 1 and the layer runs
        layer.raw_alpha.copy_(torch.tensor([-1e4, 0.0, 1e3]).reshape(3, 1, 1))
    alpha = layer.mapping_params()["alpha"]
    assert (alpha > 1).all() and alpha.min() >= 1.01
    out, weights = layer(x, x, x)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    with pytest.raises(ValueError, match=r"learn_alpha needs mapping entmax"):
        attention.MultiheadAttention(12, 3, mapping="sparsemax", learn_alpha=True)
