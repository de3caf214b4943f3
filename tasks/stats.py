"""Attention statistics: how sparse, how spread out and how grouped are the attention rows a model produced.

    >>> attention_stats(weights, mask)      # weights (..., T), mask (..., T) bool (True = may attend) or None
    {"rows": 32, "support": 4.2, "support_frac": 0.31, "above_1pct": 3.9, "attn_ppl": 3.1, "segments": 2.1, ...}

Per row (only rows with at least one position allowed by ``mask``; masked positions count as zero). Two kinds of
"how many positions" are reported, on purpose under different names:

* support      — number of weights that are **exactly** nonzero. The sparse mappings produce exact zeros, so this
                 is their support; softmax is never exactly zero (short of float underflow), so for softmax it is
                 the number of allowed positions and says nothing about how concentrated the row is.
* support_frac — support / number of allowed positions.
* above_1pct   — number of weights ≥ 1% of the row's mass. Means the same thing for every mapping: compare
                 softmax with the sparse mappings on this one (or on attn_ppl), never on ``support``.
* attn_ppl     — the row's perplexity exp(H(w)), H the entropy in nats (0 log 0 = 0): the "effective number of
                 positions attended"; 1 for a one-hot row, n for a uniform row over n positions.
* segments     — fused segments: maximal runs of *consecutive* nonzero weights that are equal (fusedmax's groups).
* clusters     — distinct nonzero values, wherever they are (oscarmax's groups).
* groups       — ``segments`` by default, ``clusters`` with ``groups="clusters"``; ``groups_kind(name)`` gives the
                 natural one for a mapping ("clusters" for oscarmax, "segments" otherwise). The three are counted
                 by ``attention.num_groups`` (one definition of a group, ``attention/structure.py``).

With the scores the mapping was applied to (divided by γ, ``scores=``), two diagnostics of the score scale:

* top2_gap     — the gap between the two largest allowed scores of the row, in units of γ. sparsemax is one-hot
                 exactly when this gap is ≥ 1, whatever the other scores are.
* gap_ge_1     — the fraction of rows whose top-2 gap is ≥ 1.

With ``dead=`` (a bool per row, see ``zero_gradient_rows``):

* dead_rows    — the fraction of rows through which no gradient reaches the scores: a sparse mapping whose
                 output is one-hot (or one fused group / cluster) has a zero Jacobian, so the loss cannot move
                 those scores at all.

Two weights are equal when ``|a - b| <= rtol * max(|a|, |b|)`` (default rtol 1e-6). The dict holds means over rows.
``AttentionStats`` accumulates the same numbers over batches (``update`` then ``compute``).
"""

from __future__ import annotations

import torch

from attention import num_groups
from attention.defaults import GAMMA  # the one default γ

KEYS = ("support", "support_frac", "above_1pct", "attn_ppl", "segments", "clusters")
SCORE_KEYS = ("top2_gap", "gap_ge_1")


