"""Fenchel–Young losses: cross-entropy for softmax, the entmax package's losses for sparsemax and entmax, L ≥ 0
with equality at y = Π_Ω(θ), the value against a convex solver, and the closed-form gradient by gradcheck."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import randn, random_mask
from torch.autograd import gradcheck

import attention

# every mapping, with its parameters active
LOSS_CASES = {
    "softmax": {},
    "sparsemax": {},
    "fusedmax": {"lam": 0.3},
    "oscarmax": {"lam": 0.1},
    "sq_pnorm_max": {"p": 1.5},
    "entmax": {"alpha": 1.5},
    "entmax-bisect": {"alpha": 1.3},
}


def case(name):
    return name.split("-")[0], dict(LOSS_CASES[name])


def fy(scores, target, name, **kw):
    return attention.fenchel_young_loss(scores, target, name, **kw)


# -- softmax is cross-entropy -------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_is_cross_entropy_with_class_indices(reduction, dtype, gen):
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    # (N, C) with dim=-1, and CrossEntropyLoss's (N, C, d1, d2) layout with dim=1; ignore_index in both
    for shape, dim in [((7, 5), -1), ((3, 5, 4, 2), 1)]:
        scores = randn(gen, *shape, dtype=dtype, scale=3.0).requires_grad_()
        target_shape = shape[:1] + shape[2:]
        target = torch.randint(0, 5, target_shape, generator=gen)
        target.view(-1)[::3] = -100
        got = fy(scores, target, "softmax", dim=dim, reduction=reduction)
        want = F.cross_entropy(scores, target, reduction=reduction)
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)
        g = torch.randn(got.shape, generator=gen, dtype=dtype)
        (grad_got,) = torch.autograd.grad(got, scores, g)
        (grad_want,) = torch.autograd.grad(want, scores, g)
        torch.testing.assert_close(grad_got, grad_want, atol=tol, rtol=tol)
        assert (grad_got.movedim(dim, -1)[target == -100] == 0).all()  # ignored rows: no gradient


def test_softmax_with_distributions_is_kl_divergence(gen):
    """For target distributions, softmax's loss is KL(y ‖ softmax(θ)) = cross-entropy - H(y): same gradient."""
    scores = randn(gen, 6, 5, scale=2.0).requires_grad_()
    target = torch.softmax(randn(gen, 6, 5), -1)
    got = fy(scores, target, "softmax", reduction="none")
    kl = F.kl_div(torch.log_softmax(scores, -1), target, reduction="none").sum(-1)
    torch.testing.assert_close(got, kl, atol=1e-12, rtol=1e-12)
    ce = F.cross_entropy(scores, target, reduction="none")
    torch.testing.assert_close(got, ce + (target * target.log()).sum(-1), atol=1e-12, rtol=1e-12)
    (grad_got,) = torch.autograd.grad(got.sum(), scores)
    (grad_ce,) = torch.autograd.grad(ce.sum(), scores)
    torch.testing.assert_close(grad_got, grad_ce, atol=1e-12, rtol=1e-12)


def test_softmax_gamma_is_a_temperature(gen):
    """γ-softmax's loss is γ · cross-entropy(θ / γ)."""
    scores = randn(gen, 5, 7, scale=2.0)
    target = torch.randint(0, 7, (5,), generator=gen)
    for gamma in (0.3, 2.0):
        got = fy(scores, target, "softmax", gamma=gamma, reduction="none")
        torch.testing.assert_close(got, gamma * F.cross_entropy(scores / gamma, target, reduction="none"))


# -- sparsemax and entmax are the entmax package's losses ---------------------------------------------------------


def _entmax_reference(name, params):
    entmax = pytest.importorskip("entmax")
    if name == "sparsemax":
        return entmax.sparsemax_loss
    if params["alpha"] == 1.5:
        return entmax.entmax15_loss
    return lambda x, t: entmax.entmax_bisect_loss(x, t, alpha=params["alpha"], n_iter=100)


@pytest.mark.parametrize("name,params", [("sparsemax", {}), ("entmax", {"alpha": 1.5}), ("entmax", {"alpha": 1.3}),
                                         ("entmax", {"alpha": 1.7})])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_entmax_package(name, params, dtype, gen):
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    reference = _entmax_reference(name, params)
    for scale in (0.5, 2.0, 10.0):
        scores = randn(gen, 64, 9, dtype=dtype, scale=scale).requires_grad_()
        target = torch.randint(0, 9, (64,), generator=gen)
        got = fy(scores, target, name, reduction="none", **params)
        want = reference(scores, target)
        torch.testing.assert_close(got, want, atol=tol * scale, rtol=tol)
        (grad_got,) = torch.autograd.grad(got.sum(), scores)
        (grad_want,) = torch.autograd.grad(want.sum(), scores)
        torch.testing.assert_close(grad_got, grad_want, atol=tol, rtol=tol)


