"""Forward passes and max_Ω values against a generic convex solver (cvxpy + CLARABEL, tight tolerances).

Π_Ω(x) = argmax_{y ∈ Δ} <y, x> - γ Ω(y) is solved directly on the unmasked entries; the library must agree.
"""

import itertools
import zlib

import numpy as np
import pytest
import torch

import attention

cp = pytest.importorskip("cvxpy")

TOL = dict(tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11, tol_ktratio=1e-9, max_iter=500)
# p-norm/power cones
SMOOTH_TOL = dict(tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9, tol_ktratio=1e-7, max_iter=500)


def omega(y, name, lam, p=None, alpha=None):
    if name == "softmax":
        return -cp.sum(cp.entr(y))
    if name == "sq_pnorm_max":
        return 0.5 * cp.square(cp.pnorm(y, p))
    if name == "entmax":
        return (cp.sum(cp.power(y, alpha)) - 1) / (alpha * (alpha - 1))
    value = 0.5 * cp.sum_squares(y)
    if name == "fusedmax" and y.shape[0] > 1:
        value = value + lam * cp.norm1(cp.diff(y))
    if name == "oscarmax" and y.shape[0] > 1:
        pairs = [cp.maximum(cp.abs(y[i]), cp.abs(y[j])) for i, j in itertools.combinations(range(y.shape[0]), 2)]
        value = value + lam * cp.sum(cp.hstack(pairs))
    return value


def solve(x, name, gamma, lam=0.0, mask=None, **shape):
    """(argmax, max value) of <y, x> - γΩ(y) over the simplex of the unmasked entries of the 1-D array x."""
    x = np.asarray(x, dtype=np.float64)
    keep = np.ones(x.shape, bool) if mask is None else np.asarray(mask)
    out = np.zeros_like(x)
    if not keep.any():
        return out, 0.0
    xs = x[keep]
    y = cp.Variable(xs.shape[0])
    problem = cp.Problem(cp.Maximize(xs @ y - gamma * omega(y, name, lam, **shape)), [y >= 0, cp.sum(y) == 1])
    problem.solve(solver="CLARABEL", **(TOL if not shape else SMOOTH_TOL))
    # the power and p-norm cones sometimes stop "inaccurate" near 1e-8: accepted there, where the tests also check
    # that our point is at least as good as the solver's
    assert problem.status == cp.OPTIMAL or (shape and problem.status == cp.OPTIMAL_INACCURATE), problem.status
    out[keep] = y.value
    value = problem.value
    if not np.isfinite(value):
        # the power cone's point can sit a hair outside y >= 0, where y**alpha is NaN: evaluate the objective at
        # the solver's point projected back onto the simplex
        ys = np.clip(y.value, 0.0, None)
        ys /= ys.sum()
        value = float(xs @ ys - gamma * omega(cp.Constant(ys), name, lam, **shape).value)
    return out, value


def stable_seed(*parts):
    """A seed that is the same in every process: hash() of a str is salted per interpreter (PYTHONHASHSEED)."""
    return zlib.crc32(repr(parts).encode())


def draw(rng, d, scale):
    """Scores with both signs, sometimes shifted to all-negative or spread wide, so all regimes show up."""
    x = rng.normal(size=d) * scale
    shift = rng.choice([0.0, -3.0, 2.0])
    return x + shift


def mask_for(rng, d):
    mask = rng.random(d) < 0.7
    return mask


STRUCTURED = [("sparsemax", None), ("fusedmax", 0.05), ("fusedmax", 0.3), ("fusedmax", 1.0),
              ("oscarmax", 0.01), ("oscarmax", 0.1), ("oscarmax", 0.5)]


def call(name, x, gamma, lam, mask=None, **extra):
    kw = {} if lam is None else {"lam": lam}
    return attention.MAPPINGS[name](x, gamma=gamma, mask=mask, **kw, **extra)


