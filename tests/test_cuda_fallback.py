"""attention/_cuda.py without a GPU: numba-cuda present but unusable falls back to the CPU kernels with one warning;
kernels launch on the tensor's own device (cuda:1), not the current one."""

import types
import warnings

import torch

from attention import _cpu, _cuda, _ops


def test_unusable_numba_cuda_falls_back_to_cpu_with_one_warning(monkeypatch):
    def broken():
        raise RuntimeError("libNVVM cannot be found. Do `conda install cudatoolkit`")

    monkeypatch.setattr(_cuda, "_kernels", broken)
    monkeypatch.setattr(_ops, "_gpu_kernels_apply", lambda z: True)  # as if z were a CUDA tensor
    monkeypatch.setattr(_ops, "_gpu_error", None)
    monkeypatch.setattr(_ops, "_warned_fallback", False)
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    z = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([6, 3, 1, 6])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = _ops.prox_forward_off_host(z, lengths, 0.1, _cpu.PROX_TV)
        second = _ops.prox_forward_off_host(z, lengths, 0.1, _cpu.PROX_SORTED)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "libNVVM" in messages[0] and "CPU kernels" in messages[0]
    for got, want in ((first, _ops.cpu_prox_forward(z, lengths, 0.1, _cpu.PROX_TV)),
                      (second, _ops.cpu_prox_forward(z, lengths, 0.1, _cpu.PROX_SORTED))):
        assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_the_fallback_is_written_once_and_attention_has_no_import_cycle():
    """One place decides between the GPU kernels and the CPU fallback (``_ops``), and no module of attention/
    imports one that imports it back (``_cuda`` and ``functions`` used to import each other)."""
    import ast
    import pathlib

    package = pathlib.Path(_ops.__file__).parent
    imports = {}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names |= {node.module} if node.module else {alias.name for alias in node.names}
        imports[path.stem] = names
    for module, names in imports.items():
        for name in names:
            assert module not in imports.get(name, set()), f"attention.{module} and attention.{name} import each other"
    sources = {path.stem: path.read_text() for path in package.glob("*.py")}
    assert [m for m, text in sources.items() if "warnings.warn(" in text and "CPU kernels" in text] == ["_ops"]


def test_kernels_launch_on_the_tensors_device(monkeypatch):
    entered, streams, launched = [], [], []

    class Context:
        def __init__(self, index):
            self.index = index

        def __enter__(self):
            entered.append(self.index)

        def __exit__(self, *exc):
            return False

    fake = types.SimpleNamespace(gpus={0: Context(0), 1: Context(1)}, as_cuda_array=lambda t: t,
                                 external_stream=lambda handle: streams.append(handle) or handle)
    monkeypatch.setattr(_cuda, "cuda", fake)
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # the current device is cuda:0 ...
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: types.SimpleNamespace(
        cuda_stream=f"stream of {device}"))

    class Kernel:
        def __getitem__(self, config):
            return lambda *args: launched.append((config, entered[-1]))

    _cuda._launch(Kernel(), 70, torch.device("cuda", 1), torch.zeros(3), 0.5)  # ... the tensors are on cuda:1
    assert entered == [1] and streams == ["stream of cuda:1"]
    assert launched == [((2, _cuda.THREADS_PER_BLOCK, "stream of cuda:1"), 1)]
