"""The report's tables from fabricated run records: exact means, stds, n, formats and the paper column."""

import csv
import io
import json
import math

import pytest
import yaml

from tasks.report import paper as paper_mod
from tasks.report.grouping import build_table
from tasks.report.render import to_csv, to_latex, to_markdown
from tasks.report.runs import load_local, pair_of, row_labels
from tasks.report.sections import experiments
from tasks.report.summaries import headline, timing
from tasks.report.tables import main, write_tables

EXPERIMENTS = experiments([])  # the paper's tables, from the shipped task configs' report sections
EXP = {e.key: e for e in EXPERIMENTS}


def record(task, attention, seed, test, *, finished="2026-01-01T00:00:00", config=None, **attn_params):
    return {
        "task": task,
        "attention": {"name": attention, "params": attn_params},  # tasks/records.py's layout
        "seed": seed,
        "config": config or {"task": {"name": task}},
        "metrics": {"valid": {}, "test": test},
        "epochs": 3,
        "best_epoch": 2,
        "time_per_epoch_s": 10.0,
        "wall_time_s": 30.0,
        "git_commit": "abc",
        "started": finished,
        "finished": finished,
    }


def write(root, rec, name):
    path = root / rec["task"] / rec["attention"]["name"] / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return path


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    recs = [
        # softmax: three seeds, accuracy as fractions -> percent; mean 82, sample std 2
        record("snli", "softmax", 1, {"accuracy": 0.80, "support": 10.0, "groups": 10.0}),
        record("snli", "softmax", 2, {"accuracy": 0.82, "support": 12.0, "groups": 12.0}),
        record("snli", "softmax", 3, {"accuracy": 0.84, "support": 14.0, "groups": 14.0}),
        # sparsemax: one seed -> no std
        record("snli", "sparsemax", 1, {"accuracy": 0.81, "support": 3.0, "groups": 3.0}),
        # fusedmax: seed 1 ran twice; the later run counts, the older one is ignored
        record("snli", "fusedmax", 1, {"accuracy": 0.10, "support": 1.0, "groups": 1.0}, finished="2026-01-01T00:00:00",
               lam=0.1),
        record("snli", "fusedmax", 1, {"accuracy": 0.83, "support": 4.0, "groups": 2.0}, finished="2026-01-02T00:00:00",
               lam=0.1),
        record("snli", "fusedmax", 2, {"accuracy": 0.85, "support": 6.0, "groups": 2.0}, lam=0.1),
        # an unfinished run (no test metrics): skipped
        record("snli", "oscarmax", 1, {}),
        # translation: BLEU as recorded, pair from the config
        record("multi30k", "softmax", 1, {"bleu": 30.0, "support": 20.0, "groups": 20.0},
               config={"task": {"name": "multi30k", "src": "de", "tgt": "en"}}),
        record("multi30k", "softmax", 2, {"bleu": 32.0, "support": 22.0, "groups": 22.0},
               config={"task": {"name": "multi30k", "src": "de", "tgt": "en"}}),
        record("iwslt", "oscarmax", 1, {"bleu": 25.5}, config={"task": {"name": "iwslt", "pair": "de-en"}}),
        # summarization, as tasks/seq2seq records it (percent): F1 on Gigaword, recall on DUC-2004 (task=duc)
        record("gigaword", "sparsemax", 1, {"rouge1_f1": 30.0, "rouge2_f1": 10.0, "rougeL_f1": 25.0}),
        record("gigaword", "sparsemax", 2, {"rouge1_f1": 34.0, "rouge2_f1": 14.0, "rougeL_f1": 27.0}),
        record("gigaword_duc2004", "fusedmax", 1, {"rouge1_recall": 25.0, "rouge2_recall": 8.0, "rougeL_recall": 22.0,
                                                   "rouge1_f1": 99.0}, lam=0.1),
    ]
    for i, rec in enumerate(recs):
        write(root, rec, f"run{i}")
    paper = {
        "snli": {"table": "Table T1", "datasets": {"snli": {
            "softmax": {"accuracy": {"value": 81.5, "table": "Table X"}},
            "fusedmax": {"accuracy": 82.25},  # bare number: the experiment's table
            "oscarmax": {"accuracy": {"value": None, "table": None}},
        }}},
        "translation": {"datasets": {"multi30k de-en": {"softmax": {"bleu": {"value": 33.1, "table": "Table Y"}}},
                                     "multi30k en-de": {}}},
    }
    (root / "paper.yaml").write_text(yaml.safe_dump(paper))
    return root


