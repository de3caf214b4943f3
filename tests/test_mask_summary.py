"""The eager host path of issue 27's per-call overhead: a mask's lengths and prefix test in one numba pass over
its stored entries (``_layout.stored_lengths``), and the all-True test of ``attention.sdpa.attend``
(``_layout.all_true``). Each must give torch's values for any mask, every call: nothing is cached, so a mask
edited in place between calls is read again, and two masks of equal shapes never share a result."""

import itertools

import pytest
import torch
from conftest import CASES, mapping_of

from attention import _layout, sdpa


@pytest.fixture(autouse=True)
def numba_for_every_mask(monkeypatch):
    """The numba path for every mask here, however small (by default small masks take torch's ops)."""
    monkeypatch.setattr(_layout, "NUMBA_MASK_ENTRIES", 0)
    monkeypatch.setattr(_layout, "NUMBA_ALL_ENTRIES", 0)


def reference(valid):
    return valid.sum(-1), _layout._is_prefix(valid)


def random_masks():
    g = torch.Generator().manual_seed(0)
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    yield causal
    yield causal[None, None].expand(3, 2, 7, 7)  # transformers' (batch, 1, L, S), batch stride 0
    yield causal.T  # not a prefix, not contiguous
    yield causal.T.contiguous()[None].expand(4, 7, 7)
    yield torch.zeros(3, 5, dtype=torch.bool)  # all-False rows
    yield torch.ones(3, 5, dtype=torch.bool)
    yield torch.ones(2, 1, dtype=torch.bool)
    yield torch.zeros(2, 1, dtype=torch.bool)
    yield torch.zeros(0, 4, dtype=torch.bool)
    yield torch.zeros(3, 0, dtype=torch.bool)
    for rows, d in itertools.product((1, 2, 9), (1, 2, 3, 17, 64)):
        yield torch.rand(rows, d, generator=g) < 0.5
        yield torch.rand(rows, d, generator=g) < 0.95
        lengths = torch.randint(0, d + 1, (rows, 1), generator=g)
        prefix = torch.arange(d) < lengths
        yield prefix
        if d > 1:  # one entry of one row turned off/on: prefix no more (or still, at the row's end)
            for r, j in ((0, 0), (rows - 1, d - 1), (rows // 2, d // 2)):
                edited = prefix.clone()
                edited[r, j] = ~edited[r, j]
                yield edited
    yield torch.ones(4, 8, 8, dtype=torch.bool).tril()[:, None, :, :5]  # a slice, as the adapter's [..., :S]
    yield torch.ones(2, 6, 3, dtype=torch.bool).tril().movedim(-1, 1)  # a moved dim


@pytest.mark.parametrize("index", range(len(list(random_masks()))))
def test_stored_lengths_are_torchs(index):
    valid = list(random_masks())[index]
    lengths, prefix = _layout.stored_lengths(valid)
    expected_lengths, expected_prefix = reference(valid)
    assert lengths.dtype == torch.int64
    assert torch.equal(lengths.expand(valid.shape[:-1]), expected_lengths)
    assert prefix == expected_prefix
    assert _layout.is_stored_prefix(valid) == expected_prefix  # the compiled ops' test, by the same pass
    assert _layout.all_true(valid) == bool(valid.all())


def test_a_mask_edited_in_place_is_read_again():
    """The same tensor object, edited between calls (its _version changes, its id and data_ptr do not)."""
    mask = torch.ones(4, 4, dtype=torch.bool).tril()
    view = mask[None, None].expand(2, 1, 4, 4)
    assert _layout.stored_lengths(view)[1] and not _layout.all_true(view)
    mask[0, 3] = True  # row 0: True, False, False, True
    lengths, prefix = _layout.stored_lengths(view)
    assert not prefix and lengths.flatten().tolist() == [2, 2, 3, 4]
    mask.fill_(True)
    assert _layout.all_true(view) and _layout.stored_lengths(view)[1]
    mask[3, 0] = False
    assert not _layout.all_true(view)


@pytest.mark.parametrize("case", list(CASES))
def test_mappings_with_a_mask_edited_between_calls(case):
    """Equal shapes, different masks, the same tensor: each call gives what a fresh copy of its mask gives."""
    fn, _, params = mapping_of(case)
    scores = torch.randn(2, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    broadcast = mask[None, None].expand(2, 1, 6, 6)
    for edit in (None, (0, 5), (2, 0), (4, slice(None))):
        if edit is not None:
            mask[edit] = ~mask[edit]
        x = scores.clone().requires_grad_()
        y = fn(x, mask=broadcast, **params)
        y.backward(torch.ones_like(y).cumsum(-1))
        x_ref = scores.clone().requires_grad_()
        y_ref = fn(x_ref, mask=broadcast.clone().contiguous(), **params)
        y_ref.backward(torch.ones_like(y_ref).cumsum(-1))
        assert torch.equal(y, y_ref) and torch.equal(x.grad, x_ref.grad)
        assert torch.equal(y.masked_select(~broadcast.expand_as(y)), torch.zeros(int((~broadcast).sum()) * 2,
                                                                                     dtype=y.dtype))


@pytest.mark.parametrize("index", range(len(list(random_masks()))))
def test_masks_nothing(index):
    valid = list(random_masks())[index]
    assert sdpa._masks_nothing(valid) == bool(valid.all())


@pytest.mark.parametrize("numba", [True, False])
def test_both_paths_by_size(monkeypatch, numba):
    """The default thresholds: a mask of the Llama step's size takes numba, a generation step's torch; both give
    the same rows."""
    monkeypatch.undo()
    calls = []
    real = _layout.stored_lengths
    monkeypatch.setattr(_layout, "stored_lengths", lambda valid: calls.append(1) or real(valid))
    t = 64 if numba else 8
    mask = torch.ones(t, t, dtype=torch.bool).tril()[None, None].expand(2, 1, t, t)
    scores = torch.randn(2, 2, t, t)
    rows = _layout.to_rows(scores, -1, mask, "fusedmax", for_op=True)
    assert bool(calls) == numba and rows.order is None
    assert torch.equal(rows.lengths, mask.expand(2, 2, t, t).sum(-1).reshape(-1))


def test_no_pass_over_a_broadcast_mask(monkeypatch):
    """The lengths and the prefix test read the stored (T, T) of a batch-broadcast mask, and torch's sum and
    shifted test are not run in eager on the host."""
    seen = []
    real = _layout._cpu.mask_lengths
    monkeypatch.setattr(_layout._cpu, "mask_lengths", lambda valid, lengths: seen.append(valid.shape) or
                        real(valid, lengths))
    monkeypatch.setattr(_layout, "_is_prefix", lambda valid: pytest.fail("torch's prefix test ran"))
    mask = torch.ones(5, 5, dtype=torch.bool).tril()[None, None].expand(3, 1, 5, 5)
    rows = _layout.to_rows(torch.randn(3, 2, 5, 5), -1, mask, "fusedmax", for_op=True)
    assert seen == [(5, 5)] and rows.order is None
    assert torch.equal(rows.lengths, torch.arange(1, 6).repeat(6))
