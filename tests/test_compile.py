"""torch.compile and torch.export: the kernels are custom ops (``torch.ops.attention.*``, attention/_ops.py).

Before, Dynamo traced into numba's dispatcher: a crash in a fresh process, graph breaks after an eager call, and
``fullgraph=True`` failed. Here every mapping compiles with ``fullgraph=True`` (forward and backward, masks,
learnable γ/λ/α, other dims) and equals eager; ``torch.library.opcheck`` checks every op (schema, fake tensors,
autograd registration, AOT dispatch with dynamic shapes); a small fusedmax model exports.

Most compiled checks use the ``aot_eager`` backend (Dynamo + AOTAutograd, the parts that saw the kernels; no C++
build); a slow test runs Inductor, the default backend, for every mapping in a fresh process.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import CASES, mapping_of, randn

import attention
from attention import _cpu, _ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(gen, n=5, d=7, dtype=torch.float64):
    z = randn(gen, n, d, dtype=dtype)
    lengths = torch.tensor([d, 0, 1, 4, d][:n] + [d] * max(0, n - 5))
    return z, lengths


# -- opcheck: every op -----------------------------------------------------------------------------------------------


def _op_cases(gen):
    z, lengths = _rows(gen)
    zg = z.clone().requires_grad_(True)
    per_row = torch.rand(5, generator=gen, dtype=torch.float64)
    grad = randn(gen, 5, 7)
    cases = {
        "sparsemax": (_ops.sparsemax.op, (zg, lengths, True)),
        "sparsemax float32": (_ops.sparsemax.op, (z.float().requires_grad_(True), lengths, True)),
        "sq_pnorm_max": (_ops.sq_pnorm_max.op, (zg, lengths, 1.5, True)),
        "entmax 1.5": (_ops.entmax.op, (zg, lengths, None, 1.5, True)),
        "entmax 1.3": (_ops.entmax.op, (zg, lengths, None, 1.3, True)),
        "entmax alpha per row": (_ops.entmax.op, (zg, lengths, (1.1 + per_row).requires_grad_(True), 0.0, True)),
        "entmax alpha 0-d": (_ops.entmax.op, (zg, lengths, torch.tensor(1.7, dtype=torch.float64,
                                                                         requires_grad=True), 0.0, True)),
    }
    for variant, label in ((_cpu.PROX_TV, "tv"), (_cpu.PROX_SORTED, "sorted"), (_cpu.PROX_OWL, "owl")):
        cases[f"prox {label}"] = (_ops.prox_sparsemax.op, (zg, lengths, None, 0.2, variant, True))
    for variant, label in ((_cpu.PROX_TV, "tv"), (_cpu.PROX_SORTED, "sorted")):
        lam = (0.3 * per_row).requires_grad_(True)
        cases[f"prox {label} lam per row"] = (_ops.prox_sparsemax.op, (zg, lengths, lam, 0.0, variant, True))
    y = _ops.sparsemax_forward(z, lengths, True)
    cases["sparsemax_backward"] = (_ops.sparsemax.backward_op, (grad, y, lengths))
    for variant, label in ((_cpu.PROX_TV, "tv"), (_cpu.PROX_SORTED, "sorted"), (_cpu.PROX_OWL, "owl")):
        yp, groups, scale = _ops.prox_sparsemax_forward(z, lengths, None, 0.2, variant, True)
        cases[f"prox_sparsemax_backward {label}"] = (_ops.prox_sparsemax.backward_op,
                                                     (grad, yp, groups, scale, lengths, variant))
    cases["sq_pnorm_max_backward"] = (_ops.sq_pnorm_max.backward_op,
                                      (grad, _ops.sq_pnorm_forward(z, lengths, 1.5, True), lengths, 1.5))
    ye = _ops.entmax_forward(z, lengths, None, 1.3, True)
    cases["entmax_backward"] = (_ops.entmax.backward_op, (grad, ye, lengths, None, 1.3))
    cases["entmax_backward alpha per row"] = (_ops.entmax.backward_op, (grad, ye, lengths, 1.3 + 0 * per_row, 0.0))
    return cases


OP_CASES = list(_op_cases(torch.Generator().manual_seed(0)))


def test_opcheck_covers_every_op():
    ops = {case[0] for case in _op_cases(torch.Generator().manual_seed(0)).values()}
    registered = {op for operator in _ops.OPERATORS.values() for op in (operator.op, operator.backward_op)}
    assert ops == registered and len(registered) == 8


@pytest.mark.parametrize("case", OP_CASES)
def test_opcheck(case, gen):
    op, args = _op_cases(gen)[case]
    torch.library.opcheck(op, args)


def test_ops_equal_the_eager_path(gen):
    """The custom op (as compiled graphs call it) and the eager Function run the same code: same values, same
    gradients, for a learnable λ too."""
    z, lengths = _rows(gen)
    lam = (0.3 * torch.rand(5, generator=gen, dtype=torch.float64)).requires_grad_(True)
    grad = randn(gen, 5, 7)
    results = []
    for call in (_ops.prox_sparsemax.op, _ops.prox_sparsemax.eager.apply):
        zg = z.clone().requires_grad_(True)
        y = call(zg, lengths, lam, 0.0, _cpu.PROX_TV, True)[0]
        results.append((y, *torch.autograd.grad(y, (zg, lam), grad)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# -- torch.compile(fullgraph=True) equals eager -----------------------------------------------------------------------


def _compare(fn, inputs, backend="aot_eager"):
    """fn compiled with fullgraph=True against eager: outputs and the gradients of every input that requires grad."""
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    got = compiled(*inputs)
    want = fn(*inputs)
    probe = torch.randn(want.shape, generator=torch.Generator().manual_seed(5), dtype=want.dtype)
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got, leaves, probe), torch.autograd.grad(want, leaves, probe)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("case", list(CASES))
def test_compile_fullgraph_with_mask_and_learnable_gamma(case, gen):
    fn, _, kw = mapping_of(case)
    x = randn(gen, 2, 3, 5, 7).requires_grad_(True)
    mask = torch.rand(2, 1, 5, 7, generator=gen) < 0.7
    mask[0, 0, 0] = False  # an all-masked row
    gamma = (torch.rand(3, 1, 1, generator=gen, dtype=torch.float64) + 0.5).requires_grad_(True)
    _compare(lambda s, m, g: fn(s, gamma=g, mask=m, **kw), (x, mask, gamma))


@pytest.mark.parametrize("case", ["softmax", "sparsemax", "fusedmax", "oscarmax", "sq_pnorm_max", "entmax-bisect"])
def test_compile_fullgraph_other_dim_float32(case, gen):
    fn, _, kw = mapping_of(case)
    x = randn(gen, 6, 4, 3, dtype=torch.float32).requires_grad_(True)
    _compare(lambda s: fn(s, dim=0, **kw), (x,))


@pytest.mark.parametrize("name", ["fusedmax", "oscarmax"])
def test_compile_fullgraph_learnable_lam(name, gen):
    x = randn(gen, 2, 3, 4, 8, scale=2.0).requires_grad_(True)
    lam = (torch.rand(3, 1, 1, generator=gen, dtype=torch.float64) * 0.3 + 0.02).requires_grad_(True)
    mask = torch.rand(2, 3, 4, 8, generator=gen) < 0.8
    _compare(lambda s, m, lm: attention.MAPPINGS[name](s, lam=lm, mask=m), (x, mask, lam))


def test_compile_fullgraph_learnable_alpha(gen):
    x = randn(gen, 2, 3, 4, 8).requires_grad_(True)
    alpha = (1.2 + torch.rand(3, 1, 1, generator=gen, dtype=torch.float64)).requires_grad_(True)
    _compare(lambda s, a: attention.entmax(s, alpha=a), (x, alpha))


def test_compiled_multihead_attention_trains_like_eager(gen):
    torch.manual_seed(0)
    layer = attention.MultiheadAttention(16, 4, batch_first=True, mapping="fusedmax", learn_gamma=True,
                                         learn_lam=True, dtype=torch.float64)
    x = randn(gen, 2, 5, 16)
    padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    _compare(lambda q: layer(q, q, q, key_padding_mask=padding, need_weights=False)[0], (x.requires_grad_(True),))


def test_compiled_checks_still_refuse_nan(gen):
    """Inside a compiled graph the CPU kernels still count non-finite rows and the op raises."""
    x = randn(gen, 3, 6)
    x[1, 2] = float("nan")
    compiled = torch.compile(lambda s: attention.fusedmax(s, lam=0.1), fullgraph=True, backend="aot_eager")
    with pytest.raises(ValueError, match=r"fusedmax: scores \(divided by gamma\) contain nan or inf in 1 row"):
        compiled(x)


# -- torch.export ----------------------------------------------------------------------------------------------------


class TinyFusedmaxModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.score = torch.nn.Linear(8, 8)

    def forward(self, x, mask):
        return attention.fusedmax(self.score(x), lam=0.2, mask=mask) @ x


def test_export_a_fusedmax_model(gen):
    torch.manual_seed(0)
    model = TinyFusedmaxModel().double()
    x = randn(gen, 3, 8, 8)
    mask = torch.rand(3, 8, 8, generator=gen) < 0.8
    exported = torch.export.export(model, (x, mask))
    assert "attention.prox_sparsemax" in str(exported.graph)
    x2 = randn(gen, 3, 8, 8)
    torch.testing.assert_close(exported.module()(x2, mask), model(x2, mask))


# -- a fresh process: where the numba crash showed --------------------------------------------------------------------

FRESH = textwrap.dedent(
    """
    import sys, torch, attention
    backend = sys.argv[1]
    names = sys.argv[2:]
    params = {"fusedmax": {"lam": 0.1}, "oscarmax": {"lam": 0.05}, "sq_pnorm_max": {"p": 1.5},
              "entmax": {"alpha": 1.3}}
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    for name in names:
        fn = lambda s: attention.MAPPINGS[name](s, **params.get(name, {}))
        y = torch.compile(fn, fullgraph=True, backend=backend)(x)   # no eager call before this one
        (grad,) = torch.autograd.grad((y * y).sum(), x)
        y0 = fn(x)
        (grad0,) = torch.autograd.grad((y0 * y0).sum(), x)
        torch.testing.assert_close(y, y0)
        torch.testing.assert_close(grad, grad0)
        print(name, "compiled ok", flush=True)
    """
)


def _fresh(backend, names):
    done = subprocess.run([sys.executable, "-c", FRESH, backend, *names], capture_output=True, text=True,
                          timeout=1800, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:-1] == [f"{name} compiled ok" for name in names]


def test_compile_in_a_fresh_process():
    """Dynamo and AOTAutograd, where the numba crash and the graph breaks were (aot_eager fails before the ops)."""
    _fresh("aot_eager", list(attention.NAMES))


@pytest.mark.slow
def test_compile_in_a_fresh_process_inductor_every_mapping():
    """torch.compile's default backend (a C++ build per graph: about a minute per mapping on a small CPU)."""
    _fresh("inductor", list(attention.NAMES))


