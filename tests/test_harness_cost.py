"""`python -m tasks.cost` (the cost table of issue 24): finished smoke Transformer runs timed against softmax's."""

import json

import pytest
from test_harness_hydra import train

from tasks.cost import describe, main, measure


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cost")
    train("-m", "experiment=smoke_multi30k_transformer", "attention=softmax,fusedmax", "trainer.epochs=1",
          f"hydra.sweep.dir={tmp}/multirun", f"results_dir={tmp}/results")
    dirs = {path.parents[2].name: path.parents[1] for path in (tmp / "multirun").glob("*/*/.hydra/config.yaml")}
    assert set(dirs) == {"softmax", "fusedmax"}, dirs
    return tmp, dirs


def test_cost_of_finished_runs_against_the_baseline(runs, capsys):
    tmp, dirs = runs
    out = tmp / "cost" / "cost.json"
    assert main([str(dirs["fusedmax"]), str(dirs["softmax"]), "--steps", "2", "--rounds", "2",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {row["label"]: row for row in result["rows"]}
    assert set(rows) == {"softmax", "fusedmax"} and result["baseline"] == "softmax"
    assert rows["softmax"]["step_ratio"] == 1.0 and rows["softmax"]["decode_ratio"] == 1.0
    for row in rows.values():
        assert len(row["step_s_rounds"]) == 2 and len(row["decode_s_rounds"]) == 2
        assert row["step_ms"] > 0 and row["sentences"] > 0 and row["sentence_ms"] > 0
        # the record's own timing, as run, is read beside the measurement
        assert row["recorded"]["epoch_s"] > 0 and row["recorded"]["commit"]
    assert rows["fusedmax"]["step_ratio"] == pytest.approx(rows["fusedmax"]["step_ms"] / rows["softmax"]["step_ms"])
    # the fastest rounds' ratio and each configuration's spread, from the rounds kept in the record
    fused, soft = rows["fusedmax"], rows["softmax"]
    assert fused["step_ratio_fastest"] == pytest.approx(min(fused["step_s_rounds"]) / min(soft["step_s_rounds"]))
    assert fused["decode_ratio_fastest"] == pytest.approx(min(fused["decode_s_rounds"]) / min(soft["decode_s_rounds"]))
    assert soft["step_ratio_fastest"] == 1.0 and fused["step_spread"] >= 1.0 and fused["decode_spread"] >= 1.0
    assert fused["step_spread"] == pytest.approx(max(fused["step_s_rounds"]) / min(fused["step_s_rounds"]))
    assert result["git"]["commit"] and "tasks.cost" in result["command"]
    table = out.with_suffix(".md").read_text()
    assert "| fusedmax |" in table and "÷ softmax" in table and result["git"]["commit"] in table
    assert f"| {fused['step_ratio_fastest']:.2f} | {fused['step_spread']:.2f} |" in table


def test_cost_errors_name_what_to_fix(runs, capsys):
    tmp, dirs = runs
    assert main([str(dirs["fusedmax"]), "--steps", "1", "--rounds", "1"]) == 2
    assert "--baseline 'softmax' is none of the runs' configurations" in capsys.readouterr().err
    assert main([str(dirs["softmax"]), str(dirs["softmax"]), "--steps", "1", "--rounds", "1"]) == 2
    assert "two runs of the same configuration" in capsys.readouterr().err
    assert main([str(tmp / "nowhere"), "--steps", "1"]) == 2
    assert ".hydra" in capsys.readouterr().err
    assert main([str(dirs["softmax"]), "--steps", "100000"]) == 2
    assert "fewer than --steps 100000" in capsys.readouterr().err


def test_describe_names_what_sets_a_run_apart():
    def config(name, **model):
        return {"attention": {"name": name}, "task": {"model": model}}

    assert describe(config("fusedmax", learn=["gamma", "lam"])) == "fusedmax"
    assert describe(config("entmax", learn=["gamma", "alpha"])) == "entmax (α learned)"
    assert describe(config("entmax", learn=["gamma"])) == "entmax"
    assert describe(config("sparsemax", mappings={"encoder": "softmax", "decoder": "softmax", "cross": None})) == \
        "sparsemax (decoder softmax, encoder softmax)"
    assert describe({"attention": {"name": "softmax"}, "task": {}}) == "softmax"


def test_measure_refuses_an_unknown_baseline():
    with pytest.raises(ValueError, match="none of the runs"):
        measure([], "softmax", 1, "test")