def test_snli_table_exact(results):
    records = load_local(results)
    paper = paper_mod.load(results / "paper.yaml")
    table = build_table(EXP["snli"], records, paper)
    assert table.rows == ["softmax", "sparsemax", "fusedmax", "oscarmax"]
    soft = table.cells[("softmax", "snli", "accuracy")]
    assert soft.n == 3 and soft.mean == pytest.approx(82.0) and soft.std == pytest.approx(2.0)
    assert table.cells[("softmax", "snli", "support")].mean == pytest.approx(12.0)
    sparse = table.cells[("sparsemax", "snli", "accuracy")]
    assert sparse.n == 1 and sparse.mean == pytest.approx(81.0) and sparse.std is None
    fused = table.cells[("fusedmax", "snli", "accuracy")]
    assert fused.values == pytest.approx([83.0, 85.0])  # the older re-run of seed 1 is ignored
    assert fused.std == pytest.approx(math.sqrt(2.0))
    assert table.cells[("fusedmax", "snli", "groups")].mean == pytest.approx(2.0)
    assert table.n == {("softmax", "snli"): 3, ("sparsemax", "snli"): 1, ("fusedmax", "snli"): 2}
    assert ("oscarmax", "snli", "accuracy") not in table.cells
    assert table.paper[("softmax", "snli", "accuracy")] == (81.5, "Table X")
    assert table.paper[("fusedmax", "snli", "accuracy")] == (82.25, "Table T1")
    assert table.paper[("oscarmax", "snli", "accuracy")] == (None, None)

    md = to_markdown(table).splitlines()
    assert ("| attention | Accuracy | n | Δ Accuracy vs softmax [95% CI] | Accuracy (paper) | nonzero | ≥1% | exp(H) "
            "| groups | best / epochs | min/run |") in md
    assert "| softmax | 82.00 ± 2.00 | 3 | (baseline) | 81.50 | 12.00 | — | — | 12.00 | 2.0 / 3.0 | 0.5 |" in md
    # no per-example statistics in these records: no paired test
    assert "| sparsemax | 81.00 | 1 | n/a | — | 3.00 | — | — | 3.00 | 2.0 / 3.0 | 0.5 |" in md
    assert "| fusedmax | 84.00 ± 1.41 | 2 | n/a | 82.25 | 5.00 | — | — | 2.00 | 2.0 / 3.0 | 0.5 |" in md
    assert "| oscarmax | — | 0 | — | — | — | — | — | — | — | — |" in md
    notes = md[-1] or md[-2]
    assert "1 run(s) without test metrics left out" in notes and "1 older re-run(s) of the same seed" in notes

    tex = to_latex(table)
    assert r"softmax & $82.00 \pm 2.00$ & 3 & (baseline) & 81.50 & 12.00 & -- & -- & 12.00 & 2.0 / 3.0 & 0.5 \\" in tex
    assert r"oscarmax & -- & 0 & -- & -- & -- & -- & -- & -- & -- & -- \\" in tex
    assert r"\begin{tabular}{lrrrrrrrrrr}" in tex and "Table T1, Table X" in tex

    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    soft_acc = next(r for r in rows if r["attention"] == "softmax" and r["quantity"] == "accuracy")
    assert soft_acc == {"experiment": "snli", "dataset": "snli", "attention": "softmax", "quantity": "accuracy",
                        "mean": "82.0", "std": "2.0", "n": "3", "paper": "81.5", "paper_table": "Table X",
                        "delta_vs_softmax": "", "delta_low": "", "delta_high": "", "p_value": ""}
    osc = next(r for r in rows if r["attention"] == "oscarmax" and r["quantity"] == "accuracy")
    assert osc["mean"] == "" and osc["n"] == "0" and osc["paper"] == ""