@pytest.mark.parametrize("name,lam", STRUCTURED)
@pytest.mark.parametrize("gamma", [0.3, 1.0, 2.0])
def test_forward_matches_solver(name, lam, gamma):
    rng = np.random.default_rng(stable_seed(name, lam, gamma))
    for d in range(2, 9):
        x = draw(rng, d, scale=1.0)
        got = call(name, torch.tensor(x), gamma, lam).numpy()
        want, _ = solve(x, name, gamma, lam or 0.0)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{name} x={x.tolist()} γ={gamma} λ={lam}")


@pytest.mark.parametrize("name,lam", STRUCTURED)
def test_forward_masked_matches_solver(name, lam):
    """TV runs over the unmasked entries in order; OSCAR's weights use m = number of unmasked entries."""
    rng = np.random.default_rng(7 + len(name) + int(100 * (lam or 0)))
    for d in range(2, 9):
        x = draw(rng, d, scale=1.5)
        mask = mask_for(rng, d)
        gamma = float(rng.choice([0.5, 1.0, 1.7]))
        got = call(name, torch.tensor(x), gamma, lam, mask=torch.tensor(mask)).numpy()
        want, _ = solve(x, name, gamma, lam or 0.0, mask)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{name} x={x.tolist()} mask={mask.tolist()}")


@pytest.mark.parametrize("name,lam", STRUCTURED + [("softmax", None)])
def test_max_omega_value_matches_solver(name, lam):
    rng = np.random.default_rng(11 + len(name) + int(100 * (lam or 0)))
    for d in range(2, 8):
        x = draw(rng, d, scale=1.0)
        gamma = float(rng.choice([0.4, 1.0, 2.5]))
        mask = mask_for(rng, d) if d % 2 else None
        kw = {} if lam is None else {"lam": lam}
        got = attention.max_omega(
            torch.tensor(x), name, gamma=gamma, mask=None if mask is None else torch.tensor(mask), **kw
        ).item()
        _, want = solve(x, name, gamma, lam or 0.0, mask)
        assert got == pytest.approx(want, abs=1e-6), (name, x.tolist(), gamma, lam)


def test_softmax_closed_form_and_entropy_solver():
    rng = np.random.default_rng(3)
    for d in range(2, 8):
        x = draw(rng, d, scale=2.0)
        gamma = float(rng.choice([0.3, 1.0, 3.0]))
        got = attention.softmax(torch.tensor(x), gamma=gamma).numpy()
        closed = np.exp((x - x.max()) / gamma)
        closed /= closed.sum()
        np.testing.assert_allclose(got, closed, rtol=1e-12, atol=1e-15)
        want, value = solve(x, "softmax", gamma)
        np.testing.assert_allclose(got, want, atol=1e-5)
        # max_Ω for the entropy is γ logsumexp(x / γ)
        lse = gamma * (np.log(np.exp((x - x.max()) / gamma).sum()) + x.max() / gamma)
        assert value == pytest.approx(lse, abs=1e-6)
        assert attention.max_omega(torch.tensor(x), "softmax", gamma=gamma).item() == pytest.approx(lse, abs=1e-12)


def test_regularizer_matches_cvxpy_expression():
    rng = np.random.default_rng(5)
    for name, lam in STRUCTURED + [("softmax", None)]:
        y = rng.dirichlet(np.ones(6))
        got = attention.regularizer(torch.tensor(y), name, **({} if lam is None else {"lam": lam})).item()
        want = omega(cp.Constant(y), name, lam or 0.0).value
        assert got == pytest.approx(want, rel=1e-10, abs=1e-12), name


# -- oscarmax: the exact variant is the argmax, the authors' OWL composition is not -------------------------------


def _random_oscar_cases(rng, n):
    for _ in range(n):
        d = int(rng.integers(3, 9))
        x = rng.normal(size=d) * 0.5 - 0.2  # mixed signs, small magnitudes: where OWL's |·| and clipping bite
        yield x, float(rng.choice([0.05, 0.1, 0.3])), float(rng.choice([0.5, 1.0]))


