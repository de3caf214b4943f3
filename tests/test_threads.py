"""The numba kernels follow torch.set_num_threads and leave torch's thread count alone."""

import subprocess
import sys
import textwrap

CHECK = textwrap.dedent(
    """
    import torch, numba, attention
    torch.set_num_threads(1)
    x = torch.randn(64, 20, requires_grad=True)
    for f in (attention.sparsemax, attention.fusedmax, attention.oscarmax):
        f(x).sum().backward()
    assert torch.get_num_threads() == 1, torch.get_num_threads()
    assert numba.get_num_threads() == 1, numba.get_num_threads()
    if numba.config.NUMBA_NUM_THREADS >= 2:
        torch.set_num_threads(2)
        attention.fusedmax(x)
        assert (torch.get_num_threads(), numba.get_num_threads()) == (2, 2)
    print("threads ok")
    """
)


def test_kernels_follow_torch_thread_count():
    # a fresh process: the first kernel call is where numba's threads start (and used to reset torch's count)
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "threads ok" in done.stdout
