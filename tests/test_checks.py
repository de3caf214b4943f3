"""Value checks and host syncs: every call used to make two device-to-host syncs (the prefix-mask test and the
nan/inf check). On a GPU they are now skipped unless asked for (``attention.set_checks``); the CPU keeps its
clear errors at no extra pass. A GPU is not needed to test the logic: CPU tensors are routed down the device
path by declaring them off-host, and every way a tensor's value reaches Python is made to count (and fail)."""

import contextlib

import pytest
import torch

import attention
from attention import _cpu, _layout

NAMES = {"softmax": {}, "sparsemax": {}, "fusedmax": {"lam": 0.2}, "oscarmax": {"lam": 0.05},
         "sq_pnorm_max": {"p": 1.5}, "entmax": {"alpha": 1.5}}


@contextlib.contextmanager
def as_if_on_a_gpu(monkeypatch, syncs: list):
    """CPU tensors take the device path, and a read of a tensor value on the host is recorded and refused."""

    def refuse(name):
        def wrapper(self, *args, **kwargs):
            syncs.append(name)
            raise RuntimeError(f"host sync: Tensor.{name}")
        return wrapper

    with monkeypatch.context() as patch:
        patch.setattr(_layout, "on_host", lambda device: False)
        for name in ("__bool__", "item", "tolist", "__float__", "__int__"):
            patch.setattr(torch.Tensor, name, refuse(name))
        yield


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 7, generator=g, dtype=torch.float64)
    holes = torch.rand(3, 4, 7, generator=g) < 0.7  # not a prefix: gathered
    holes[..., 0] = True
    prefix = torch.arange(7) < torch.tensor([7, 3, 5]).reshape(3, 1, 1)  # padding: a prefix
    return x, holes, prefix


@pytest.mark.parametrize("name", list(NAMES))
def test_no_host_sync_off_the_cpu(name, monkeypatch):
    x, holes, prefix = _inputs()
    fn = attention.MAPPINGS[name]
    expected = {key: fn(x, mask=mask, **NAMES[name]) for key, mask in (("holes", holes), ("prefix", prefix))}
    syncs, got = [], {}
    with as_if_on_a_gpu(monkeypatch, syncs):
        for key, mask in (("holes", holes), ("prefix", prefix)):
            xr = x.clone().requires_grad_(True)
            y = fn(xr, mask=mask, **NAMES[name])
            y.backward(torch.randn(y.shape, dtype=y.dtype))
            got[key] = (y.detach(), xr.grad)
    assert syncs == []
    for key, (y, grad) in got.items():
        torch.testing.assert_close(y, expected[key], atol=1e-9, rtol=0)  # the same result by that path
        assert torch.isfinite(grad).all()


def test_the_sync_detector_detects(monkeypatch):
    """The same path with checks on must sync (and the detector must see it): the test above could fail."""
    x, holes, _ = _inputs()
    syncs = []
    previous = attention.set_checks(True)
    try:
        with as_if_on_a_gpu(monkeypatch, syncs), pytest.raises(RuntimeError, match="host sync"):
            attention.sparsemax(x, mask=holes)
    finally:
        attention.set_checks(previous)
    assert syncs


@pytest.mark.parametrize("name", list(NAMES))
def test_checks_on_the_device_path_when_asked(name, monkeypatch):
    x, holes, _ = _inputs()
    x[1, 2, 3] = float("nan")
    holes[1, 2, 3] = True
    monkeypatch.setattr(_layout, "on_host", lambda device: False)
    previous = attention.set_checks(True)
    try:
        with pytest.raises(ValueError, match=r"nan at index \(1, 2, 3\)"):
            attention.MAPPINGS[name](x, mask=holes, **NAMES[name])
        attention.set_checks("auto")  # auto: no check off the CPU, so no error and a nan row
        y = attention.MAPPINGS[name](x, mask=holes, **NAMES[name])
        assert torch.isnan(y[1, 2]).any() and torch.isfinite(y[0]).all()
    finally:
        attention.set_checks(previous)


