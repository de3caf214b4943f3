"""attention.groups / num_groups / groups_kind: exact labels on hand-made rows, batched = row by row, and the same
numbers as the three definitions it replaced (tasks/stats.py's counts in the committed records, the simplex figure's
structure classes, attention.plot's outlines), kept here verbatim as references."""

import numpy as np
import pytest
import torch

import attention
from attention import plot
from attention.structure import group_positions
from tasks.report import figures
from tasks.stats import row_stats

SEG, CLU = "segments", "clusters"


def labels(row, kind, **kw):
    return attention.groups(torch.tensor(row, dtype=torch.float64), kind, **kw).tolist()


def test_hand_made_rows():
    row = [0.25, 0.25, 0.0, 0.25, 0.25, 0.0]
    assert labels(row, SEG) == [0, 0, -1, 1, 1, -1]  # a zero splits a run
    assert labels(row, CLU) == [0, 0, -1, 0, 0, -1]  # a cluster need not be contiguous
    row = [0.1, 0.3, 0.1, 0.3, 0.1, 0.1]
    assert labels(row, SEG) == [0, 1, 2, 3, 4, 4]
    assert labels(row, CLU) == [1, 0, 1, 0, 1, 1]  # clusters numbered by decreasing weight
    assert labels([0.0, 0.0, 0.0], SEG) == labels([0.0, 0.0, 0.0], CLU) == [-1, -1, -1]
    assert labels([1.0], SEG) == labels([1.0], CLU) == [0]


def test_ties_within_rtol_and_atol():
    row = [0.3, 0.3 * (1 + 5e-7), 0.3 * (1 + 5e-6), 0.0]
    assert labels(row, SEG) == [0, 0, 1, -1]  # within rtol 1e-6 of the left neighbour, then not
    assert labels(row, SEG, rtol=0.0) == [0, 1, 2, -1]  # exact equality
    assert labels(row, SEG, rtol=1e-5) == [0, 0, 0, -1]
    assert labels(row, CLU) == [1, 1, 0, -1]
    # atol: weights <= atol are zeros, and it widens the tie by an absolute amount
    row = [1e-10, 0.5, 0.5 + 1e-9, 0.2]
    assert labels(row, SEG, rtol=0.0) == [0, 1, 2, 3]
    assert labels(row, SEG, rtol=0.0, atol=1e-9) == [-1, 0, 0, 1]
    assert labels(row, CLU, rtol=0.0, atol=1e-9) == [-1, 0, 0, 1]
    # a chain of ties is one group: each weight is compared with its (left / next larger) neighbour
    chain = [0.5, 0.5 + 8e-7, 0.5 + 16e-7]
    assert labels(chain, SEG, rtol=0.0, atol=1e-6) == [0, 0, 0]
    assert labels(chain, CLU, rtol=0.0, atol=1e-6) == [0, 0, 0]


def test_masks_and_all_masked_rows():
    w = torch.tensor([[0.5, 0.2, 0.5, 0.2], [0.4, 0.4, 0.1, 0.1], [0.3, 0.3, 0.3, 0.1]], dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True], [True, True, True, True], [False, False, False, False]])
    assert attention.groups(w, SEG, mask=mask).tolist() == [[0, -1, 1, 2], [0, 0, 1, 1], [-1] * 4]
    assert attention.groups(w, CLU, mask=mask).tolist() == [[0, -1, 0, 1], [0, 0, 1, 1], [-1] * 4]
    assert attention.num_groups(w, SEG, mask=mask).tolist() == [3, 2, 0]
    assert attention.num_groups(w, CLU, mask=mask).tolist() == [2, 2, 0]
    key_mask = torch.tensor([True, True, False, True])  # broadcast over the rows
    assert attention.num_groups(w, SEG, mask=key_mask).tolist() == [3, 2, 2]
    assert attention.num_groups(torch.zeros(2, 0), CLU).tolist() == [0, 0]


