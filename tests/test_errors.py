"""Bad inputs raise clear errors; all-masked rows give zeros and zero gradients; modules and ``build``."""

import math

import pytest
import torch
from conftest import CASES, mapping_of

import attention

ALL = list(CASES)


def call(case, x, **kw):
    fn, _, params = mapping_of(case)
    params.update(kw)
    return fn(x, **params)


# -- parameters ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ALL)
@pytest.mark.parametrize("gamma", [0.0, -1.0])
def test_gamma_must_be_positive(case, gamma):
    with pytest.raises(ValueError, match=r"gamma must be > 0"):
        call(case, torch.randn(3), gamma=gamma)


@pytest.mark.parametrize("case", ALL)
@pytest.mark.parametrize("gamma", [math.nan, math.inf])
def test_gamma_must_be_finite(case, gamma):
    with pytest.raises(ValueError, match=r"gamma must be finite"):
        call(case, torch.randn(3), gamma=gamma)


@pytest.mark.parametrize("case", ["fusedmax", "oscarmax", "oscarmax-owl"])
def test_lam_must_be_nonnegative(case):
    with pytest.raises(ValueError, match=r"lam must be >= 0"):
        call(case, torch.randn(3), lam=-0.1)
    with pytest.raises(ValueError, match=r"lam must be finite"):
        call(case, torch.randn(3), lam=math.nan)
    with pytest.raises(TypeError, match=r"lam must be a number"):
        call(case, torch.randn(3), lam="big")


def test_bad_oscarmax_variant():
    with pytest.raises(ValueError, match=r"variant.*'exact'.*'owl'.*'fast'|variant.*'fast'"):
        attention.oscarmax(torch.randn(4), variant="fast")
    with pytest.raises(ValueError, match=r"variant"):
        attention.Oscarmax(variant="fast")
    with pytest.raises(ValueError, match=r"variant"):
        attention.build("oscarmax", variant="OWL")


# -- scores -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ALL)
@pytest.mark.parametrize("bad,kind", [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "inf")])
def test_non_finite_scores_name_the_index(case, bad, kind):
    x = torch.zeros(2, 3, 4)
    x[1, 2, 0] = bad
    with pytest.raises(ValueError, match=rf"{kind} at index \(1, 2, 0\)"):
        call(case, x)


@pytest.mark.parametrize("case", ALL)
def test_non_finite_scores_under_the_mask_are_fine(case):
    x = torch.randn(2, 5, dtype=torch.float64)
    x[0, 1] = -math.inf
    x[1, 4] = math.nan
    x[1, 0] = math.inf
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 1] = mask[1, 4] = mask[1, 0] = False
    xr = x.clone().requires_grad_(True)
    y = call(case, xr, mask=mask)
    assert torch.isfinite(y).all() and (y[~mask] == 0).all()
    torch.testing.assert_close(y.sum(-1), torch.ones(2, dtype=torch.float64))
    (y * torch.arange(5.0, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(xr.grad).all()
    assert (xr.grad[~mask] == 0).all()


@pytest.mark.parametrize("case", ALL)
def test_bad_scores_types(case):
    with pytest.raises(TypeError, match=r"scores must be a torch.Tensor"):
        call(case, [1.0, 2.0])
    with pytest.raises(TypeError, match=r"floating-point"):
        call(case, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"at least one dimension"):
        call(case, torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"dim=2 is out of range"):
        call(case, torch.randn(2, 3), dim=2)
    with pytest.raises(ValueError, match=r"dim=-3 is out of range"):
        call(case, torch.randn(2, 3), dim=-3)


# -- masks --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ALL)
def test_mask_must_be_bool(case):
    x = torch.randn(2, 4)
    with pytest.raises(TypeError, match=r"mask must be a bool tensor.*torch.int64"):
        call(case, x, mask=torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"mask must be a bool tensor.*torch.float32"):
        call(case, x, mask=torch.ones(2, 4))
    with pytest.raises(TypeError, match=r"mask must be a bool tensor.*list"):
        call(case, x, mask=[[True] * 4] * 2)


@pytest.mark.parametrize("case", ALL)
@pytest.mark.parametrize("shape", [(2, 5), (3, 4), (3,), (1, 2, 4), (2, 4, 1)])
def test_mask_of_wrong_shape(case, shape):
    with pytest.raises(ValueError, match=r"mask of shape .* does not broadcast to scores of shape \(2, 4\)"):
        call(case, torch.randn(2, 4), mask=torch.ones(shape, dtype=torch.bool))


# -- all-masked rows ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_all_false_rows_give_zeros_and_zero_grads(case, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 5, generator=g).to(dtype).requires_grad_(True)
    mask = torch.rand(3, 2, 5, generator=g) < 0.7
    mask[0, 1] = False
    mask[2] = False
    y = call(case, x, mask=mask)
    assert not torch.isnan(y).any()
    assert (y[0, 1] == 0).all() and (y[2] == 0).all()
    (y * torch.randn(3, 2, 5, generator=g).to(dtype)).sum().backward()
    assert not torch.isnan(x.grad).any()
    assert (x.grad[0, 1] == 0).all() and (x.grad[2] == 0).all()
    assert (x.grad[~mask] == 0).all()


@pytest.mark.parametrize("case", ALL)
def test_all_false_everything(case):
    x = torch.randn(2, 3, requires_grad=True)
    y = call(case, x, mask=torch.zeros(2, 3, dtype=torch.bool))
    assert (y == 0).all()
    y.sum().backward()
    assert (x.grad == 0).all()


@pytest.mark.parametrize("name", attention.NAMES)
def test_max_omega_of_all_false_row_is_zero(name):
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[False] * 4, [True, False, True, True]])
    value = attention.max_omega(x, name, mask=mask)
    assert value[0].item() == 0.0 and torch.isfinite(value).all()
    value.sum().backward()
    assert (x.grad[0] == 0).all() and not torch.isnan(x.grad).any()