def test_module_equals_entmax_package_module_with_ignore_index(gen):
    entmax = pytest.importorskip("entmax")
    scores = randn(gen, 20, 6, scale=2.0)
    target = torch.randint(0, 6, (20,), generator=gen)
    target[::4] = 0
    for reduction, theirs in [("mean", "elementwise_mean"), ("sum", "sum")]:
        got = attention.FenchelYoungLoss("sparsemax", reduction=reduction, ignore_index=0)(scores, target)
        want = entmax.SparsemaxLoss(ignore_index=0, reduction=theirs)(scores, target)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


# -- the Fenchel–Young inequality, for every mapping --------------------------------------------------------------


def _targets(gen, shape):
    """one-hot, dense (Dirichlet-like) and sparse distributions"""
    one_hot = F.one_hot(torch.randint(0, shape[-1], shape[:-1], generator=gen), shape[-1]).double()
    dense = torch.softmax(randn(gen, *shape, scale=2.0), -1)
    sparse = attention.sparsemax(randn(gen, *shape, scale=2.0))
    return one_hot, dense, sparse


@pytest.mark.parametrize("name", LOSS_CASES)
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_nonnegative_and_zero_exactly_at_the_mapping(name, gamma, gen):
    mapping, params = case(name)
    scores = randn(gen, 40, 7, scale=1.5).requires_grad_()
    for target in _targets(gen, scores.shape):
        loss = fy(scores, target, mapping, gamma=gamma, reduction="none", **params)
        assert loss.min() >= -1e-12, (name, loss.min())
        assert loss.max() > 1e-3  # a random target is not the mapping's output
    weights = attention.MAPPINGS[mapping](scores.detach(), gamma=gamma, **params)
    loss = fy(scores, weights, mapping, gamma=gamma, reduction="none", **params)
    assert loss.abs().max() < 1e-12, (name, loss.abs().max())
    (grad,) = torch.autograd.grad(loss.sum(), scores)
    assert grad.abs().max() < 1e-12  # the gradient Π_Ω(θ) - y vanishes there


@pytest.mark.parametrize("name", LOSS_CASES)
def test_gradient_is_mapping_minus_target(name, gen):
    mapping, params = case(name)
    scores = randn(gen, 10, 6, scale=1.5).requires_grad_()
    target = torch.randint(0, 6, (10,), generator=gen)
    (grad,) = torch.autograd.grad(fy(scores, target, mapping, reduction="sum", **params), scores)
    want = attention.MAPPINGS[mapping](scores.detach(), **params) - F.one_hot(target, 6)
    torch.testing.assert_close(grad, want, atol=1e-14, rtol=0)


# -- against a generic convex solver -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,lam", [("sparsemax", None), ("fusedmax", 0.1), ("fusedmax", 0.5), ("oscarmax", 0.05),
                                      ("oscarmax", 0.3)])
def test_value_matches_solver(name, lam):
    """L = max_p <p - y, θ> - γ(Ω(p) - Ω(y)), with max_Ω solved by cvxpy and Ω(y) a cvxpy expression."""
    solver = pytest.importorskip("test_against_solver")
    cp = solver.cp
    rng = np.random.default_rng(solver.stable_seed("fy", name, lam))
    kw = {} if lam is None else {"lam": lam}
    for d in range(2, 8):
        x = solver.draw(rng, d, scale=1.0)
        gamma = float(rng.choice([0.5, 1.0, 2.0]))
        mask = solver.mask_for(rng, d) if d % 2 else np.ones(d, bool)
        if not mask.any():
            mask[0] = True
        y = np.zeros(d)
        y[mask] = rng.dirichlet(np.ones(mask.sum()) * 0.5)
        _, max_value = solver.solve(x, name, gamma, lam or 0.0, mask)
        omega_y = solver.omega(cp.Constant(y[mask]), name, lam or 0.0).value
        want = max_value + gamma * omega_y - x[mask] @ y[mask]
        got = fy(torch.tensor(x), torch.tensor(y), name, gamma=gamma, mask=torch.tensor(mask), **kw).item()
        assert got == pytest.approx(want, abs=1e-6), (name, x.tolist(), y.tolist(), mask.tolist(), gamma)


# -- gradcheck (float64): θ, learnable γ and λ, and a target that requires grad ----------------------------------