def test_translation_columns_per_pair(results):
    table = build_table(EXP["translation"], load_local(results), paper_mod.load(results / "paper.yaml"))
    # datasets listed in paper.yaml first (even without runs), then those found in the records
    assert [d.key for d in table.datasets] == ["multi30k de-en", "multi30k en-de", "iwslt de-en"]
    assert [d.label for d in table.datasets] == ["Multi30k de→en", "Multi30k en→de", "IWSLT14 de→en"]
    bleu = table.cells[("softmax", "multi30k de-en", "bleu")]
    assert bleu.mean == pytest.approx(31.0) and bleu.std == pytest.approx(math.sqrt(2.0))
    assert table.scale["bleu"] == 1.0  # BLEU is never rescaled
    assert table.cells[("oscarmax", "iwslt de-en", "bleu")].values == [25.5]
    md = to_markdown(table)
    assert "#### Multi30k de→en" in md and "#### IWSLT14 de→en" in md
    # en→de has neither runs nor paper values: named, not printed as a table of dashes
    assert "#### Multi30k en→de" not in md and "_No runs for Multi30k en→de: table left out._" in md
    assert "| softmax | 31.00 ± 1.41 | — | 2 | (baseline) | 33.10 | 21.00 | — | — | 21.00 | 2.0 / 3.0 | 0.5 |" in md
    tex = to_latex(table)
    assert r"\multicolumn{12}{c}{Multi30k de$\to$en}" in tex


def test_summarization_two_datasets(results):
    table = build_table(EXP["summarization"], load_local(results), {})
    assert table.scale == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}  # already percent: never rescaled
    r1 = table.cells[("sparsemax", "gigaword", "rouge1")]
    assert r1.mean == pytest.approx(32.0) and r1.std == pytest.approx(math.sqrt(8.0))
    assert table.cells[("fusedmax", "duc", "rouge2")].values == pytest.approx([8.0])
    assert table.cells[("fusedmax", "duc", "rouge1")].values == pytest.approx([25.0])  # recall, not F1, on DUC
    md = to_markdown(table)
    assert "#### Gigaword" in md and "#### DUC-2004" in md
    assert ("| attention | R-1 | R-2 | R-L | n | Δ R-1 vs softmax [95% CI] | R-1 (paper) | R-2 (paper) | R-L (paper) |"
            in md)
    assert "| sparsemax | 32.00 ± 2.83 | 12.00 ± 2.83 | 26.00 ± 1.41 | 2 | — | — | — | — |" in md


def test_rows_split_by_varying_parameter():
    recs = [record("snli", "fusedmax", 1, {"accuracy": 0.5}, lam=0.1),
            record("snli", "fusedmax", 1, {"accuracy": 0.7}, lam=0.2),
            record("snli", "softmax", 1, {"accuracy": 0.6}, gamma=1.0)]
    recs[1]["attention"] = {"name": "fusedmax", "lam": 0.2}  # the flat layout (W&B configs) reads the same
    table = build_table(EXP["snli"], recs, {})
    assert table.rows == ["softmax", "sparsemax", "fusedmax (lam=0.1)", "fusedmax (lam=0.2)", "oscarmax"]
    assert table.cells[("fusedmax (lam=0.2)", "snli", "accuracy")].values == pytest.approx([70.0])
    labels = row_labels(recs)
    assert sorted(labels.values()) == ["fusedmax (lam=0.1)", "fusedmax (lam=0.2)", "softmax"]