def _rows(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.expand_as(like).reshape(-1, like.shape[-1])


def row_stats(weights: torch.Tensor, mask: torch.Tensor | None = None, rtol: float = 1e-6,
              scores: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-row statistics as float64 tensors of shape (rows,), plus "valid" (rows, bool) for rows with any position
    (and "has_gap" for rows with at least two allowed positions when ``scores`` is given)."""
    w = weights.detach().double().reshape(-1, weights.shape[-1])
    m = torch.ones_like(w, dtype=torch.bool) if mask is None else _rows(mask.bool(), weights)
    w = torch.where(m, w, torch.zeros_like(w))
    nz = w > 0
    support = nz.sum(-1).double()
    allowed = m.sum(-1).double()
    mass = w.sum(-1, keepdim=True)
    above_1pct = (nz & (w >= 0.01 * mass)).sum(-1).double()
    p = w / mass.clamp_min(torch.finfo(torch.float64).tiny)
    entropy = -torch.where(p > 0, p * p.clamp_min(torch.finfo(torch.float64).tiny).log(), torch.zeros_like(p)).sum(-1)
    segments = num_groups(w, "segments", rtol=rtol).double()  # attention.groups' definitions, on the masked rows
    clusters = num_groups(w, "clusters", rtol=rtol).double()
    out = {"support": support, "support_frac": support / allowed.clamp_min(1), "above_1pct": above_1pct,
           "attn_ppl": entropy.exp(), "segments": segments, "clusters": clusters, "valid": allowed > 0}
    if scores is not None:
        x = scores.detach().double().reshape(-1, weights.shape[-1])
        x = torch.where(m, x, torch.full_like(x, float("-inf")))
        gap = torch.zeros_like(allowed)
        has_gap = allowed >= 2
        if w.shape[-1] >= 2:
            top2 = x.topk(2, dim=-1).values
            gap = torch.where(has_gap, top2[:, 0] - top2[:, 1], gap)
        out.update({"top2_gap": gap, "gap_ge_1": (gap >= 1).double(), "has_gap": has_gap})
    return out


def zero_gradient_rows(normalizer, scores: torch.Tensor, mask: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, rtol: float = 1e-5) -> torch.Tensor:
    """A bool per row: True where the mapping passes no gradient back to the scores of that row.

    Measured, not inferred: the vector-Jacobian product of ``normalizer(scores, mask=mask)`` with a random
    cotangent (almost surely not in the Jacobian's null space unless the Jacobian is zero). "Zero" allows for
    float rounding: every entry below ``rtol`` times the cotangent's largest entry over γ (the Jacobian of a
    sparse mapping has entries of order 1/γ when it is not zero). Rows without any allowed position are reported as
    not dead (they have no scores to learn)."""
    x = scores.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = normalizer(x, mask=mask)
        r = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        (grad,) = torch.autograd.grad(y, x, grad_outputs=r)
    grad = grad.reshape(-1, scores.shape[-1])
    scale = r.reshape(-1, scores.shape[-1]).abs().amax(-1) / float(getattr(normalizer, "gamma", GAMMA))
    allowed = torch.ones_like(grad, dtype=torch.bool) if mask is None else _rows(mask.bool(), scores)
    return (grad.abs().amax(-1) <= rtol * scale) & allowed.any(-1)


def attention_stats(weights: torch.Tensor, mask: torch.Tensor | None = None, groups: str = "segments",
                    rtol: float = 1e-6, scores: torch.Tensor | None = None) -> dict[str, float]:
    acc = AttentionStats(groups=groups, rtol=rtol)
    acc.update(weights, mask, scores=scores)
    return acc.compute()


class AttentionStats:
    """Running means of the statistics over many batches of attention rows."""

    def __init__(self, groups: str = "segments", rtol: float = 1e-6):
        if groups not in ("segments", "clusters"):
            raise ValueError(f"groups must be 'segments' or 'clusters', got {groups!r}")
        self.groups, self.rtol = groups, rtol
        self.reset()

    def reset(self) -> None:
        self.rows = 0
        self.sums = dict.fromkeys(KEYS, 0.0)
        self.gap_rows = 0
        self.gap_sums = dict.fromkeys(SCORE_KEYS, 0.0)
        self.dead_rows = 0
        self.dead_checked = 0

    def update(self, weights: torch.Tensor, mask: torch.Tensor | None = None, scores: torch.Tensor | None = None,
               dead: torch.Tensor | None = None) -> None:
        stats = row_stats(weights, mask, self.rtol, scores=scores)
        valid = stats["valid"]
        self.rows += int(valid.sum())
        for key in KEYS:
            self.sums[key] += float(stats[key][valid].sum())
        if scores is not None:
            rows = valid & stats["has_gap"]
            self.gap_rows += int(rows.sum())
            for key in SCORE_KEYS:
                self.gap_sums[key] += float(stats[key][rows].sum())
        if dead is not None:
            dead = dead.reshape(-1).cpu() & valid.cpu()
            self.dead_rows += int(dead.sum())
            self.dead_checked += int(valid.sum())

    def compute(self) -> dict[str, float]:
        n = max(self.rows, 1)
        out = {"rows": self.rows, **{k: v / n for k, v in self.sums.items()}}
        out["groups"] = out[self.groups]
        if self.gap_rows:
            out.update({k: v / self.gap_rows for k, v in self.gap_sums.items()})
        if self.dead_checked:
            out["dead_rows"] = self.dead_rows / self.dead_checked
        return out
