"""What a Transformer's attention heads learned, and what each mapping cost, from the run records of
``task/model=transformer`` runs (tasks/seq2seq/transformer.py keeps, in every evaluation, statistics per attention
kind, layer and head under ``metrics.<split>.heads`` and the parameters learned per head under ``learned``).

    heads_table(records)   # markdown: per kind, layer and head: nonzero weights, groups, no-grad rows, γ/λ/α
    cost_table(records)    # markdown: time per epoch, per training step, per decoded sentence; ratio to softmax
    learned_figure(records, out), trajectory_figure(records, out), heads_grid_figure(records, out)

Rows are the tables' rows (``runs.row_labels``: the mapping, and what it learned per head where runs differ);
values are means over the runs (seeds) of a row. ``make tables`` writes ``heads.md`` and ``cost.md`` beside the
other tables when there are Transformer runs; ``make figures`` draws the figures.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from .runs import attention_sort_key, get, row_labels, task_of

KINDS = {"encoder": "encoder self-attention", "decoder": "decoder self-attention (causal)",
         "cross": "cross-attention (decoder over source)"}
PARAMS = ("gamma", "lam", "alpha")
SYMBOLS = {"gamma": "γ", "lam": "λ", "alpha": "α"}
STATS = (("support", "nonzero", "{:.2f}"), ("groups", "groups", "{:.2f}"), ("dead_rows", "no-grad rows", "{:.3f}"))
MISSING = "—"


def transformer_records(records: list) -> list:
    """The records of Transformer runs with per-head statistics on their test split."""
    return [r for r in records
            if get(r, "config.task.model.kind") == "transformer" and isinstance(get(r, "metrics.test.heads"), dict)]


def _by_row(records: list) -> dict[str, list]:
    labels = row_labels(records)
    rows: dict[str, list] = {}
    for record in records:
        rows.setdefault(f"{task_of(record)} · {labels[id(record)]}", []).append(record)
    return dict(sorted(rows.items(), key=lambda item: (item[0].split(" · ")[0],
                                                       attention_sort_key(item[0].split(" · ", 1)[1]))))


def _mean(values: list):
    values = [float(v) for v in values if isinstance(v, (int, float))]
    return statistics.fmean(values) if values else None


def _fmt(value, pattern: str = "{:.3f}") -> str:
    return MISSING if value is None else pattern.format(value)


def head_values(records: list, kind: str, split: str = "test") -> dict:
    """{(layer, head): {statistic or parameter: mean over records}} for one attention kind."""
    out: dict = {}
    for record in records:
        heads = get(record, f"metrics.{split}.heads.{kind}") or []
        learned = get(record, f"metrics.{split}.learned.{kind}") or {}
        for layer, row in enumerate(heads):
            for head, stats in enumerate(row):
                cell = out.setdefault((layer, head), {})
                for key, _, _ in STATS:
                    cell.setdefault(key, []).append(stats.get(key))
                for param in PARAMS:
                    try:
                        value = learned[param][layer][head]
                    except (KeyError, IndexError, TypeError):
                        continue  # a parameter this run does not learn
                    cell.setdefault(param, []).append(value)
    return {where: {key: _mean(values) for key, values in cell.items()} for where, cell in sorted(out.items())}


def heads_table(records: list) -> str:
    """Per attention kind, one line per configuration, layer and head (means over seeds, test split)."""
    records = transformer_records(records)
    if not records:
        return ""
    rows = _by_row(records)
    lines = ["### What the heads learned (Transformer runs, test set)", ""]
    for kind, title in KINDS.items():
        lines += [f"#### {title}", "",
                  "| run | layer | head | " + " | ".join(label for _, label, _ in STATS) + " | "
                  + " | ".join(f"learned {SYMBOLS[p]}" for p in PARAMS) + " | n |",
                  "|:---|---:|---:|" + "---:|" * (len(STATS) + len(PARAMS) + 1)]
        for label, members in rows.items():
            for (layer, head), cell in head_values(members, kind).items():
                lines.append(" | ".join([f"| {label}", str(layer + 1), str(head + 1)]
                                        + [_fmt(cell.get(key), pattern) for key, _, pattern in STATS]
                                        + [_fmt(cell.get(param)) for param in PARAMS] + [f"{len(members)} |"]))
        lines.append("")
    lines.append("_nonzero: exactly nonzero weights per row; groups: fused segments per row (clusters for oscarmax); "
                 "no-grad rows: rows whose Jacobian is zero (the loss cannot move their scores; a row with one "
                 "key, as the decoder's first position, is one under every mapping, softmax included); learned "
                 "γ/λ/α: the "
                 "mapping parameters learned for that head, at the end (— where the run does not learn it); all on "
                 "the teacher-forced test set, means over the n runs (seeds)._")
    return "\n".join(lines) + "\n"


def run_costs(record: dict) -> dict:
    """Seconds per epoch, per optimizer step (training time only) and per decoded test sentence of one run."""
    history = record.get("history") or []
    train_seconds = sum(float(h.get("train_seconds") or 0.0) for h in history)
    steps = max((int(h.get("step") or 0) for h in history), default=0)
    decode_seconds, sentences = get(record, "metrics.test.decode_seconds"), get(record, "metrics.test.decode_sentences")
    return {"epoch": record.get("time_per_epoch_s"),
            "step": train_seconds / steps if steps and train_seconds else None,
            "sentence": decode_seconds / sentences if decode_seconds and sentences else None}


def cost_table(records: list) -> str:
    """Time per epoch, per training step and per decoded sentence of each configuration, and its ratio to softmax
    of the same task (means over seeds)."""
    records = transformer_records(records)
    if not records:
        return ""
    rows = _by_row(records)
    costs = {label: {key: _mean([run_costs(r)[key] for r in members]) for key in ("epoch", "step", "sentence")}
             for label, members in rows.items()}
    lines = ["### What each mapping cost (Transformer runs)", "",
             "| run | n | s / epoch | × softmax | s / step | × softmax | ms / sentence (beam) | × softmax |",
             "|:---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, cost in costs.items():
        baseline = costs.get(f"{label.split(' · ')[0]} · softmax", {})
        cells = []
        for key, scale in (("epoch", 1.0), ("step", 1.0), ("sentence", 1000.0)):
            value, base = cost.get(key), baseline.get(key)
            cells += [_fmt(None if value is None else value * scale, "{:.3f}" if key == "step" else "{:.1f}"),
                      _fmt(value / base if value and base else None, "{:.2f}")]
        lines.append(" | ".join([f"| {label}", str(len(rows[label]))] + cells) + " |")
    lines += ["", "_Training time per epoch and per optimizer step (forward, backward, update), and test-set beam "
              "search per sentence, from the records; runs that shared the machine with others are slower than a "
              "run alone, so compare the ratios of runs made side by side._", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ figures
def learned_figure(records: list, out: Path) -> list[Path]:
    """The learned γ, λ and α of every head at the end of training: one panel per parameter, heads along x
    (grouped by kind and layer), one marker per run."""
    from .figures import _pyplot, save

    records = transformer_records(records)
    rows = _by_row(records)
    panels = [p for p in PARAMS if any(get(r, f"metrics.test.learned.{k}.{p}") for r in records for k in KINDS)]
    if not panels:
        return []
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels)), squeeze=False)
    for ax, param in zip(axes[:, 0], panels):
        ticks, names = [], []
        for i, (label, members) in enumerate(rows.items()):
            x0 = 0
            for kind in KINDS:
                values = head_values(members, kind)
                xs = [x0 + layer * (max(h for _, h in values) + 2) + head for layer, head in values]
                ys = [cell.get(param) for cell in values.values()]
                pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
                if pts:
                    ax.scatter(*zip(*pts), s=14, label=label if kind == next(iter(KINDS)) or not x0 else None,
                               color=f"C{i}", alpha=0.8)
                if i == 0 and values:
                    ticks.append(x0 + (max(xs) - x0) / 2)
                    names.append(kind)
                x0 = (max(xs) + 3) if xs else x0
        ax.set_ylabel(f"learned {SYMBOLS[param]}")
        ax.set_xticks(ticks, names)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return save(fig, out, "transformer_learned_parameters")


def trajectory_figure(records: list, out: Path) -> list[Path]:
    """Each learned parameter's mean over heads, per attention kind, after every epoch (validation evaluations)."""
    from .figures import _pyplot, save

    records = [r for r in transformer_records(records) if r.get("history")]
    series = []
    for label, members in _by_row(records).items():
        record = members[0]  # one run per configuration: the trajectory of a seed, not an average of seeds
        for kind in KINDS:
            for param in PARAMS:
                points = [(h["epoch"], np.mean(v)) for h in record["history"]
                          if (v := get(h, f"valid.learned.{kind}.{param}"))]
                if points:
                    series.append((label, kind, param, points))
    params = [p for p in PARAMS if any(s[2] == p for s in series)]
    if not params:
        return []
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(params), figsize=(4.5 * len(params), 3.2), squeeze=False)
    styles = {"encoder": ":", "decoder": "--", "cross": "-"}
    labels = list(dict.fromkeys(s[0] for s in series))
    for ax, param in zip(axes[0], params):
        for label, kind, p, points in series:
            if p == param:
                ax.plot(*zip(*points), styles[kind], color=f"C{labels.index(label)}",
                        label=f"{label} · {kind}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"mean learned {SYMBOLS[param]} over heads")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return save(fig, out, "transformer_learned_trajectory")


def heads_grid_figure(records: list, out: Path, sentence: int = 0) -> list[Path]:
    """One test sentence's cross-attention of the last decoder layer: a row of heads per configuration."""
    from tasks.files import load_tensors

    from .figures import _pyplot, draw_heatmap, readable, run_file, save

    panels = []
    for label, members in _by_row(transformer_records(records)).items():
        path = run_file(members[0], "attention_test.pt")
        if path is None:
            continue
        items = load_tensors(path)["items"]  # data, never code
        if sentence >= len(items):
            continue
        item = items[sentence]
        attention = item["attention"]
        if attention.dim() != 3:
            continue
        heads = int(get(members[0], "config.task.model.heads") or 1)
        panels.append((label, members[0], item, attention[:, -heads:].numpy()))
    if not panels:
        return []
    plt = _pyplot()
    heads = max(p[3].shape[1] for p in panels)
    fig, axes = plt.subplots(len(panels), heads, figsize=(2.6 * heads, 2.4 * len(panels)), squeeze=False)
    for r, (label, record, item, attention) in enumerate(panels):
        name = str(get(record, "attention.name") or "softmax")
        for h in range(heads):
            ax = axes[r, h]
            if h >= attention.shape[1]:
                ax.axis("off")
                continue
            draw_heatmap(ax, attention[:, h], [readable(t) for t in item["src"]],
                         [readable(t) for t in item["hyp"]], name, title=f"head {h + 1}")
            if h == 0:
                ax.set_ylabel(f"{label.split(' · ', 1)[1]}\ntarget")
    fig.tight_layout()
    return save(fig, out, "transformer_cross_attention_heads")