@pytest.mark.parametrize("name", attention.NAMES)
def test_max_omega_ignores_non_finite_masked_scores(name):
    """Masked scores may be -inf (the usual padding convention); the value and its gradient must stay finite.
    (A first version built the gradient from ``y * (scores - scores.detach())``, nan at a masked -inf.)"""
    x = torch.tensor([[0.5, -math.inf, 0.2, 1.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True, True]])
    value = attention.max_omega(x, name, mask=mask)
    assert torch.isfinite(value).all()
    value.sum().backward()
    torch.testing.assert_close(x.grad, attention.MAPPINGS[name](x.detach(), mask=mask))


# -- max_omega / regularizer errors --------------------------------------------------------------------------------


def test_unknown_name_in_framework():
    names = "softmax, sparsemax, fusedmax, oscarmax, sq_pnorm_max, entmax"
    with pytest.raises(ValueError, match=rf"unknown attention mapping 'tsallis'.*{names}"):
        attention.max_omega(torch.randn(3), "tsallis")
    with pytest.raises(ValueError, match=r"unknown attention mapping 'bogus'; valid names"):
        attention.regularizer(torch.rand(3), "bogus")
    with pytest.raises(ValueError, match=r"gamma must be > 0"):
        attention.max_omega(torch.randn(3), "sparsemax", gamma=0)
    with pytest.raises(ValueError, match=r"lam must be >= 0"):
        attention.regularizer(torch.rand(3), "fusedmax", lam=-1)


# -- modules and build --------------------------------------------------------------------------------------------


def test_build_returns_configured_modules():
    m = attention.build("fusedmax", lam=0.2)
    assert isinstance(m, attention.Fusedmax) and m.lam == 0.2 and m.gamma == 1.0 and m.dim == -1
    m = attention.build("oscarmax", lam=0.05, gamma=2.0, dim=0, variant="owl")
    assert isinstance(m, attention.Oscarmax) and (m.lam, m.gamma, m.dim, m.variant) == (0.05, 2.0, 0, "owl")
    assert "lam=0.05" in repr(m) and "variant=owl" in repr(m)
    assert isinstance(attention.build("softmax"), attention.Softmax)
    assert isinstance(attention.build("sparsemax", gamma=0.5), attention.Sparsemax)
    m = attention.build("sq_pnorm_max", p=1.3, gamma=0.5)
    assert isinstance(m, attention.SqPnormMax) and (m.p, m.gamma) == (1.3, 0.5) and "p=1.3" in repr(m)
    m = attention.build("entmax", alpha=1.7)
    assert isinstance(m, attention.Entmax) and m.alpha == 1.7 and "alpha=1.7" in repr(m)
    assert set(attention.NAMES) == {"softmax", "sparsemax", "fusedmax", "oscarmax", "sq_pnorm_max", "entmax"}


