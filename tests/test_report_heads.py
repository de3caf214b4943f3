"""The Transformer runs' report (tasks/report/heads.py): per-head tables, the cost table and the figures, from
fabricated records in the layout tasks/seq2seq/transformer.py writes."""

import json

import pytest
import torch

from tasks.report.heads import (
    cost_table,
    head_values,
    heads_grid_figure,
    heads_table,
    learned_figure,
    trajectory_figure,
)
from tasks.report.runs import load_local


def record(attention, seed, support, lam=None, learn=("gamma", "lam"), step_seconds=0.5, decode=2.0):
    heads = {kind: [[{"support": support + h, "groups": 1.0 + h, "dead_rows": 0.1 * h} for h in range(2)]
                    for _ in range(2 if kind != "encoder" else 1)] for kind in ("encoder", "decoder", "cross")}
    learned = {kind: {"gamma": [[1.0 + seed / 10, 2.0] for _ in layers]} for kind, layers in heads.items()}
    if lam is not None:
        for kind in learned:
            learned[kind]["lam"] = [[lam, lam * 2] for _ in heads[kind]]
    history = [{"epoch": e, "step": 10 * e, "train_seconds": 10 * step_seconds,
                "valid": {"learned": learned}} for e in (1, 2)]
    return {"task": "multi30k", "attention": {"name": attention, "params": {}}, "seed": seed,
            "config": {"task": {"name": "multi30k", "data": {"src_lang": "de", "tgt_lang": "en"},
                                "model": {"kind": "transformer", "heads": 2, "learn": list(learn)}}},
            "metrics": {"valid": {}, "test": {"bleu": 30.0, "heads": heads, "learned": learned,
                                              "decode_seconds": decode, "decode_sentences": 100}},
            "history": history, "epochs": 2, "time_per_epoch_s": 10 * step_seconds, "finished": f"2026-01-0{seed}"}


@pytest.fixture
def records(tmp_path):
    recs = [record("softmax", 1, 10.0), record("softmax", 2, 12.0),
            record("fusedmax", 1, 3.0, lam=0.1, step_seconds=1.0, decode=4.0),
            record("fusedmax", 2, 5.0, lam=0.3, step_seconds=1.0, decode=4.0),
            record("entmax", 1, 4.0, learn=("gamma", "alpha"))]
    for r in recs:
        path = tmp_path / "multi30k" / r["attention"]["name"] / f"seed={r['seed']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))
    return load_local(tmp_path)


def test_head_values_average_the_seeds(records):
    fused = [r for r in records if r["attention"]["name"] == "fusedmax"]
    values = head_values(fused, "cross")
    assert set(values) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert values[(0, 1)]["support"] == pytest.approx(5.0)  # (3 + 1 + 5 + 1) / 2
    assert values[(1, 0)]["lam"] == pytest.approx(0.2) and values[(1, 1)]["lam"] == pytest.approx(0.4)
    assert values[(0, 0)]["gamma"] == pytest.approx(1.15) and "alpha" not in values[(0, 0)]


def test_heads_and_cost_tables(records):
    table = heads_table(records)
    for title in ("encoder self-attention", "decoder self-attention (causal)", "cross-attention"):
        assert f"#### {title}" in table
    assert "| multi30k · fusedmax | 2 | 2 | 5.00 | 2.00 | 0.100 | 2.000 | 0.400 | — | 2 |" in table
    assert "| multi30k · entmax | 1 | 1 | 4.00 | 1.00 | 0.000 | 1.100 | — | — | 1 |" in table
    cost = cost_table(records)
    # fusedmax: 1 s a step against softmax's 0.5, 40 ms a sentence against 20
    assert "| multi30k · fusedmax | 2 | 10.0 | 2.00 | 1.000 | 2.00 | 40.0 | 2.00 |" in cost
    assert "| multi30k · softmax | 2 | 5.0 | 1.00 | 0.500 | 1.00 | 20.0 | 1.00 |" in cost
    assert heads_table([{"task": "snli", "metrics": {}}]) == "" and cost_table([]) == ""


def test_figures(records, tmp_path):
    out = tmp_path / "figures"
    assert [p.name for p in learned_figure(records, out)] == ["transformer_learned_parameters.png",
                                                              "transformer_learned_parameters.pdf"]
    assert trajectory_figure(records, out)[0].stat().st_size > 0
    assert heads_grid_figure(records, out) == []  # no attention_test.pt next to these records
    item = {"src": ["ein", "hund", "."], "hyp": ["a", "dog"], "ref": ["a", "dog", "."],
            "attention": torch.tensor([[[1.0, 0.0, 0.0]] * 4, [[0.0, 0.5, 0.5]] * 4]), "scores": None}
    for r in records:
        torch.save({"items": [item]}, r["path"].replace(".json", ".attention_test.pt"))
    grid = heads_grid_figure(records, out)
    assert grid and grid[0].name == "transformer_cross_attention_heads.png"