def test_percent_only_when_fractions():
    recs = [record("snli", "softmax", s, {"accuracy": a}) for s, a in ((1, 81.0), (2, 83.0))]
    table = build_table(EXP["snli"], recs, {})
    assert table.scale["accuracy"] == 1.0
    assert table.cells[("softmax", "snli", "accuracy")].mean == pytest.approx(82.0)


def test_pair_of_variants():
    assert pair_of({"pair": "de-en"}) == "de-en"
    assert pair_of({"config": {"task": {"src_lang": "en", "tgt_lang": "de"}}}) == "en-de"
    assert pair_of({"config": {"task": {"pair": ["fr", "en"]}}}) == "fr-en"
    assert pair_of({"config": {"task": {"name": "snli"}}}) is None


def test_write_tables_and_cli(results, tmp_path, capsys):
    out = tmp_path / "tables"
    assert main(["--results", str(results), "--out", str(out)]) == 0
    for key in ("snli", "translation", "summarization"):
        for ext in ("md", "tex", "csv"):
            assert (out / f"{key}.{ext}").stat().st_size > 100
    combined = (out / "tables.md").read_text()
    assert combined.count("\n### ") == 3
    printed = capsys.readouterr().out
    assert "| softmax | 82.00 ± 2.00 | 3 | (baseline) | 81.50 | 12.00 |" in printed


def test_empty_results_still_write_tables(tmp_path):
    tables = write_tables([], tmp_path / "out", {})
    assert (tmp_path / "out" / "snli.md").exists()
    assert all(sum(t.n.values()) == 0 for t in tables.values())


def test_paper_check(tmp_path):
    assert paper_mod.check({"snli": {"datasets": {"snli": {"softmax": {"accuracy": {"value": 80.0}}}}}}) == [
        "snli/snli/softmax/accuracy: value 80.0 has no 'table' saying where the paper prints it"]
    problems = paper_mod.check({"snli": {"datasets": {"snli": {"softmax": {"accuracy": "x"}}}}})
    assert problems[0].endswith("is not a number")
    assert paper_mod.check({"snli": {"table": "Table 1", "datasets": {"snli": {"softmax": {"accuracy": 80.0}}}}}) == []


def test_shipped_paper_yaml_is_valid_and_has_every_cell():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "results" / "paper.yaml"
    data = yaml.safe_load(path.read_text())
    assert paper_mod.check(data) == []
    for exp, ds, metrics in (("snli", "snli", ["accuracy"]), ("translation", "multi30k de-en", ["bleu"]),
                             ("summarization", "gigaword", ["rouge1", "rouge2", "rougeL"]),
                             ("summarization", "duc", ["rouge1", "rouge2", "rougeL"])):
        for attn in ("softmax", "sparsemax", "fusedmax", "oscarmax"):
            for m in metrics:
                assert "value" in data[exp]["datasets"][ds][attn][m] and "table" in data[exp]["datasets"][ds][attn][m]


# ---- configurations are never mixed; paired significance against softmax of the same configuration


def with_examples(rec, correct: str):
    rec["metrics"]["test"]["per_example"] = {"kind": "accuracy", "correct": correct}
    return rec


