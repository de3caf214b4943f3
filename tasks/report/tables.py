"""The paper's tables from run records: one per experiment, one row per attention mapping *and configuration*.

    python -m scripts.tables [--source local|wandb] [--results results] [--project ENTITY/PROJECT]
                             [--paper results/paper.yaml] [--out results/tables] [--samples 1000]

**Which runs share a cell.** Runs are grouped by dataset, attention mapping (with its parameters) and the rest
of their resolved configuration without the seed (``runs.result_config``: settings that cannot change a result,
such as paths, threads or logging, are left out). Two configurations never share a cell: when a dataset has runs
of several configurations, each gets its own row, labelled with the settings that differ
(``fusedmax [trainer.optimizer.name=sgd]``). Within a cell a re-run of a seed counts once (the one that finished
last). Runs left out (unfinished, older re-runs) are counted in a note under the table.

**Cells.** The mean ± sample standard deviation (ddof=1) over seeds, ``n`` (seeds), and ``Δ vs softmax``: the
difference to the softmax row of the *same configuration*, over the seeds both have, with its 95% interval and
two-sided p-value from a paired bootstrap over the test examples (``significance.py``; needs the per-example
statistics that runs record since this version, "n/a" for older records). Then the value the paper reports
(``results/paper.yaml``, blank until filled in) and the attention statistics of the test set (``tasks/stats.py``):
``nonzero`` (exactly nonzero weights per row: the support of the sparse mappings; all positions for softmax),
``≥1%`` (weights ≥ 1% of the row, the same measure for every mapping), ``exp(H)`` (the row's perplexity,
its effective number of positions) and ``groups`` (fused segments, or clusters for oscarmax); the best epoch /
epochs run and the wall time of a run. Accuracy recorded as a fraction is shown in percent; BLEU is sacreBLEU's
detokenized score (tokenized BLEU beside it); ROUGE is F1 on Gigaword and 75-byte recall on DUC-2004.

Written to ``<out>/<experiment>.{md,tex,csv}``, ``<out>/tables.md`` (all of them) and ``<out>/headline.md`` (one line
per dataset, for the top of a document) and ``<out>/timing.md`` (what a run cost, per dataset). The CSV is long-format:
one line per (dataset, row, quantity) with mean, std, n, paper and the paper's table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_write
from . import paper as paper_mod
from .runs import (
    ATTENTION_ORDER,
    NOT_TEST_SETS,
    TRANSLATION_TASKS,
    attention_name,
    attention_params,
    config_signature,
    finished_key,
    get,
    load_local,
    mapping_rank,
    pair_of,
    result_config,
    seed_of,
    task_of,
    varying_keys,
    warn,
)
from .significance import examples_of, paired_bootstrap

MISSING = {"md": "—", "tex": "--", "csv": ""}
BASELINE = "softmax"


@dataclass(frozen=True)
class Metric:
    key: str  # the quantity's name (CSV, paper.yaml) and the first key tried in the test metrics
    label: str  # column header
    percent: bool = False  # fractions (all values <= 1) are shown ×100
    digits: int = 2
    aliases: tuple = ()  # other keys tried in order after `key` (unless the dataset says otherwise)
    compare: bool = True  # gets a "Δ vs softmax" column
    paper: bool = True  # gets a "(paper)" column


@dataclass(frozen=True)
class Stat:
    key: str  # key in the test metrics (tasks/stats.py)
    label: str
    digits: int = 2


STATS = (Stat("support", "nonzero"), Stat("above_1pct", "≥1%"), Stat("attn_ppl", "exp(H)"), Stat("groups", "groups"))
# shown where the runs have them (seq2seq): the fraction of decoded rows that pass no gradient to their scores, and
# of output tokens that are <unk> (a test set whose words the vocabulary lacks)
OPTIONAL_STATS = (Stat("dead_rows", "no-grad rows", 3), Stat("unk_rate", "unk", 3))


@dataclass(frozen=True)
class Dataset:
    key: str  # the key in results/paper.yaml
    label: str
    tasks: tuple  # record tasks that belong to it
    pair: str | None = None  # translation: the language pair, "de-en"
    keys: tuple = ()  # ((metric key, (keys tried in the test metrics, in order)), ...): a per-dataset override
    section: str | None = None  # the metrics live in metrics.test.<section> for records of these tasks ...
    section_tasks: tuple = ()  # ... (e.g. DUC-2004 scored by a Gigaword run); other tasks: metrics.test

    def lookup(self, metric: Metric) -> tuple:
        return dict(self.keys).get(metric.key, (metric.key,) + metric.aliases)

    def test_metrics(self, record: dict) -> dict:
        test = get(record, "metrics.test") or {}
        if self.section and task_of(record) in self.section_tasks:
            test = test.get(self.section) or {}
        return test if isinstance(test, dict) else {}


@dataclass
class Experiment:
    key: str
    title: str
    metrics: tuple
    datasets: tuple = ()
    translation: bool = False  # datasets are found in the records and paper.yaml (one per task × pair)


ACCURACY = Metric("accuracy", "Accuracy", percent=True)
BLEU = Metric("bleu", "BLEU")
TOK_BLEU = Metric("tok_bleu", "tok. BLEU", compare=False, paper=False)
ROUGE = tuple(Metric(k, label, aliases=(f"{k}_f1", f"{k}_recall"), compare=(k == "rouge1"))
              for k, label in (("rouge1", "R-1"), ("rouge2", "R-2"), ("rougeL", "R-L")))
GIGAWORD_KEYS = tuple((k, (f"{k}_f1", k)) for k in ("rouge1", "rouge2", "rougeL"))  # F1 (rouge-score)
DUC_KEYS = tuple((k, (f"{k}_recall", k)) for k in ("rouge1", "rouge2", "rougeL"))  # recall, first 75 bytes

EXPERIMENTS = (
    Experiment("snli", "Textual entailment: SNLI test accuracy (%)", (ACCURACY,),
               (Dataset("snli", "SNLI", ("snli",)),)),
    Experiment("translation", "Machine translation: test BLEU (sacreBLEU, detokenized; tokenized beside it)",
               (BLEU, TOK_BLEU), translation=True),
    Experiment(
        "summarization",
        "Sentence summarization: ROUGE (%) on Gigaword (F1) and DUC-2004 (recall, 75 bytes)",
        ROUGE,
        (Dataset("gigaword", "Gigaword", ("gigaword",), keys=GIGAWORD_KEYS),
         Dataset("duc", "DUC-2004", ("gigaword", "gigaword_duc2004", "duc", "duc2004"), keys=DUC_KEYS,
                 section="duc2004", section_tasks=("gigaword",))),
    ),
)


# the test set a translation task's `test` split is, named in the table when the runs also scored other test sets
PRIMARY_TEST_SET = {"multi30k": "test_2016_flickr"}
SECTION_MARK = " @"  # dataset key of another test set of the same runs: "multi30k de-en @test_2017_mscoco"


def translation_dataset(task: str, pair: str | None, test_set: str | None = None,
                        named: bool = False) -> Dataset:
    """The table of ``task`` (one language ``pair``) on its ``test`` split, or on another ``test_set`` the same
    runs scored (``metrics.test.<test_set>``); ``named`` puts the test set's name in the label."""
    name = TRANSLATION_TASKS.get(task, task)
    key, label = task, name
    if pair is not None:
        src, _, tgt = pair.partition("-")
        key, label = f"{task} {pair}", f"{name} {src}→{tgt}"
    if test_set is not None:
        return Dataset(f"{key}{SECTION_MARK}{test_set}", f"{label} · {test_set}", (task,), pair, section=test_set,
                       section_tasks=(task,))
    if named and task in PRIMARY_TEST_SET:
        label = f"{label} · {PRIMARY_TEST_SET[task]}"
    return Dataset(key, label, (task,), pair)


