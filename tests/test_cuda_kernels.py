"""The GPU kernels of attention/_cuda.py: on numba's CUDA simulator here, on the device where there is one."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import attention

SIMULATOR_CHECK = textwrap.dedent(
    """
    import torch
    from attention import _cpu, _cuda, _torch
    from attention._ops import cpu_prox_forward as _cpu_prox_forward

    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        z = torch.randn(9, 11, dtype=dtype) * 2
        z[3, :4] = z[3, 4]  # ties
        lengths = torch.tensor([11, 0, 1, 5, 11, 3, 8, 2, 11])
        for variant in (_cpu.PROX_TV, _cpu.PROX_SORTED, _cpu.PROX_OWL):
            for lam in (0.0, 0.05, 0.4):
                gpu = _cuda.prox_sparsemax_forward(z, lengths, lam, variant)
                cpu = _cpu_prox_forward(z, lengths, lam, variant)[:3]
                # the GPU kernels run the whole row, the CPU kernels screen it first: same weights, and the same
                # Jacobian (the group labels may differ: they only have to identify the groups)
                tol = dict(atol=1e-12, rtol=0) if dtype == torch.float64 else dict(atol=1e-6, rtol=1e-5)
                torch.testing.assert_close(gpu[0], cpu[0], **tol)
                grad = torch.randn(z.shape, dtype=dtype)
                owl = variant == _cpu.PROX_OWL
                vjp_gpu = _torch.prox_sparsemax_backward(grad, gpu[0], gpu[1], gpu[2] if owl else None, lengths)
                vjp_cpu = _torch.prox_sparsemax_backward(grad, cpu[0], cpu[1], cpu[2] if owl else None, lengths)
                torch.testing.assert_close(vjp_gpu, vjp_cpu, **tol)
        # per-row lam
        lam = torch.rand(9, dtype=torch.float64)
        for variant in (_cpu.PROX_TV, _cpu.PROX_SORTED):
            gpu = _cuda.prox_sparsemax_forward(z, lengths, lam, variant)
            cpu = _cpu_prox_forward(z, lengths, lam, variant)
            torch.testing.assert_close(gpu[0], cpu[0], atol=1e-12 if dtype == torch.float64 else 1e-6, rtol=1e-5)
    # extreme scales (issue 17: the CPU kernels' screening bound rounded away every entry): the top entry gets all
    for dtype in (torch.float32, torch.float64):
        z = torch.tensor([[1e16, 0.0, -3.0], [0.0, 1e30, 5.0]], dtype=dtype)
        for variant in (_cpu.PROX_TV, _cpu.PROX_SORTED, _cpu.PROX_OWL):
            for lam in (0.0, 0.3):
                for y in (_cuda.prox_sparsemax_forward(z, torch.tensor([3, 3]), lam, variant)[0],
                          _cpu_prox_forward(z, torch.tensor([3, 3]), lam, variant)[0]):
                    torch.testing.assert_close(y, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=dtype))
    # the public functions, eager and compiled, reach the same kernels through torch.ops.attention.prox_sparsemax
    import attention
    from attention import _layout
    x = torch.randn(5, 3, 8, dtype=torch.float64)
    mask = torch.rand(5, 3, 8) > 0.2
    want = {name: attention.MAPPINGS[name](x, mask=mask, lam=0.1) for name in ("fusedmax", "oscarmax")}
    launched = []
    gpu_forward = _cuda.prox_sparsemax_forward
    _cuda.prox_sparsemax_forward = lambda *args: launched.append(1) or gpu_forward(*args)
    _layout.on_host = lambda device: False  # CPU tensors take the device path, as CUDA tensors do
    for name in want:
        torch.testing.assert_close(attention.MAPPINGS[name](x, mask=mask, lam=0.1), want[name])
    compiled = torch.compile(lambda s: attention.fusedmax(s, mask=mask, lam=0.1), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), want["fusedmax"])
    assert len(launched) == 3, launched
    print("simulated kernels agree")
    """
)


def test_cuda_kernels_match_cpu_kernels_in_the_simulator():
    pytest.importorskip("numba.cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([sys.executable, "-c", SIMULATOR_CHECK], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "simulated kernels agree" in done.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["softmax", "sparsemax", "fusedmax", "oscarmax"])
def test_cuda_matches_cpu(name):
    torch.manual_seed(0)
    x = torch.randn(64, 37, dtype=torch.float64)
    mask = torch.rand(64, 37) > 0.2
    grad = torch.randn(64, 37, dtype=torch.float64)
    results = []
    for device in ("cpu", "cuda"):
        xd = x.to(device).requires_grad_()
        y = attention.MAPPINGS[name](xd, mask=mask.to(device))
        (y * grad.to(device)).sum().backward()
        results.append((y.detach().cpu(), xd.grad.cpu()))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
