"""Alignment quality (tasks/seq2seq/align.py, `make align`): the metric on hand-made links, the gold reader, and
force-decoding a real (tiny) run trained on the test fixtures through the Hydra app."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.seq2seq import align

ROOT = Path(__file__).resolve().parents[1]


# -- the metric ---------------------------------------------------------------------------------------------------


def test_alignment_scores_on_hand_made_links():
    """Och & Ney: S ⊆ P; precision |A∩P|/|A|, recall |A∩S|/|S|, AER = 1 - (|A∩S| + |A∩P|)/(|A| + |S|)."""
    sure = [{(0, 0), (1, 1)}, {(0, 1)}]
    possible = [{(0, 0), (1, 1), (2, 1)}, {(0, 1), (1, 0)}]
    # sentence 1: one sure hit, one possible-only hit, one miss; sentence 2: the sure link
    predicted = [{(0, 0), (2, 1), (2, 2)}, {(0, 1)}]
    scores = align.alignment_scores(predicted, sure, possible)
    # |A| = 4, |S| = 3, |A∩S| = 2, |A∩P| = 3
    assert scores["precision"] == pytest.approx(3 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["aer"] == pytest.approx(1 - (2 + 3) / (4 + 3))
    assert scores["links"] == 4
    perfect = align.alignment_scores(sure, sure, possible)
    assert perfect["aer"] == 0.0 and perfect["precision"] == 1.0 and perfect["recall"] == 1.0
    # every possible link: AER 0 as well (A ⊆ P and S ⊆ A); one link outside P costs precision, not recall
    loose = align.alignment_scores(possible, sure, possible)
    assert loose["precision"] == 1.0 and loose["recall"] == 1.0 and loose["aer"] == 0.0
    extra = align.alignment_scores([possible[0] | {(5, 5)}, possible[1]], sure, possible)
    assert extra["precision"] == pytest.approx(5 / 6) and extra["recall"] == 1.0
    assert extra["aer"] == pytest.approx(1 - (3 + 5) / (6 + 3))
    nothing = align.alignment_scores([set(), set()], sure, possible)
    assert nothing["aer"] == 1.0 and nothing["recall"] == 0.0


def test_sure_links_count_as_possible():
    """A sure link missing from the possible set is still possible (S ⊆ P by definition)."""
    scores = align.alignment_scores([{(0, 0)}], [{(0, 0)}], [set()])
    assert scores["aer"] == 0.0 and scores["precision"] == 1.0


def test_links_from_attention():
    a = torch.tensor([[0.0, 0.7, 0.3], [1.0, 0.0, 0.0]])  # target x source
    assert align.links_from_attention(a, "argmax") == {(1, 0), (0, 1)}
    assert align.links_from_attention(a, "support") == {(1, 0), (2, 0), (0, 1)}
    with pytest.raises(ValueError, match="argmax' or 'support"):
        align.links_from_attention(a, "all")


def write_gold(directory: Path, pairs, links):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "test.de-en").write_text("".join(f"{de} ||| {en}\n" for de, en in pairs), encoding="utf-8")
    (directory / "deen.talp").write_text("".join(f"{line}\n" for line in links))
    return directory


def test_read_gold(tmp_path):
    gold = write_gold(tmp_path / "gold", [("Das Haus ist klein .", "The house is small ."), ("Ja !", "Yes !")],
                      ["1-1 2-2 3-3 4-4 5-5 1p2", "1-1 2-2"])
    pairs = align.read_gold(gold)
    assert [p.de for p in pairs] == [["Das", "Haus", "ist", "klein", "."], ["Ja", "!"]]
    assert pairs[0].sure == {(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)}
    assert pairs[0].possible == pairs[0].sure | {(0, 1)}
    (gold / "deen.talp").write_text("1-1 9-9\n1-1\n")
    with pytest.raises(ValueError, match="outside the sentence pair"):
        align.read_gold(gold)
    with pytest.raises(FileNotFoundError, match="--gold DIR"):
        align.read_gold(tmp_path / "nowhere")


# -- a real run: the smoke preset through the Hydra app, then `make align`'s script ---------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One epoch of the multi30k smoke preset (de->en, tiny model on tests/data) with fusedmax attention."""
    base = tmp_path_factory.mktemp("align")
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    done = subprocess.run([sys.executable, "-m", "tasks.train", "experiment=smoke_multi30k", "attention=fusedmax",
                           "trainer.epochs=1", f"hydra.run.dir={base}/run", f"results_dir={base}/results"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return base


# fixture sentences (tests/data/multi30k, in the model's vocabulary), tokenized as the gold file is, and one
# made-up word on each side to count as out of vocabulary
GOLD_PAIRS = [("Ein Mädchen spielt eine Gitarre .", "A girl plays a guitar ."),
              ("Ein Hund sitzt auf einer Bank am Wasser .", "A dog sits on a bench near the water ."),
              ("Ein Kind fährt ein Fahrrad im Parlament .", "A child rides a bike in the parliament .")]
GOLD_LINKS = ["1-1 2-2 3-3 4-4 5-5 6-6", "1-1 2-2 3-3 4-4 5-5 6-6 7-7 7p8 8-9 9-10",
              "1-1 2-2 3-3 4-4 5-5 6-6 7-8 7p7 8-9"]


def test_force_decoding_reads_the_models_attention(trained_run):
    task, model, cfg = align.load_run(trained_run / "run")
    assert cfg.attention.name == "fusedmax" and task.attention_name == "fusedmax"
    src = [task.src_vocab.encode(de.lower().split()) for de, _ in GOLD_PAIRS]
    tgt = [task.tgt_vocab.encode(en.lower().split()) for _, en in GOLD_PAIRS]
    attentions = align.force_decode(model, src, tgt, batch_size=2)
    for s, t, a in zip(src, tgt, attentions):
        assert a.shape == (len(t), len(s))
        torch.testing.assert_close(a.sum(-1), torch.ones(len(t)))
        # the same rows as the model's own teacher-forced forward pass of that pair alone
        with torch.no_grad():
            _, alone = model(torch.tensor([s]), torch.tensor([len(s)]), torch.tensor([[2] + t]))
        torch.testing.assert_close(a, alone[0, : len(t)])
    assert model.training is False


def test_make_align_end_to_end(trained_run, tmp_path):
    gold = write_gold(tmp_path / "gold", GOLD_PAIRS, GOLD_LINKS)
    run = trained_run / "run"
    done = subprocess.run([sys.executable, "-m", "scripts.align", str(run), "--gold", str(gold), "--results",
                           str(trained_run / "results")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "argmax AER" in done.stdout and "record:" in done.stdout
    result = json.loads((run / "alignment.json").read_text())
    assert result["sentences"] == 3 and result["mapping"] == "fusedmax" and result["direction"] == "de->en"
    for key in ("aer", "precision", "recall", "aer_support", "precision_support", "recall_support", "aer_diagonal"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["sure_links"] == 23 and result["possible_links"] == 25
    # the made-up words: "parlament" (source) and "parliament" (target) are the only ones unknown to the model
    task, _, _ = align.load_run(run)
    src_words = [w for de, _ in GOLD_PAIRS for w in de.lower().split()]
    tgt_words = [w for _, en in GOLD_PAIRS for w in en.lower().split()]
    src_unknown = [w for w in src_words if w not in task.src_vocab]
    tgt_unknown = [w for w in tgt_words if w not in task.tgt_vocab]
    assert "parlament" in src_unknown and "parliament" in tgt_unknown
    assert result["src_oov_rate"] == pytest.approx(len(src_unknown) / len(src_words))
    assert result["tgt_oov_rate"] == pytest.approx(len(tgt_unknown) / len(tgt_words))
    # the record of that run now holds it under metrics.alignment (the other metrics untouched)
    (record_path,) = (trained_run / "results").glob("multi30k/fusedmax/*.json")
    record = json.loads(record_path.read_text())
    assert record["metrics"]["alignment"] == result and "bleu" in record["metrics"]["test"]


def test_align_errors(tmp_path):
    done = subprocess.run([sys.executable, "-m", "scripts.align", str(tmp_path), "--gold", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "gold alignments not found" in done.stderr
    gold = write_gold(tmp_path / "gold", GOLD_PAIRS[:1], GOLD_LINKS[:1])
    done = subprocess.run([sys.executable, "-m", "scripts.align", str(tmp_path), "--gold", str(gold)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "finished run" in done.stderr
