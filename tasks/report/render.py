"""A table as text: Markdown, LaTeX and long-format CSV (one line per dataset, row and quantity, with mean, std, n,
the paper's value and the Δ vs softmax). Accuracy recorded as a fraction is shown in percent; BLEU is sacreBLEU's
detokenized score (tokenized BLEU beside it); ROUGE is F1 on Gigaword and 75-byte recall on DUC-2004.
"""

from __future__ import annotations

import csv
import io

from .grouping import BASELINE, OPTIONAL_STATS, STATS, Cell, Table, shown_datasets
from .sections import Dataset

MISSING = {"md": "—", "tex": "--", "csv": ""}


def fmt_number(x, digits):
    return f"{x:.{digits}f}"


def format_cell(cell: Cell | None, digits: int, fmt: str) -> str:
    if cell is None or cell.n == 0:
        return MISSING[fmt]
    mean = fmt_number(cell.mean, digits)
    if cell.std is None:
        return f"${mean}$" if fmt == "tex" else mean
    std = fmt_number(cell.std, digits)
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
        return MISSING[fmt] if value is None else fmt_number(float(value), what.digits)
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
        return MISSING[fmt] if cell is None else fmt_number(cell.mean, 3)
    cell = table.cells.get((row, ds.key, what.key))
    return MISSING[fmt] if cell is None else fmt_number(cell.mean, what.digits)


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


def to_markdown(table: Table) -> str:
    lines = [f"### {table.experiment.title}", ""]
    multi = len(table.datasets) > 1
    shown, empty = shown_datasets(table)
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
    for ds in shown_datasets(table)[0]:
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