@pytest.mark.parametrize("name", list(NAMES))
def test_checks_off_on_the_cpu(name):
    """set_checks(False) on the CPU: no error, the row with a nan comes out nan, the others are untouched."""
    x, _, _ = _inputs()
    clean = attention.MAPPINGS[name](x, **NAMES[name])
    x[0, 1, 2] = float("inf")
    previous = attention.set_checks(False)
    try:
        y = attention.MAPPINGS[name](x, **NAMES[name])
    finally:
        attention.set_checks(previous)
    assert not torch.isfinite(y[0, 1]).all()
    others = torch.ones(3, 4, dtype=torch.bool)
    others[0, 1] = False
    torch.testing.assert_close(y[others], clean[others])
    with pytest.raises(ValueError, match=r"inf at index \(0, 1, 2\)"):  # default ("auto"): the CPU checks
        attention.MAPPINGS[name](x, **NAMES[name])


def test_set_checks_modes():
    assert attention.set_checks("auto") == "auto"
    with pytest.raises(ValueError, match=r"mode must be 'auto', True or False"):
        attention.set_checks("sometimes")
    assert _layout.checks_enabled(torch.device("cpu"))
    assert not _layout.checks_enabled(torch.device("meta"))  # "auto": off the host, no check


def test_valid_first_order_is_a_stable_sort():
    g = torch.Generator().manual_seed(3)
    valid = torch.rand(50, 9, generator=g) < 0.5
    order = _layout.valid_first_order(valid)
    torch.testing.assert_close(order, torch.sort((~valid).to(torch.uint8), dim=-1, stable=True).indices)


def test_valid_first_order_on_the_host_equals_the_torch_ops(monkeypatch):
    """On the host the order comes from one numba kernel, elsewhere (and in traced graphs) from torch ops: the same
    permutation, on rows with none, some and every entry valid, any shape with d last, and 0 rows or 0 entries."""
    g = torch.Generator().manual_seed(5)
    cases = []
    for shape in ((50, 9), (4, 3, 17), (7, 1), (1, 300), (0, 6), (6, 0), (0, 0), (2, 0, 5), (13,)):
        for p in (0.0, 0.3, 0.7, 1.0):
            cases.append(torch.rand(shape, generator=g) < p)
    valid = torch.rand(40, 33, generator=g) < 0.5
    valid[0], valid[1], valid[2, 5:] = False, True, False  # none, every one, a prefix
    cases += [valid, valid[:, ::2], valid.t(), valid[:1].expand(6, 33)]  # (and views that are not contiguous)
    called = []
    kernel = _cpu.valid_first_order
    monkeypatch.setattr(_cpu, "valid_first_order", lambda *arrays: called.append(1) or kernel(*arrays))
    for valid in cases:
        host = _layout.valid_first_order(valid)
        with monkeypatch.context() as patch:
            patch.setattr(_layout, "on_host", lambda device: False)  # the path of every other device
            counted = _layout.valid_first_order(valid)
        assert host.dtype == counted.dtype == torch.int64 and host.shape == valid.shape
        assert torch.equal(host, counted), valid
        if valid.shape[-1]:
            assert torch.equal(host, torch.sort((~valid).to(torch.uint8), dim=-1, stable=True).indices)
    assert len(called) == len(cases)  # the host path ran the kernel each time, the other path never


def test_scatter_back_inverts_the_gather():
    """_layout.scatter_back puts gathered rows back (every caller: Rows.restore, the ops' _ordered and _Layout);
    a position that the order does not name is 0 unless the order is said to be a permutation."""
    g = torch.Generator().manual_seed(6)
    valid = torch.rand(30, 11, generator=g) < 0.5
    x = torch.randn(30, 11, generator=g, dtype=torch.float64, requires_grad=True)
    order = _layout.valid_first_order(valid)
    for permutation in (False, True):
        back = _layout.scatter_back(x.gather(-1, order), order, permutation=permutation)
        assert torch.equal(back, x)
        probe = torch.randn(30, 11, generator=g, dtype=torch.float64)
        assert torch.equal(torch.autograd.grad(back, x, probe)[0], probe)
    part = _layout.scatter_back(x.detach(), order[:, :3])  # (names 3 positions of each row)
    assert torch.equal(part, torch.zeros_like(x).scatter(-1, order[:, :3], x[:, :3]))
    assert int((part != 0).sum(-1).max()) <= 3
