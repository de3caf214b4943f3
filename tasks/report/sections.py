"""Which table a run goes in, under which label, with which metrics: its task's ``report`` section.

A task's config file says it (``configs/task/<name>.yaml``, ``task.report``) and the harness writes it into every
run record with the rest of the resolved config (``config.task.report``), so the records of a new task are
tabulated without an edit here:

    report:
      table: snli                 # the table its runs go in: <out>/snli.{md,tex,csv}; tasks naming one table share it
      title: "Textual entailment: SNLI test accuracy (%)"    # the table's title and columns: the first section
      metrics:                                               # naming the table that gives them is used
        - {key: accuracy, label: Accuracy, percent: true}    # also: digits, aliases, compare (Δ column), paper
      label: SNLI                 # the dataset's name in the tables and figures
      datasets:                   # optional, instead of label: the datasets of one run, e.g. its test split and a
        - {key: gigaword, label: Gigaword, keys: {rouge1: [rouge1_f1, rouge1]}}   # test set scored beside it
        - {key: duc, label: DUC-2004, section: duc2004}      # (metrics.test.duc2004); keys: names tried in order
      by_pair: false              # translation: one dataset per language pair and per other test set scored
      primary_test_set: null      # the test set the `test` split is, named when the runs scored others

Records written before the section existed carry none; they are read with the section of the shipped config file
their task was made by (``RECORDED_BEFORE_SECTIONS``). Those are the paper's tasks: their tables are written even
without runs, first and in the paper's order. A record of a task with neither is skipped and said so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from tasks.config import config_defaults
from tasks.records import get

from .runs import task_of, warn

# task name in a record written before `task.report` existed -> the config file (configs/task/<file>.yaml) that
# made it, in the paper's order. Only for those records: a task added since carries its section in its records.
RECORDED_BEFORE_SECTIONS = {
    "snli": "snli", "multi30k": "multi30k", "iwslt": "iwslt", "iwslt14": "iwslt", "gigaword": "gigaword",
    "gigaword_duc2004": "duc", "duc": "duc", "duc2004": "duc",
}


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


@dataclass(frozen=True)
class Section:
    """One task's report section, read."""

    task: str
    table: str
    title: str | None
    metrics: tuple  # of Metric; empty: the table's, from another task's section
    label: str
    datasets: tuple = ()  # of Dataset (one task each); empty for by_pair
    by_pair: bool = False
    primary_test_set: str | None = None


@dataclass
class Experiment:
    """One table: its title and metric columns, the tasks whose runs go in it, its fixed datasets."""

    key: str
    title: str
    metrics: tuple
    sections: dict = field(default_factory=dict)  # task -> Section
    datasets: tuple = ()  # the datasets of tasks that are not split by language pair, merged by key

    @property
    def translation(self) -> bool:
        """Datasets are found in the records and paper.yaml (one per task × language pair × test set)."""
        return any(s.by_pair for s in self.sections.values())


class SectionError(ValueError):
    """A report section that cannot be read; the message names the key to fix."""


def read_section(task: str, raw) -> Section:
    """The ``Section`` of ``task`` from its config block ``task.report`` (a dict)."""
    if not isinstance(raw, dict) or not raw.get("table"):
        raise SectionError(f"task {task!r}: task.report must be a mapping with at least `table` (got {raw!r})")
    metrics = tuple(_metric(task, m) for m in raw.get("metrics") or ())
    label = str(raw.get("label") or task)
    datasets = tuple(_dataset(task, d) for d in raw.get("datasets") or ())
    if not raw.get("by_pair") and not datasets:
        datasets = (Dataset(task, label, (task,)),)
    return Section(task, str(raw["table"]), raw.get("title"), metrics, label, datasets, bool(raw.get("by_pair")),
                   raw.get("primary_test_set"))