def test_oscarmax_owl_is_not_the_argmax_with_negative_scores():
    rng = np.random.default_rng(2024)
    mismatches = 0
    total = 0
    for x, lam, gamma in _random_oscar_cases(rng, 30):
        want, _ = solve(x, "oscarmax", gamma, lam)
        exact = attention.oscarmax(torch.tensor(x), gamma=gamma, lam=lam).numpy()
        owl = attention.oscarmax(torch.tensor(x), gamma=gamma, lam=lam, variant="owl").numpy()
        np.testing.assert_allclose(exact, want, atol=1e-5)  # the exact variant always is the argmax
        total += 1
        mismatches += not np.allclose(owl, want, atol=1e-4)
    # OWL differs on a decent fraction of inputs with negative scores
    assert mismatches >= total // 5, (mismatches, total)


def test_oscarmax_owl_minimal_counterexample():
    """x = (-0.3, -0.4, 1.25), λ = 0.5: OWL ranks the negative scores by |x|, so their penalty weights (and the
    pooled block they end in) are those of large entries; the argmax gives the two small ones ≈ 0.05, OWL ≈ 0.22."""
    x = torch.tensor([-0.3, -0.4, 1.25], dtype=torch.float64)
    exact = attention.oscarmax(x, lam=0.5)
    owl = attention.oscarmax(x, lam=0.5, variant="owl")
    want, _ = solve(x.numpy(), "oscarmax", 1.0, 0.5)
    np.testing.assert_allclose(exact.numpy(), want, atol=1e-5)
    assert np.abs(owl.numpy() - want).max() > 0.1


def test_oscarmax_owl_differs_even_with_nonnegative_scores():
    """Contrary to what a reading of oscarmax's docstring suggests ("differs ... when some scores are negative"),
    OWL also misses the argmax on all-nonnegative scores: its prox is clipped at 0 before the projection, which
    changes the threshold when the prox of a small score goes below 0 (about 7% of uniform [0, 0.3]^3 draws, λ=0.1)."""
    x = torch.tensor([0.2754, 0.0010, 0.0003], dtype=torch.float64)
    want, _ = solve(x.numpy(), "oscarmax", 1.0, 0.1)
    np.testing.assert_allclose(attention.oscarmax(x, lam=0.1).numpy(), want, atol=1e-5)
    assert np.abs(attention.oscarmax(x, lam=0.1, variant="owl").numpy() - want).max() > 0.02


def test_oscarmax_owl_equals_exact_in_two_dimensions():
    """With two entries the OWL and exact compositions coincide (a seeded sweep over signs and λ)."""
    x = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.5
    for lam in (0.05, 0.5):
        torch.testing.assert_close(attention.oscarmax(x, lam=lam, variant="owl"), attention.oscarmax(x, lam=lam))


def test_oscarmax_owl_equals_exact_when_lambda_is_zero():
    rng = np.random.default_rng(9)
    for d in range(1, 9):
        x = torch.tensor(rng.normal(size=(4, d)) * 2 - 1)
        torch.testing.assert_close(
            attention.oscarmax(x, lam=0.0, variant="owl"), attention.oscarmax(x, lam=0.0), rtol=0, atol=1e-14
        )
        torch.testing.assert_close(attention.oscarmax(x, lam=0.0), attention.sparsemax(x), rtol=0, atol=1e-14)


def test_oscarmax_owl_equals_exact_when_prox_stays_nonnegative():
    """On scores large enough that the OWL prox never reaches 0 (no sign flip, no clipping), the two coincide;
    the exact mapping is shift invariant, so owl(x + c) = exact(x) for large c."""
    rng = np.random.default_rng(10)
    for d in range(2, 9):
        x = torch.tensor(rng.normal(size=(5, d)))
        for lam in (0.01, 0.2):
            exact = attention.oscarmax(x, lam=lam)
            owl = attention.oscarmax(x + 10.0, lam=lam, variant="owl")
            torch.testing.assert_close(owl, exact, rtol=0, atol=1e-10)


