"""Model selection on validation (tasks/report/selection.py) from fabricated run records."""

import json

from tasks.report.selection import candidates, main, to_markdown


def record(attention, seed, valid, test, *, dropout=0.1, lr=3e-4, finished="2026-01-01T00:00:00", threads=1,
           **params):
    return {
        "task": "snli",
        "attention": {"name": attention, "params": params},
        "seed": seed,
        "metric": "accuracy",
        "config": {"task": {"name": "snli", "model": {"dropout": dropout}},
                   "trainer": {"optimizer": {"lr": lr}, "threads": threads}, "seed": seed},
        "metrics": {"valid": {"accuracy": valid}, "test": {"accuracy": test}},
        "best_epoch": 5, "epochs": 9, "finished": finished,
    }


def write(root, recs):
    for i, rec in enumerate(recs):
        path = root / rec["task"] / rec["attention"]["name"] / f"run{i}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))


def test_ranks_by_validation_never_by_test(tmp_path):
    recs = [
        # dropout 0.1: best on test, worst on validation -> must rank last
        record("softmax", 1, 0.50, 0.90), record("softmax", 2, 0.52, 0.90),
        # dropout 0.3: mean valid 0.56 over two mappings (threads differ: not a result setting, same candidate)
        record("softmax", 1, 0.55, 0.40, dropout=0.3), record("fusedmax", 1, 0.57, 0.40, dropout=0.3, threads=4),
        # dropout 0.2: a stale re-run of seed 1 (valid 0.99) is replaced by the later one (0.53)
        record("softmax", 1, 0.99, 0.40, dropout=0.2, finished="2026-01-01T00:00:00"),
        record("softmax", 1, 0.53, 0.40, dropout=0.2, finished="2026-01-02T00:00:00"),
        # unfinished (no validation metric): ignored
        {**record("softmax", 3, 0.0, 0.0, dropout=0.9), "metrics": {"valid": {}, "test": {}}},
    ]
    write(tmp_path, recs)
    from tasks.report.runs import load_local
    ranked = candidates(load_local(tmp_path))["snli"]
    assert [c.config["task.model.dropout"] for c in ranked] == [0.3, 0.2, 0.1]
    assert abs(ranked[0].valid_mean() - 0.56) < 1e-12
    assert ranked[1].values("valid") == [0.53]
    text = to_markdown("snli", ranked)
    rows = [line for line in text.splitlines() if line.startswith("| 1") or line.startswith("| 3")]
    assert "**selected**" in rows[0] and "task.model.dropout=0.3" in rows[0]
    assert "56.00 ± 1.41" in rows[0] and "softmax: 1; fusedmax: 1" in rows[0]
    assert "51.00 ± 1.41" in rows[1] and "90.00" in rows[1]  # test shown, not used
    assert "trainer.threads" not in text and "unequal samples" in text


def test_main_writes_file_and_fails_clearly_without_runs(tmp_path, capsys):
    write(tmp_path / "r", [record("softmax", 1, 0.5, 0.5), record("softmax", 1, 0.6, 0.5, lr=1e-3)])
    out = tmp_path / "sel.md"
    assert main(["--results", str(tmp_path / "r"), "--out", str(out)]) == 0
    assert "trainer.optimizer.lr=0.001" in out.read_text().split("**selected**")[1].splitlines()[0]
    assert main(["--results", str(tmp_path / "empty")]) == 2
    assert "no finished run" in capsys.readouterr().err


def test_a_swept_attention_parameter_makes_its_own_candidates(tmp_path):
    from tasks.report.runs import load_local
    write(tmp_path, [record("fusedmax", 1, 0.50, 0.5, lam=0.1), record("fusedmax", 1, 0.60, 0.5, lam=1.0),
                     record("oscarmax", 1, 0.55, 0.5, lam=0.01), record("softmax", 1, 0.52, 0.5)])
    ranked = candidates(load_local(tmp_path))["snli"]
    labels = [{k: v for k, v in c.config.items() if k.startswith("attention.")} for c in ranked]
    # λ of fusedmax varies: one candidate per value (not one overwriting the other); oscarmax's single λ does not
    assert labels[0] == {"attention.fusedmax.lam": 1.0}
    assert labels[1:] == [{}, {"attention.fusedmax.lam": 0.1}]  # softmax + oscarmax: mean 0.535 > 0.50
    assert [sorted(m for m, _ in c.runs) for c in ranked] == [["fusedmax"], ["oscarmax", "softmax"], ["fusedmax"]]


def test_negative_metrics_are_not_read_as_fractions(tmp_path):
    # seq2seq runs maximise neg_ppl: -30 is a perplexity of 30, not a fraction to show as -3000%
    from tasks.report.runs import load_local
    recs = [{**record("softmax", 1, -30.0, -300.0), "metric": "neg_ppl",
             "metrics": {"valid": {"neg_ppl": -30.0}, "test": {"neg_ppl": -300.0}}}]
    write(tmp_path, recs)
    text = to_markdown("snli", candidates(load_local(tmp_path))["snli"])
    assert "| -30.00 |" in text and "(%)" not in text
