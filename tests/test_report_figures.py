"""The report's figures rendered from fabricated runs (attention files in the formats the tasks write)."""

import json

import numpy as np
import pytest
import torch

from tasks.report import figures
from tasks.report.runs import load_local

NAMES = ("softmax", "sparsemax", "fusedmax", "oscarmax")
PREMISE = "a man in a red shirt is playing the guitar on stage".split()


def _record(root, task, name, run_dir, seed=1, **extra):
    rec = {"task": task, "attention": {"name": name, "params": {}}, "seed": seed, "run": f"seed={seed}",
           "metrics": {"valid": {}, "test": {}}, "run_dir": str(run_dir), "finished": "2026-01-01T00:00:00", **extra}
    path = root / task / name / f"seed={seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return rec


def _weights(name, n, rng):
    if name == "fusedmax":
        w = np.zeros(n)
        w[2:6] = 0.2
        w[7] = 0.2
        return w
    if name == "oscarmax":
        w = np.zeros(n)
        w[[1, 4, 8]] = 0.25
        w[5] = 0.25
        return w
    w = rng.random(n)
    if name == "sparsemax":
        w[w < 0.5] = 0
    return w / w.sum()


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "results"
    for name in NAMES:
        run_dir = tmp_path / "outputs" / "snli" / name
        run_dir.mkdir(parents=True)
        examples = [{"premise": PREMISE, "hypothesis": "a man plays music".split(), "label": "entailment",
                     "prediction": "entailment",
                     "attention": [round(float(a), 6) for a in _weights(name, len(PREMISE), rng)]}
                    for _ in range(3)]
        (run_dir / figures.SNLI_FILE).write_text(json.dumps({"attention": {"name": name}, "examples": examples}))
        _record(root, "snli", name, run_dir)
        for task, src_len, tgt_len in (("multi30k", 9, 8), ("gigaword", 14, 6)):
            run_dir = tmp_path / "outputs" / task / name
            run_dir.mkdir(parents=True)
            src = [f"s{i}" for i in range(src_len)]
            items = [{"src": src, "hyp": [f"t{i}" for i in range(tgt_len)], "ref": ["r"],
                      "attention": torch.tensor(np.stack([_weights(name, src_len, rng) for _ in range(tgt_len)]))}
                     for _ in range(2)]
            torch.save({"task": task, "attention": {"name": name}, "items": items}, run_dir / figures.SEQ2SEQ_FILE)
            _record(root, task, name, run_dir, config={"task": {"name": task}})
    return root


def _assert_images(paths, stem, min_kb=5):
    assert sorted(p.name for p in paths) == [f"{stem}.pdf", f"{stem}.png"]
    for p in paths:
        assert p.stat().st_size > min_kb * 1024, p


def test_snli_and_alignment_figures(runs, tmp_path):
    out = tmp_path / "figures"
    records = load_local(runs)
    _assert_images(figures.snli_figure(records, out), "snli_attention")
    _assert_images(figures.alignment_figure(records, out, "multi30k"), "translation_alignment_multi30k")
    assert (out / "translation_alignment_multi30k.txt").read_text().startswith("Multi30k: test sentence ")
    _assert_images(figures.alignment_figure(records, out, "gigaword", sentence=1), "summarization_alignment_gigaword")


def test_missing_inputs_are_skipped_with_a_message(runs, tmp_path, capsys):
    out = tmp_path / "figures"
    records = load_local(runs)
    (tmp_path / "outputs" / "snli" / "oscarmax" / figures.SNLI_FILE).unlink()
    paths = figures.snli_figure(records, out)  # drawn without oscarmax
    assert len(paths) == 2
    err = capsys.readouterr().err
    assert "snli/oscarmax/seed=1 has no attention_test.json" in err and "for oscarmax: drawn without" in err
    for name in NAMES:
        (tmp_path / "outputs" / "multi30k" / name / figures.SEQ2SEQ_FILE).unlink()
    assert figures.alignment_figure(records, out, "multi30k") == []
    assert "translation_alignment_multi30k skipped: no multi30k run has attention_test.pt" in capsys.readouterr().err
    assert figures.snli_figure([], out) == []
    assert "no SNLI run records" in capsys.readouterr().err


