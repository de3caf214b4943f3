"""One rule for which settings make a run (tasks/records.py): the resume identity (tasks/train.py) and the tables'
grouping of runs into cells (tasks/report/runs.py) read it, and agree on every key of the shipped configs."""

import pytest
from hydra import compose, initialize_config_dir
from test_harness_hydra import ROOT

from tasks.records import BUDGET_KEYS, changes_result, flatten, get, in_identity
from tasks.report.runs import result_config
from tasks.train import run_identity

EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))


def resolved(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    HydraConfig.instance().set_config(cfg)  # ${hydra:runtime.cwd} & co.
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_identity_and_table_cells_agree_on_every_shipped_setting(experiment):
    """What tells two runs apart in a table is what a resume refuses to mix, less the seed and the attention (a
    cell averages seeds; rows are split by attention) and plus the budgets (more epochs continue a run)."""
    config = resolved(f"experiment={experiment}", "attention=fusedmax")
    identity = set(run_identity(config))
    cells = set(result_config({"config": config}))
    # task.model.learn: what a Transformer's mapping learns per head, shown in the row label as the attention is
    apart = {k for k in flatten(config)
             if k in ("seed", "attention", "task.model.learn") or k.startswith("attention.")}
    budgets = {k for k in flatten(config) if k in BUDGET_KEYS}
    assert cells == (identity - apart) | budgets
    assert "task.eval.batch_size" not in identity | cells  # it was part of the identity only, once


def test_dotted_keys_are_read_and_flattened_by_one_definition():
    """get and flatten live in tasks/records.py; the resume identity and the report (records, W&B runs) use them."""
    import tasks.report.runs as runs
    import tasks.report.wandb_source as wandb_source

    assert runs.get is get and wandb_source.get is get and runs.flatten is flatten
    config = {"seed": 1, "trainer": {"optimizer": {"lr": 0.1}, "progress": {"bar": True}, "epochs": 3},
              "logger": {"kind": "wandb"}, "task": {"data": {}, "sizes": [1, 2]}}
    assert flatten(config) == {"seed": 1, "trainer.optimizer.lr": 0.1, "trainer.progress.bar": True,
                               "trainer.epochs": 3, "logger.kind": "wandb", "task.data": {}, "task.sizes": [1, 2]}
    # what the identity's own walk gave: whole subtrees out of it (trainer.progress, logger), budgets out, an
    # empty section a leaf
    assert run_identity(config) == {"seed": 1, "trainer.optimizer.lr": 0.1, "task.data": {}, "task.sizes": [1, 2]}
    assert get(config, "trainer.optimizer.lr") == 0.1 and get(config, "trainer.nothing.lr", "-") == "-"
    assert get(config, "seed.x") is None and get(config, "task") is config["task"]


def test_a_setting_that_cannot_change_a_result_never_blocks_a_resume():
    base = resolved("experiment=smoke_multi30k")
    for key, value in (("task.eval.batch_size", 3), ("task.decode.batch_size", 5), ("trainer.deterministic", True),
                       ("task.extra_test_sets", ["test_2017_flickr"]), ("trainer.epochs", 50)):
        other = resolved("experiment=smoke_multi30k", f"{key}={value}".replace("'", ""))
        assert run_identity(other) == run_identity(base), key
    assert run_identity(resolved("experiment=smoke_multi30k", "task.model.rnn_size=32")) != run_identity(base)
    assert changes_result("trainer.epochs") and not in_identity("trainer.epochs")
    assert not changes_result("logger.kind") and not changes_result("task.data.root")
    assert in_identity("attention.lam") and in_identity("seed")


def test_a_checkpoint_whose_identity_holds_keys_since_found_not_to_change_a_result_still_resumes(tmp_path):
    """Checkpoints written under an older rule stored, e.g., task.eval.batch_size in their identity."""
    import torch
    from test_harness_trainer import CFG, make_task

    from tasks.trainer import Trainer

    identity = {"seed": 1, "trainer.optimizer.lr": 0.1}
    Trainer(make_task(), {**CFG, "epochs": 1}, tmp_path / "run", identity=identity).fit()
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    state["identity"] = {**identity, "task.eval.batch_size": 64}
    torch.save(state, last)
    resumed = Trainer(make_task(), {**CFG, "epochs": 2}, tmp_path / "run", identity=identity).fit()
    assert resumed["resumed_from"]["epoch"] == 1