GC = dict(eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", LOSS_CASES)
def test_gradcheck_scores(name, gen):
    mapping, params = case(name)
    scores = randn(gen, 4, 6, scale=1.5).requires_grad_()
    target = torch.randint(0, 6, (4,), generator=gen)
    dist = torch.softmax(randn(gen, 4, 6), -1)
    mask = random_mask(gen, 4, 6)
    mask[:, 0] = True
    target_masked = torch.zeros(4, dtype=torch.int64)
    assert gradcheck(lambda s: fy(s, target, mapping, reduction="none", **params), (scores,), **GC)
    assert gradcheck(lambda s: fy(s, dist, mapping, gamma=0.7, reduction="sum", **params), (scores,), **GC)
    assert gradcheck(lambda s: fy(s, target_masked, mapping, mask=mask, **params), (scores,), **GC)


@pytest.mark.parametrize("name", ["softmax", "fusedmax", "oscarmax", "sq_pnorm_max", "entmax"])
def test_gradcheck_gamma_lambda_and_target(name, gen):
    """The envelope theorem's ∂L/∂γ = Ω(y) - Ω(Π), ∂L/∂λ = γ(penalty(y) - penalty(Π)), and ∂L/∂y = γ∇Ω(y) - θ,
    checked by finite differences of the whole loss (Π moves with them)."""
    mapping, params = case(name)
    scores = randn(gen, 3, 2, 5, scale=1.5).requires_grad_()
    gamma = (0.5 + torch.rand(2, 1, generator=gen, dtype=torch.float64)).requires_grad_()  # one per "head"
    logits = randn(gen, 3, 2, 5).requires_grad_()  # the target, kept on the simplex by a softmax
    inputs = [scores, gamma, logits]
    if "lam" in params:
        inputs.append(torch.tensor([[params.pop("lam")], [0.05]], dtype=torch.float64).requires_grad_())

    def loss(s, g, u, *lam):
        extra = {"lam": lam[0]} if lam else {}
        return fy(s, torch.softmax(u, -1), mapping, gamma=g, reduction="none", **params, **extra)

    assert gradcheck(loss, tuple(inputs), **GC)


# -- masks, ignore_index, reductions ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOSS_CASES)
def test_mask_equals_loss_on_unmasked_entries(name, gen):
    mapping, params = case(name)
    scores = randn(gen, 6, 8, scale=1.5)
    mask = random_mask(gen, 6, 8)
    mask[:, 2] = True
    mask[5] = False  # a row with nothing unmasked adds 0
    target = torch.full((6,), 2)
    scores_inf = torch.where(mask, scores, float("-inf")).requires_grad_()  # masked scores may be -inf
    got = fy(scores_inf, target, mapping, mask=mask, reduction="none", **params)
    (grad,) = torch.autograd.grad(got.sum(), scores_inf)
    assert torch.isfinite(grad).all() and (grad[~mask] == 0).all()
    for r in range(5):
        alone = scores[r][mask[r]]
        want = fy(alone, torch.tensor(int(mask[r, :2].sum())), mapping, reduction="none", **params)
        torch.testing.assert_close(got[r], want, atol=1e-12, rtol=1e-12)
    assert got[5] == 0
    mean = fy(scores, target, mapping, mask=mask, **params)
    torch.testing.assert_close(mean, got[:5].mean())  # the mean runs over the rows that count


def test_all_ignored_gives_zero_not_nan(gen):
    scores = randn(gen, 3, 4).requires_grad_()
    loss = fy(scores, torch.full((3,), -100), "fusedmax")
    loss.backward()
    assert loss.item() == 0 and (scores.grad == 0).all()


def test_no_host_sync_off_the_cpu(monkeypatch, gen):
    """On a GPU the loss reads no tensor value on the host (the target checks are skipped, as the mappings'), and
    gives the same values and gradients."""
    from test_checks import as_if_on_a_gpu

    scores = randn(gen, 4, 3, 6)
    mask = random_mask(gen, 4, 3, 6)
    mask[..., 0] = True
    labels = torch.randint(0, 6, (4, 3), generator=gen)
    labels[0, 0] = -100
    dist = torch.softmax(randn(gen, 4, 3, 6), -1) * mask
    dist = dist / dist.sum(-1, keepdim=True)
    cases = [("fusedmax", labels.clone().masked_fill_(~mask.gather(-1, labels.clamp_min(0)[..., None])[..., 0], 0),
              {"lam": 0.2}), ("entmax", dist, {"alpha": 1.5})]
    for name, target, params in cases:
        def run():
            s = scores.clone().requires_grad_()
            loss = fy(s, target, name, mask=mask, **params)
            loss.backward()
            return loss.detach(), s.grad

        expected, syncs = run(), []
        with as_if_on_a_gpu(monkeypatch, syncs):
            got = run()
        assert syncs == []
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_half_precision(gen):
    scores = randn(gen, 8, 10, dtype=torch.float32, scale=2.0)
    target = torch.randint(0, 10, (8,), generator=gen)
    for dtype in (torch.float16, torch.bfloat16):
        low = scores.to(dtype).requires_grad_()
        got = fy(low, target, "sparsemax", reduction="none")
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), fy(low.detach().float(), target, "sparsemax", reduction="none"),
                                   atol=1e-2, rtol=1e-2)
        got.sum().backward()
        assert low.grad.dtype == dtype


