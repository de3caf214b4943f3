"""Finite-difference checks (float64) of every mapping's backward, and of max_Ω's gradient (= the mapping)."""

import pytest
import torch
from conftest import CASES, mapping_of, randn
from torch.autograd import gradcheck, gradgradcheck

import attention

GC = dict(eps=1e-6, atol=1e-5, rtol=1e-4)
FAST = dict(GC, fast_mode=True)  # random projections of the Jacobian: as strict, much faster


def _check(fn, x, fast=True):
    x = x.clone().requires_grad_(True)
    assert gradcheck(fn, (x,), **(FAST if fast else GC))


def _mixed_mask(gen, shape):
    """A random mask whose first row is all False and second row is a non-prefix mask with holes."""
    mask = torch.rand(*shape, generator=gen) < 0.7
    flat = mask.reshape(-1, shape[-1])
    flat[0] = False
    holes = torch.ones(shape[-1], dtype=torch.bool)
    holes[1::3] = False  # True, False, True, True, False, ...: not a prefix
    flat[1] = holes
    return flat.reshape(shape)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("gamma", [1.0, 0.5, 2.5])
def test_gradcheck_plain(case, gamma, gen):
    fn, _, kw = mapping_of(case)
    x = randn(gen, 4, 7)
    _check(lambda s: fn(s, gamma=gamma, **kw), x)


@pytest.mark.parametrize("case", [c for c in CASES if "lam" in CASES[c]])
@pytest.mark.parametrize("lam", [0.0, 0.05, 0.4, 2.0])
def test_gradcheck_lambdas(case, lam, gen):
    fn, _, kw = mapping_of(case)
    kw["lam"] = lam
    x = randn(gen, 5, 6, scale=2.0)
    _check(lambda s: fn(s, gamma=0.7, **kw), x)


@pytest.mark.parametrize("case", list(CASES))
def test_gradcheck_masked(case, gen):
    fn, _, kw = mapping_of(case)
    x = randn(gen, 6, 8)
    mask = _mixed_mask(gen, (6, 8))
    _check(lambda s: fn(s, gamma=0.8, mask=mask, **kw), x, fast=False)  # the full Jacobian


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dim", [0, 1, -2])
def test_gradcheck_3d_other_dim(case, dim, gen):
    fn, _, kw = mapping_of(case)
    x = randn(gen, 3, 5, 4)
    mask = _mixed_mask(gen, (3, 5, 4)).movedim(-1, dim).contiguous()
    # mask built for the reduced dim moved last: its shape is x's with dim's size in the right place
    x = randn(gen, *mask.shape)
    _check(lambda s: fn(s, dim=dim, gamma=1.3, mask=mask, **kw), x)
    _check(lambda s: fn(s, dim=dim, gamma=1.3, **kw), x)


@pytest.mark.parametrize("case", list(CASES))
def test_gradcheck_broadcast_mask(case, gen):
    fn, _, kw = mapping_of(case)
    x = randn(gen, 2, 3, 6)
    mask = torch.tensor([[True, False, True, True, False, True]], dtype=torch.bool).expand(2, 1, 6).clone()
    mask[1, 0, :] = False
    _check(lambda s: fn(s, mask=mask, **kw), x)


# -- max_Ω: its gradient is the mapping ---------------------------------------------------------------------------