def dataset_from_key(key: str, named: bool = False) -> Dataset:
    base, _, test_set = key.partition(SECTION_MARK)
    task, _, pair = base.partition(" ")
    return translation_dataset(task, pair or None, test_set or None, named=named)


def other_test_sets(record: dict) -> list:
    """The names of the other test sets a translation run scored: the sections of its ``metrics.test``."""
    test = get(record, "metrics.test") or {}
    if not isinstance(test, dict):
        return []
    return [k for k, v in test.items() if isinstance(v, dict) and k not in NOT_TEST_SETS]


@dataclass
class Cell:
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
class Group:
    """The runs of one table row in one dataset: one attention mapping, one configuration, several seeds."""

    dataset: Dataset
    attention: str
    params: dict
    config: dict  # result_config of the runs
    signature: str
    runs: list = field(default_factory=list)


@dataclass
class Table:
    experiment: Experiment
    datasets: list
    rows: list  # row labels, in the paper's order
    cells: dict  # (row, dataset key, quantity) -> Cell; quantity: a metric key, a Stat key, "epochs", ...
    n: dict  # (row, dataset key) -> number of runs
    paper: dict  # (row, dataset key, metric key) -> (value or None, table or None)
    scale: dict  # metric key -> 100 or 1
    comparisons: dict = field(default_factory=dict)  # (row, dataset key, metric key) -> Comparison | str (why not)
    dropped: list = field(default_factory=list)  # sentences: runs left out, and why
    remarks: dict = field(default_factory=dict)  # dataset key -> its runs' preset notes ("a pipeline check, ...")
    devices: dict = field(default_factory=dict)  # dataset key -> {"cpu, 1 thread(s)", ...}: where its runs ran

    @property
    def legend(self) -> list:
        """The preset notes as sentences for the notes under the tables, one per dataset and note."""
        return sorted(f"{ds.label}: {note}" for ds in self.datasets for note in self.remarks.get(ds.key, []))

    def columns(self, ds: Dataset):
        """(kind, what) per column of dataset ``ds``'s table, after the row label."""
        cols = [("metric", m) for m in self.experiment.metrics]
        cols += [("n", None)]
        cols += [("delta", m) for m in self.experiment.metrics if m.compare]
        cols += [("paper", m) for m in self.experiment.metrics if m.paper]
        cols += [("stat", s) for s in STATS]
        cols += [("stat", s) for s in OPTIONAL_STATS if any((row, ds.key, s.key) in self.cells for row in self.rows)]
        if any((row, ds.key, "aer") in self.cells for row in self.rows):
            cols.append(("aer", None))
        cols += [("epochs", None), ("minutes", None)]
        return cols

    def rows_of(self, ds: Dataset) -> list:
        """The rows shown for ``ds``: those with runs on it, and an empty row for each mapping without any."""
        ran = [row for row in self.rows if self.n.get((row, ds.key), 0)]
        if any("[" in row for row in ran):  # rows split by configuration: no empty placeholder rows
            return sorted(ran, key=_row_sort_key)
        empty = [a for a in ATTENTION_ORDER if not any(r.split(" ")[0] == a for r in ran)]
        return sorted(ran + empty, key=_row_sort_key)


