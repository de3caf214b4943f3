"""The structure of attention weights: which weights form one group; one definition for plots, statistics, figures.

fusedmax ties *consecutive* weights (its groups are fused **segments**); oscarmax ties weights wherever they are (its
groups are **clusters** of one value). Both are read off the output alone:

* a weight is zero when it is ``<= atol`` (exact zeros by default: the sparse mappings produce them) or masked out;
  zeros belong to no group;
* two nonzero weights are tied when ``|a - b| <= atol + rtol * max(|a|, |b|)``;
* segments: maximal runs of consecutive nonzero weights, each tied to its left neighbour; numbered by position;
* clusters: the nonzero weights sorted by decreasing value, split where a weight is not tied to the one before it;
  numbered by decreasing weight.

    >>> w = torch.tensor([[0.25, 0.25, 0.0, 0.25, 0.25], [0.5, 0.2, 0.2, 0.1, 0.0]])
    >>> attention.groups(w, "segments")
    tensor([[ 0,  0, -1,  1,  1], [ 0,  1,  1,  2, -1]])
    >>> attention.groups(w, "clusters")
    tensor([[ 0,  0, -1,  0,  0], [ 0,  1,  1,  2, -1]])
    >>> attention.num_groups(w, "clusters")           # tensor([1, 3])
    >>> attention.groups_kind("oscarmax")              # "clusters" (every other mapping: "segments")

(Each mapping's kind is part of its description: ``attention.Mapping(groups=...)``.)
"""

from __future__ import annotations

import torch

from .registry import GROUP_KINDS as KINDS
from .registry import REGISTRY


def groups_kind(mapping: str) -> str:
    """The kind of group a mapping makes (its ``attention.Mapping.groups``): "clusters" for oscarmax, "segments"
    (fused runs) for every other one of the library's, and for a name that is not registered."""
    described = REGISTRY.get(mapping)
    return "segments" if described is None else described.groups


def _tied(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> torch.Tensor:
    return (a - b).abs() <= atol + rtol * torch.maximum(a.abs(), b.abs())


def _new_group(values: torch.Tensor, nonzero: torch.Tensor, rtol: float, atol: float) -> torch.Tensor:
    """True at each nonzero entry (along the last dim) that is not tied to a nonzero left neighbour."""
    new = nonzero.clone()
    if values.shape[-1] > 1:
        new[..., 1:] &= ~(nonzero[..., :-1] & _tied(values[..., 1:], values[..., :-1], rtol, atol))
    return new


def groups(weights: torch.Tensor, kind: str = "segments", dim: int = -1, mask: torch.Tensor | None = None,
           rtol: float = 1e-6, atol: float = 0.0) -> torch.Tensor:
    """The group of each weight: an int64 tensor shaped like ``weights``, -1 for zero (or masked) weights, and
    0, 1, ... along ``dim`` for the groups of each row (segments by position, clusters by decreasing weight).

    ``kind``: "segments" (fusedmax) or "clusters" (oscarmax), see ``groups_kind``. ``mask`` (broadcastable to
    ``weights``, True = may attend): masked weights count as zero, so a row with no allowed position has no group.
    Comparisons run in float64; the number of groups of each row is ``num_groups``.
    """
    if kind not in KINDS:
        raise ValueError(f"attention.groups: kind must be one of {KINDS}, got {kind!r}")
    w = weights.detach().double()
    if mask is not None:
        w = torch.where(mask.to(torch.bool).expand_as(w), w, torch.zeros_like(w))
    w = w.movedim(dim, -1)
    if kind == "segments":
        nonzero = w > atol
        labels = _new_group(w, nonzero, rtol, atol).cumsum(-1) - 1
        labels = torch.where(nonzero, labels, torch.full_like(labels, -1))
    else:
        values, order = torch.sort(w, dim=-1, descending=True, stable=True)
        nonzero = values > atol
        ranked = _new_group(values, nonzero, rtol, atol).cumsum(-1) - 1
        ranked = torch.where(nonzero, ranked, torch.full_like(ranked, -1))
        labels = torch.empty_like(ranked).scatter_(-1, order, ranked)
    return labels.movedim(-1, dim)


def num_groups(weights: torch.Tensor, kind: str = "segments", dim: int = -1, mask: torch.Tensor | None = None,
               rtol: float = 1e-6, atol: float = 0.0) -> torch.Tensor:
    """The number of groups of each row (int64, ``weights``' shape without ``dim``): 0 for a row of zeros."""
    labels = groups(weights, kind, dim=dim, mask=mask, rtol=rtol, atol=atol)
    if labels.shape[dim] == 0:
        return labels.sum(dim)
    return labels.amax(dim) + 1


def group_positions(row_labels: torch.Tensor, min_size: int = 1) -> list[list[int]]:
    """The groups of one row (labels from ``groups``) as lists of positions, in label order; groups smaller than
    ``min_size`` are left out."""
    labels = torch.as_tensor(row_labels).reshape(-1).tolist()
    members: list[list[int]] = [[] for _ in range(max(labels, default=-1) + 1)]
    for position, label in enumerate(labels):
        if label >= 0:
            members[label].append(position)
    return [g for g in members if len(g) >= min_size]


__all__ = ["groups", "num_groups", "groups_kind", "group_positions", "KINDS"]