def test_batched_equals_row_by_row_and_any_dim():
    torch.manual_seed(0)
    w = _tied_rows(torch.Generator().manual_seed(1), 4 * 3, 7).reshape(4, 3, 7)
    mask = torch.rand(4, 3, 7) > 0.2
    for kind in attention.structure.KINDS:
        batched = attention.groups(w, kind, mask=mask)
        for i in range(4):
            for j in range(3):
                assert batched[i, j].tolist() == attention.groups(w[i, j], kind, mask=mask[i, j]).tolist()
        moved = attention.groups(w.transpose(1, 2), kind, dim=1, mask=mask.transpose(1, 2))
        assert torch.equal(moved.transpose(1, 2), batched)
        counts = attention.num_groups(w, kind, mask=mask)
        assert counts.shape == (4, 3) and torch.equal(counts, batched.amax(-1) + 1)


def test_groups_kind_and_bad_kind():
    assert attention.groups_kind("oscarmax") == CLU
    assert {attention.groups_kind(n) for n in attention.NAMES if n != "oscarmax"} == {SEG}
    with pytest.raises(ValueError, match="kind must be one of"):
        attention.groups(torch.ones(3), "runs")
    assert group_positions(torch.tensor([1, 0, -1, 1, 2]), min_size=2) == [[0, 3]]
    assert group_positions(torch.tensor([1, 0, -1, 1, 2])) == [[1], [0, 3], [4]]