CACHE = textwrap.dedent(
    """
    import numba, torch, attention
    from attention import _cpu
    x = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    for name in attention.NAMES:
        attention.MAPPINGS[name](x).sum().backward()
    attention.entmax(x, alpha=torch.tensor(1.3, dtype=torch.float64, requires_grad=True)).sum().backward()
    kernels = [k for k in vars(_cpu).values() if isinstance(k, numba.core.registry.CPUDispatcher)]
    print(sum(sum(k.stats.cache_hits.values()) for k in kernels), sum(sum(k.stats.cache_misses.values())
                                                                       for k in kernels))
    """
)


def test_the_numba_cache_still_serves_the_kernels():
    """Called through the ops, the numba kernels still load from the on-disk cache: a second fresh process compiles
    nothing (the first one may, if the cache was cold)."""
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", CACHE], capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
    hits, misses = map(int, done.stdout.split())
    assert hits > 0 and misses == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", list(CASES))
def test_cuda_ops_compile_and_opcheck(case, gen):
    """On a GPU: the same ops (numba-cuda prox kernels or the torch ones), compiled with Inductor, equal eager."""
    fn, _, kw = mapping_of(case)
    x = randn(gen, 2, 3, 5, 7).cuda().requires_grad_(True)
    mask = (torch.rand(2, 1, 5, 7, generator=gen) < 0.7).cuda()
    _compare(lambda s, m: fn(s, mask=m, **kw), (x, mask), backend="inductor")
    for op, args in _op_cases(gen).values():
        torch.library.opcheck(op, tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in args))
