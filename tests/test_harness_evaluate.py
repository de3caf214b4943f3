"""`make evaluate RUN=...` (tasks/evaluate.py) on a finished smoke run, and the summarization default of model
selection on perplexity without decoding (task.metric=neg_ppl, task.eval.valid_decode=none) through the CLI."""

import json
from pathlib import Path

import pytest
from test_harness_hydra import ROOT, train

DUC = ROOT / "tests" / "data" / "gigaword" / "sumdata" / "DUC2004"


@pytest.fixture(scope="module")
def gigaword_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    train("experiment=smoke_gigaword", "attention=fusedmax", "logger=wandb", f"hydra.run.dir={tmp}/run",
          f"results_dir={tmp}/results")
    (path,) = (tmp / "results" / "gigaword" / "fusedmax").glob("*.json")
    return tmp / "run", json.loads(path.read_text())


def test_perplexity_selection_is_the_gigaword_default_and_works(gigaword_run):
    run_dir, record = gigaword_run
    assert record["metric"] == "neg_ppl" and record["config"]["task"]["eval"]["valid_decode"] == "none"
    assert len(record["history"]) == 2  # past the first epoch end (where a KeyError was reported)
    assert all(h["valid"]["neg_ppl"] == -h["valid"]["ppl"] and "rougeL_f1" not in h["valid"]
               for h in record["history"])
    assert record["metrics"]["valid"]["neg_ppl"] == max(h["valid"]["neg_ppl"] for h in record["history"])
    assert "rougeL_f1" in record["metrics"]["test"]  # the test set is still beam-decoded


def test_evaluate_a_finished_run_on_another_test_set(gigaword_run):
    from tasks.evaluate import evaluate_run, main

    run_dir, record = gigaword_run
    again = evaluate_run(run_dir)  # the best checkpoint, the run's own test set: the record's numbers
    assert again["metrics"]["rougeL_f1"] == pytest.approx(record["metrics"]["test"]["rougeL_f1"])
    assert again["best_epoch"] == record["best_epoch"]
    assert main([str(run_dir), "task.test_set=duc2004", f"task.duc.root={DUC}"]) == 0
    (duc,) = (run_dir / "evaluations").glob("test,task.test_set=duc2004*.json")
    result = json.loads(duc.read_text())
    assert {"rouge1_recall", "rouge2_recall", "rougeL_recall"} <= set(result["metrics"])
    assert result["overrides"][0] == "task.test_set=duc2004"
    with pytest.raises(FileNotFoundError, match=".hydra"):
        evaluate_run(Path(run_dir) / "checkpoints")