# -- the module ---------------------------------------------------------------------------------------------------


def test_module_registers_learnable_parameters(gen):
    gamma = torch.nn.Parameter(torch.tensor(0.8, dtype=torch.float64))
    lam = torch.nn.Parameter(torch.tensor(0.2, dtype=torch.float64))
    criterion = attention.FenchelYoungLoss("fusedmax", gamma=gamma, lam=lam, dim=1)
    assert {id(p) for p in criterion.parameters()} == {id(gamma), id(lam)}
    assert "fusedmax" in repr(criterion)
    scores = randn(gen, 4, 6, 3).requires_grad_()
    target = torch.randint(0, 6, (4, 3), generator=gen)
    loss = criterion(scores, target)
    loss.backward()
    want = fy(scores.detach(), target, "fusedmax", dim=1, gamma=0.8, lam=0.2)
    torch.testing.assert_close(loss.detach(), want)
    assert gamma.grad is not None and lam.grad is not None and gamma.grad != 0 and lam.grad != 0


# -- errors ------------------------------------------------------------------------------------------------------


def test_errors_name_what_to_fix(gen):
    scores = randn(gen, 4, 5)
    target = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="unknown attention mapping 'nope'"):
        fy(scores, target, "nope")
    with pytest.raises(ValueError, match="reduction must be one of"):
        fy(scores, target, "softmax", reduction="avg")
    with pytest.raises(ValueError, match="variant='owl' is not the argmax"):
        fy(scores, target, "oscarmax", variant="owl")
    with pytest.raises(TypeError, match=r"unexpected parameters \['lamda'\]"):
        fy(scores, target, "fusedmax", lamda=0.1)
    with pytest.raises(ValueError, match="scores' shape without dim.*pass dim=1"):
        fy(randn(gen, 4, 5, 3), target, "softmax")
    with pytest.raises(ValueError, match="target class 7 at index \\(2,\\) is out of range for 5 classes"):
        fy(scores, torch.tensor([0, 1, 7, 3]), "softmax")
    with pytest.raises(ValueError, match="target class 1 at index \\(1,\\) is masked out"):
        fy(scores, target, "sparsemax", mask=torch.tensor([True, False, True, True, True]))
    with pytest.raises(ValueError, match="probability distribution"):
        fy(scores, torch.rand(4, 5, dtype=torch.float64), "sparsemax")
    with pytest.raises(ValueError, match="probability distribution"):
        fy(scores, torch.full((4, 5), float("nan"), dtype=torch.float64), "sparsemax")
    with pytest.raises(ValueError, match="weight to masked-out entries"):
        fy(scores, torch.full((4, 5), 0.2, dtype=torch.float64), "sparsemax", mask=torch.arange(5) < 4)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        fy(scores, target, "softmax", mask=torch.ones(5))
    with pytest.raises(TypeError, match="class indices .* or distributions"):
        fy(scores, torch.ones(4, dtype=torch.bool), "softmax")
    with pytest.raises(ValueError, match="gamma"):
        attention.FenchelYoungLoss("sparsemax", gamma=-1.0)
    with pytest.raises(ValueError, match="variant='owl'"):
        attention.FenchelYoungLoss("oscarmax", variant="owl")


# -- a tensor α (issue 26: the docstring promised it, the loss refused it) ---------------------------------------


def test_tensor_alpha_per_row_gradcheck_and_module(gen):
    """α per row (requires grad): the value is that of each row's number α, and ∂L/∂θ, ∂L/∂α pass gradcheck (the
    envelope theorem's ∂L/∂α = γ(∂Ω(y)/∂α - ∂Ω(Π)/∂α), Π moving with α under finite differences)."""
    scores = randn(gen, 4, 6, scale=1.5).requires_grad_()
    target = torch.tensor([0, 5, 2, -100])
    alpha = torch.tensor([[1.3], [1.5], [1.8], [2.4]], dtype=torch.float64, requires_grad=True)
    got = fy(scores, target, "entmax", alpha=alpha, reduction="none")
    want = torch.stack([fy(scores[i:i + 1], target[i:i + 1], "entmax", alpha=float(alpha[i]), reduction="none")[0]
                        for i in range(4)])
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    assert gradcheck(lambda s, a: fy(s, target, "entmax", alpha=a, reduction="none"), (scores, alpha), **GC)
    criterion = attention.FenchelYoungLoss("entmax", alpha=torch.nn.Parameter(torch.tensor(1.5, dtype=torch.float64)))
    criterion(scores, target).backward()
    assert "alpha" in dict(criterion.named_parameters()) and criterion.alpha.grad.abs() > 0
