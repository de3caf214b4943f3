"""Several test sets from one translation run: Multi30k's WMT17 sets (``task.extra_test_sets``) scored by the same
model, written as sections of ``metrics.test`` (or later by ``make evaluate``, beside the record), and tabled one
dataset per test set without ever mixing them."""

import json
from pathlib import Path

import pytest
from test_harness_hydra import train
from test_seq2seq_task import TINY, TRAINER, one_thread  # noqa: F401 (one_thread: autouse, one torch/numba thread)

from tasks.download import DataError
from tasks.report.grouping import build_table
from tasks.report.render import to_markdown
from tasks.report.runs import attach_evaluations, load_local
from tasks.report.sections import experiments
from tasks.seq2seq import data as D
from tasks.seq2seq.task import Multi30kTask
from tasks.trainer import Trainer

DATA = Path(__file__).parent / "data"
TRANSLATION = next(e for e in experiments([]) if e.key == "translation")
OTHERS = ["test_2017_flickr", "test_2017_mscoco"]


def task(tmp_path, extra, attention="sparsemax"):
    return Multi30kTask(name="multi30k", data={"root": str(DATA / "multi30k"), "src_lang": "de", "tgt_lang": "en"},
                        attention={"name": attention}, model=TINY, decode={"beam": 2}, extra_test_sets=extra,
                        data_dir=str(tmp_path))


def test_other_test_sets_are_scored_by_the_same_model_as_sections(tmp_path):
    summary = Trainer(task(tmp_path, OTHERS), TRAINER, tmp_path / "run", seed=1).fit()
    test = summary["test"]
    assert "bleu" in test and len(test["per_example"]["stats"]) == 12  # test_2016_flickr itself
    for name, lines in (("test_2017_flickr", 8), ("test_2017_mscoco", 5)):
        section = test[name]
        assert {"bleu", "tok_bleu", "ppl", "support", "per_example"} <= set(section)
        assert len(section["per_example"]["stats"]) == lines  # its own sentences, not the 2016 ones
    assert test["test_2017_flickr"]["bleu"] != test["test_2017_mscoco"]["bleu"] or \
        test["test_2017_flickr"]["ppl"] != test["test_2017_mscoco"]["ppl"]
    json.dumps(test)
    hyps = (tmp_path / "run" / "test_2017_mscoco_hypotheses.txt").read_text().splitlines()
    assert len(hyps) == 5


@pytest.mark.parametrize("names, message", [
    (["test_2018_flickr"], "has no test set 'test_2018_flickr'.*test_2017_mscoco"),
    (["test_2016_flickr"], "is the `test` split itself"),
])
def test_unknown_or_repeated_test_sets_are_refused(tmp_path, names, message):
    with pytest.raises(ValueError, match=message):
        task(tmp_path, names).setup()


def test_every_multi30k_test_set_has_a_checksum_and_a_canonical_name():
    for name in D.MULTI30K_TEST_SETS:
        for lang in ("de", "en", "fr"):
            assert len(D.MULTI30K_SHA256[f"{name}.{lang}.gz"]) == 64
    with pytest.raises(DataError, match="no split 'test_2099'"):
        D.multi30k_file({"root": str(DATA / "multi30k")}, "test_2099", "de")


def record(seed, attention, bleu, sections=None, examples=None):
    test = {"bleu": bleu, "neg_ppl": -5.0, "support": 2.0}
    if examples is not None:
        test["per_example"] = examples
    test.update(sections or {})
    return {"task": "multi30k", "attention": {"name": attention, "params": {}}, "seed": seed, "metric": "neg_ppl",
            "config": {"task": {"name": "multi30k", "data": {"src_lang": "de", "tgt_lang": "en"}}},
            "metrics": {"valid": {}, "test": test}, "epochs": 3, "best_epoch": 2, "finished": f"2026-01-0{seed}"}


def bleu_examples(good: int, n: int = 40):
    """Per-sentence BLEU statistics: ``good`` sentences matched on every n-gram, the others on none."""
    return {"kind": "bleu", "stats": [[5, 5, 5, 4, 3, 2, 5, 4, 3, 2] if i < good else [5, 5, 0, 0, 0, 0, 5, 4, 3, 2]
                                      for i in range(n)]}


def test_evaluations_beside_a_record_join_it_only_when_they_rescored_the_same_checkpoint(tmp_path, capsys):
    path = tmp_path / "multi30k" / "fusedmax" / "seed=1.json"
    path.parent.mkdir(parents=True)
    rec = record(1, "fusedmax", 30.0, {"test_2017_flickr": {"bleu": 1.0}})
    path.write_text(json.dumps(rec))
    folder = path.with_name("seed=1.evaluations")
    folder.mkdir()
    good = {"split": "test", "metrics": {"bleu": 30.0, "neg_ppl": -5.0, "test_2017_mscoco": {"bleu": 21.0},
                                         "test_2017_flickr": {"bleu": 99.0}}}
    other = {"split": "test", "metrics": {"bleu": 31.5, "neg_ppl": -4.0, "wmt18": {"bleu": 5.0}}}
    (folder / "a.json").write_text(json.dumps(good))
    (folder / "b.json").write_text(json.dumps(other))
    (folder / "c.json").write_text(json.dumps({"split": "valid", "metrics": {"bleu": 30.0, "x": {"bleu": 1.0}}}))
    (loaded,) = load_local(tmp_path)
    test = loaded["metrics"]["test"]
    assert test["test_2017_mscoco"] == {"bleu": 21.0}
    assert test["test_2017_flickr"] == {"bleu": 1.0}  # the record's own section is never replaced
    assert "wmt18" not in test and "x" not in test  # another checkpoint's numbers; a validation evaluation
    assert loaded["evaluated_later"] == ["test_2017_mscoco"]
    assert "another checkpoint?" in capsys.readouterr().err
    lone = record(2, "softmax", 30.0)
    attach_evaluations(lone, tmp_path / "missing.evaluations")  # no folder: nothing happens
    assert set(lone["metrics"]["test"]) == {"bleu", "neg_ppl", "support"}


