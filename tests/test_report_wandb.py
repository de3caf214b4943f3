"""The W&B reader: offline run directories (the .wandb transaction log) and the public API (mocked)."""

import os

import pytest

from tasks.report import wandb_source
from tasks.report.grouping import build_table
from tasks.report.sections import experiments
from tasks.report.tables import main

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="module")
def offline_runs(tmp_path_factory):
    wandb = pytest.importorskip("wandb")
    tmp_path = tmp_path_factory.mktemp("wandb_offline")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_SILENT", "true")
        monkeypatch.setenv("WANDB_DIR", str(tmp_path))
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
        _make_runs(wandb, tmp_path)
    return tmp_path


def _make_runs(wandb, tmp_path):
    runs = [("softmax", 1, 0.80, 10.0), ("softmax", 2, 0.84, 12.0), ("fusedmax", 1, 0.83, 3.5)]
    for name, seed, acc, support in runs:
        config = {"task": {"name": "snli", "batch_size": 25}, "attention": {"name": name, "gamma": 1.0}, "seed": seed}
        if name == "fusedmax":
            config["attention"]["lam"] = 0.1
        run = wandb.init(mode="offline", dir=str(tmp_path), project="report-test", config=config,
                         name=f"{name}-{seed}", settings=wandb.Settings(console="off"))
        for epoch in range(2):
            run.log({"valid/accuracy": acc - 0.05 + 0.01 * epoch, "train/loss": 1.0 - epoch}, step=epoch)
        run.summary["test/accuracy"] = acc
        run.summary["test/support"] = support
        run.summary["test/groups"] = support / 2
        run.summary["epochs"] = 2
        run.finish()
    wandb.teardown()  # stops the service, which flushes the last run's transaction log before it is read


def test_read_offline_run(offline_runs):
    dirs = wandb_source.offline_run_dirs(offline_runs)
    assert len(dirs) == 3 and all(d.name.startswith("offline-run-") for d in dirs)
    runs = [wandb_source.read_offline_run(d) for d in dirs]
    first = next(r for r in runs if r["name"] == "softmax-1")
    assert first["project"] == "report-test"
    assert first["config"] == {"task": {"name": "snli", "batch_size": 25},
                               "attention": {"name": "softmax", "gamma": 1.0}, "seed": 1}
    assert first["summary"]["test/accuracy"] == pytest.approx(0.80)
    assert first["summary"]["valid/accuracy"] == pytest.approx(0.76)  # the last logged value
    assert first["summary"]["epochs"] == 2


def test_offline_runs_to_records_and_table(offline_runs, tmp_path):
    records = wandb_source.load(str(offline_runs))
    assert len(records) == 3
    fused = next(r for r in records if r["attention"]["name"] == "fusedmax")
    assert fused["task"] == "snli" and fused["seed"] == 1 and fused["attention"]["lam"] == 0.1
    assert fused["metrics"]["test"] == pytest.approx({"accuracy": 0.83, "support": 3.5, "groups": 1.75})
    assert fused["metrics"]["valid"]["accuracy"] == pytest.approx(0.79)
    assert fused["epochs"] == 2
    table = build_table(next(e for e in experiments(records) if e.key == "snli"), records, {})
    soft = table.cells[("softmax", "snli", "accuracy")]
    assert soft.mean == pytest.approx(82.0) and soft.n == 2
    # and through the command line: SOURCE=wandb with a directory of offline runs
    out = tmp_path / "tables"
    assert main(["--source", "wandb", "--project", str(offline_runs), "--results", str(tmp_path / "none"),
                 "--out", str(out)]) == 0
    assert "| softmax | 82.00 ± 2.83 |" in (out / "snli.md").read_text()


def test_truncated_log_keeps_complete_records(offline_runs, tmp_path):
    log = next(offline_runs.rglob("run-*.wandb"))
    data = log.read_bytes()
    cut = tmp_path / "cut" / "run-x.wandb"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) - 40])  # a run killed mid-write
    run = wandb_source.read_offline_run(cut.parent)
    assert run["config"]["task"]["name"] == "snli"


def test_not_a_wandb_log(tmp_path):
    (tmp_path / "run-bad.wandb").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="not a W&B transaction log"):
        wandb_source.read_offline_run(tmp_path)


class FakeRun:
    def __init__(self, id, config, summary, state="finished"):
        self.id, self.name, self.config, self.summary, self.state = id, id, config, summary, state


class FakeApi:
    def __init__(self, runs):
        self._runs = runs
        self.asked = None

    def runs(self, project, filters=None):
        self.asked = project
        return self._runs


def test_api_records_mapping():
    api = FakeApi([
        # nested config and "test/..." summary keys
        FakeRun("a", {"task": {"name": "multi30k", "src": "de", "tgt": "en"},
                      "attention": {"name": "oscarmax", "lam": 0.01}, "seed": 3},
                {"valid/bleu": 20.0, "best_valid/bleu": 25.0, "test/bleu": 31.5, "test/support": 4.0, "_runtime": 12}),
        # a flattened config and a nested summary
        FakeRun("b", {"task.name": "snli", "attention.name": "sparsemax", "seed": 1}, {"test": {"accuracy": 0.8}}),
        # still running: skipped
        FakeRun("c", {"task": {"name": "snli"}, "attention": {"name": "softmax"}}, {"test/accuracy": 0.1},
                state="running"),
        # no task: skipped
        FakeRun("d", {"foo": 1}, {}),
    ])
    records = wandb_source.api_records("me/proj", api=api)
    assert api.asked == "me/proj"
    assert [r["run"] for r in records] == ["a", "b"]
    a, b = records
    assert a["task"] == "multi30k" and a["attention"] == {"name": "oscarmax", "lam": 0.01} and a["seed"] == 3
    assert a["metrics"]["test"] == {"bleu": 31.5, "support": 4.0}
    assert a["metrics"]["valid"] == {"bleu": 25.0}  # the best checkpoint's, not the last epoch's
    assert b["task"] == "snli" and b["attention"]["name"] == "sparsemax" and b["metrics"]["test"] == {"accuracy": 0.8}


def test_logged_record_is_used_as_is():
    rec = {"task": "snli", "attention": {"name": "softmax"}, "seed": 1, "metrics": {"test": {"accuracy": 0.5}}}
    assert wandb_source.to_record({}, {"record": rec})["metrics"]["test"]["accuracy"] == 0.5
