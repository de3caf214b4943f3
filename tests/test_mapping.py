"""tasks/mapping.py: the one constructor of a run's attention, from its config node (Hydra's ``_target_``)."""

from pathlib import Path

import pytest
import torch

import attention
import tasks.seq2seq.task as seq2seq_task
import tasks.snli.task as snli_task
import tasks.train as train
from tasks.mapping import build_attention

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "attention").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_attention_config_builds_what_attention_build_builds(path):
    from omegaconf import OmegaConf

    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # ${attention_default:...}: tasks.train
    assert spec["_target_"] == "attention.build"
    params = {k: v for k, v in spec.items() if k not in ("_target_", "name")}
    expected = attention.build(spec["name"], **params)
    scores = torch.randn(3, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for built in (build_attention(spec), build_attention({k: v for k, v in spec.items() if k != "_target_"})):
        assert type(built) is type(expected)
        torch.testing.assert_close(built(scores), expected(scores))


def test_another_target_is_honoured_and_a_module_passes_through():
    assert isinstance(build_attention({"_target_": "attention.Sparsemax"}), attention.Sparsemax)
    module = attention.build("softmax")
    assert build_attention(module) is module


def test_bad_parameters_are_the_librarys_error():
    with pytest.raises(TypeError, match="attention.build"):
        build_attention({"name": "fusedmax", "bogus": 1})
    with pytest.raises(train.ConfigError, match="attention='fusedmax'.*bogus"):
        train.validate_config({"attention": {"_target_": "attention.build", "name": "fusedmax", "bogus": 1}})


def test_both_tasks_build_their_attention_through_it():
    assert snli_task.build_attention is build_attention and seq2seq_task.build_attention is build_attention
    assert not hasattr(seq2seq_task, "make_attention")  # the second way, gone