def test_on_mappings():
    x = torch.randn(50, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fused = attention.fusedmax(x, lam=0.5)
    oscar = attention.oscarmax(x, lam=0.1)
    assert (attention.num_groups(fused, SEG) < (fused > 0).sum(-1)).any()  # fusedmax fuses
    assert (attention.num_groups(oscar, CLU) < (oscar > 0).sum(-1)).any()  # oscarmax clusters
    sparse = attention.sparsemax(x)
    assert torch.equal(attention.num_groups(sparse, CLU), (sparse > 0).sum(-1))  # no ties by chance


# ---- the definitions attention.groups replaced, verbatim (as of commit fd0a816), as references


def _old_stats_counts(weights, mask=None, rtol=1e-6):
    def _close(a, b, rtol):
        return (a - b).abs() <= rtol * torch.maximum(a.abs(), b.abs())

    w = weights.detach().double().reshape(-1, weights.shape[-1])
    m = torch.ones_like(w, dtype=torch.bool) if mask is None else mask.bool().expand_as(weights).reshape(w.shape)
    w = torch.where(m, w, torch.zeros_like(w))
    nz = w > 0
    starts = nz.clone()
    if w.shape[-1] > 1:
        same_as_left = nz[:, 1:] & nz[:, :-1] & _close(w[:, 1:], w[:, :-1], rtol)
        starts[:, 1:] &= ~same_as_left
    segments = starts.sum(-1).double()
    s, _ = torch.sort(w, dim=-1, descending=True)
    snz = s > 0
    new_value = snz.clone()
    if w.shape[-1] > 1:
        new_value[:, 1:] &= ~(snz[:, :-1] & _close(s[:, 1:], s[:, :-1], rtol))
    clusters = new_value.sum(-1).double()
    return segments, clusters


def _old_structure_class(y, kind, atol=1e-9, rtol=1e-6):
    def _close(a, b, rtol):
        return abs(a - b) <= rtol * max(abs(a), abs(b))

    nz = y > atol
    support = int(nz.sum())
    if kind == "segments":
        groups, prev = 0, None
        for i in range(len(y)):
            if nz[i] and not (prev is not None and nz[prev] and prev == i - 1 and _close(y[i], y[prev], rtol)):
                groups += 1
            prev = i
    elif kind == "clusters":
        values = sorted(y[nz], reverse=True)
        groups = sum(1 for i, v in enumerate(values) if i == 0 or not _close(v, values[i - 1], rtol))
    else:
        groups = support
    return support, groups


def _old_find_groups(row, kind="runs", tol=0.0, min_size=2):
    row = plot._as_array(row).ravel()
    groups = []
    if kind == "runs":
        start = 0
        for i in range(1, len(row) + 1):
            if i == len(row) or row[i] == 0.0 or row[start] == 0.0 or abs(row[i] - row[start]) > tol:
                if row[start] != 0.0 and i - start >= min_size:
                    groups.append(list(range(start, i)))
                start = i
        return groups
    nonzero = [i for i in np.argsort(-row, kind="stable") if row[i] != 0.0]
    k = 0
    while k < len(nonzero):
        head = row[nonzero[k]]
        j = k
        while j < len(nonzero) and abs(row[nonzero[j]] - head) <= tol:
            j += 1
        if j - k >= min_size:
            groups.append(sorted(int(i) for i in nonzero[k:j]))
        k = j
    return groups


def _tied_rows(gen, rows, width):
    """Rows full of what the definitions must agree on: zeros, exact ties, ties within and just outside rtol."""
    base = torch.tensor([0.0, 0.1, 0.25, 0.3, 1e-12], dtype=torch.float64)
    w = base[torch.randint(0, len(base), (rows, width), generator=gen)]
    nudge = torch.tensor([0.0, 0.0, 4e-7, -4e-7, 3e-6, 1e-10], dtype=torch.float64)
    w = w * (1 + nudge[torch.randint(0, len(nudge), (rows, width), generator=gen)])
    return torch.where(torch.rand(rows, width, generator=gen) < 0.1, torch.rand(rows, width, generator=gen), w)


def test_same_counts_as_the_statistics_in_the_records():
    """tasks/stats.py's segments / clusters (hence `groups` in results/*/*.json) are unchanged, masks included."""
    gen = torch.Generator().manual_seed(0)
    w = _tied_rows(gen, 3000, 9)
    mask = torch.rand(3000, 9, generator=gen) > 0.15
    mask[:20] = False  # all-masked rows
    x = torch.randn(400, 10, dtype=torch.float64, generator=gen)
    for weights, m in ((w, mask), (w, None), (w.float(), mask), (attention.fusedmax(x, lam=0.3), None),
                       (attention.oscarmax(x, lam=0.05), x > -1.5), (attention.softmax(x), None)):
        segments, clusters = _old_stats_counts(weights, m)
        new = row_stats(weights, m)
        assert torch.equal(new["segments"], segments) and torch.equal(new["clusters"], clusters)


def test_same_classes_as_the_simplex_figure():
    """The figure's grid (201 x 201, as drawn) gets the same classes. The figure's atol 1e-9 now also widens a tie by
    1e-9 (attention.groups' one definition): a difference only for nonzero weights below ~1e-3, none on the grid."""
    rows = _tied_rows(torch.Generator().manual_seed(1), 2000, 3).numpy()
    for name, params in figures.SIMPLEX_MAPPINGS:
        _, y, classes = figures.simplex_grid(name, params)
        kind = attention.groups_kind(name) if name != "sparsemax" else "support"
        assert classes == [_old_structure_class(row, kind) for row in y]
    for kind in ("segments", "clusters", "support"):
        assert figures.structure_classes(rows, kind) == [_old_structure_class(row, kind) for row in rows]


def test_same_outlines_as_the_heatmaps():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(60, 12, generator=gen)
    tied = _tied_rows(gen, 200, 8)
    for rows in (tied, attention.fusedmax(x, lam=0.3), attention.oscarmax(x, lam=0.1), tied.float()):
        for row in rows:
            for kind in ("runs", "clusters"):
                assert plot.find_groups(row, kind) == _old_find_groups(row, kind)
                assert plot.find_groups(row, kind, min_size=1) == _old_find_groups(row, kind, min_size=1)
