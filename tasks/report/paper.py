"""The values the paper reports, from ``results/paper.yaml``, and a check of that file.

    python -m tasks.report.paper [results/paper.yaml]     # validate and list what is filled in

Layout: ``<experiment>: {table: <default source>, datasets: {<dataset>: {<attention>: {<metric>: {value, table}}}}}``
with experiments ``snli``, ``translation``, ``summarization``; datasets ``snli``; ``<task> <src>-<tgt>``
(``multi30k de-en``, ``iwslt de-en``: every dataset listed here gets a column in the translation table);
``gigaword``, ``duc``. ``value`` is the number as printed in the paper (null until copied from it); ``table`` names
where it is printed (``"Table 2"``); when an entry has none, the dataset's, then the experiment's ``table`` is used.
A bare number in place of ``{value, table}`` is accepted too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def load(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        print(f"[report] no {path}: the paper column stays empty", file=sys.stderr)
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    for problem in check(data):
        print(f"[report] {path}: {problem}", file=sys.stderr)
    return data


def experiment(paper: dict, key: str) -> dict:
    exp = (paper or {}).get(key) or {}
    return exp if isinstance(exp, dict) else {}


def value(paper: dict, exp_key: str, dataset: str, row: str, metric: str):
    """``(value or None, table or None)`` for a table row (``fusedmax (lam=0.1)`` reads ``fusedmax``)."""
    exp = experiment(paper, exp_key)
    ds = (exp.get("datasets") or {}).get(dataset) or {}
    if not isinstance(ds, dict):
        return None, None
    attn = ds.get(row, ds.get(row.split(" ")[0])) or {}
    entry = attn.get(metric) if isinstance(attn, dict) else None
    if isinstance(entry, dict):
        val, table = entry.get("value"), entry.get("table")
    else:
        val, table = entry, None
    if val is None:
        return None, None
    return float(val), table or ds.get("table") or exp.get("table")


def check(paper: dict) -> list[str]:
    """Problems of a paper.yaml: wrong layout, a value that is not a number, a value with no source table."""
    problems = []
    if not isinstance(paper, dict):
        return ["the top level must be a mapping of experiments"]
    for exp_key, exp in paper.items():
        if not isinstance(exp, dict):
            problems.append(f"{exp_key}: must be a mapping with 'datasets'")
            continue
        for ds_key, ds in (exp.get("datasets") or {}).items():
            if not isinstance(ds, dict):
                problems.append(f"{exp_key}/{ds_key}: must be a mapping of attentions")
                continue
            for attn, metrics in ds.items():
                if attn == "table":
                    continue
                if not isinstance(metrics, dict):
                    problems.append(f"{exp_key}/{ds_key}/{attn}: must be a mapping of metrics")
                    continue
                for metric, entry in metrics.items():
                    where = f"{exp_key}/{ds_key}/{attn}/{metric}"
                    val = entry.get("value") if isinstance(entry, dict) else entry
                    if val is None:
                        continue
                    if isinstance(val, bool) or not isinstance(val, (int, float)):
                        problems.append(f"{where}: value {val!r} is not a number")
                    elif not ((isinstance(entry, dict) and entry.get("table")) or ds.get("table") or exp.get("table")):
                        problems.append(f"{where}: value {val} has no 'table' saying where the paper prints it")
    return problems


def filled(paper: dict):
    """``(experiment, dataset, attention, metric, value, table)`` of every value filled in."""
    for exp_key, exp in (paper or {}).items():
        for ds_key, ds in ((exp or {}).get("datasets") or {}).items():
            for attn, metrics in (ds or {}).items():
                if attn == "table" or not isinstance(metrics, dict):
                    continue
                for metric in metrics:
                    val, table = value(paper, exp_key, ds_key, attn, metric)
                    if val is not None:
                        yield exp_key, ds_key, attn, metric, val, table


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0] if argv else "results/paper.yaml")
    data = yaml.safe_load(path.read_text()) or {}
    problems = check(data)
    for problem in problems:
        print(f"{path}: {problem}")
    rows = list(filled(data))
    for row in rows:
        print("  ".join(str(x) for x in row))
    print(f"{path}: {len(rows)} value(s) filled in, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