def _max_omega_kwargs(case):
    _, name, kw = mapping_of(case)
    return name, kw


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("masked", [False, True])
def test_max_omega_gradient_is_mapping(case, masked, gen):
    fn, name, kw = mapping_of(case)
    x = randn(gen, 5, 7, scale=1.5).requires_grad_(True)
    mask = _mixed_mask(gen, (5, 7)) if masked else None
    if kw.get("variant") == "owl":  # not an argmax, so not a gradient: refused (test_max_omega_owl_is_consistent)
        with pytest.raises(ValueError, match="variant='owl'"):
            attention.max_omega(x, name, gamma=0.6, mask=mask, **kw)
        return
    value = attention.max_omega(x, name, gamma=0.6, mask=mask, **kw)
    assert value.shape == (5,)
    (grad,) = torch.autograd.grad(value.sum(), x)
    expected = fn(x.detach(), gamma=0.6, mask=mask, **kw)
    torch.testing.assert_close(grad, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("case", ["softmax", "sparsemax", "fusedmax", "oscarmax", "sq_pnorm_max", "entmax"])
def test_max_omega_gradcheck(case, gen):
    _, name, kw = mapping_of(case)
    x = randn(gen, 3, 6)
    mask = _mixed_mask(gen, (3, 6))
    _check(lambda s: attention.max_omega(s, name, gamma=1.7, mask=mask, **kw), x)
    _check(lambda s: attention.max_omega(s, name, dim=0, gamma=0.4, **kw), randn(gen, 6, 3))


@pytest.mark.parametrize("case", ["sparsemax", "fusedmax", "oscarmax", "sq_pnorm_max", "entmax-bisect"])
def test_max_omega_gradgradcheck(case, gen):
    """Hessian-vector products of max_Ω are the mapping's Jacobian (its graph is kept)."""
    _, name, kw = mapping_of(case)
    x = randn(gen, 3, 5).requires_grad_(True)
    assert gradgradcheck(lambda s: attention.max_omega(s, name, gamma=0.9, **kw), (x,), **FAST)


def test_max_omega_hessian_softmax_is_jacobian():
    """max_omega promises that its Hessian-vector products are the mapping's Jacobian. (A first version, with the
    envelope term ``y * (x - x.detach())``, gave twice the Jacobian for softmax: zero in value, not in derivative.)"""
    x = torch.tensor([[0.3, -1.2, 0.8, 0.1]], dtype=torch.float64, requires_grad=True)
    gamma = 0.9
    (grad,) = torch.autograd.grad(attention.max_omega(x, "softmax", gamma=gamma).sum(), x, create_graph=True)
    hessian = torch.stack([torch.autograd.grad(grad[0, i], x, retain_graph=True)[0][0] for i in range(4)])
    y = torch.softmax(x.detach()[0] / gamma, -1)
    jacobian = (torch.diag(y) - torch.outer(y, y)) / gamma
    torch.testing.assert_close(hessian, jacobian)


def test_max_omega_owl_is_consistent():
    """The OWL weights y are not the argmax, so <y, x> - γΩ(y) at them is below max_Ω(x) and y is not its
    derivative. max_omega must refuse variant="owl" (or, equivalently, return the exact maximum)."""
    x = torch.tensor([[0.4, -0.3, -0.2, 0.1, -0.5, 0.35]], dtype=torch.float64)
    kw = dict(lam=0.1, variant="owl")
    assert not torch.allclose(attention.oscarmax(x, **kw), attention.oscarmax(x, lam=0.1))  # owl != argmax here
    try:
        value = attention.max_omega(x, "oscarmax", **kw)
    except ValueError:
        return
    exact = attention.max_omega(x, "oscarmax", lam=0.1)
    torch.testing.assert_close(value, exact)  # the maximum does not depend on the algorithm


# -- double backward: the closed-form backward passes are differentiable when create_graph=True ------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_gradgradcheck_every_mapping(case, gen):
    """Second derivatives (a gradient penalty, Hessian-vector products) are exact, not silently partial: with
    create_graph=True the backward runs as differentiable torch expressions of y, with a mask and a learnable γ."""
    fn, _, kw = mapping_of(case)
    x = randn(gen, 3, 6, scale=1.5).requires_grad_(True)
    gamma = torch.tensor([[0.7], [1.0], [1.6]], dtype=torch.float64, requires_grad=True)
    mask = _mixed_mask(gen, (3, 6))
    assert gradgradcheck(lambda s, g: fn(s, gamma=g, mask=mask, **kw), (x, gamma), **GC)
    assert gradgradcheck(lambda s: fn(s, dim=0, **kw), (randn(gen, 5, 2).requires_grad_(True),), **GC)


@pytest.mark.parametrize("name", ["fusedmax", "oscarmax"])
def test_gradgradcheck_learnable_lam(name, gen):
    x = randn(gen, 4, 7, scale=2.0).requires_grad_(True)
    lam = torch.tensor([[0.1], [0.3], [0.05], [0.2]], dtype=torch.float64, requires_grad=True)
    assert gradgradcheck(lambda s, lm: attention.MAPPINGS[name](s, lam=lm), (x, lam), **GC)


def test_gradgradcheck_learnable_alpha(gen):
    x = randn(gen, 4, 7).requires_grad_(True)
    alpha = torch.tensor([[1.2], [1.5], [1.8], [2.6]], dtype=torch.float64, requires_grad=True)
    assert gradgradcheck(lambda s, a: attention.entmax(s, alpha=a), (x, alpha), **GC)


@pytest.mark.parametrize("name", ["sparsemax", "prox_sparsemax", "sq_pnorm_max", "entmax"])
def test_gradgradcheck_through_the_custom_ops(name, gen):
    """The same through torch.ops.attention.* (their register_autograd backward), as compiled graphs call them."""
    from attention import _ops

    z = randn(gen, 4, 6).requires_grad_(True)
    lengths = torch.tensor([6, 0, 3, 6])
    args = {"sparsemax": (True,), "prox_sparsemax": (None, 0.2, 0, True), "sq_pnorm_max": (1.5, True),
            "entmax": (None, 1.3, True)}[name]
    op = _ops.OPERATORS[name].op

    def first(s):
        out = op(s, lengths, *args)
        return out[0] if isinstance(out, tuple) else out

    assert gradgradcheck(first, (z,), **GC)


def _torch_sparsemax(x):
    """Sparsemax in plain differentiable torch (sort, threshold): autograd's own first and second derivatives."""
    z_sorted = x.sort(dim=-1, descending=True).values
    k = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype)
    cumsum = z_sorted.cumsum(-1) - 1
    size = (k * z_sorted > cumsum).sum(-1, keepdim=True)
    tau = cumsum.gather(-1, size - 1) / size.to(x.dtype)
    return (x - tau).clamp_min(0)


def test_gradient_penalty_equals_plain_torch_sparsemax(gen):
    """The issue's case: a gradient penalty ‖∂L/∂input‖² trained into a model. It used to lose the terms through
    the backward (‖∇‖ 3.93 against 55.04 from a plain-torch sparsemax); now it equals plain torch."""
    weight = randn(gen, 6, 6).requires_grad_(True)
    inputs = randn(gen, 5, 6, scale=2.0).requires_grad_(True)
    target = randn(gen, 5, 6)

    def penalty_grad(mapping):
        (grad_inputs,) = torch.autograd.grad((mapping(inputs @ weight) * target).sum(), inputs, create_graph=True)
        (grad_weight,) = torch.autograd.grad(grad_inputs.pow(2).sum(), weight)
        return grad_weight

    want = penalty_grad(_torch_sparsemax)
    assert want.norm() > 1.0  # a penalty whose gradient is not trivially zero
    torch.testing.assert_close(penalty_grad(attention.sparsemax), want)