# -- sq-pnorm-max and alpha-entmax: no closed form, so the solver is the reference ----------------------------------

SMOOTH = [("sq_pnorm_max", {"p": 1.5}), ("sq_pnorm_max", {"p": 1.2}), ("sq_pnorm_max", {"p": 1.8}),
          ("entmax", {"alpha": 1.5}), ("entmax", {"alpha": 1.25}), ("entmax", {"alpha": 1.75})]


@pytest.mark.parametrize("name,shape", SMOOTH)
def test_smooth_mappings_match_solver(name, shape):
    """Forward (masked and not, several γ) and max_Ω against cvxpy (p-norm and power cones)."""
    rng = np.random.default_rng(stable_seed(name, *shape.values()))
    for d in range(2, 8):
        x = draw(rng, d, scale=1.0)
        gamma = float(rng.choice([0.3, 1.0, 2.0]))
        mask = mask_for(rng, d) if d % 2 else None
        tmask = None if mask is None else torch.tensor(mask)
        got = attention.MAPPINGS[name](torch.tensor(x), gamma=gamma, mask=tmask, **shape).numpy()
        want, value = solve(x, name, gamma, mask=mask, **shape)
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"{name} {shape} x={x.tolist()} γ={gamma}")
        # the solver's cones are less accurate than its tolerances say (to ~2e-5 for y^1.25): the decisive check
        # is that our point is feasible and at least as good as the solver's (the maximiser is unique)
        keep = np.ones(d, bool) if mask is None else mask
        if keep.any():
            ours = x[keep] @ got[keep] - gamma * omega(cp.Constant(got[keep]), name, 0.0, **shape).value
            assert ours >= value - 1e-8, (ours, value)
            assert abs(got.sum() - 1) < 1e-12 and (got >= 0).all() and (got[~keep] == 0).all()
        got_value = attention.max_omega(torch.tensor(x), name, gamma=gamma, mask=tmask, **shape).item()
        assert got_value == pytest.approx(value, abs=1e-6)


def test_smooth_regularizers_match_cvxpy_expression():
    rng = np.random.default_rng(6)
    for name, shape in SMOOTH:
        y = rng.dirichlet(np.ones(6))
        got = attention.regularizer(torch.tensor(y), name, **shape).item()
        want = omega(cp.Constant(y), name, 0.0, **shape).value
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (name, shape)


def test_sq_pnorm_max_is_sparse_and_p2_is_sparsemax():
    x = torch.tensor([[1.0, 1.1, 0.2, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(attention.sq_pnorm_max(x, p=2.0), attention.sparsemax(x), rtol=0, atol=1e-14)
    y = attention.sq_pnorm_max(x, p=1.5)
    assert (y == 0).sum() >= 1 and abs(y.sum().item() - 1) < 1e-14
    want, _ = solve(x[0].numpy(), "sq_pnorm_max", 1.0, p=1.5)
    np.testing.assert_allclose(y[0].numpy(), want, atol=1e-6)


def test_oscarmax_one_block_shortcut():
    """Rows whose sorted prox provably pools into one block (lam (m - 1) large against the spread) get uniform
    weights without a sort: the solver agrees, rows just outside the regime take the sort and agree too."""
    rng = np.random.default_rng(12)
    hits = 0
    for _ in range(40):
        d = int(rng.integers(3, 9))
        x = rng.normal(size=d) * rng.choice([0.05, 0.3, 1.0])
        lam = float(rng.choice([0.1, 0.3, 1.0]))
        got = attention.oscarmax(torch.tensor(x), lam=lam).numpy()
        want, _ = solve(x, "oscarmax", 1.0, lam)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"x={x.tolist()} λ={lam}")
        hits += bool(np.allclose(got, 1.0 / d))
    assert 5 <= hits <= 35  # both regimes were exercised
    long = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(attention.oscarmax(long, lam=0.01), torch.full_like(long, 1e-3))
