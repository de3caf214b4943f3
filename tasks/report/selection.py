"""Model selection on validation: which configuration of a sweep to keep, decided without the test set.

    python -m scripts.select_setting --results DIR [--task snli] [--out FILE]      (make select RESULTS=DIR)

Runs are grouped as the tables group them: by task and resolved configuration without the seed and without the
attention block (``runs.result_config``), so one group is one candidate setting *for every mapping*. Each group
gets the settings that differ between the candidates of its task, the mappings and seeds it holds, the mean ±
sample std of the validation metric (``Task.metric`` at the checkpoint early stopping kept, the number training
maximised) over all its runs, and the best epoch / epochs run. Candidates are ranked by that mean; the first is
the selection. The test metric is printed last, for the record only: it plays no part in the ranking. An
attention parameter that takes several values among one mapping's runs (a λ sweep of fusedmax) splits that
mapping's runs into candidates of their own, labelled ``attention.fusedmax.lam=...``.

A fair comparison needs every candidate to hold the same mappings and seeds; when they do not, a note says so
(the ranking is then over unequal samples). Within a group, a re-run of a (mapping, seed) counts once: the one
that finished last, as in the tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .runs import (
    attention_name,
    attention_params,
    config_signature,
    finished_key,
    load_local,
    mapping_rank,
    result_config,
    seed_of,
    split_metric,
    task_of,
    varying_keys,
)


@dataclass
class Candidate:
    task: str
    config: dict
    metric: str = ""
    runs: dict = field(default_factory=dict)  # (mapping, seed) -> record

    def values(self, split: str) -> list:
        values = (split_metric(record, split, self.metric) for record in self.runs.values())
        return [v for v in values if v is not None]

    def valid_mean(self) -> float:
        values = self.values("valid")
        return statistics.fmean(values) if values else float("-inf")

    @property
    def mappings(self) -> dict:
        seeds: dict = {}
        for mapping, seed in self.runs:
            seeds.setdefault(mapping, []).append(seed)
        return {m: sorted(seeds[m], key=str) for m in sorted(seeds, key=mapping_rank)}


def candidates(records: list) -> dict[str, list[Candidate]]:
    """Task -> its candidates, best mean validation metric first."""
    records = [r for r in sorted(records, key=finished_key)
               if (r.get("metric") or "") in ((r.get("metrics") or {}).get("valid") or {})]  # finished, validated
    # an attention parameter swept for one mapping (fusedmax's λ) makes its own candidates, for that mapping
    seen: dict = {}
    for record in records:
        for k, v in attention_params(record).items():
            seen.setdefault((task_of(record), attention_name(record), k), set()).add(json.dumps(v, default=str))
    groups: dict = {}
    for record in records:
        task, name = task_of(record), attention_name(record)
        swept = {f"attention.{name}.{k}": v for k, v in sorted(attention_params(record).items())
                 if len(seen[(task, name, k)]) > 1}
        key = (task, config_signature(record), json.dumps(swept, default=str))
        cand = groups.setdefault(key, Candidate(task, {**result_config(record), **swept}, record["metric"]))
        cand.runs[(name, seed_of(record))] = record  # the later run of a seed wins
    by_task: dict = {}
    for cand in groups.values():
        by_task.setdefault(cand.task, []).append(cand)
    return {t: sorted(cs, key=lambda c: -c.valid_mean()) for t, cs in sorted(by_task.items())}


def _stat(values: list, scale: float) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values) * scale
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values) * scale:.2f}"


def to_markdown(task: str, cands: list[Candidate]) -> str:
    varying = varying_keys(c.config for c in cands)
    metric = cands[0].metric
    # accuracy recorded as a fraction reads as percent, as in the tables
    scale = 100.0 if all(abs(v) <= 1.0 for c in cands for v in c.values("valid") + c.values("test")) else 1.0
    unit = " (%)" if scale == 100.0 else ""
    lines = [f"### {task}: candidates ranked by mean validation {metric}", "",
             f"| rank | settings | runs (mapping: seeds) | valid {metric}{unit} | best epoch / epochs "
             f"| test {metric}{unit} (not used) |",
             "|---|---|---|---|---|---|"]
    for rank, cand in enumerate(cands, 1):
        settings = ", ".join(f"{k}={cand.config.get(k)}" for k in varying) or "(the only candidate)"
        runs = "; ".join(f"{m}: {','.join(map(str, s))}" for m, s in cand.mappings.items())
        epochs = "; ".join(f"{r.get('best_epoch')}/{r.get('epochs')}" for r in cand.runs.values())
        mark = " **selected**" if rank == 1 else ""
        lines.append(f"| {rank}{mark} | {settings} | {runs} | {_stat(cand.values('valid'), scale)} | {epochs} "
                     f"| {_stat(cand.values('test'), scale)} |")
    if len({json.dumps(c.mappings) for c in cands}) > 1:
        lines += ["", "Note: the candidates do not hold the same mappings and seeds, so their means are over "
                      "unequal samples."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="root of the local run records")
    parser.add_argument("--task", default=None, help="only this task (default: every task with records)")
    parser.add_argument("--out", default=None, help="also write the markdown here")
    args = parser.parse_args(argv)
    by_task = candidates(load_local(args.results))
    if args.task is not None:
        by_task = {t: c for t, c in by_task.items() if t == args.task}
    if not by_task:
        print(f"error: no finished run with a validation metric under {args.results}"
              + (f" for task {args.task}" if args.task else ""), file=sys.stderr)
        return 2
    text = "\n".join(to_markdown(t, cs) for t, cs in by_task.items())
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0