def test_two_configurations_with_the_same_seed_never_share_a_cell():
    paper_cfg = {"task": {"name": "snli", "data": {"files": {"train": "snli_1.0_train.jsonl"}}},
                 "trainer": {"epochs": 50}}
    cpu_cfg = {"task": {"name": "snli", "data": {"files": {"train": "snli_1.0_train_0.01.jsonl.gz"}, "root": "/x"}},
               "trainer": {"epochs": 15, "threads": 1}}
    recs = [record("snli", "softmax", s, {"accuracy": a}, config=paper_cfg) for s, a in ((1, 0.84), (2, 0.86))]
    recs.append(record("snli", "softmax", 1, {"accuracy": 0.55}, config=cpu_cfg, finished="2026-02-01T00:00:00"))
    table = build_table(EXP["snli"], recs, {})
    labels = sorted(r for r in table.rows if table.n.get((r, "snli")))
    assert labels == ["softmax [data.files.train=snli_1.0_train.jsonl, trainer.epochs=50]",
                      "softmax [data.files.train=snli_1.0_train_0.01.jsonl.gz, trainer.epochs=15]"]
    assert table.cells[(labels[0], "snli", "accuracy")].values == pytest.approx([84.0, 86.0])
    assert table.cells[(labels[1], "snli", "accuracy")].values == pytest.approx([55.0])
    assert any("different configurations" in d for d in table.dropped)
    # paths and threads are not part of a configuration: the same run elsewhere joins its cell
    moved = dict(cpu_cfg, task={"name": "snli", "data": {"files": cpu_cfg["task"]["data"]["files"], "root": "/y"}},
                 trainer={"epochs": 15, "threads": 4})
    recs.append(record("snli", "softmax", 2, {"accuracy": 0.57}, config=moved))
    table = build_table(EXP["snli"], recs, {})
    assert sorted(table.cells[(labels[1], "snli", "accuracy")].values) == pytest.approx([55.0, 57.0])


def test_paired_bootstrap_against_softmax_of_the_same_configuration():
    import random

    rng = random.Random(0)
    n = 400
    base = "".join(rng.choice("01") for _ in range(n))
    better = "".join("1" if rng.random() < 0.6 else c for c in base)  # strictly better on some pairs
    recs = []
    for seed in (1, 2):
        recs.append(with_examples(record("snli", "softmax", seed, {"accuracy": base.count("1") / n}), base))
        recs.append(with_examples(record("snli", "sparsemax", seed, {"accuracy": better.count("1") / n}), better))
        recs.append(with_examples(record("snli", "fusedmax", seed, {"accuracy": base.count("1") / n}), base))
    table = build_table(EXP["snli"], recs, {}, samples=500)
    up = table.comparisons[("sparsemax", "snli", "accuracy")]
    same = table.comparisons[("fusedmax", "snli", "accuracy")]
    gain = 100 * (better.count("1") - base.count("1")) / n
    assert up.delta == pytest.approx(gain) and up.pairs == 2 and up.p < 0.01 and up.low > 0
    assert same.delta == 0 and same.p > 0.5 and same.low <= 0 <= same.high
    md = to_markdown(table)
    assert f"+{gain:.2f} [" in md and "p<0.001" in md or "p=0.00" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    sparse = next(r for r in rows if r["attention"] == "sparsemax" and r["quantity"] == "accuracy")
    assert float(sparse["delta_vs_softmax"]) == pytest.approx(gain) and float(sparse["p_value"]) < 0.01


def test_duc2004_scored_by_the_gigaword_run():
    rec = record("gigaword", "fusedmax", 1, {"rouge1_f1": 30.0, "rouge2_f1": 10.0, "rougeL_f1": 28.0,
                                             "duc2004": {"rouge1_recall": 24.0, "rouge2_recall": 7.0,
                                                         "rougeL_recall": 21.0}})
    table = build_table(EXP["summarization"], [rec], {})
    assert table.cells[("fusedmax", "gigaword", "rouge1")].values == [30.0]
    assert table.cells[("fusedmax", "duc", "rouge1")].values == [24.0]
    assert table.cells[("fusedmax", "duc", "rougeL")].values == [21.0]


def test_a_preset_note_is_said_under_the_table():
    rec = record("iwslt", "softmax", 1, {"bleu": 3.0},
                 config={"task": {"name": "iwslt", "pair": "de-en"}, "note": "a pipeline check, not a result"})
    other = record("multi30k", "softmax", 1, {"bleu": 30.0}, config={"task": {"name": "multi30k", "pair": "de-en"}})
    table = build_table(EXP["translation"], [rec, other], {})
    md = to_markdown(table)
    assert "IWSLT14 de→en: a pipeline check, not a result" in md  # in the notes ...
    iwslt = md.split("#### IWSLT14 de→en")[1].split("#### ")[0]
    assert iwslt.lstrip().startswith("**A pipeline check, not a result.**")  # ... and above its own table only
    assert "pipeline" not in md.split("#### Multi30k de→en")[1].split("#### ")[0].split("_mean")[0]
    assert table.remarks == {"iwslt de-en": ["a pipeline check, not a result"]}


