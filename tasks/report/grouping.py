"""Runs into tables: which records share a cell, and the numbers of each cell.

**Which table and dataset.** A record's task's report section (``sections.py``) names its table and dataset; a
task split by language pair (translation) has one dataset per pair, and one per other test set its runs scored
(``metrics.test.<name>``).

**Which runs share a cell.** Runs are grouped by dataset, attention mapping (with its parameters) and the rest
of their resolved configuration without the seed (``runs.result_config``: settings that cannot change a result,
such as paths, threads or logging, are left out). Two configurations never share a cell: when a dataset has runs
of several configurations, each gets its own row, labelled with the settings that differ
(``fusedmax [trainer.optimizer.name=sgd]``). Within a cell a re-run of a seed counts once (the one that finished
last). Runs left out (unfinished, older re-runs) are counted in a note under the table.

**Cells.** The mean ± sample standard deviation (ddof=1) over seeds, ``n`` (seeds), and ``Δ vs softmax``: the
difference to the softmax row of the *same configuration*, over the seeds both have, with its 95% interval and
two-sided p-value from a paired bootstrap over the test examples (``significance.py``; "n/a" for records without
per-example statistics). Then the value the paper reports (``results/paper.yaml``) and the attention statistics
of the test set (``tasks/stats.py``), the epochs and the wall time of a run.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field

from . import paper as paper_mod
from .runs import (
    ATTENTION_ORDER,
    NOT_TEST_SETS,
    attention_name,
    attention_params,
    config_signature,
    finished_key,
    get,
    mapping_rank,
    pair_of,
    result_config,
    seed_of,
    task_of,
    varying_keys,
)
from .sections import Dataset, Experiment, Metric
from .significance import examples_of, paired_bootstrap

BASELINE = "softmax"


@dataclass(frozen=True)
class Stat:
    key: str  # key in the test metrics (tasks/stats.py)
    label: str
    digits: int = 2


STATS = (Stat("support", "nonzero"), Stat("above_1pct", "≥1%"), Stat("attn_ppl", "exp(H)"), Stat("groups", "groups"))
# shown where the runs have them (seq2seq): the fraction of decoded rows that pass no gradient to their scores, and
# of output tokens that are <unk> (a test set whose words the vocabulary lacks)
OPTIONAL_STATS = (Stat("dead_rows", "no-grad rows", 3), Stat("unk_rate", "unk", 3))


SECTION_MARK = " @"  # dataset key of another test set of the same runs: "multi30k de-en @test_2017_mscoco"


def translation_dataset(experiment: Experiment, task: str, pair: str | None, test_set: str | None = None,
                        named: bool = False) -> Dataset:
    """The table of ``task`` (one language ``pair``) on its ``test`` split, or on another ``test_set`` the same
    runs scored (``metrics.test.<test_set>``); ``named`` puts the test set's name in the label."""
    section = experiment.sections.get(task)
    primary = section.primary_test_set if section else None
    name = section.label if section else task
    key, label = task, name
    if pair is not None:
        src, _, tgt = pair.partition("-")
        key, label = f"{task} {pair}", f"{name} {src}→{tgt}"
    if test_set is not None:
        return Dataset(f"{key}{SECTION_MARK}{test_set}", f"{label} · {test_set}", (task,), pair, section=test_set,
                       section_tasks=(task,))
    if named and primary:
        label = f"{label} · {primary}"
    return Dataset(key, label, (task,), pair)


def dataset_from_key(experiment: Experiment, key: str, named: bool = False) -> Dataset:
    base, _, test_set = key.partition(SECTION_MARK)
    task, _, pair = base.partition(" ")
    return translation_dataset(experiment, task, pair or None, test_set or None, named=named)


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
        if _by_pair(experiment, task):
            base = translation_dataset(experiment, task, pair_of(record)).key
            for key in (base, *(f"{base}{SECTION_MARK}{t}" for t in sorted(other_test_sets(record)))):
                if key not in keys:
                    keys.append(key)
    # the test set's name is in every label of a task whose runs scored several
    several = {k.partition(SECTION_MARK)[0] for k in keys if SECTION_MARK in k}
    fixed = list(experiment.datasets)
    return fixed + [dataset_from_key(experiment, k, named=k.partition(SECTION_MARK)[0] in several) for k in keys]


def _by_pair(experiment: Experiment, task: str) -> bool:
    section = experiment.sections.get(task)
    return section is not None and section.by_pair


def _belongs(experiment: Experiment, dataset: Dataset, record: dict) -> bool:
    task = task_of(record)
    if _by_pair(experiment, task):
        return translation_dataset(experiment, task, pair_of(record), dataset.section).key == dataset.key
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
    groups = _group_runs(experiment, datasets, records, dropped)

    labels = _label_groups(groups)
    found = {labels[id(g)] for g in groups}
    # the four mappings always have a row (empty until run) unless rows are split by parameters or configurations
    rows = sorted(found | {a for a in ATTENTION_ORDER if not any(f.split(" ")[0] == a for f in found)},
                  key=_row_sort_key)
    if len({g.signature for g in groups}) > len({g.dataset.key for g in groups}):
        dropped.append("rows in [brackets] are different configurations: their runs are never averaged together")

    scale = {}
    for m in experiment.metrics:
        values = [v for g in groups for r in g.runs if (v := _metric(g.dataset.test_metrics(r), g.dataset, m))
                  is not None]
        scale[m.key] = 100.0 if m.percent and values and all(abs(v) <= 1.0 for v in values) else 1.0
    cells, n, devices = _cells(experiment, groups, labels, scale)

    comparisons = _compare(experiment, groups, labels, samples)
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
    for g in groups:
        for r in g.runs:
            if (note := get(r, "config.note")) and note not in remarks.setdefault(g.dataset.key, []):
                remarks[g.dataset.key].append(note)
    return Table(experiment, datasets, rows, cells, n, paper_cells, scale, comparisons, dropped, remarks, devices)


def _group_runs(experiment: Experiment, datasets: list, records: list, dropped: list) -> list:
    """The groups (one dataset, mapping, configuration) of the records with test metrics, the last finished run of
    each seed in each; what was left out is said in ``dropped``."""
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
    return list(groups.values())


def _cells(experiment: Experiment, groups: list, labels: dict, scale: dict) -> tuple:
    """(cells, runs per cell, where the runs of each dataset ran)."""
    cells, n, devices = {}, {}, {}
    for g in groups:
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
    return cells, n, devices


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


def has_runs(table: Table, ds: Dataset | None = None) -> bool:
    return any(n for (row, key), n in table.n.items() if ds is None or key == ds.key)


def shown_datasets(table: Table) -> tuple:
    """(datasets whose table is printed, datasets left out): once any dataset has runs, those with neither runs nor
    paper values are left out (named in a note), so that a results folder of one task does not print pages of
    dashes."""
    if not has_runs(table):
        return list(table.datasets), []

    def shown(ds):
        return has_runs(table, ds) or any(v is not None for (_, key, _), (v, _) in table.paper.items() if key == ds.key)

    return [ds for ds in table.datasets if shown(ds)], [ds for ds in table.datasets if not shown(ds)]
