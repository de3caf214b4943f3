"""The paper's figures: attention maps of real runs, and the geometry of the mappings.

    python -m scripts.figures [--results results] [--out results/figures] [--snli-example auto|INDEX]
                              [--sentence auto|INDEX]

Written as PNG and PDF into ``--out``:

- ``snli_attention``: one SNLI test pair under the four mappings side by side: the weight that the last
  hypothesis state puts on each premise word (from ``<run_dir>/attention_test.json``, which ``tasks/snli`` writes
  at the end of every run).
- ``translation_alignment_<task>`` / ``summarization_alignment_<task>``: one figure per dataset, the attention
  matrix (output × source) of one test sentence per mapping, fused groups outlined (from
  ``<run_dir>/attention_test.pt``, written by ``tasks/seq2seq`` at the end of every run); its caption, generated
  from what it draws (dataset, sentence, parameters), is its title and ``<stem>.txt``.
- ``mapping_curves``: Π_Ω([t, 0])₁ as a function of t for every mapping (``attention.plot.mapping_curves``).
- ``accuracy_vs_spread``: the paper's question at a glance: per dataset, each mapping's test metric (seeds and
  mean ± std) against its attention's spread (weights ≥ 1% per row), labelled with Δ and p against softmax.
- ``simplex``: Π_Ω([t₁, t₂, 0]) for sparsemax, fusedmax and oscarmax over a grid of scores: the score plane
  coloured by the structure of the output (support size, number of fused segments / clusters) and the outputs
  on the probability simplex (d = 3), coloured the same way.

A figure whose inputs are missing is skipped with a message naming the run or file it needs; nothing crashes.
A run's files are looked for in its record's ``run_dir``, then next to the record (``<record stem>/`` or
``<record stem>.<file>``), then under ``outputs/<task>/<attention>/<run>/``.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from . import heads, sections
from .runs import (
    ATTENTION_ORDER,
    attention_name,
    attention_params,
    finished_key,
    load_local,
    mapping_rank,
    seed_of,
    task_of,
)

FORMATS = ("png", "pdf")
SNLI_FILE = "attention_test.json"
SEQ2SEQ_FILE = "attention_test.pt"
SIMPLEX_MAPPINGS = (("sparsemax", {}), ("fusedmax", {"lam": 0.3}), ("oscarmax", {"lam": 0.1}))


def say(message: str) -> None:
    print(f"[figures] {message}", file=sys.stderr)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = out / f"{stem}.{fmt}"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(path)
    _pyplot().close(fig)
    return paths


# ---- finding a run's saved files


def run_file(record: dict, name: str, results: Path | None = None) -> Path | None:
    """The file ``name`` that a run saved, or None (see the module docstring for where it is looked for)."""
    candidates = []
    if record.get("run_dir"):
        candidates.append(Path(record["run_dir"]) / name)
    if record.get("path"):
        path = Path(record["path"])
        candidates += [path.with_suffix("") / name, path.with_name(f"{path.stem}.{name}")]
    run = record.get("run") or (Path(record["path"]).stem if record.get("path") else None)
    if run:
        candidates.append(Path("outputs") / task_of(record) / attention_name(record) / str(run) / name)
    return next((c for c in candidates if c.is_file()), None)


def pick_runs(records: list, tasks: tuple) -> dict:
    """One run per attention for these tasks: the lowest seed, the latest finished among equals."""
    chosen: dict = {}
    for record in sorted(records, key=finished_key):
        if task_of(record) not in tasks:
            continue
        name = attention_name(record)
        best = chosen.get(name)
        seed = seed_of(record)
        seed = seed if isinstance(seed, (int, float)) else float("inf")
        if best is None or seed <= (seed_of(best) if isinstance(seed_of(best), (int, float)) else float("inf")):
            chosen[name] = record
    return dict(sorted(chosen.items(), key=lambda kv: _order(kv[0])))


def _order(name: str) -> int:
    return mapping_rank(name)


def _describe(record: dict) -> str:
    return f"{task_of(record)}/{attention_name(record)}/{record.get('run') or Path(record.get('path', '?')).stem}"


# ---- structure of attention rows: attention.groups' definitions (those of tasks/stats.py)


def structure_classes(y: np.ndarray, kind: str, atol: float = 1e-9, rtol: float = 1e-6) -> list[tuple[int, int]]:
    """(support size, number of groups) of each output row of ``y`` (n, d): groups are ``attention.groups``' fused
    segments or clusters (``kind``), or each nonzero weight alone (``kind="support"``)."""
    import torch

    import attention

    w = torch.as_tensor(np.asarray(y, dtype=np.float64))
    support = (w > atol).sum(-1)
    groups = support if kind == "support" else attention.num_groups(w, kind, rtol=rtol, atol=atol)
    return list(zip(support.tolist(), groups.tolist()))


def structure_class(y: np.ndarray, kind: str, atol: float = 1e-9, rtol: float = 1e-6) -> tuple[int, int]:
    """(support size, number of groups) of one output, see ``structure_classes``."""
    return structure_classes(np.asarray(y)[None], kind, atol, rtol)[0]


# ---- the heatmap with fused groups outlined: attention.plot when it is there


def outline_kind(name: str):
    """What ``attention.plot.heatmap`` outlines for a mapping: fused runs, clusters, or nothing."""
    return {"fusedmax": "runs", "oscarmax": "clusters"}.get(name, False)


def draw_heatmap(ax, matrix: np.ndarray, xlabels, ylabels, name: str, title: str = "", colorbar=False) -> None:
    """``matrix`` (rows × columns) on ``ax`` with ``attention.plot.heatmap``, the groups of ``name`` outlined."""
    from attention import plot

    plot.heatmap(np.asarray(matrix, dtype=float), row_labels=list(ylabels), col_labels=list(xlabels), ax=ax,
                 outline_groups=outline_kind(name), title=title or None, colorbar=colorbar)


# ---- SNLI: one test pair under the four mappings


def load_snli_attention(path: Path) -> list[dict]:
    data = json.loads(Path(path).read_text())
    return data.get("examples", data) if isinstance(data, dict) else data


def choose_snli_example(per_run: dict, wanted: str | int = "auto") -> int | None:
    """An index present in every run, with the same premise: ``wanted``, or (auto) the first with a premise of
    6-15 words that every model classifies correctly, else the first common one."""
    lengths = min(len(v) for v in per_run.values())
    same = [i for i in range(lengths) if len({tuple(v[i]["premise"]) for v in per_run.values()}) == 1]
    if not same:
        return None
    if wanted != "auto":
        return int(wanted) if int(wanted) in same else None
    for i in same:
        exs = [v[i] for v in per_run.values()]
        if 6 <= len(exs[0]["premise"]) <= 15 and all(e.get("prediction") == e.get("label") for e in exs):
            return i
    return same[0]


def snli_figure(records: list, out: Path, example="auto") -> list[Path]:
    runs = pick_runs(records, ("snli",))
    if not runs:
        say("snli_attention skipped: no SNLI run records (results/snli/<attention>/<run>.json); "
            "run `make sweep TASK=snli` (or `make snli ATTN=<name>`) first")
        return []
    per_run = {}
    for name, record in runs.items():
        path = run_file(record, SNLI_FILE)
        if path is None:
            say(f"snli_attention: run {_describe(record)} has no {SNLI_FILE} (looked in its run_dir "
                f"{record.get('run_dir')!r} and next to its record): its row is left out")
            continue
        per_run[name] = load_snli_attention(path)
    if not per_run:
        say(f"snli_attention skipped: none of the SNLI runs has {SNLI_FILE}")
        return []
    index = choose_snli_example(per_run, example)
    if index is None:
        say(f"snli_attention skipped: example {example} is not the same test pair in every run")
        return []
    missing = [a for a in ATTENTION_ORDER if a not in per_run]
    if missing:
        say(f"snli_attention: no run with attention maps for {', '.join(missing)}: drawn without")
    names = list(per_run)
    ex = per_run[names[0]][index]
    premise = ex["premise"]
    plt = _pyplot()
    fig, axes = plt.subplots(len(names), 1, figsize=(0.55 * len(premise) + 2.2, 0.75 * len(names) + 1.6),
                             sharex=True, squeeze=False)
    for j, (ax, name) in enumerate(zip(axes[:, 0], names)):
        item = per_run[name][index]
        weights = np.asarray(item["attention"][: len(premise)], dtype=float)[None, :]
        label = f"{name}\n→ {item['prediction']}" if item.get("prediction") else name
        draw_heatmap(ax, weights, premise if j == len(names) - 1 else [""] * len(premise), [label], name)
        for k, w in enumerate(weights[0]):
            if w > 1e-10:
                ax.text(k, 0, f"{w:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if w > 0.5 * weights.max() else "black")
    fig.suptitle(f"SNLI test pair {index}: attention of the hypothesis on the premise\n"
                 f"hypothesis: {' '.join(ex['hypothesis'])}   (gold: {ex.get('label', '?')})", fontsize=9)
    fig.tight_layout()
    return save(fig, out, "snli_attention")


# ---- translation and summarization alignments


def load_seq2seq_attention(path: Path) -> list[dict]:
    from tasks.files import load_tensors

    data = load_tensors(path)  # never runs code from the file
    return data.get("items", []) if isinstance(data, dict) else list(data)


def choose_sentence(per_run: dict, wanted="auto", max_len: int = 18) -> int | None:
    lengths = min(len(v) for v in per_run.values())
    same = [i for i in range(lengths) if len({tuple(v[i]["src"]) for v in per_run.values()}) == 1]
    if not same:
        return None
    if wanted != "auto":
        return int(wanted) if int(wanted) in same else None
    for i in same:
        items = [v[i] for v in per_run.values()]
        if 6 <= len(items[0]["src"]) <= max_len and all(3 <= len(it["hyp"]) <= max_len for it in items):
            return i
    return same[0]


def readable(token: str) -> str:
    """A token as a reader writes it: Moses escapes (``&apos;re``, ``&quot;``, ``&#124;``) undone."""
    return html.unescape(token)


def alignment_caption(label: str, index: int, runs: dict) -> str:
    params = "; ".join(f"{n}: {_params(r)}" for n, r in runs.items())
    return (f"{label}: test sentence {index}, the same source under each mapping: attention of every output word "
            f"(rows) over the source words (columns), fused groups outlined ({params})")


def alignment_figure(records: list, out: Path, task: str, stem: str | None = None, sentence="auto") -> list[Path]:
    """One test sentence of ``task``'s runs (one per mapping) side by side; the caption, generated from what is
    drawn, is the figure's title and ``<stem>.txt`` beside it. ``stem``: ``<family>_alignment_<task>``."""
    section = sections.sections_by_task(records).get(task)
    family, label = (section.table, section.label) if section else ("alignment", task)
    stem = stem or f"{family}_alignment_{task}"
    runs = pick_runs(records, (task,))
    if not runs:
        say(f"{stem} skipped: no {task} run records (results/{task}/<attention>/<run>.json)")
        return []
    per_run: dict = {}
    for name, record in runs.items():
        path = run_file(record, SEQ2SEQ_FILE)
        if path is None:
            say(f"{stem}: run {_describe(record)} has no {SEQ2SEQ_FILE} (looked in its run_dir "
                f"{record.get('run_dir')!r} and next to its record)")
            continue
        items = load_seq2seq_attention(path)
        if items:
            per_run[name] = items
    if not per_run:
        say(f"{stem} skipped: no {task} run has {SEQ2SEQ_FILE} with saved test attention")
        return []
    per_run = dict(sorted(per_run.items(), key=lambda kv: _order(kv[0])))
    index = choose_sentence(per_run, sentence)
    if index is None:
        say(f"{stem} skipped: sentence {sentence} is not the same source sentence in every {task} run")
        return []
    plt = _pyplot()
    names = list(per_run)
    src = per_run[names[0]][index]["src"]
    heights = [len(per_run[n][index]["hyp"]) for n in names]
    fig, axes = plt.subplots(1, len(names), figsize=(0.3 * len(src) * len(names) + 2, 0.3 * max(heights) + 2),
                             squeeze=False)
    for ax, name in zip(axes[0], names):
        item = per_run[name][index]
        matrix = np.asarray(item["attention"], dtype=float)[: len(item["hyp"]), : len(src)]
        draw_heatmap(ax, matrix, [readable(t) for t in src], [readable(t) for t in item["hyp"]], name, name)
    caption = alignment_caption(label, index, {n: runs[n] for n in names})
    fig.suptitle(caption, fontsize=8, wrap=True)
    fig.tight_layout()
    paths = save(fig, out, stem)
    (out / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")
    return paths


def alignment_figures(records: list, out: Path, tasks: tuple, sentence="auto") -> list[Path]:
    """One alignment figure per dataset that has runs: datasets are never mixed in one figure."""
    present = [t for t in tasks if any(task_of(r) == t for r in records)]
    if not present:
        say(f"alignment figures of {', '.join(tasks)} skipped: no run records")
    return [p for t in present for p in alignment_figure(records, out, t, sentence=sentence)]


def _params(record: dict) -> str:
    params = attention_params(record)
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


# ---- the mappings themselves


def mapping_curves_figure(out: Path) -> list[Path]:
    """Π_Ω([t, 0])₁ against t for the mappings (``attention.plot.mapping_curves``)."""
    from attention import plot

    fig, _ = plot.mapping_curves()
    return save(fig, out, "mapping_curves")


CLASS_LABELS = {
    (1, 1): "vertex (1 nonzero)",
    (2, 2): "edge (2 nonzero, distinct)",
    (2, 1): "edge, 2 equal",
    (3, 3): "interior (3 distinct)",
    (3, 2): "interior, 2 equal",
    (3, 1): "centre (3 equal)",
}
CLASS_COLOURS = {
    (1, 1): "#1b9e77", (2, 2): "#7570b3", (2, 1): "#e7298a", (3, 3): "#d9d9d9", (3, 2): "#e6ab02", (3, 1): "#d95f02",
}


GRID_SHIFT = 1e-3 * np.sqrt(2)  # t2 is shifted off the grid of t1, so no grid point sits exactly on t1 = ±t2


def simplex_grid(name: str, params: dict, lim: float = 2.0, steps: int = 201):
    """Scores [t1, t2, 0] on a grid, their images Π(x) (steps², 3) and the structure class of each."""
    import torch

    import attention

    t = np.linspace(-lim, lim, steps)
    t1, t2 = np.meshgrid(t, t + GRID_SHIFT)
    x = np.stack([t1.ravel(), t2.ravel(), np.zeros(t1.size)], axis=1)
    y = attention.MAPPINGS[name](torch.tensor(x, dtype=torch.float64), **params).numpy()
    kind = attention.groups_kind(name) if name != "sparsemax" else "support"
    classes = structure_classes(y, kind)
    return t, y, classes


def to_ternary(y: np.ndarray) -> np.ndarray:
    """Barycentric (y1, y2, y3) -> 2-d points of the triangle with vertices e1=(0,0), e2=(1,0), e3=(½,√3/2)."""
    return np.stack([y[:, 1] + 0.5 * y[:, 2], (np.sqrt(3) / 2) * y[:, 2]], axis=1)


def simplex_figure(out: Path, mappings=SIMPLEX_MAPPINGS, steps: int = 201) -> list[Path]:
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = _pyplot()
    keys = list(CLASS_LABELS)
    cmap = ListedColormap([CLASS_COLOURS[k] for k in keys])
    fig, axes = plt.subplots(2, len(mappings), figsize=(3.4 * len(mappings), 6.6), squeeze=False)
    seen = set()
    grids = [simplex_grid(name, params, steps=steps) for name, params in mappings]
    for j, ((name, params), (t, y, classes)) in enumerate(zip(mappings, grids)):
        codes = np.array([keys.index(c) if c in keys else -1 for c in classes]).reshape(len(t), len(t))
        seen |= set(classes)
        top = axes[0][j]
        top.imshow(np.ma.masked_less(codes, 0), origin="lower",
                   extent=(t[0], t[-1], t[0] + GRID_SHIFT, t[-1] + GRID_SHIFT), cmap=cmap, vmin=-0.5,
                   vmax=len(keys) - 0.5, interpolation="nearest")
        label = ", ".join(f"λ={v}" if k == "lam" else f"{k}={v}" for k, v in params.items())
        top.set_title(f"{name}" + (f" ({label})" if label else ""), fontsize=10)
        top.set_xlabel("$t_1$")
        if j == 0:
            top.set_ylabel("$t_2$   (scores $x = [t_1, t_2, 0]$)")
        bottom = axes[1][j]
        pts = to_ternary(y)
        # a class with g groups fills a (g-1)-dimensional face of the simplex: draw the 2-d (interior) set first,
        # then the segments (edges, equal pairs), then the points (vertices, centre, edge midpoints) on top
        for c in sorted(set(classes), key=lambda c: -c[1]):
            idx = [i for i, k in enumerate(classes) if k == c]
            bottom.scatter(pts[idx, 0], pts[idx, 1], color=CLASS_COLOURS.get(c, "black"), s={3: 2, 2: 4}.get(c[1], 16),
                           linewidths=0, zorder=4 - c[1])
        tri = np.array([[0, 0], [1, 0], [0.5, np.sqrt(3) / 2], [0, 0]])
        bottom.plot(tri[:, 0], tri[:, 1], color="black", linewidth=0.8)
        for (px, py), text, ha in (((0, 0), "$y_1$", "right"), ((1, 0), "$y_2$", "left"),
                                   ((0.5, np.sqrt(3) / 2), "$y_3$", "center")):
            bottom.text(px, py + (0.03 if text == "$y_3$" else -0.05), text, ha=ha, fontsize=9)
        bottom.set_aspect("equal")
        bottom.axis("off")
        bottom.set_title("$\\Pi_\\Omega(x)$ on the simplex", fontsize=9)
    handles = [Patch(color=CLASS_COLOURS[k], label=CLASS_LABELS[k]) for k in keys if k in seen]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Structure of $\\Pi_\\Omega$ for d = 3: sparsity (support) and fused / clustered (equal) weights",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    return save(fig, out, "simplex")


# ---- training dynamics: how sparse the attention gets, and whether gradient still reaches its scores


DYNAMICS_PANELS = (
    ("ppl", "validation perplexity", "log"),
    ("support", "nonzero weights per row (softmax: all)", "log"),
    ("groups", "groups per row (fused segments; oscarmax: clusters)", "log"),
    ("above_1pct", "weights ≥ 1% of the row", "log"),
    ("dead_rows", "rows passing no gradient to their scores (%)", "linear"),
    ("top2_gap", "top-2 score gap / γ (sparsemax one-hot above 1)", "log"),
)
MAPPING_COLOURS = {"softmax": "#1f77b4", "sparsemax": "#ff7f0e", "fusedmax": "#2ca02c", "oscarmax": "#d62728",
                   "entmax": "#9467bd", "sq_pnorm_max": "#8c564b"}


def _config_labels(records: list) -> dict:
    """A short label per record (by id) from the settings that differ between the records' configurations, e.g.
    ``optimizer.name=sgd``, and an attention parameter where a run differs from the usual value of its mapping
    (``gamma=16.0``). A setting that splits the records exactly as an earlier one does (``optimizer.lr`` beside
    ``optimizer.name``) is left out: it adds nothing."""
    from .runs import result_config

    def canonical(v) -> str:
        return json.dumps(v, sort_keys=True, default=str)

    flat = [result_config(r) for r in records]
    # attention parameters count where they differ between runs of the same mapping (fusedmax's λ is not a
    # configuration difference from softmax)
    by_name: dict = {}
    for r in records:
        by_name.setdefault(attention_name(r), []).append(attention_params(r))
    for r, f in zip(records, flat):
        same = by_name[attention_name(r)]
        for k, v in attention_params(r).items():
            counts = Counter(canonical(p.get(k)) for p in same)
            # only a value other than the mapping's usual one is a difference worth a line style
            if len(counts) > 1 and canonical(v) != counts.most_common(1)[0][0]:
                f[k] = v
    keys = sorted({k for f in flat for k in f}, key=lambda k: (not k.endswith(".name"), k))
    varying, partitions = [], set()
    for k in keys:
        values = [canonical(f.get(k)) for f in flat]
        if len(set(values)) < 2:
            continue
        partition = frozenset(frozenset(i for i, v in enumerate(values) if v == u) for u in set(values))
        if partition not in partitions:
            partitions.add(partition)
            varying.append(k)
    short = lambda k: k.split(".", 1)[1] if k.startswith(("task.", "trainer.")) else k  # noqa: E731
    return {id(r): ", ".join(f"{short(k)}={f[k]}" for k in varying if k in f) for r, f in zip(records, flat)}


def _plain_log_ticks(axis, subs=(1.0,)) -> None:
    """Plain numbers, not powers of ten, on a short log-scaled axis (ticks at subs × 10^k)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def dynamics_figure(records: list, out: Path, tasks: tuple | None = None,
                    stem: str = "attention_dynamics", title: str = "") -> list[Path]:
    """Per epoch (validation set): perplexity, weights ≥ 1% per attention row, the share of rows through which
    no gradient reaches the attention scores, and the gap between the two largest scores (in units of γ; sparsemax
    is one-hot exactly when it is ≥ 1). One line per run: colour = mapping, line style = configuration."""
    runs = [r for r in records if (tasks is None or task_of(r) in tasks) and any("top2_gap" in (h.get("valid") or {})
                                                               for h in r.get("history") or [])]
    if not runs:
        say(f"{stem} skipped: no run with per-epoch attention diagnostics (records of this version of the harness)")
        return []
    runs.sort(key=lambda r: (_order(attention_name(r)), str(seed_of(r))))
    labels = _config_labels(runs)
    styles = {}
    for r in runs:
        styles.setdefault(labels[id(r)], ("-", "--", ":", "-.", (0, (5, 1)), (0, (1, 3)))[len(styles) % 6])
    plt = _pyplot()
    cols = 3
    nrows = -(-len(DYNAMICS_PANELS) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.3 * cols, 3.3 * nrows), squeeze=False)
    for ax, (key, label, scale) in zip(axes.ravel(), DYNAMICS_PANELS):
        for r in runs:
            hist = [h for h in r.get("history") or [] if key in (h.get("valid") or {})]
            if not hist:
                continue
            xs = [h["epoch"] for h in hist]
            ys = [h["valid"][key] * (100 if key == "dead_rows" else 1) for h in hist]
            name = attention_name(r)
            ax.plot(xs, ys, color=MAPPING_COLOURS.get(name, "black"), linestyle=styles[labels[id(r)]],
                    marker="o", markersize=2.5, linewidth=1.2)
        ax.set_title(label, fontsize=8.5)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_yscale(scale)
        if scale == "log":
            _plain_log_ticks(ax.yaxis)
        ax.tick_params(labelsize=7)
        if key == "top2_gap":
            ax.axhline(1.0, color="grey", linewidth=0.7, linestyle=":")
    from matplotlib.lines import Line2D

    names = sorted({attention_name(r) for r in runs}, key=_order)
    handles = [Line2D([], [], color=MAPPING_COLOURS.get(n, "black"), label=n) for n in names]
    handles += [Line2D([], [], color="grey", linestyle=st, label=lab or "(one configuration)")
                for lab, st in styles.items() if len(styles) > 1]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=7.5, frameon=False)
    fig.suptitle(title or f"Attention during training ({', '.join(sorted({task_of(r) for r in runs}))}, "
                 "validation set, per epoch)", fontsize=10)
    fig.tight_layout(rect=(0, 0.03 + 0.025 * (-(-len(handles) // 4)), 1, 0.96))
    return save(fig, out, stem)


def dynamics_figures(records: list, out: Path) -> list[Path]:
    """``dynamics_figure`` once per task when the records span several (``attention_dynamics_<task>``): curves of
    SNLI, translation and summarization on one set of axes would share nothing but the colours."""
    tasks = sorted({task_of(r) for r in records})
    if len(tasks) <= 1:
        return dynamics_figure(records, out)
    made = []
    for task in tasks:
        made += dynamics_figure(records, out, tasks=(task,), stem=f"attention_dynamics_{task}")
    return made


# ---- accuracy against attention spread


def tradeoff_figure(records: list, out: Path, paper: dict | None = None, samples: int = 1000,
                    stem: str = "accuracy_vs_spread") -> list[Path]:
    """The paper's question in one picture: per dataset, each table row's test metric (every seed a dot, mean ± std
    a bar) against how many source positions its attention rows spread over (weights ≥ 1% of the row, the measure
    that means the same thing for every mapping, mean ± std over seeds). Each legend entry gives the row's paired
    difference to softmax and p-value, the same numbers as in ``make tables`` (same rows, same bootstrap)."""
    from .grouping import build_table, has_runs

    panels = []
    for experiment in sections.experiments(records):
        table = build_table(experiment, records, paper, samples=samples)
        metric = next(m for m in experiment.metrics if m.compare)
        for ds in table.datasets:
            points = []
            for row in table.rows_of(ds):
                ys, xs = table.cells.get((row, ds.key, metric.key)), table.cells.get((row, ds.key, "above_1pct"))
                if ys is None or not ys.n:
                    continue
                if xs is None or not xs.n:
                    say(f"{stem}: {ds.label} {row} has no attention statistics (above_1pct): left out")
                    continue
                points.append((row, xs, ys, table.comparisons.get((row, ds.key, metric.key))))
            if has_runs(table, ds) and points:
                label = metric.label + (" (%)" if table.scale.get(metric.key) == 100.0 else "")
                # remarks: a preset's notes, e.g. "a pipeline check, not a result"
                panels.append((ds.label, table.remarks.get(ds.key, []), label, points))
    if not panels:
        say(f"{stem} skipped: no run with a test metric and attention statistics")
        return []
    panels.sort(key=lambda panel: bool(panel[1]))  # results first, datasets with a preset note (checks) last
    plt = _pyplot()
    cols = min(len(panels), 2)
    nrows = -(-len(panels) // cols)
    # rows split by configuration have long labels: their legends go under the axes, one line each
    most = max(len(points) for *_, points in panels)
    below = most > 5 or any(len(row) > 40 for *_, points in panels for row, *_ in points)
    extra = 0.16 * most if below else 0.0
    fig, axes = plt.subplots(nrows, cols, figsize=(max(5.2 * cols, 7.5 if below else 0), (3.8 + extra) * nrows),
                             squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax, (title, remarks, ylabel, points) in zip(axes.ravel(), panels):
        for row, xs, ys, comparison in points:
            colour = MAPPING_COLOURS.get(row.split(" ")[0], "black")
            ax.scatter([xs.mean] * ys.n, ys.values, color=colour, s=12, alpha=0.45, linewidths=0)
            label = f"{row.replace('trainer.', '')} (n={ys.n})"
            if comparison is not None and not isinstance(comparison, str):  # a str says why there is no Δ
                label += f": Δ {comparison.delta:+.2f}, {comparison.p_text}"
            ax.errorbar(xs.mean, ys.mean, yerr=ys.std or 0.0, xerr=xs.std or 0.0, color=colour, marker="o",
                        markersize=5, capsize=2.5, linewidth=1.1, label=label)
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis, subs=(1.0, 2.0, 5.0))
        ax.margins(x=0.25, y=0.35)  # room for the legend
        if below:
            ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(0.0, -0.16), frameon=False, handletextpad=0.3)
        else:
            ax.legend(fontsize=6.5, loc="best", frameon=False, handletextpad=0.3)
        ax.set_title("\n".join([title] + remarks), fontsize=7.5 if remarks else 9)
        ax.set_xlabel("weights ≥ 1% per attention row (test)", fontsize=7.5)
        ax.set_ylabel(ylabel, fontsize=7.5)
        ax.tick_params(labelsize=7)
    fig.suptitle("Test metric against attention spread: dots are seeds, bars mean ± std; "
                 "Δ and p: paired bootstrap vs softmax", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return save(fig, out, stem)


# ---- all of them


def make_all(records: list, out: Path, snli_example="auto", sentence="auto") -> dict:
    made: dict = {}
    tasks_of_table = {e.key: tuple(e.sections) for e in sections.experiments(records)}
    steps = (
        ("simplex", lambda: simplex_figure(out)),
        ("mapping_curves", lambda: mapping_curves_figure(out)),
        ("snli_attention", lambda: snli_figure(records, out, snli_example)),
        ("translation_alignment", lambda: alignment_figures(records, out, tasks_of_table["translation"], sentence)),
        ("summarization_alignment", lambda: alignment_figures(records, out, tasks_of_table["summarization"],
                                                              sentence)),
        ("attention_dynamics", lambda: dynamics_figures(records, out)),
        ("accuracy_vs_spread", lambda: tradeoff_figure(records, out)),
        ("transformer_learned_parameters", lambda: heads.learned_figure(records, out)),
        ("transformer_learned_trajectory", lambda: heads.trajectory_figure(records, out)),
        ("transformer_cross_attention_heads", lambda: heads.heads_grid_figure(records, out)),
    )
    for name, step in steps:
        try:
            made[name] = step()
        except Exception as error:  # noqa: BLE001 - one broken input never stops the other figures
            say(f"{name} failed: {type(error).__name__}: {error}")
            made[name] = []
    return made


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="root of the local run records")
    parser.add_argument("--out", default=None, help="output directory (default: <results>/figures)")
    parser.add_argument("--snli-example", default="auto", help="index of the SNLI test pair (default: auto)")
    parser.add_argument("--sentence", default="auto", help="index of the translation/summarization test sentence")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.results) / "figures"
    made = make_all(load_local(args.results), out, args.snli_example, args.sentence)
    for name, paths in made.items():
        print(f"{name:24s} " + (", ".join(str(p) for p in paths) if paths else "skipped (see above)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