def test_datasets_and_tasks_without_runs_are_named_not_printed(tmp_path):
    recs = [record("multi30k", "softmax", 1, {"bleu": 30.0},
                   config={"task": {"name": "multi30k", "src": "de", "tgt": "en"}})]
    tables = write_tables(recs, tmp_path / "out", {"translation": {"datasets": {"multi30k en-de": {}}}})
    md = to_markdown(tables["translation"])
    assert "#### Multi30k de→en" in md and "#### Multi30k en→de" not in md
    assert "_No runs for Multi30k en→de: table left out._" in md
    combined = (tmp_path / "out" / "tables.md").read_text()
    assert combined.count("\n### ") == 1 and "### Machine translation" in combined
    assert "_No runs for: Textual entailment" in combined and "Sentence summarization" in combined
    # with no runs at all, every table is still written in full (a skeleton to fill)
    tables = write_tables([], tmp_path / "empty", {})
    assert (tmp_path / "empty" / "tables.md").read_text().count("\n### ") == 3


def test_minutes_per_run_count_every_part_of_a_resumed_run():
    from tasks.report.grouping import run_seconds
    assert run_seconds({"wall_time_s": 600.0, "time_per_epoch_s": 50.0, "epochs": 10}) == 600.0  # one process
    assert run_seconds({"wall_time_s": 120.0, "time_per_epoch_s": 50.0, "epochs": 10}) == 500.0  # resumed late
    assert run_seconds({"wall_time_s": 120.0}) == 120.0 and run_seconds({}) is None


def test_headline_has_one_line_per_dataset_with_each_mappings_delta():
    import random

    rng = random.Random(1)
    base = "".join(rng.choice("01") for _ in range(300))
    recs = []
    for seed in (1, 2):
        for name, support in (("softmax", 15.0), ("sparsemax", 4.0)):
            recs.append(with_examples(record("snli", name, seed, {"accuracy": base.count("1") / 300,
                                                                   "support": support}), base))
    recs.append(record("iwslt", "softmax", 1, {"bleu": 3.0, "support": 20.0},
                       config={"task": {"name": "iwslt", "pair": "de-en"}, "note": "a pipeline check, not a result"}))
    tables = {e.key: build_table(e, recs, {}, samples=200) for e in EXPERIMENTS}
    text = headline(tables)
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| dataset")]
    assert len(lines) == 1  # SNLI only: IWSLT carries a preset note and is left to its full table
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    assert cells[:4] == ["SNLI", "Accuracy", "2", f"{100 * base.count('1') / 300:.2f}"]
    assert cells[4].endswith("(+0.00, p=1.000)") and cells[5:7] == ["—", "—"]
    assert cells[7] == "15.0 / 4.0 / — / —"
    assert "left out here (see the full tables): IWSLT14 de→en" in text


def test_timing_has_one_line_per_trained_dataset_with_ranges():
    cfg = {"task": {"name": "gigaword", "threads": 1}}
    recs = [record("gigaword", "softmax", s, {"rouge1_f1": 20.0, "duc2004": {"rouge1_recall": 10.0}}, config=cfg)
            for s in (1, 2)]
    for r in recs:
        r["device"] = "cpu"
    recs[1].update(epochs=5, best_epoch=4, time_per_epoch_s=30.0, wall_time_s=100.0)  # resumed: its epochs count
    tables = {e.key: build_table(e, recs, {}) for e in EXPERIMENTS}
    lines = [line for line in timing(tables).splitlines() if line.startswith("| Gigaword")]
    assert lines == ["| Gigaword | 2 | 3-5 (2-4) | 10-30 s | 0-2 min | cpu, 1 thread(s) |"]
    assert "DUC-2004" not in timing(tables)  # scored by the Gigaword runs, not trained: no line of its own