def test_files_next_to_the_record_are_found(tmp_path):
    rec_path = tmp_path / "results" / "snli" / "softmax" / "seed=1.json"
    rec_path.parent.mkdir(parents=True)
    (rec_path.parent / "seed=1").mkdir()
    (rec_path.parent / "seed=1" / figures.SNLI_FILE).write_text("{}")
    record = {"task": "snli", "attention": {"name": "softmax"}, "run_dir": "/nonexistent", "path": str(rec_path)}
    assert figures.run_file(record, figures.SNLI_FILE) == rec_path.parent / "seed=1" / figures.SNLI_FILE


def test_structure_class():
    assert figures.structure_class(np.array([0.5, 0.5, 0.0]), "segments") == (2, 1)
    assert figures.structure_class(np.array([0.4, 0.2, 0.4]), "segments") == (3, 3)  # not adjacent: not fused
    assert figures.structure_class(np.array([0.4, 0.2, 0.4]), "clusters") == (3, 2)
    assert figures.structure_class(np.array([1.0, 0.0, 0.0]), "support") == (1, 1)


def test_geometry_figures(tmp_path):
    out = tmp_path / "figures"
    _assert_images(figures.mapping_curves_figure(out), "mapping_curves")
    _assert_images(figures.simplex_figure(out, steps=41), "simplex", min_kb=20)


def test_main_never_crashes_on_empty_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(figures, "simplex_figure", lambda out: [])  # covered above; keep this test fast
    assert figures.main(["--results", str(tmp_path / "none"), "--out", str(tmp_path / "figs")]) == 0
    out = capsys.readouterr()
    assert "snli_attention           skipped" in out.out and "no SNLI run records" in out.err


def test_a_record_without_a_report_section_is_said_once_by_make_figures(tmp_path, monkeypatch, capsys):
    """Every figure asks for the report's experiments; a record none of them can place is said once, not per figure."""
    monkeypatch.setattr(figures, "simplex_figure", lambda out: [])
    stray = _record(tmp_path / "results", "toy_unreported", "sparsemax", tmp_path / "run")
    assert stray["task"] == "toy_unreported"
    assert figures.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "figs")]) == 0
    said = capsys.readouterr().err
    assert said.count("[report] skipping") == 1 and "task 'toy_unreported' has no report section" in said


def _dyn_record(name, optimizer, lr, gamma=1.0, lam=None, seed=1):
    params = {"gamma": gamma, **({"lam": lam} if lam is not None else {})}
    hist = [{"epoch": e, "valid": {"ppl": 10.0 / e, "support": 3.0, "groups": 2.0, "above_1pct": 2.5,
                                   "dead_rows": 0.1 * e, "top2_gap": 0.5 * e}} for e in (1, 2, 3)]
    return {"task": "multi30k", "attention": {"name": name, "params": params}, "seed": seed,
            "config": {"task": {"name": "multi30k"}, "trainer": {"optimizer": {"name": optimizer, "lr": lr}}},
            "history": hist, "metrics": {"test": {}}}


def test_dynamics_figure_and_its_configuration_labels(tmp_path):
    records = [_dyn_record("softmax", "adam", 0.003), _dyn_record("fusedmax", "adam", 0.003, lam=0.1),
               _dyn_record("softmax", "sgd", 1.0), _dyn_record("fusedmax", "sgd", 1.0, lam=0.1),
               _dyn_record("fusedmax", "adam", 0.003, gamma=16.0, lam=0.1)]
    labels = figures._config_labels(records)
    # optimizer.lr splits the runs exactly as optimizer.name does: left out; fusedmax's λ is no difference;
    # the one fusedmax run with an unusual γ says so
    assert [labels[id(r)] for r in records] == [
        "optimizer.name=adam", "optimizer.name=adam", "optimizer.name=sgd", "optimizer.name=sgd",
        "optimizer.name=adam, gamma=16.0"]
    paths = figures.dynamics_figure(records, tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)
    assert figures.dynamics_figure([{**records[0], "history": []}], tmp_path / "none") == []


