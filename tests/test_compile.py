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
from attention import _cpu, _layout, _ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(gen, n=5, d=7, dtype=torch.float64):
    z = randn(gen, n, d, dtype=dtype)
    lengths = torch.tensor([d, 0, 1, 4, d][:n] + [d] * max(0, n - 5))
    return z, lengths


def _scattered_mask(gen, n=5, d=7):
    """A mask that is not a prefix: its rows' valid entries are scattered (and one row has none)."""
    valid = torch.rand(n, d, generator=gen) < 0.6
    valid[0, :2] = torch.tensor([False, True])
    valid[1] = False
    return valid


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
    # rows in the scores' order with their mask (as compiled graphs on the host call the ops): a prefix mask
    # broadcast from (1, 7) and one that is not a prefix, which the ops gather valid-first and scatter back
    valid = _scattered_mask(gen)
    count = valid.sum(-1)
    prefix = (torch.arange(7) < 4).expand(5, 7)
    cases["sparsemax valid prefix view"] = (_ops.sparsemax.op, (zg, torch.full((5,), 4), True, prefix))
    cases["sparsemax valid"] = (_ops.sparsemax.op, (zg, count, True, valid))
    cases["sq_pnorm_max valid"] = (_ops.sq_pnorm_max.op, (zg, count, 1.5, True, valid))
    cases["entmax alpha per row valid"] = (_ops.entmax.op, (zg, count, (1.1 + per_row).requires_grad_(True), 0.0,
                                                            True, valid))
    cases["prox tv lam per row valid"] = (_ops.prox_sparsemax.op, (zg, count, (0.3 * per_row).requires_grad_(True),
                                                                    0.0, _cpu.PROX_TV, True, valid))
    cases["prox owl valid"] = (_ops.prox_sparsemax.op, (zg, count, None, 0.2, _cpu.PROX_OWL, True, valid))
    y = _ops.sparsemax_forward(z, lengths, True)
    cases["sparsemax_backward"] = (_ops.sparsemax.backward_op, (grad, y, lengths))
    cases["sparsemax_backward valid"] = (_ops.sparsemax.backward_op,
                                         (grad, _ops.sparsemax.op(z, count, True, valid), count, valid))
    yv, groups_v, scale_v = _ops.prox_sparsemax.op(z, count, None, 0.2, _cpu.PROX_TV, True, valid)
    cases["prox_sparsemax_backward tv valid"] = (_ops.prox_sparsemax.backward_op,
                                                 (grad, yv, groups_v, scale_v, count, _cpu.PROX_TV, valid))
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


def test_ops_order_rows_by_their_mask(gen):
    """An op given rows in the scores' order and their mask equals the op on the rows gathered valid-first,
    scattered back: values, gradients (λ's too), and with create_graph (the torch formulas, which read the rows
    valid-first too) the same gradients and their derivative in the incoming gradient."""
    z, _ = _rows(gen)
    valid = _scattered_mask(gen)
    count = valid.sum(-1)
    order = _layout.valid_first_order(valid)
    lam = (0.3 * torch.rand(5, generator=gen, dtype=torch.float64)).requires_grad_(True)
    probe, direction = randn(gen, 5, 7), randn(gen, 5, 7)
    results = []
    for given in (valid, None):
        zg, grad = z.clone().requires_grad_(True), probe.clone().requires_grad_(True)
        rows = zg if given is not None else zg.gather(-1, order)
        y = _ops.prox_sparsemax.op(rows, count, lam, 0.0, _cpu.PROX_TV, True, given)[0]
        if given is None:
            y = torch.zeros_like(y).scatter(-1, order, y)
        first = torch.autograd.grad(y, (zg, lam), probe, retain_graph=True)
        grads = torch.autograd.grad(y, (zg, lam), grad, create_graph=True)
        results.append((y, *first, *grads, *torch.autograd.grad(grads[0], grad, direction)))
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


def _mask_of(kind, gen, shape):
    """A mask for scores of ``shape`` (B, H, T, T): a prefix one (causal, as given by a Llama), an all-True padding
    mask (BERT's, when nothing is padded), and one that is not a prefix."""
    B, _, T, _ = shape
    if kind == "causal":
        return torch.ones(T, T, dtype=torch.bool).tril()
    if kind == "all-true padding":
        return torch.ones(B, 1, 1, T, dtype=torch.bool)
    mask = torch.rand(B, 1, T, T, generator=gen) < 0.7
    mask[0, 0, 1] = False  # an all-masked row
    return mask


MASKS = ["causal", "all-true padding", "not a prefix"]


@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("case", [case for case in CASES if case != "softmax"])
def test_compiled_masked_rows_equal_eager(case, kind, gen):
    """In a compiled graph on the host the ops order masked rows themselves (``_ops._ordered``): a prefix mask
    straight to the kernels, any other gathered and scattered back. Values and gradients equal eager's (bitwise:
    the same kernels on the same rows, and a permutation moves values without arithmetic)."""
    fn, _, kw = mapping_of(case)
    x = randn(gen, 2, 3, 6, 6).requires_grad_(True)
    mask = _mask_of(kind, gen, x.shape)
    torch._dynamo.reset()
    compiled = torch.compile(lambda s, m: fn(s, mask=m, **kw), fullgraph=True, backend="aot_eager")
    probe = randn(gen, *x.shape)
    got = compiled(x, mask)
    want = fn(x, mask=mask, **kw)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(got, x, probe)[0], torch.autograd.grad(want, x, probe)[0],
                               rtol=0, atol=0)


@pytest.mark.parametrize("kind", MASKS)
def test_compiled_graph_gathers_only_a_mask_that_is_not_a_prefix(kind, gen, monkeypatch):
    """The issue's cost: a compiled graph gathered every masked row valid-first (a cumsum and a scatter for the
    order, a gather of the scores, a scatter back, both again in the backward). Now the graph holds no gather and
    no scatter, and a prefix mask never builds the order (counted while tracing and while running, forward and
    backward); one that is not a prefix does, inside the ops."""
    built = []
    function = _layout.valid_first_order
    monkeypatch.setattr(_layout, "valid_first_order", lambda valid: built.append(1) or function(valid))
    graphs = []

    def recording(graph, example_inputs):
        graphs.append(graph.code)
        return graph.forward

    x = randn(gen, 2, 3, 6, 6).requires_grad_(True)
    mask = _mask_of(kind, gen, x.shape)
    torch._dynamo.reset()
    compiled = torch.compile(lambda s, m: attention.fusedmax(s, lam=0.1, mask=m), fullgraph=True, backend=recording)
    compiled(x, mask).backward(randn(gen, *x.shape))
    (code,) = graphs
    assert "attention.prox_sparsemax" in code
    assert not any(name in code for name in ("gather", "scatter", "cumsum"))
    assert len(built) == (2 if kind == "not a prefix" else 0)  # (forward and backward op)


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