def test_transformer_runs_one_row_per_learned_setting_and_no_head_sections_as_test_sets(tmp_path):
    """A Transformer's records (tasks/seq2seq/transformer.py): adaptive entmax (α learned per head) is its own row,
    compared with softmax of the same configuration; ``heads`` and ``learned`` are statistics, not test sets."""
    def transformer(attention, seed, bleu, learn=("gamma", "lam")):
        config = {"task": {"name": "multi30k", "data": {"src_lang": "de", "tgt_lang": "en"},
                           "model": {"kind": "transformer", "learn": list(learn)}}}
        test = {"bleu": bleu, "heads": {"cross": [[{"support": 2.0}]]}, "learned": {"cross": {"gamma": [[1.0]]}}}
        return record("multi30k", attention, seed, test, config=config)

    recs = [transformer("softmax", s, 30.0 + s) for s in (1, 2)]
    recs += [transformer("entmax", s, 31.0 + s) for s in (1, 2)]
    recs += [transformer("entmax", s, 32.0 + s, learn=("gamma", "alpha")) for s in (1, 2)]
    table = build_table(EXP["translation"], recs)
    assert [d.key for d in table.datasets] == ["multi30k de-en"]  # not "· heads", "· learned"
    assert table.rows == ["softmax", "sparsemax", "fusedmax", "oscarmax", "entmax (learned=gamma)",
                          "entmax (learned=gamma,alpha)"]
    adaptive = table.cells[("entmax (learned=gamma,alpha)", "multi30k de-en", "bleu")]
    assert adaptive.values == [33.0, 34.0]
    md = to_markdown(table)  # one configuration: a Δ against softmax is due (n/a here: no per-example statistics)
    assert "| entmax (learned=gamma,alpha) | 33.50 ± 0.71 | — | 2 | n/a |" in md
    assert "different configurations" not in md


def test_headline_has_a_column_for_every_mapping_with_runs_and_names_other_configurations():
    """entmax gets a column beside the paper's four where a dataset has plain entmax runs; a mapping's other
    configurations (adaptive entmax) are named under the table instead of dropping the dataset."""
    def transformer(attention, seed, bleu, learn=("gamma",)):
        config = {"task": {"name": "multi30k", "data": {"src_lang": "de", "tgt_lang": "en"},
                           "model": {"kind": "transformer", "learn": list(learn)}}}
        return record("multi30k", attention, seed, {"bleu": bleu, "support": 3.0}, config=config)

    plain = [transformer(name, s, base + s) for name, base in (("softmax", 30.0), ("entmax", 31.0)) for s in (1, 2)]
    text = headline({e.key: build_table(e, plain, {}) for e in EXPERIMENTS})
    header = next(line for line in text.splitlines() if line.startswith("| dataset"))
    assert header.endswith("| oscarmax | entmax | nonzero per row |")
    row = next(line for line in text.splitlines() if line.startswith("| Multi30k"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "31.50" and cells[7].startswith("32.50") and cells[8] == "3.0 / — / — / — / 3.0"
    assert "other configurations" not in text

    adaptive = plain + [transformer("entmax", s, 32.0 + s, learn=("gamma", "alpha")) for s in (1, 2)]
    text = headline({e.key: build_table(e, adaptive, {}) for e in EXPERIMENTS})
    assert "| Multi30k" in text  # the dataset stays, with its plain mappings
    assert "| oscarmax | nonzero per row |" in text  # no plain entmax row left: no column
    assert ("other configurations, in the full tables: Multi30k de→en: entmax (learned=gamma), "
            "entmax (learned=gamma,alpha)") in text
