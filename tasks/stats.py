"""Attention statistics: how sparse, and how grouped, are the attention rows a model produced.

    >>> attention_stats(weights, mask)      # weights (..., T), mask (..., T) bool (True = may attend) or None
    {"rows": 32, "support": 4.2, "support_frac": 0.31, "segments": 2.1, "clusters": 1.9, "groups": 2.1}

Per row (only rows with at least one position allowed by ``mask``; masked positions count as zero):

* support      — number of nonzero weights (``w > atol``, default 1e-10: the sparse mappings produce exact zeros;
                 softmax has every weight nonzero unless it underflows).
* support_frac — support / number of allowed positions.
* segments     — fused segments: maximal runs of *consecutive* nonzero weights that are equal (fusedmax's groups).
* clusters     — distinct nonzero values, wherever they are (oscarmax's groups).
* groups       — ``segments`` by default, ``clusters`` with ``groups="clusters"``; ``groups_kind(name)`` gives the
                 natural one for a mapping ("clusters" for oscarmax, "segments" otherwise).

Two weights are equal when ``|a - b| <= rtol * max(|a|, |b|)`` (default rtol 1e-6). The dict holds means over rows.
``AttentionStats`` accumulates the same numbers over batches (``update`` then ``compute``).
"""

from __future__ import annotations

import torch

KEYS = ("support", "support_frac", "segments", "clusters")


def groups_kind(attention_name: str) -> str:
    return "clusters" if attention_name == "oscarmax" else "segments"


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> torch.Tensor:
    return (a - b).abs() <= rtol * torch.maximum(a.abs(), b.abs())


def row_stats(weights: torch.Tensor, mask: torch.Tensor | None = None, atol: float = 1e-10,
              rtol: float = 1e-6) -> dict[str, torch.Tensor]:
    """Per-row statistics as float64 tensors of shape (rows,), plus "valid" (rows, bool) for rows with any position."""
    w = weights.detach().float().reshape(-1, weights.shape[-1])
    if mask is None:
        m = torch.ones_like(w, dtype=torch.bool)
    else:
        m = mask.expand_as(weights).reshape(-1, weights.shape[-1]).bool()
    w = torch.where(m, w, torch.zeros_like(w))
    nz = w > atol
    support = nz.sum(-1).double()
    allowed = m.sum(-1).double()
    # fused segments: a nonzero position that starts a new run (first, after a zero, or differs from its left)
    starts = nz.clone()
    if w.shape[-1] > 1:
        same_as_left = nz[:, 1:] & nz[:, :-1] & _close(w[:, 1:], w[:, :-1], rtol)
        starts[:, 1:] &= ~same_as_left
    segments = starts.sum(-1).double()
    # clusters: distinct nonzero values (sort descending: zeros last)
    s, _ = torch.sort(torch.where(nz, w, torch.zeros_like(w)), dim=-1, descending=True)
    snz = s > atol
    new_value = snz.clone()
    if w.shape[-1] > 1:
        new_value[:, 1:] &= ~(snz[:, :-1] & _close(s[:, 1:], s[:, :-1], rtol))
    clusters = new_value.sum(-1).double()
    valid = allowed > 0
    return {"support": support, "support_frac": support / allowed.clamp_min(1), "segments": segments,
            "clusters": clusters, "valid": valid}


def attention_stats(weights: torch.Tensor, mask: torch.Tensor | None = None, groups: str = "segments",
                    atol: float = 1e-10, rtol: float = 1e-6) -> dict[str, float]:
    acc = AttentionStats(groups=groups, atol=atol, rtol=rtol)
    acc.update(weights, mask)
    return acc.compute()


class AttentionStats:
    """Running means of the statistics over many batches of attention rows."""

    def __init__(self, groups: str = "segments", atol: float = 1e-10, rtol: float = 1e-6):
        if groups not in ("segments", "clusters"):
            raise ValueError(f"groups must be 'segments' or 'clusters', got {groups!r}")
        self.groups, self.atol, self.rtol = groups, atol, rtol
        self.reset()

    def reset(self) -> None:
        self.rows = 0
        self.sums = dict.fromkeys(KEYS, 0.0)

    def update(self, weights: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        stats = row_stats(weights, mask, self.atol, self.rtol)
        valid = stats["valid"]
        self.rows += int(valid.sum())
        for key in KEYS:
            self.sums[key] += float(stats[key][valid].sum())

    def compute(self) -> dict[str, float]:
        n = max(self.rows, 1)
        out = {"rows": self.rows, **{k: v / n for k, v in self.sums.items()}}
        out["groups"] = out[self.groups]
        return out
