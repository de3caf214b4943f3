"""The paper's tables from run records: one per experiment, one row per attention mapping.

    python scripts/tables.py [--source local|wandb] [--results results] [--project ENTITY/PROJECT]
                             [--paper results/paper.yaml] [--out results/tables]

Each table cell is the mean ± sample standard deviation (ddof=1) over the runs of that attention (one per seed;
a re-run of the same seed counts once: the one that finished last), next to ``n`` (the number of runs), the
value the paper reports (``results/paper.yaml``, blank until filled in) and the attention statistics of the test
set: ``support`` (mean support size of an attention row) and ``groups`` (mean number of distinct groups — fused
segments or clusters — per row). Accuracy and ROUGE recorded as fractions (all values ≤ 1) are shown in percent,
as the paper does; BLEU is shown as recorded (sacrebleu's 0-100 scale).

Written to ``<out>/<experiment>.{md,tex,csv}`` and ``<out>/tables.md`` (all of them). The CSV is long-format:
one line per (dataset, attention, quantity) with mean, std, n, paper and the paper's table.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import paper as paper_mod
from .runs import (
    ATTENTION_ORDER,
    attention_sort_key,
    finished_key,
    load_local,
    pair_of,
    row_labels,
    seed_of,
    task_of,
    test_metric,
    warn,
)

STATS = ("support", "groups")
MISSING = {"md": "—", "tex": "--", "csv": ""}


@dataclass(frozen=True)
class Metric:
    key: str  # the quantity's name (CSV, paper.yaml) and the first key tried in metrics.test
    label: str  # column header
    percent: bool = False  # fractions (all values <= 1) are shown ×100
    digits: int = 2
    aliases: tuple = ()  # other keys in metrics.test, tried in order after `key` (unless the dataset says otherwise)


@dataclass(frozen=True)
class Dataset:
    key: str  # the key in results/paper.yaml
    label: str
    tasks: tuple  # record tasks that belong to it
    pair: str | None = None  # translation: the language pair, "de-en"
    keys: tuple = ()  # ((metric key, (keys tried in metrics.test, in order)), ...): a per-dataset override

    def lookup(self, metric: Metric) -> tuple:
        return dict(self.keys).get(metric.key, (metric.key,) + metric.aliases)


@dataclass
class Experiment:
    key: str
    title: str
    metrics: tuple
    datasets: tuple = ()
    translation: bool = False  # datasets are found in the records and paper.yaml (one per task × pair)


# as tasks/snli and tasks/seq2seq record them: accuracy a fraction; BLEU and ROUGE in percent already
ACCURACY = Metric("accuracy", "Accuracy", percent=True)
BLEU = Metric("bleu", "BLEU")
ROUGE = tuple(Metric(k, label, aliases=(f"{k}_f1", f"{k}_recall"))
              for k, label in (("rouge1", "R-1"), ("rouge2", "R-2"), ("rougeL", "R-L")))
GIGAWORD_KEYS = tuple((k, (f"{k}_f1", k)) for k in ("rouge1", "rouge2", "rougeL"))  # F1 (rouge-score)
DUC_KEYS = tuple((k, (f"{k}_recall", k)) for k in ("rouge1", "rouge2", "rougeL"))  # recall, first 75 bytes

TRANSLATION_TASKS = {"multi30k": "Multi30k", "iwslt": "IWSLT14", "iwslt14": "IWSLT14", "wmt16": "WMT16"}

EXPERIMENTS = (
    Experiment("snli", "Textual entailment: SNLI test accuracy (%)", (ACCURACY,), (Dataset("snli", "SNLI", ("snli",)),)),
    Experiment("translation", "Machine translation: test BLEU (sacrebleu, detokenized)", (BLEU,), translation=True),
    Experiment(
        "summarization",
        "Sentence summarization: ROUGE (%) on Gigaword (F1) and DUC-2004 (recall, 75 bytes)",
        ROUGE,
        (Dataset("gigaword", "Gigaword", ("gigaword",), keys=GIGAWORD_KEYS),
         Dataset("duc", "DUC-2004", ("gigaword_duc2004", "duc", "duc2004"), keys=DUC_KEYS)),
    ),
)


def translation_dataset(task: str, pair: str | None) -> Dataset:
    name = TRANSLATION_TASKS.get(task, task)
    if pair is None:
        return Dataset(task, name, (task,))
    src, _, tgt = pair.partition("-")
    return Dataset(f"{task} {pair}", f"{name} {src}→{tgt}", (task,), pair)


def dataset_from_key(key: str) -> Dataset:
    task, _, pair = key.partition(" ")
    return translation_dataset(task, pair or None)


@dataclass
class Stat:
    values: list = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self):
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self):
        return statistics.stdev(self.values) if len(self.values) > 1 else None


@dataclass
class Table:
    experiment: Experiment
    datasets: list
    rows: list  # row labels, in the paper's order
    cells: dict  # (row, dataset key, quantity) -> Stat; quantity: a metric key or a STATS name
    n: dict  # (row, dataset key) -> number of runs
    paper: dict  # (row, dataset key, metric key) -> (value or None, table or None)
    scale: dict  # metric key -> 100 or 1

    def columns(self):
        """(dataset, kind, metric or stat name) per column after the attention column."""
        cols = []
        for ds in self.datasets:
            cols += [(ds, "metric", m) for m in self.experiment.metrics]
            cols += [(ds, "paper", m) for m in self.experiment.metrics]
            cols += [(ds, "n", None)] + [(ds, "stat", s) for s in STATS]
        return cols


# ---- building


def _dataset_of(experiment: Experiment, record: dict, datasets: list) -> Dataset | None:
    task = task_of(record)
    if experiment.translation:
        if task not in TRANSLATION_TASKS:
            return None
        wanted = translation_dataset(task, pair_of(record))
        return next((d for d in datasets if d.key == wanted.key), None)
    return next((d for d in datasets if task in d.tasks), None)


def _metric(record: dict, dataset: Dataset, metric: Metric):
    for key in dataset.lookup(metric):
        if (value := test_metric(record, key)) is not None:
            return value
    return None


def dedupe(records: list, key_of) -> list:
    """One record per key: the one that finished last."""
    best: dict = {}
    for record in sorted(records, key=finished_key):
        best[key_of(record)] = record
    return list(best.values())


def build_table(experiment: Experiment, records: list, paper: dict | None = None) -> Table:
    paper = paper or {}
    paper_exp = paper_mod.experiment(paper, experiment.key)
    if experiment.translation:
        keys = list(paper_exp.get("datasets", {}))
        for record in records:
            task = task_of(record)
            if task in TRANSLATION_TASKS:
                key = translation_dataset(task, pair_of(record)).key
                if key not in keys:
                    keys.append(key)
        datasets = [dataset_from_key(k) for k in keys]
    else:
        datasets = list(experiment.datasets)

    mine = [(r, ds) for r in records if (ds := _dataset_of(experiment, r, datasets)) is not None]
    complete = [(r, ds) for r, ds in mine if any(_metric(r, ds, m) is not None for m in experiment.metrics)]
    if len(complete) < len(mine):
        warn(f"{experiment.key}: {len(mine) - len(complete)} run(s) without test metrics skipped (unfinished?)")
    labels = row_labels([r for r, _ in complete])
    by_id = {id(r): ds for r, ds in complete}

    def key_of(r):
        seed = seed_of(r)
        return (by_id[id(r)].key, labels[id(r)], seed if seed is not None else ("run", r.get("path"), id(r)))

    kept = dedupe([r for r, _ in complete], key_of)
    if len(kept) < len(complete):
        warn(f"{experiment.key}: {len(complete) - len(kept)} older re-run(s) of the same seed ignored")

    found = {labels[id(r)] for r in kept}
    # the four mappings always have a row (empty until run), unless a parameter sweep splits one into several
    rows = sorted(found | {a for a in ATTENTION_ORDER if not any(f.split(" ")[0] == a for f in found)},
                  key=attention_sort_key)
    scale = {}
    for m in experiment.metrics:
        values = [v for r in kept if (v := _metric(r, by_id[id(r)], m)) is not None]
        scale[m.key] = 100.0 if m.percent and values and all(abs(v) <= 1.0 for v in values) else 1.0

    cells, n = {}, {}
    for r in kept:
        row, ds = labels[id(r)], by_id[id(r)].key
        n[(row, ds)] = n.get((row, ds), 0) + 1
        for m in experiment.metrics:
            if (v := _metric(r, by_id[id(r)], m)) is not None:
                cells.setdefault((row, ds, m.key), Stat()).values.append(v * scale[m.key])
        for s in STATS:
            if (v := test_metric(r, s)) is not None:
                cells.setdefault((row, ds, s), Stat()).values.append(v)

    paper_cells = {}
    for row in rows:
        for ds in datasets:
            for m in experiment.metrics:
                paper_cells[(row, ds.key, m.key)] = paper_mod.value(paper, experiment.key, ds.key, row, m.key)
    return Table(experiment, datasets, rows, cells, n, paper_cells, scale)


# ---- rendering


def _fmt(x, digits):
    return f"{x:.{digits}f}"


def format_stat(stat: Stat | None, digits: int, fmt: str) -> str:
    if stat is None or stat.n == 0:
        return MISSING[fmt]
    mean = _fmt(stat.mean, digits)
    if stat.std is None:
        return f"${mean}$" if fmt == "tex" else mean
    std = _fmt(stat.std, digits)
    return f"${mean} \\pm {std}$" if fmt == "tex" else f"{mean} ± {std}"


def _cell(table: Table, row: str, col, fmt: str) -> str:
    ds, kind, what = col
    if kind == "metric":
        return format_stat(table.cells.get((row, ds.key, what.key)), what.digits, fmt)
    if kind == "paper":
        value, _ = table.paper[(row, ds.key, what.key)]
        return MISSING[fmt] if value is None else _fmt(float(value), what.digits)
    if kind == "n":
        return str(table.n.get((row, ds.key), 0))
    stat = table.cells.get((row, ds.key, what))
    return MISSING[fmt] if stat is None else _fmt(stat.mean, 2)


def _header(table: Table, col, with_dataset: bool) -> str:
    ds, kind, what = col
    text = {"metric": lambda: what.label, "paper": lambda: f"{what.label} (paper)", "n": lambda: "n",
            "stat": lambda: what}[kind]()
    return f"{ds.label} {text}" if with_dataset else text


def _paper_sources(table: Table) -> list:
    return sorted({t for (v, t) in table.paper.values() if v is not None and t})


def notes(table: Table) -> str:
    parts = ["mean ± std over n runs (seeds)", "(paper): reported in the paper, from results/paper.yaml"]
    sources = _paper_sources(table)
    parts.append(f"paper values from {', '.join(sources)}" if sources else "paper values not filled in yet")
    parts.append("support / groups: mean support size / distinct groups per attention row (test set)")
    scaled = [m.label for m in table.experiment.metrics if table.scale.get(m.key) == 100.0]
    if scaled:
        parts.append(f"{', '.join(scaled)} recorded as fractions, shown ×100")
    return "; ".join(parts) + "."


def to_markdown(table: Table) -> str:
    cols = table.columns()
    multi = len(table.datasets) > 1
    headers = ["attention"] + [_header(table, c, multi) for c in cols]
    lines = [f"### {table.experiment.title}", "", "| " + " | ".join(headers) + " |",
             "|" + "|".join([":---"] + ["---:"] * len(cols)) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join([row] + [_cell(table, row, c, "md") for c in cols]) + " |")
    if not table.datasets:
        lines.append("")
        lines.append("_No dataset: no runs and none listed in results/paper.yaml._")
    lines += ["", f"_{notes(table)}_", ""]
    return "\n".join(lines)


_TEX_ESCAPES = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "→": r"$\to$", "±": r"$\pm$", "—": "--"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    cols = table.columns()
    per_ds = len(cols) // max(len(table.datasets), 1)
    lines = [
        "% generated by scripts/tables.py from the run records; do not edit",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex_escape(table.experiment.title)}. {tex_escape(notes(table))}}}",
        rf"\label{{tab:{table.experiment.key}}}",
        r"\begin{tabular}{l" + "r" * len(cols) + "}",
        r"\toprule",
    ]
    if len(table.datasets) > 1:
        groups = " & ".join(rf"\multicolumn{{{per_ds}}}{{c}}{{{tex_escape(ds.label)}}}" for ds in table.datasets)
        lines.append(f" & {groups} \\\\")
        rules = " ".join(rf"\cmidrule(lr){{{2 + i * per_ds}-{1 + (i + 1) * per_ds}}}" for i in range(len(table.datasets)))
        lines.append(rules)
    lines.append(" & ".join(["attention"] + [tex_escape(_header(table, c, False)) for c in cols]) + r" \\")
    lines.append(r"\midrule")
    for row in table.rows:
        lines.append(" & ".join([tex_escape(row)] + [_cell(table, row, c, "tex") for c in cols]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


CSV_FIELDS = ("experiment", "dataset", "attention", "quantity", "mean", "std", "n", "paper", "paper_table")


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for ds in table.datasets:
        for row in table.rows:
            for quantity in [m.key for m in table.experiment.metrics] + list(STATS):
                stat = table.cells.get((row, ds.key, quantity))
                value, source = table.paper.get((row, ds.key, quantity), (None, None))
                writer.writerow({
                    "experiment": table.experiment.key,
                    "dataset": ds.key,
                    "attention": row,
                    "quantity": quantity,
                    "mean": "" if stat is None else repr(round(stat.mean, 10)),
                    "std": "" if stat is None or stat.std is None else repr(round(stat.std, 10)),
                    "n": 0 if stat is None else stat.n,
                    "paper": "" if value is None else value,
                    "paper_table": source or "",
                })
    return out.getvalue()


def write_tables(records: list, out: str | Path, paper: dict | None = None, experiments=EXPERIMENTS) -> dict:
    """Build and write every table; returns ``{experiment key: Table}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables, combined = {}, ["# Results", "", "Generated by `make tables` from the run records; do not edit.", ""]
    for experiment in experiments:
        table = build_table(experiment, records, paper)
        tables[experiment.key] = table
        md = to_markdown(table)
        _atomic_write(out / f"{experiment.key}.md", md)
        _atomic_write(out / f"{experiment.key}.tex", to_latex(table))
        _atomic_write(out / f"{experiment.key}.csv", to_csv(table))
        combined.append(md)
    _atomic_write(out / "tables.md", "\n".join(combined))
    return tables


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_records(source: str, results: str | Path, project: str | None) -> list:
    if source == "local":
        return load_local(results)
    if source == "wandb":
        from . import wandb_source

        if not project:
            raise SystemExit("SOURCE=wandb needs a project: PROJECT=entity/project (or WANDB_PROJECT), "
                             "or the path of a directory of offline runs")
        return wandb_source.load(project)
    raise SystemExit(f"unknown source {source!r}: local or wandb")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.environ.get("SOURCE", "local"), choices=("local", "wandb"))
    parser.add_argument("--results", default="results", help="root of the local run records")
    parser.add_argument("--project", default=os.environ.get("WANDB_PROJECT"),
                        help="W&B project (entity/project) or a directory of offline runs, for --source wandb")
    parser.add_argument("--paper", default=None, help="the paper's values (default: <results>/paper.yaml)")
    parser.add_argument("--out", default=None, help="output directory (default: <results>/tables)")
    args = parser.parse_args(argv)
    records = load_records(args.source, args.results, args.project)
    paper_path = Path(args.paper) if args.paper else Path(args.results) / "paper.yaml"
    paper = paper_mod.load(paper_path)
    out = Path(args.out) if args.out else Path(args.results) / "tables"
    tables = write_tables(records, out, paper)
    for table in tables.values():
        print(to_markdown(table))
    runs = sum(sum(t.n.values()) for t in tables.values())
    print(f"{runs} run(s) from {args.source} in {len(tables)} tables -> {out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