def test_dynamics_figures_one_per_task_when_tasks_mix(tmp_path):
    records = [_dyn_record("softmax", "sgd", 1.0), _dyn_record("fusedmax", "sgd", 1.0, lam=0.1)]
    other = {**_dyn_record("sparsemax", "sgd", 1.0), "task": "snli", "config": {"task": {"name": "snli"}}}
    names = sorted(p.name for p in figures.dynamics_figures(records + [other], tmp_path))
    assert names == ["attention_dynamics_multi30k.pdf", "attention_dynamics_multi30k.png",
                     "attention_dynamics_snli.pdf", "attention_dynamics_snli.png"]
    assert sorted(p.name for p in figures.dynamics_figures(records, tmp_path / "one")) == [
        "attention_dynamics.pdf", "attention_dynamics.png"]


def test_accuracy_vs_spread_uses_the_tables_rows_and_comparisons(tmp_path, monkeypatch, capsys):
    base = "1100110011" * 20
    better = "1110111011" * 20

    def rec(name, seed, correct, above=None):
        test = {"accuracy": correct.count("1") / len(correct),
                "per_example": {"kind": "accuracy", "correct": correct}}
        if above is not None:
            test["above_1pct"] = above
        return {"task": "snli", "attention": {"name": name, "params": {}}, "seed": seed,
                "config": {"task": {"name": "snli"}}, "metrics": {"test": test}}

    records = [rec("softmax", s, base, 12.0 + s) for s in (1, 2)]
    records += [rec("sparsemax", s, better, 4.0) for s in (1, 2)]
    records += [rec("oscarmax", 1, base)]  # no attention statistics: said, not drawn
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, out, stem: drawn.append(fig) or [out / f"{stem}.png"])
    assert figures.tradeoff_figure(records, tmp_path, samples=200) == [tmp_path / "accuracy_vs_spread.png"]
    (ax,) = [a for a in drawn[0].axes if a.get_visible()]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "softmax (n=2)"
    assert legend[1].startswith("sparsemax (n=2): Δ +20.00, p")  # 80% vs 60% correct, ×100
    assert len(legend) == 2 and "oscarmax has no attention statistics" in capsys.readouterr().err
    assert ax.get_title() == "SNLI" and ax.get_xscale() == "log"
    assert figures.tradeoff_figure([], tmp_path / "none") == []


def test_one_alignment_figure_per_dataset_never_mixed_and_tokens_as_written(runs, tmp_path):
    """Runs of two translation datasets: each gets its own figure, captioned with its own name (a figure once
    showed an IWSLT sentence under a Multi30k caption, with Moses escapes such as &apos;re shown raw)."""
    records = load_local(runs)
    for name in NAMES:
        run_dir = tmp_path / "outputs" / "iwslt" / name
        run_dir.mkdir(parents=True)
        src = ["we", "&apos;re", "here", "&quot;", "now", "and", "then"]
        items = [{"src": src, "hyp": ["wir", "sind", "&amp;", "hier"], "ref": ["r"],
                  "attention": torch.full((4, len(src)), 1 / len(src))}]
        torch.save({"task": "iwslt", "items": items}, run_dir / figures.SEQ2SEQ_FILE)
        records.append(_record(runs, "iwslt", name, run_dir, finished="2026-02-01T00:00:00"))
    out = tmp_path / "figures"
    paths = figures.alignment_figures(records, out, ("multi30k", "iwslt"))
    assert sorted(p.name for p in paths) == sorted(f"translation_alignment_{t}.{f}" for t in ("multi30k", "iwslt")
                                                   for f in ("png", "pdf"))
    assert (out / "translation_alignment_iwslt.txt").read_text().startswith("IWSLT14: test sentence 0")
    assert (out / "translation_alignment_multi30k.txt").read_text().startswith("Multi30k: ")
    assert figures.readable("&apos;re") == "'re" and figures.readable("&quot;") == '"'
    assert figures.readable("&#124;") == "|" and figures.readable("plain") == "plain"


def test_task_labels_come_from_each_task_s_report_section():
    """The tables and the figures read one label per task: its report section (configs/task/<name>.yaml), also for
    records written before the section existed."""
    from tasks.report import sections
    from tasks.report.grouping import translation_dataset

    by_task = sections.sections_by_task([])
    assert {t for t, s in by_task.items() if s.table == "translation"} == {"multi30k", "iwslt", "iwslt14"}
    assert by_task["iwslt"].label == "IWSLT14" and by_task["gigaword_duc2004"].table == "summarization"
    translation = next(e for e in sections.experiments([]) if e.key == "translation")
    assert translation_dataset(translation, "multi30k", "de-en").label == "Multi30k de→en"