# ---- building


def _metric(test: dict, dataset: Dataset, metric: Metric):
    for key in dataset.lookup(metric):
        value = test.get(key)
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if value == value:  # not NaN
            return value
    return None


def _datasets(experiment: Experiment, records: list, paper: dict) -> list:
    if not experiment.translation:
        return list(experiment.datasets)
    keys = list(paper_mod.experiment(paper, experiment.key).get("datasets", {}))
    for record in records:
        task = task_of(record)
        if task in TRANSLATION_TASKS:
            base = translation_dataset(task, pair_of(record)).key
            for key in (base, *(f"{base}{SECTION_MARK}{t}" for t in sorted(other_test_sets(record)))):
                if key not in keys:
                    keys.append(key)
    # the test set's name is in every label of a task whose runs scored several
    several = {k.partition(SECTION_MARK)[0] for k in keys if SECTION_MARK in k}
    return [dataset_from_key(k, named=k.partition(SECTION_MARK)[0] in several) for k in keys]


def _belongs(experiment: Experiment, dataset: Dataset, record: dict) -> bool:
    task = task_of(record)
    if experiment.translation:
        return task in TRANSLATION_TASKS and \
            translation_dataset(task, pair_of(record), dataset.section).key == dataset.key
    return task in dataset.tasks


def _short(key: str) -> str:
    return key[len("task."):] if key.startswith("task.") else key


