"""The tables across datasets, for the top of a document: the headline (each mapping's test metric, Δ vs softmax and
spread, one line per dataset), seed by seed (Δ per shared seed, sign-flip test over seeds) and the timing (what a
run cost, per dataset trained on).
"""

from __future__ import annotations

from .grouping import has_runs, shown_datasets
from .render import MISSING, fmt_number
from .runs import ATTENTION_ORDER, MAPPING_ORDER


def headline(tables: dict) -> str:
    """One line per dataset with runs: each mapping's headline metric with its Δ vs softmax and p-value, and how
    many positions its attention spreads over, for the top of a document. The paper's four mappings always have a
    column, the framework's other mappings (entmax, sq_pnorm_max) where some dataset has runs of them. Datasets whose
    runs carry a preset note (e.g. "a pipeline check, not a result") or only configurations (a sweep's settings) are
    left to the full tables, and said so; other configurations of a mapping (e.g. "entmax (learned=gamma,alpha)")
    are named under the table, their rows are in the full tables."""
    shown = []  # (table, dataset, its rows with runs)
    left_out, configurations = [], []
    for table in tables.values():
        for ds in shown_datasets(table)[0]:
            if not has_runs(table, ds):
                continue
            rows = [row for row in table.rows_of(ds) if table.n.get((row, ds.key))]
            if table.remarks.get(ds.key) or not any(row in MAPPING_ORDER for row in rows):
                left_out.append(ds.label)  # a note, or configurations only (a sweep's settings): no plain mapping
                continue
            shown.append((table, ds, rows))
            others = [row for row in rows if row not in MAPPING_ORDER]
            if others:
                configurations.append(f"{ds.label}: {', '.join(others)}")
    extra = [name for name in MAPPING_ORDER if name not in ATTENTION_ORDER
             and any(name in rows for _, _, rows in shown)]
    columns = list(ATTENTION_ORDER) + extra
    lines = ["### At a glance: test metric per mapping (Δ vs softmax, p) and nonzero attention weights per row", "",
             "| dataset | metric | seeds | " + " | ".join(columns) + " | nonzero per row |",
             "|:---|:---|---:|" + "---:|" * (len(columns) + 1)]
    for table, ds, rows in shown:
        metric = next(m for m in table.experiment.metrics if m.compare)
        values, spread = [], []
        for row in columns:
            cell = table.cells.get((row, ds.key, metric.key))
            support = table.cells.get((row, ds.key, "support"))
            spread.append(MISSING["md"] if support is None else f"{support.mean:.1f}")
            if cell is None or cell.n == 0:
                values.append(MISSING["md"])
                continue
            text = fmt_number(cell.mean, metric.digits)
            comparison = table.comparisons.get((row, ds.key, metric.key))
            if comparison is not None and not isinstance(comparison, str):
                text += f" ({comparison.delta:+.2f}, {comparison.p_text})"
            values.append(text)
        seeds = sorted({table.n[(row, ds.key)] for row in rows if row in columns})  # (a shown dataset has one)
        n = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
        lines.append(f"| {ds.label} | {metric.label} | {n} | " + " | ".join(values) + " | "
                     + " / ".join(spread) + " |")
    notes_ = ["mean over seeds; in brackets the paired difference to softmax over the same seeds and the two-sided "
              "p-value of a paired bootstrap over test examples", "nonzero per row: exactly nonzero attention weights "
              f"per row on the test set, in the order {' / '.join(columns)} (softmax: every position)",
              "standard deviations, intervals and the other statistics are in the full tables"]
    if left_out:
        notes_.append(f"left out here (see the full tables): {', '.join(left_out)}")
    if configurations:
        notes_.append(f"other configurations, in the full tables: {'; '.join(configurations)}")
    return "\n".join(lines + ["", f"_{'; '.join(notes_)}._", ""])


def seed_table(tables: dict) -> str:
    """Seed by seed: each mapping's difference to softmax on every seed they share, how many seeds it is ahead on,
    and the exact sign-flip test over seeds beside the bootstrap over test examples: the two tests answer different
    questions (another seed, another test set), and a claim needs both."""
    lines = ["### Seed by seed: Δ vs softmax on each shared seed", "",
             "| dataset | metric | attention | seeds | Δ per seed | ahead | mean Δ | p (seeds, sign-flip) | "
             "p (test examples, bootstrap) |", "|:---|:---|:---|---:|:---|---:|---:|---:|---:|"]
    for table in tables.values():
        for ds in shown_datasets(table)[0]:
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
        for ds in shown_datasets(table)[0]:
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
