"""Pictures of attention: weight heatmaps with fused groups / clusters outlined, and the mappings' 2-D curves.

matplotlib is imported inside the functions, so ``import attention`` needs torch only.

    >>> import torch, attention, attention.plot as ap
    >>> w = attention.fusedmax(torch.randn(6, 12), lam=0.3)
    >>> ax = ap.heatmap(w, outline_groups="runs")          # fusedmax: runs of equal consecutive weights
    >>> ax = ap.heatmap(attention.oscarmax(torch.randn(6, 12), lam=0.1), outline_groups="clusters")
    >>> fig, ax = ap.mapping_curves()                      # the paper's Figure 2 idea
    >>> ap.save(fig, "curves")                             # curves.png and curves.pdf
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .defaults import DEFAULTS, GAMMA
from .structure import group_positions, groups

_OUTLINE_KINDS = ("runs", "segments", "clusters")
_KIND = {"runs": "segments"}  # the plots' name for fused segments
_CLUSTER_COLORS = ("#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _as_array(weights) -> np.ndarray:
    if hasattr(weights, "detach"):
        weights = weights.detach().cpu().float().numpy()
    return np.asarray(weights, dtype=np.float64)


def find_groups(row, kind: str = "runs", tol: float = 0.0, min_size: int = 2) -> list[list[int]]:
    """The groups of equal nonzero weights in one row, as lists of positions (``attention.groups``' definition).

    ``kind="runs"`` (or "segments", fusedmax): maximal runs of consecutive nonzero weights, each equal (within
    ``tol``) to its left neighbour. ``kind="clusters"`` (oscarmax): all positions sharing one nonzero weight (within
    ``tol`` of the next larger weight of the cluster), whether adjacent or not. Groups smaller than ``min_size`` are
    left out: by default a lone weight is not a group. Runs come in order of position, clusters by decreasing weight.
    """
    if kind not in _OUTLINE_KINDS:
        raise ValueError(f"find_groups: kind must be one of {_OUTLINE_KINDS}, got {kind!r}")
    labels = groups(torch.from_numpy(_as_array(row).ravel()), _KIND.get(kind, kind), rtol=0.0, atol=tol)
    return group_positions(labels, min_size=min_size)


def _pieces(positions: list[int]) -> list[tuple[int, int]]:
    """Contiguous pieces (first, last) of a sorted list of positions."""
    pieces = []
    start = prev = positions[0]
    for p in positions[1:]:
        if p != prev + 1:
            pieces.append((start, prev))
            start = p
        prev = p
    pieces.append((start, prev))
    return pieces


def heatmap(weights, row_labels=None, col_labels=None, ax=None, outline_groups=True, title=None, cmap="Blues",
            tol: float = 0.0, colorbar: bool = True):
    """A (target x source) weight matrix as a heatmap; returns the Axes.

    ``outline_groups``: ``True`` or ``"runs"`` outlines each fused group (a maximal run of equal nonzero
    consecutive weights in a row, as fusedmax makes them); ``"clusters"`` outlines each cluster (equal nonzero
    weights anywhere in a row, as oscarmax makes them), one colour per cluster, with a dashed edge around each
    piece of a cluster that is split into several; ``False`` draws no outlines.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    w = _as_array(weights)
    if w.ndim != 2:
        raise ValueError(f"heatmap: weights must be 2-D (target x source), got shape {w.shape}")
    if outline_groups is True:
        outline_groups = "runs"
    if outline_groups not in (False, None) and outline_groups not in _OUTLINE_KINDS:
        raise ValueError(f"heatmap: outline_groups must be True, False, 'runs' (= 'segments') or 'clusters', "
                         f"got {outline_groups!r}")
    if ax is None:
        width = min(14.0, 1.5 + 0.4 * w.shape[1])
        height = min(14.0, 1.0 + 0.4 * w.shape[0])
        _, ax = plt.subplots(figsize=(max(width, 3.0), max(height, 2.0)))
    vmax = float(w.max()) if w.size and w.max() > 0 else 1.0
    image = ax.imshow(w, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if outline_groups:
        for r in range(w.shape[0]):
            for c, group in enumerate(find_groups(w[r], outline_groups, tol=tol)):
                pieces = _pieces(group)
                color = _CLUSTER_COLORS[c % len(_CLUSTER_COLORS)] if outline_groups == "clusters" else "#d62728"
                style = "--" if len(pieces) > 1 else "-"
                for first, last in pieces:
                    ax.add_patch(Rectangle((first - 0.5, r - 0.5), last - first + 1, 1.0, fill=False,
                                           edgecolor=color, linewidth=2.0, linestyle=style))
    ax.set_xticks(range(w.shape[1]))
    ax.set_yticks(range(w.shape[0]))
    if col_labels is not None:
        ax.set_xticklabels(list(col_labels), rotation=60, ha="right")
    else:
        ax.tick_params(axis="x", labelbottom=w.shape[1] <= 40)
    if row_labels is not None:
        ax.set_yticklabels(list(row_labels))
    else:
        ax.tick_params(axis="y", labelleft=w.shape[0] <= 40)
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    if title is not None:
        ax.set_title(title)
    return ax


def mapping_curves(t=None, gamma: float = GAMMA, lam: float = 0.3, p: float = DEFAULTS["sq_pnorm_max"]["p"],
                   alpha: float = DEFAULTS["entmax"]["alpha"], ax=None):
    """The paper's Figure 2: Π_Ω([t, 0])_1 against t for the six mappings; returns (figure, axes).

    With two coordinates, y_1 is the weight of the first. sparsemax and sq-pnorm-max reach 0 and 1 at |t| = γ
    (sq-pnorm-max along a curve, p < 2), α-entmax at |t| = γ/(α - 1); fusedmax and oscarmax hold y = (½, ½) over
    a plateau around t = 0 that widens with λ (both penalties reduce to λ|y_1 - y_2| and λ max(y_1, y_2) here).
    """
    import matplotlib.pyplot as plt

    import attention

    t = np.linspace(-2.0, 2.0, 401) if t is None else np.asarray(t, dtype=np.float64)
    scores = torch.stack([torch.as_tensor(t, dtype=torch.float64), torch.zeros(len(t), dtype=torch.float64)], -1)
    curves = {
        "softmax": attention.softmax(scores, gamma=gamma),
        "sparsemax": attention.sparsemax(scores, gamma=gamma),
        f"sq-pnorm-max (p={p:g})": attention.sq_pnorm_max(scores, gamma=gamma, p=p),
        f"{alpha:g}-entmax": attention.entmax(scores, alpha=alpha, gamma=gamma),
        f"fusedmax (λ={lam:g})": attention.fusedmax(scores, gamma=gamma, lam=lam),
        f"oscarmax (λ={lam:g})": attention.oscarmax(scores, gamma=gamma, lam=lam),
    }
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.0, 3.6))
    else:
        fig = ax.figure
    styles = ["-", "-", "-.", (0, (1, 1)), "--", ":"]
    for (label, y), style in zip(curves.items(), styles):
        ax.plot(t, y[:, 0].numpy(), linestyle=style, linewidth=2.0, label=label)
    ax.set_xlabel("t")
    ax.set_ylabel(r"$\Pi_\Omega([t, 0])_1$")
    ax.set_title(f"two-coordinate mappings (γ={gamma:g})")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig, ax


def save(fig, path, formats=("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``path`` with each suffix in ``formats`` (a suffix on ``path`` is replaced); the paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = path.with_suffix("." + fmt)
        fig.savefig(target, dpi=dpi, bbox_inches="tight")
        written.append(target)
    return written


__all__ = ["heatmap", "mapping_curves", "save", "find_groups"]