def _fmt_value(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _label_groups(groups: list) -> dict:
    """A row label per group (by id): the mapping, its parameters that vary between runs of that mapping, and the
    settings that vary between the configurations of the dataset."""
    labels = {}
    by_dataset: dict = {}
    for g in groups:
        by_dataset.setdefault(g.dataset.key, []).append(g)
    for gs in by_dataset.values():
        varying = varying_keys(g.config for g in gs)
        for g in gs:
            vary_params = varying_keys(h.params for h in gs if h.attention == g.attention)
            label = g.attention
            if vary_params:
                label += " (" + ", ".join(f"{k}={g.params.get(k)}" for k in vary_params) + ")"
            if varying:
                label += " [" + ", ".join(f"{_short(k)}={_fmt_value(g.config.get(k))}" for k in varying) + "]"
            labels[id(g)] = label
    return labels


def _row_sort_key(label: str) -> tuple:
    name = label.split(" ")[0]
    rank = mapping_rank(name)
    config = label[label.index("["):] if "[" in label else ""
    return (config, rank, label)


def run_seconds(record: dict) -> float | None:
    """Time of the whole run. ``wall_time_s`` is the last process's only, so a run that was killed and resumed would
    read as short as its last part: its epochs' total time (kept across resumes) is used when larger."""
    wall, per_epoch, epochs = record.get("wall_time_s"), record.get("time_per_epoch_s"), record.get("epochs")
    trained = float(per_epoch) * float(epochs) if per_epoch is not None and epochs is not None else None
    candidates = [float(x) for x in (wall, trained) if x is not None]
    return max(candidates) if candidates else None


def build_table(experiment: Experiment, records: list, paper: dict | None = None, samples: int = 1000) -> Table:
    paper = paper or {}
    datasets = _datasets(experiment, records, paper)
    dropped: list = []

    groups: dict = {}
    unfinished = 0
    for ds in datasets:
        for record in records:
            if not _belongs(experiment, ds, record):
                continue
            test = ds.test_metrics(record)
            if not any(_metric(test, ds, m) is not None for m in experiment.metrics):
                unfinished += ds.section is None or task_of(record) not in ds.section_tasks
                continue
            params = attention_params(record)
            sig = (ds.key, attention_name(record), json.dumps(params, sort_keys=True, default=str),
                   config_signature(record))
            if sig not in groups:
                groups[sig] = Group(ds, attention_name(record), params, result_config(record), sig[3])
            groups[sig].runs.append(record)
    if unfinished:
        dropped.append(f"{unfinished} run(s) without test metrics left out (unfinished, or killed before the test)")

    reruns = 0
    for g in groups.values():
        latest: dict = {}
        for record in sorted(g.runs, key=finished_key):
            seed = seed_of(record)
            latest[seed if seed is not None else ("run", id(record))] = record
        reruns += len(g.runs) - len(latest)
        g.runs = list(latest.values())
    if reruns:
        dropped.append(f"{reruns} older re-run(s) of the same seed and configuration left out (the last one counts)")

    labels = _label_groups(list(groups.values()))
    found = {labels[id(g)] for g in groups.values()}
    # the four mappings always have a row (empty until run) unless rows are split by parameters or configurations
    rows = sorted(found | {a for a in ATTENTION_ORDER if not any(f.split(" ")[0] == a for f in found)},
                  key=_row_sort_key)
    if len({g.signature for g in groups.values()}) > len({g.dataset.key for g in groups.values()}):
        dropped.append("rows in [brackets] are different configurations: their runs are never averaged together")

    scale = {}
    for m in experiment.metrics:
        values = [v for g in groups.values() for r in g.runs if (v := _metric(g.dataset.test_metrics(r), g.dataset, m))
                  is not None]
        scale[m.key] = 100.0 if m.percent and values and all(abs(v) <= 1.0 for v in values) else 1.0

    cells, n, devices = {}, {}, {}
    for g in groups.values():
        row, ds = labels[id(g)], g.dataset
        n[(row, ds.key)] = len(g.runs)
        for r in g.runs:
            test = ds.test_metrics(r)
            for m in experiment.metrics:
                if (v := _metric(test, ds, m)) is not None:
                    cells.setdefault((row, ds.key, m.key), Cell()).values.append(v * scale[m.key])
            for s in STATS + OPTIONAL_STATS:
                if (v := _metric(test, ds, Metric(s.key, s.label))) is not None:
                    cells.setdefault((row, ds.key, s.key), Cell()).values.append(v)
            if (v := _metric(get(r, "metrics.alignment") or {}, ds, Metric("aer", "AER"))) is not None:
                cells.setdefault((row, ds.key, "aer"), Cell()).values.append(v)
            if r.get("best_epoch") is not None and r.get("epochs") is not None:
                cells.setdefault((row, ds.key, "best_epoch"), Cell()).values.append(float(r["best_epoch"]))
                cells.setdefault((row, ds.key, "epochs"), Cell()).values.append(float(r["epochs"]))
            if (seconds := run_seconds(r)) is not None:
                cells.setdefault((row, ds.key, "minutes"), Cell()).values.append(seconds / 60)
            if r.get("time_per_epoch_s") is not None:
                cells.setdefault((row, ds.key, "epoch_seconds"), Cell()).values.append(float(r["time_per_epoch_s"]))
            threads = get(r, "config.trainer.threads") or get(r, "config.task.threads")  # seq2seq: in its task
            devices.setdefault(ds.key, set()).add(f"{r.get('device') or '?'}, {threads or 'all'} thread(s)")

    comparisons = _compare(experiment, list(groups.values()), labels, samples)
    uncompared = sum(1 for v in comparisons.values() if isinstance(v, str) and v.startswith("no "))
    if uncompared:
        dropped.append(f"{uncompared} row(s) without a softmax row of the same configuration: no Δ")

    paper_cells = {}
    for row in set(rows) | set(ATTENTION_ORDER):
        for ds in datasets:
            for m in experiment.metrics:
                paper_cells[(row, ds.key, m.key)] = paper_mod.value(paper, experiment.key, ds.key, row, m.key)
    # a preset's `note:` (e.g. "a pipeline check, not a result") is said above its dataset's table and in the notes
    remarks: dict = {}
    for g in groups.values():
        for r in g.runs:
            if (note := get(r, "config.note")) and note not in remarks.setdefault(g.dataset.key, []):
                remarks[g.dataset.key].append(note)
    return Table(experiment, datasets, rows, cells, n, paper_cells, scale, comparisons, dropped, remarks, devices)


def _compare(experiment: Experiment, groups: list, labels: dict, samples: int) -> dict:
    """(row, dataset, metric) -> Comparison against the softmax group of the same dataset and configuration, or a
    short reason why there is none."""
    out: dict = {}
    baselines = {(g.dataset.key, g.signature): g for g in groups if g.attention == BASELINE}
    for g in groups:
        if g.attention == BASELINE:
            continue
        base = baselines.get((g.dataset.key, g.signature))
        for m in experiment.metrics:
            if not m.compare:
                continue
            key = (labels[id(g)], g.dataset.key, m.key)
            if base is None:
                out[key] = "no softmax run of this configuration"
                continue
            seeds = sorted({seed_of(r) for r in g.runs} & {seed_of(r) for r in base.runs}, key=str)
            if not seeds:
                out[key] = "no seed in common with softmax"
                continue
            mine = {seed_of(r): r for r in g.runs}
            theirs = {seed_of(r): r for r in base.runs}
            a, b = [], []
            for s in seeds:
                ea = _examples(g.dataset, mine[s], m)
                eb = _examples(g.dataset, theirs[s], m)
                if ea is None or eb is None:
                    break
                a.append(ea)
                b.append(eb)
            if len(a) != len(seeds):
                out[key] = "n/a: runs without per-example statistics"
                continue
            try:
                out[key] = paired_bootstrap(a, b, samples=samples)
            except ValueError as error:
                out[key] = f"n/a: {error}"
    return out


def _examples(dataset: Dataset, record: dict, metric: Metric):
    per = dataset.test_metrics(record).get("per_example")
    for key in dataset.lookup(metric):
        if (ex := examples_of(per, key)) is not None:
            return ex
    return None


# ---- rendering


def _fmt(x, digits):
    return f"{x:.{digits}f}"


def format_cell(cell: Cell | None, digits: int, fmt: str) -> str:
    if cell is None or cell.n == 0:
        return MISSING[fmt]
    mean = _fmt(cell.mean, digits)
    if cell.std is None:
        return f"${mean}$" if fmt == "tex" else mean
    std = _fmt(cell.std, digits)
    return f"${mean} \\pm {std}$" if fmt == "tex" else f"{mean} ± {std}"


def format_comparison(comparison, fmt: str) -> str:
    if comparison is None:
        return MISSING[fmt]
    if isinstance(comparison, str):
        return "n/a" if comparison.startswith("n/a") else MISSING[fmt]
    text = f"{comparison.delta:+.2f} [{comparison.low:+.2f}, {comparison.high:+.2f}] {comparison.p_text}"
    return text.replace("p<", r"p$<$") if fmt == "tex" else text


def _cell(table: Table, ds: Dataset, row: str, col, fmt: str) -> str:
    kind, what = col
    if kind == "metric":
        return format_cell(table.cells.get((row, ds.key, what.key)), what.digits, fmt)
    if kind == "delta":
        if row.split(" ")[0] == BASELINE and table.n.get((row, ds.key)):
            return "(baseline)"
        return format_comparison(table.comparisons.get((row, ds.key, what.key)), fmt)
    if kind == "paper":
        value, _ = table.paper.get((row, ds.key, what.key), (None, None))
        return MISSING[fmt] if value is None else _fmt(float(value), what.digits)
    if kind == "n":
        return str(table.n.get((row, ds.key), 0))
    if kind == "epochs":
        best, ran = table.cells.get((row, ds.key, "best_epoch")), table.cells.get((row, ds.key, "epochs"))
        return MISSING[fmt] if best is None else f"{best.mean:.1f} / {ran.mean:.1f}"
    if kind == "minutes":
        cell = table.cells.get((row, ds.key, "minutes"))
        return MISSING[fmt] if cell is None else f"{cell.mean:.1f}"
    if kind == "aer":
        cell = table.cells.get((row, ds.key, "aer"))
        return MISSING[fmt] if cell is None else _fmt(cell.mean, 3)
    cell = table.cells.get((row, ds.key, what.key))
    return MISSING[fmt] if cell is None else _fmt(cell.mean, what.digits)


def _header(col) -> str:
    kind, what = col
    return {"metric": lambda: what.label, "paper": lambda: f"{what.label} (paper)", "n": lambda: "n",
            "delta": lambda: f"Δ {what.label} vs softmax [95% CI]", "stat": lambda: what.label,
            "aer": lambda: "AER", "epochs": lambda: "best / epochs", "minutes": lambda: "min/run"}[kind]()


def _paper_sources(table: Table) -> list:
    return sorted({t for (v, t) in table.paper.values() if v is not None and t})


def notes(table: Table) -> str:
    parts = ["mean ± std over n runs (seeds) of one configuration",
             "Δ vs softmax: mean difference to softmax of the same configuration over shared seeds, 95% interval "
             "and two-sided p-value of a paired bootstrap over test examples",
             "(paper): reported in the paper, from results/paper.yaml"]
    sources = _paper_sources(table)
    parts.append(f"paper values from {', '.join(sources)}" if sources else "paper values not filled in yet")
    parts.append("nonzero: exactly nonzero attention weights per row (softmax: every position); ≥1%: weights of at "
                 "least 1% of the row; exp(H): perplexity of the row; groups: fused segments (clusters for "
                 "oscarmax) per row; all on the test set; min/run: wall time of a run, all its parts")
    if any(key[2] in {s.key for s in OPTIONAL_STATS} for key in table.cells):
        parts.append("no-grad rows: fraction of decoded attention rows whose Jacobian is zero (no gradient reaches "
                     "their scores); unk: fraction of output tokens that are <unk>")
    scaled = [m.label for m in table.experiment.metrics if table.scale.get(m.key) == 100.0]
    if scaled:
        parts.append(f"{', '.join(scaled)} recorded as fractions, shown ×100")
    return "; ".join(parts + table.legend + table.dropped) + "."


def has_runs(table: Table, ds: Dataset | None = None) -> bool:
    return any(n for (row, key), n in table.n.items() if ds is None or key == ds.key)


def _shown_datasets(table: Table) -> tuple:
    """(datasets whose table is printed, datasets left out): once any dataset has runs, those with neither runs nor
    paper values are left out (named in a note), so that a results folder of one task does not print pages of
    dashes."""
    if not has_runs(table):
        return list(table.datasets), []

    def shown(ds):
        return has_runs(table, ds) or any(v is not None for (_, key, _), (v, _) in table.paper.items() if key == ds.key)

    return [ds for ds in table.datasets if shown(ds)], [ds for ds in table.datasets if not shown(ds)]


def to_markdown(table: Table) -> str:
    lines = [f"### {table.experiment.title}", ""]
    multi = len(table.datasets) > 1
    shown, empty = _shown_datasets(table)
    for ds in shown:
        cols = table.columns(ds)
        if multi:
            lines += [f"#### {ds.label}", ""]
        for note in table.remarks.get(ds.key, []):  # said where it is read, not only in the notes at the end
            lines += [f"**{note[:1].upper()}{note[1:]}.**", ""]
        lines += ["| attention | " + " | ".join(_header(c) for c in cols) + " |",
                  "|" + "|".join([":---"] + ["---:"] * len(cols)) + "|"]
        for row in table.rows_of(ds):
            lines.append("| " + " | ".join([row] + [_cell(table, ds, row, c, "md") for c in cols]) + " |")
        lines.append("")
    if not table.datasets:
        lines.append("_No dataset: no runs and none listed in results/paper.yaml._")
        lines.append("")
    if empty:
        lines += [f"_No runs for {', '.join(ds.label for ds in empty)}: table left out._", ""]
    lines += [f"_{notes(table)}_", ""]
    return "\n".join(lines)


_TEX_ESCAPES = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "→": r"$\to$", "±": r"$\pm$", "—": "--",
                "Δ": r"$\Delta$", "≥": r"$\geq$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    lines = [
        "% generated by scripts/tables.py from the run records; do not edit",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex_escape(table.experiment.title)}. {tex_escape(notes(table))}}}",
        rf"\label{{tab:{table.experiment.key}}}",
    ]
    for ds in _shown_datasets(table)[0]:
        cols = table.columns(ds)
        lines += [r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule"]
        if len(table.datasets) > 1:
            lines.append(rf"\multicolumn{{{len(cols) + 1}}}{{c}}{{{tex_escape(ds.label)}}} \\")
            lines.append(r"\midrule")
        lines.append(" & ".join(["attention"] + [tex_escape(_header(c)) for c in cols]) + r" \\")
        lines.append(r"\midrule")
        for row in table.rows_of(ds):
            lines.append(" & ".join([tex_escape(row)] + [_cell(table, ds, row, c, "tex") for c in cols]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\par\medskip"]
    lines += [r"\end{table}", ""]
    return "\n".join(lines)


CSV_FIELDS = ("experiment", "dataset", "attention", "quantity", "mean", "std", "n", "paper", "paper_table",
              "delta_vs_softmax", "delta_low", "delta_high", "p_value")


def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    quantities = [m.key for m in table.experiment.metrics] + [s.key for s in STATS + OPTIONAL_STATS]
    quantities += ["aer", "epochs", "minutes"]
    for ds in table.datasets:
        for row in table.rows:
            for quantity in quantities:
                stat = table.cells.get((row, ds.key, quantity))
                if stat is None and quantity in ("aer", "epochs", "minutes"):
                    continue
                value, source = table.paper.get((row, ds.key, quantity), (None, None))
                comparison = table.comparisons.get((row, ds.key, quantity))
                compared = comparison is not None and not isinstance(comparison, str)
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
                    "delta_vs_softmax": repr(round(comparison.delta, 10)) if compared else "",
                    "delta_low": repr(round(comparison.low, 10)) if compared else "",
                    "delta_high": repr(round(comparison.high, 10)) if compared else "",
                    "p_value": repr(round(comparison.p, 10)) if compared else "",
                })
    return out.getvalue()


def headline(tables: dict) -> str:
    """One line per dataset with runs: each mapping's headline metric with its Δ vs softmax and p-value, and how
    many positions its attention spreads over, for the top of a document. Datasets whose runs carry a preset note
    (e.g. "a pipeline check, not a result") or several configurations are left to the full tables, and said so."""
    lines = ["### At a glance: test metric per mapping (Δ vs softmax, p) and nonzero attention weights per row", "",
             "| dataset | metric | seeds | " + " | ".join(ATTENTION_ORDER) + " | nonzero per row |",
             "|:---|:---|---:|" + "---:|" * (len(ATTENTION_ORDER) + 1)]
    left_out = []
    for table in tables.values():
        metric = next(m for m in table.experiment.metrics if m.compare)
        for ds in _shown_datasets(table)[0]:
            if not has_runs(table, ds):
                continue
            rows = [row for row in table.rows_of(ds) if table.n.get((row, ds.key))]
            if table.remarks.get(ds.key) or any(" " in row for row in rows):
                left_out.append(ds.label)
                continue
            values, spread = [], []
            for row in ATTENTION_ORDER:
                cell = table.cells.get((row, ds.key, metric.key))
                support = table.cells.get((row, ds.key, "support"))
                spread.append(MISSING["md"] if support is None else f"{support.mean:.1f}")
                if cell is None or cell.n == 0:
                    values.append(MISSING["md"])
                    continue
                text = _fmt(cell.mean, metric.digits)
                comparison = table.comparisons.get((row, ds.key, metric.key))
                if comparison is not None and not isinstance(comparison, str):
                    text += f" ({comparison.delta:+.2f}, {comparison.p_text})"
                values.append(text)
            seeds = sorted({table.n[(row, ds.key)] for row in rows})
            n = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
            lines.append(f"| {ds.label} | {metric.label} | {n} | " + " | ".join(values) + " | "
                         + " / ".join(spread) + " |")
    notes_ = ["mean over seeds; in brackets the paired difference to softmax over the same seeds and the two-sided "
              "p-value of a paired bootstrap over test examples", "nonzero per row: exactly nonzero attention weights "
              f"per row on the test set, in the order {' / '.join(ATTENTION_ORDER)} (softmax: every position)",
              "standard deviations, intervals and the other statistics are in the full tables"]
    if left_out:
        notes_.append(f"left out here (see the full tables): {', '.join(left_out)}")
    return "\n".join(lines + ["", f"_{'; '.join(notes_)}._", ""])


def seed_table(tables: dict) -> str:
    """Seed by seed: each mapping's difference to softmax on every seed they share, how many seeds it is ahead on,
    and the exact sign-flip test over seeds beside the bootstrap over test examples: the two tests answer different
    questions (another seed, another test set), and a claim needs both."""
    lines = ["### Seed by seed: Δ vs softmax on each shared seed", "",
             "| dataset | metric | attention | seeds | Δ per seed | ahead | mean Δ | p (seeds, sign-flip) | "
             "p (test examples, bootstrap) |", "|:---|:---|:---|---:|:---|---:|---:|---:|---:|"]
    for table in tables.values():
        for ds in _shown_datasets(table)[0]:
            if table.remarks.get(ds.key):  # a pipeline check, not a result (as in the headline)
                continue
            for metric in (m for m in table.experiment.metrics if m.compare):
                for row in table.rows_of(ds):
                    comparison = table.comparisons.get((row, ds.key, metric.key))
                    if comparison is None or isinstance(comparison, str) or not comparison.seed_deltas:
                        continue
                    deltas = comparison.seed_deltas
                    seed_p = comparison.seed_p
                    lines.append(" | ".join([
                        f"| {ds.label}", metric.label, row, str(len(deltas)),
                        " ".join(f"{d:+.2f}" for d in deltas), f"{sum(d > 0 for d in deltas)}/{len(deltas)}",
                        f"{comparison.delta:+.2f}", MISSING["md"] if seed_p is None else f"{seed_p:.3f}",
                        f"{comparison.p_text.removeprefix('p=').removeprefix('p')} |"]))
    return "\n".join(lines + ["", "_Δ per seed: the mapping's test metric minus softmax's, same seed and configuration "
                                   "(seeds in order); p (seeds): two-sided exact sign-flip test of the mean over seeds "
                                   "(its smallest possible value is 2/2^n: 0.25 with 3 seeds); p (test examples): the "
                                   "tables' paired bootstrap over test examples, which does not cover seed-to-seed "
                                   "variation._", ""])


def _span(values: list, digits: int = 0) -> str:
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}-{high}"


