"""The seq2seq tasks through the harness's Trainer on the tiny fixtures (the Hydra path is `make smoke`)."""

import json
from pathlib import Path

import pytest
import torch

from tasks.runtime import set_threads
from tasks.seq2seq.task import GigawordTask, Multi30kTask
from tasks.task import Task
from tasks.trainer import Trainer

DATA = Path(__file__).parent / "data"
TINY = {"layers": 1, "rnn_size": 16, "word_vec_size": 8}
TRAINER = {"epochs": 1, "progress": False, "optimizer": {"name": "sgd", "lr": 1.0}, "lr_decay": {"factor": 0.5}}


@pytest.fixture(autouse=True)
def one_thread():
    import numba

    before = torch.get_num_threads(), numba.get_num_threads()
    set_threads(1)
    yield
    torch.set_num_threads(before[0])
    numba.set_num_threads(before[1])


def test_multi30k_task_end_to_end(tmp_path):
    task = Multi30kTask(name="multi30k", data={"root": str(DATA / "multi30k"), "src_lang": "de", "tgt_lang": "en"},
                        attention={"_target_": "attention.build", "name": "fusedmax", "lam": 0.1}, model=TINY,
                        decode={"beam": 2, "replace_unk": True}, eval={"save_attention": 3}, data_dir=str(tmp_path))
    assert isinstance(task, Task)
    summary = Trainer(task, TRAINER, tmp_path / "run", seed=1).fit()
    test = summary["test"]
    assert {"bleu", "tok_bleu", "bleu_signature", "ppl", "support", "groups"} <= set(test)
    assert 0 <= test["bleu"] <= 100 and test["support"] >= 1
    saved = torch.load(tmp_path / "run" / "attention_test.pt", weights_only=False)
    assert len(saved["items"]) == 3
    item = saved["items"][0]
    assert item["attention"].shape == (len(item["hyp"]), len(item["src"]))
    assert len((tmp_path / "run" / "test_hypotheses.txt").read_text().splitlines()) == 12


def test_gigaword_task_with_duc_test(tmp_path):
    root = DATA / "gigaword" / "sumdata"
    task = GigawordTask(name="gigaword_duc2004", data={"root": str(root)}, attention={"name": "oscarmax"},
                        model=TINY, decode={"beam": 2, "max_len_a": 0.0, "max_len_b": 8},
                        eval={"valid_decode": "greedy"}, duc={"root": str(root / "DUC2004")}, test_set="duc2004",
                        data_dir=str(tmp_path))
    summary = Trainer(task, TRAINER, tmp_path / "run", seed=1).fit()
    assert {"rouge1_f1", "rouge2_f1", "rougeL_f1", "ppl"} <= set(summary["valid"])
    assert {"rouge1_recall", "rouge2_recall", "rougeL_recall"} <= set(summary["test"])
    json.dumps(summary["test"])  # the record can hold it


def test_unknown_option_is_an_error():
    with pytest.raises(TypeError, match="bogus"):
        Multi30kTask(name="m", data={}, attention={"name": "softmax"}, bogus=1)


def test_per_example_statistics_give_the_corpus_scores(tmp_path):
    """What the tables' paired bootstrap resamples must add up to the reported corpus numbers."""
    from tasks.seq2seq import metrics as M

    task = Multi30kTask(name="multi30k", data={"root": str(DATA / "multi30k"), "src_lang": "de", "tgt_lang": "en"},
                        attention={"name": "sparsemax"}, model=TINY, decode={"beam": 2}, data_dir=str(tmp_path))
    summary = Trainer(task, TRAINER, tmp_path / "run", seed=1).fit()
    test = summary["test"]
    per = test["per_example"]
    assert per["kind"] == "bleu" and len(per["stats"]) == 12
    summed = [sum(col) for col in zip(*per["stats"])]
    assert M.bleu_from_stats(summed) == pytest.approx(test["bleu"], abs=1e-9)
    assert "per_example" not in summary["valid"]  # only the test split carries them
    # the score diagnostics are logged per epoch (history) and on test
    valid = summary["history"][-1]["valid"]
    assert {"top2_gap", "gap_ge_1", "dead_rows", "above_1pct", "attn_ppl"} <= set(valid)
    assert 0.0 <= valid["dead_rows"] <= 1.0 and valid["top2_gap"] >= 0.0


def test_gigaword_run_also_scores_duc2004_with_the_same_model(tmp_path):
    root = DATA / "gigaword" / "sumdata"
    task = GigawordTask(name="gigaword", data={"root": str(root)}, attention={"name": "fusedmax", "lam": 0.1},
                        model=TINY, decode={"beam": 2, "max_len_a": 0.0, "max_len_b": 8},
                        eval={"valid_decode": "none"}, metric="neg_ppl", duc={"root": str(root / "DUC2004")},
                        data_dir=str(tmp_path))
    summary = Trainer(task, TRAINER, tmp_path / "run", seed=1).fit()
    test = summary["test"]
    assert {"rouge1_f1", "rougeL_f1"} <= set(test)
    duc = test["duc2004"]
    assert {"rouge1_recall", "rouge2_recall", "rougeL_recall"} <= set(duc)
    assert len(duc["per_example"]["rouge1_recall"]) == len(task.splits["duc2004"])
    assert duc["rouge1_recall"] == pytest.approx(sum(duc["per_example"]["rouge1_recall"]) / len(task.splits["duc2004"]))
    assert (tmp_path / "run" / "duc2004_hypotheses.txt").is_file()
    json.dumps(test)