def _metric(task: str, raw) -> Metric:
    if not isinstance(raw, dict) or "key" not in raw or "label" not in raw:
        raise SectionError(f"task {task!r}: each of task.report.metrics needs `key` and `label` (got {raw!r})")
    return Metric(**{**raw, "aliases": tuple(raw.get("aliases") or ())})


def _dataset(task: str, raw) -> Dataset:
    if not isinstance(raw, dict) or "key" not in raw:
        raise SectionError(f"task {task!r}: each of task.report.datasets needs `key` (got {raw!r})")
    keys = tuple((metric, tuple(names)) for metric, names in (raw.get("keys") or {}).items())
    section = raw.get("section")
    return Dataset(str(raw["key"]), str(raw.get("label") or raw["key"]), (task,), keys=keys, section=section,
                   section_tasks=(task,) if section else ())


@cache  # the shipped config files do not change while the report runs; make figures asks once per figure
def recorded_before_sections() -> dict:
    """task -> Section of the tasks whose records may predate `task.report`, from their shipped config files
    (read once per process; callers do not modify it)."""
    return {task: read_section(task, config_defaults(f"task/{file}.yaml", "task", "report"))
            for task, file in RECORDED_BEFORE_SECTIONS.items()}


def section_of(record: dict, fallback: dict) -> Section | str:
    """The record's section, or why it has none (a sentence)."""
    task = task_of(record)
    raw = get(record, "config.task.report")
    if raw is None:
        if task in fallback:
            return fallback[task]
        return (f"task {task!r} has no report section (config.task.report: add `report:` to the task's config "
                f"file, configs/task/<name>.yaml; see tasks/report/sections.py) and is none of the tasks recorded "
                f"before that key existed ({', '.join(RECORDED_BEFORE_SECTIONS)})")
    try:
        return read_section(task, raw)
    except SectionError as error:
        return str(error)


def experiments(records: list) -> tuple:
    """The tables of these records: the paper's (even without runs), then those that only records name (by key).
    Records whose section cannot be read are said and left out."""
    fallback = recorded_before_sections()
    sections = list(fallback.values())
    for record in records:
        section = section_of(record, fallback)
        if isinstance(section, str):
            _warn_once(f"skipping {record.get('path') or record.get('run') or task_of(record)}: {section}")
        elif section not in sections:
            sections.append(section)
    paper_tables = list(dict.fromkeys(s.table for s in fallback.values()))
    others = sorted({s.table for s in sections} - set(paper_tables))
    return tuple(_experiment(key, [s for s in sections if s.table == key]) for key in paper_tables + others)


@cache
def _warn_once(message: str) -> None:
    """`make figures` asks for the experiments once per figure: a record it cannot read is said once."""
    warn(message)


def _experiment(key: str, sections: list) -> Experiment:
    described = next((s for s in sections if s.title and s.metrics), None)
    if described is None:
        raise SectionError(f"table {key!r}: no task's report section gives its `title` and `metrics` (tasks "
                           f"{', '.join(s.task for s in sections)})")
    by_task: dict = {}
    for s in sections:  # a task whose records carry two versions of its section: the first one read
        by_task.setdefault(s.task, s)
    datasets: dict = {}
    for s in by_task.values():
        for ds in s.datasets:
            known = datasets.get(ds.key)
            datasets[ds.key] = ds if known is None else _merged(known, ds)
    return Experiment(key, described.title, described.metrics, by_task, tuple(datasets.values()))


def _merged(known: Dataset, more: Dataset) -> Dataset:
    """One dataset scored by the runs of several tasks (DUC-2004: a Gigaword run's second test set, or the test
    split of a run trained for it): label and keys of the first, the tasks of both."""
    return Dataset(known.key, known.label, known.tasks + more.tasks, known.pair, known.keys or more.keys,
                   known.section or more.section, known.section_tasks + more.section_tasks)


def sections_by_task(records: list) -> dict:
    """task -> Section of every task these records (and the paper's tasks) have."""
    return {task: section for e in experiments(records) for task, section in e.sections.items()}