def test_one_table_per_test_set_with_its_own_significance():
    recs = []
    for seed in (1, 2):
        same, better = bleu_examples(20), bleu_examples(30)
        sections = {"test_2017_mscoco": {"bleu": 20.0, "support": 3.0, "per_example": same}}
        recs.append(record(seed, "softmax", 30.0, sections, examples=same))
        sections = {"test_2017_mscoco": {"bleu": 25.0, "support": 1.5, "per_example": better}}
        recs.append(record(seed, "fusedmax", 30.0, sections, examples=same))
    recs.append(record(3, "softmax", 29.0))  # a run that scored only test_2016: counts there, missing elsewhere
    table = build_table(TRANSLATION, recs, {}, samples=300)
    keys = [d.key for d in table.datasets]
    assert keys == ["multi30k de-en", "multi30k de-en @test_2017_mscoco"]
    labels = [d.label for d in table.datasets]
    assert labels == ["Multi30k de→en · test_2016_flickr", "Multi30k de→en · test_2017_mscoco"]
    assert table.cells[("softmax", keys[0], "bleu")].values == [30.0, 30.0, 29.0]
    assert table.cells[("softmax", keys[1], "bleu")].values == [20.0, 20.0]
    assert table.cells[("fusedmax", keys[1], "bleu")].values == [25.0, 25.0]
    assert table.cells[("fusedmax", keys[1], "support")].values == [1.5, 1.5]
    assert table.comparisons[("fusedmax", keys[0], "bleu")].delta == pytest.approx(0.0)
    up = table.comparisons[("fusedmax", keys[1], "bleu")]
    assert up.delta > 0 and up.p < 0.05 and up.pairs == 2
    assert not any("without test metrics" in d for d in table.dropped)
    md = to_markdown(table)
    assert "Multi30k de→en · test_2017_mscoco" in md and "Multi30k de→en · test_2016_flickr" in md


def test_a_run_without_other_test_sets_keeps_its_plain_label():
    table = build_table(TRANSLATION, [record(1, "softmax", 30.0)], {})
    assert [d.label for d in table.datasets] == ["Multi30k de→en"]


def test_make_evaluate_scores_other_test_sets_of_a_finished_run_beside_its_record(tmp_path):
    """A run trained before the other test sets were configured: `make evaluate` scores them from its best
    checkpoint, the report attaches them to the record."""
    from tasks.evaluate import main

    results = tmp_path / "results"
    train("experiment=smoke_multi30k", "attention=sparsemax", "trainer.epochs=1", f"hydra.run.dir={tmp_path}/run",
          f"results_dir={results}")
    (path,) = (results / "multi30k" / "sparsemax").glob("*.json")
    assert "test_2017_flickr" not in json.loads(path.read_text())["metrics"]["test"]
    assert main([str(tmp_path / "run"), "task.extra_test_sets=[test_2017_flickr,test_2017_mscoco]"]) == 0
    (beside,) = path.with_name(f"{path.stem}.evaluations").glob("*.json")
    assert (tmp_path / "run" / "evaluations" / beside.name).exists()
    (loaded,) = load_local(results)
    assert loaded["evaluated_later"] == OTHERS
    table = build_table(TRANSLATION, [loaded], {}, samples=50)
    assert [d.key for d in table.datasets] == ["multi30k de-en", "multi30k de-en @test_2017_flickr",
                                               "multi30k de-en @test_2017_mscoco"]
    assert table.n[("sparsemax", "multi30k de-en @test_2017_mscoco")] == 1


def test_seq2seq_tables_show_rows_passing_no_gradient_and_the_unknown_word_rate():
    recs = [record(1, "softmax", 30.0, {"test_2017_mscoco": {"bleu": 20.0, "dead_rows": 0.0, "unk_rate": 0.061}}),
            record(1, "fusedmax", 30.0, {"test_2017_mscoco": {"bleu": 21.0, "dead_rows": 0.55, "unk_rate": 0.058}})]
    table = build_table(TRANSLATION, recs, {})
    mscoco = table.datasets[1]
    assert [c[1].label for c in table.columns(mscoco) if c[0] == "stat"][-2:] == ["no-grad rows", "unk"]
    assert table.cells[("fusedmax", mscoco.key, "dead_rows")].values == [0.55]
    assert "no-grad rows" not in [c[1].label for c in table.columns(table.datasets[0]) if c[0] == "stat"]
    md = to_markdown(table)
    assert "| 0.550 | 0.058 |" in md and "no gradient reaches" in md