def timing(tables: dict) -> str:
    """What a run cost, per dataset trained on (not the other test sets the same runs scored): runs, epochs (best
    epoch), time per epoch and wall time per run (every part of a resumed run), where they ran."""
    lines = ["### Time per run, from the records (`time_per_epoch_s`, `wall_time_s`)", "",
             "| dataset | runs | epochs (best) | time per epoch | wall time per run | device |",
             "|:---|---:|---:|---:|---:|:---|"]
    for table in tables.values():
        for ds in _shown_datasets(table)[0]:
            if ds.section is not None or not has_runs(table, ds):  # scored by the runs of another dataset's row
                continue

            def values(quantity, ds=ds):
                cells = (table.cells.get((row, ds.key, quantity)) for row in table.rows)
                return [v for cell in cells if cell is not None for v in cell.values]

            runs = sum(table.n.get((row, ds.key), 0) for row in table.rows)
            epochs, best = values("epochs"), values("best_epoch")
            per_epoch, minutes = values("epoch_seconds"), values("minutes")
            lines.append(" | ".join([
                f"| {ds.label}", str(runs),
                f"{_span(epochs)} ({_span(best)})" if epochs and best else MISSING["md"],
                f"{_span(per_epoch)} s" if per_epoch else MISSING["md"],
                f"{_span(minutes)} min" if minutes else MISSING["md"],
                "; ".join(sorted(table.devices.get(ds.key, ()))) + " |"]))
    return "\n".join(lines + ["", "_Each run's own figures; runs that shared the machine with others are slower than "
                                   "a run alone._", ""])