@pytest.mark.parametrize("name", attention.NAMES)
def test_modules_match_functions(name):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 1, 6, generator=g) < 0.7
    params = {"softmax": {}, "sparsemax": {}, "fusedmax": {"lam": 0.3}, "oscarmax": {"lam": 0.2},
              "sq_pnorm_max": {"p": 1.4}, "entmax": {"alpha": 1.3}}[name]
    module = attention.build(name, dim=1, gamma=0.7, **params)
    torch.testing.assert_close(
        module(x, mask=mask.expand(2, 3, 6).clone()),
        attention.MAPPINGS[name](x, dim=1, gamma=0.7, mask=mask.expand(2, 3, 6).clone(), **params),
    )
    torch.testing.assert_close(module(x), attention.MAPPINGS[name](x, dim=1, gamma=0.7, **params))


def test_build_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown attention mapping 'sparsmax'; valid names: softmax, sparsemax, "
                                         r"fusedmax, oscarmax, sq_pnorm_max, entmax"):
        attention.build("sparsmax")


def test_build_bad_kwargs():
    with pytest.raises(TypeError, match=r"attention.build\('sparsemax'\).*unexpected keyword argument 'lam'"):
        attention.build("sparsemax", lam=0.1)
    with pytest.raises(TypeError, match=r"attention.build\('fusedmax'\).*unexpected keyword argument 'lambda_'"):
        attention.build("fusedmax", lambda_=0.1)
    with pytest.raises(ValueError, match=r"fusedmax: lam must be >= 0"):
        attention.build("fusedmax", lam=-0.2)
    with pytest.raises(ValueError, match=r"softmax: gamma must be > 0"):
        attention.build("softmax", gamma=0)


def test_functions_reject_unknown_kwargs():
    with pytest.raises(TypeError, match=r"lam"):
        attention.sparsemax(torch.randn(3), lam=0.1)


# -- sq_pnorm_max and entmax parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1.0, 0.5, 2.5, math.nan])
def test_p_outside_one_two(p):
    with pytest.raises(ValueError, match=r"sq_pnorm_max: p must be (in \(1, 2\]|finite)"):
        attention.sq_pnorm_max(torch.randn(4), p=p)
    with pytest.raises(ValueError, match=r"sq_pnorm_max: p must be"):
        attention.build("sq_pnorm_max", p=p)


@pytest.mark.parametrize("alpha", [1.0, 0.5, -2.0, math.inf, math.nan])
def test_alpha_must_exceed_one(alpha):
    with pytest.raises(ValueError, match=r"entmax: alpha must be > 1 and finite.*softmax"):
        attention.entmax(torch.randn(4), alpha=alpha)
    with pytest.raises(ValueError, match=r"entmax: alpha must be > 1"):
        attention.build("entmax", alpha=alpha)


def test_smooth_parameters_are_numbers():
    with pytest.raises(TypeError, match=r"entmax: alpha must be a number"):
        attention.entmax(torch.randn(4), alpha="1.5")
    with pytest.raises(TypeError, match=r"p must be a number"):
        attention.sq_pnorm_max(torch.randn(4), p=torch.tensor(1.5))
    with pytest.raises(TypeError, match=r"attention.build\('entmax'\).*unexpected keyword argument 'lam'"):
        attention.build("entmax", lam=0.1)
    with pytest.raises(TypeError, match=r"regularizer\('sq_pnorm_max'\): unexpected parameters \['alpha'\]"):
        attention.regularizer(torch.rand(3), "sq_pnorm_max", alpha=1.5)


@pytest.mark.parametrize("case", ALL)
def test_rows_without_entries_are_a_clear_error(case):
    """A (3, 0) score tensor gave torch's "cannot reshape tensor of 0 elements into shape [-1, 0]"."""
    with pytest.raises(ValueError, match=r"scores of shape \(3, 0\) have no entry along dim=1"):
        call(case, torch.zeros(3, 0))
    assert call(case, torch.zeros(0, 4)).shape == (0, 4)  # no rows at all: an empty result
    assert call(case, torch.zeros(0, 0)).shape == (0, 0)