def write_tables(records: list, out: str | Path, paper: dict | None = None, experiments=EXPERIMENTS,
                 samples: int = 1000) -> dict:
    """Build and write every table; returns ``{experiment key: Table}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables, combined = {}, []
    header = ["# Results", "", "Generated by `make tables` from the run records; do not edit.", ""]
    for experiment in experiments:
        table = build_table(experiment, records, paper, samples=samples)
        tables[experiment.key] = table
        for sentence in table.dropped:
            warn(f"{experiment.key}: {sentence}")
        md = to_markdown(table)
        atomic_write(out / f"{experiment.key}.md", md)
        atomic_write(out / f"{experiment.key}.tex", to_latex(table))
        atomic_write(out / f"{experiment.key}.csv", to_csv(table))
        combined.append((table, md))
    with_runs = [md for table, md in combined if has_runs(table)]
    without = [table.experiment.title for table, md in combined if not has_runs(table)]
    body = with_runs if with_runs else [md for _, md in combined]
    if with_runs and without:
        body.append(f"_No runs for: {'; '.join(without)}._\n")
    atomic_write(out / "tables.md", "\n".join(header + body))
    if any(has_runs(table) for table in tables.values()):
        atomic_write(out / "headline.md", "\n".join(header + [headline(tables)]))
        atomic_write(out / "timing.md", "\n".join(header + [timing(tables)]))
        atomic_write(out / "seeds.md", "\n".join(header + [seed_table(tables)]))
    from .heads import cost_table, heads_table  # Transformer runs: what the heads learned, what each mapping cost

    for name, text in (("heads", heads_table(records)), ("cost", cost_table(records))):
        if text:
            atomic_write(out / f"{name}.md", "\n".join(header + [text]))
    return tables


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
    parser.add_argument("--samples", type=int, default=1000, help="paired-bootstrap samples (default 1000)")
    args = parser.parse_args(argv)
    records = load_records(args.source, args.results, args.project)
    paper_path = Path(args.paper) if args.paper else Path(args.results) / "paper.yaml"
    if not paper_path.exists() and Path("results/paper.yaml").exists():
        paper_path = Path("results/paper.yaml")
    paper = paper_mod.load(paper_path)
    out = Path(args.out) if args.out else Path(args.results) / "tables"
    tables = write_tables(records, out, paper, samples=args.samples)
    for table in tables.values():
        print(to_markdown(table))
    runs = sum(sum(t.n.values()) for t in tables.values())
    print(f"{runs} run(s) from {args.source} in {len(tables)} tables -> {out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
