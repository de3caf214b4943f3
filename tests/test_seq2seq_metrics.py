"""tasks/seq2seq/metrics.py against known values."""

import math

import pytest

from tasks.seq2seq import metrics as M


def test_bleu_identical_is_100_and_has_a_signature():
    hyps = ["A man rides a bike.", "Two dogs play in the snow."]
    score, signature = M.bleu(hyps, hyps)
    assert score == pytest.approx(100.0)
    assert "tok:13a" in signature and "version:" in signature
    assert M.tokenized_bleu([h.split() for h in hyps], [h.split() for h in hyps]) == pytest.approx(100.0)


def test_tokenized_bleu_hand_computed():
    # precisions 5/6, 3/5, 2/4, 1/3; equal lengths (no brevity penalty): BLEU = (1/12)^(1/4)
    hyp, ref = "the cat sat on the mat".split(), "the cat sat on a mat".split()
    assert M.tokenized_bleu([hyp], [ref]) == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-6)
    # brevity penalty: a 4-token hypothesis against a 6-token reference, all n-grams right
    short = "the cat sat on".split()
    assert M.tokenized_bleu([short], [ref]) == pytest.approx(100 * math.exp(1 - 6 / 4), abs=1e-6)


def test_detokenize_undoes_moses():
    assert M.detokenize("it &apos;s a test , isn &apos;t it ?".split()) == "it's a test, isn't it?"
    hyp = M.detokenize("a man rides a bike .".split())
    assert M.bleu([hyp], ["a man rides a bike."])[0] == pytest.approx(100.0)


def test_rouge_f1_hand_computed():
    assert M.rouge_f1(["police arrest suspects"], ["police arrest suspects"]) == {
        "rouge1_f1": pytest.approx(100.0), "rouge2_f1": pytest.approx(100.0), "rougeL_f1": pytest.approx(100.0)}
    r = M.rouge_f1(["police arrest suspects"], ["police arrest two suspects"])
    assert r["rouge1_f1"] == pytest.approx(100 * 2 * 1 * 0.75 / 1.75)  # P 3/3, R 3/4
    assert r["rouge2_f1"] == pytest.approx(100 * 2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))  # P 1/2, R 1/3
    assert r["rougeL_f1"] == pytest.approx(r["rouge1_f1"])  # LCS = 3


def test_rouge_recall_cuts_at_75_bytes_and_averages_references():
    ref = "stocks close higher"
    words = "filler " * 20  # 140 bytes before the reference words
    assert M.rouge_recall_75b([words + ref], [[ref]])["rouge1_recall"] == 0.0
    assert M.rouge_recall_75b([ref + " " + words], [[ref]])["rouge1_recall"] == pytest.approx(100.0)
    two = M.rouge_recall_75b(["stocks close higher"], [["stocks close higher", "stocks fall sharply again"]])
    assert two["rouge1_recall"] == pytest.approx(100 * (1 + 1 / 4) / 2)
    assert M.truncate_bytes("é" * 40, 75) == "é" * 37  # never half a character


# ---- <unk> is one token that matches nothing (issue 8)
REF = "a man in a blue shirt is kicking a ball."
HYP_TOKENS = "a man in a <unk> shirt is kicking a ball .".split()
# 11 tokens each; the unmatched token costs 1 unigram, 2 bigrams, 3 trigrams and 4 four-grams; same length: BP = 1
KNOWN = 100 * ((10 / 11) * (8 / 10) * (6 / 9) * (4 / 8)) ** 0.25


def test_unk_is_one_unmatched_token_in_detokenized_bleu():
    from tasks.seq2seq import metrics as M

    hyp = M.detokenize(HYP_TOKENS)
    assert "<unk>" not in hyp and M.UNK_MARK in hyp
    assert M.bleu([hyp], [REF])[0] == pytest.approx(KNOWN, abs=1e-9)
    # a raw "<unk>" in a string is marked too (13a alone would make it "< unk >", three tokens)
    assert M.bleu(["a man in a <unk> shirt is kicking a ball."], [REF])[0] == pytest.approx(KNOWN, abs=1e-9)
    assert M.bleu(["a man in a zzqx shirt is kicking a ball."], [REF])[0] == pytest.approx(KNOWN, abs=1e-9)


def test_unk_is_one_unmatched_token_in_tokenized_bleu():
    from tasks.seq2seq import metrics as M

    ref = "a man in a blue shirt is kicking a ball .".split()
    assert M.tokenized_bleu([HYP_TOKENS], [ref]) == pytest.approx(KNOWN, abs=1e-9)
    # even against a reference that contains the literal string "<unk>"
    assert M.tokenized_bleu([["<unk>", "b", "c", "d"]], [["<unk>", "b", "c", "d"]]) < 100


def test_sentence_statistics_sum_to_the_corpus_bleu():
    import random

    from tasks.seq2seq import metrics as M

    rng = random.Random(0)
    words = "a man woman dog is in the park runs with red ball .".split()
    refs = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(40)]
    hyps = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 12))) for _ in range(40)]
    stats = M.bleu_sentence_stats(hyps, refs)
    assert len(stats) == 40 and all(len(s) == 10 for s in stats)
    assert M.bleu_from_stats([sum(c) for c in zip(*stats)]) == pytest.approx(M.bleu(hyps, refs)[0], abs=1e-9)
    sub = stats[:15]
    assert M.bleu_from_stats([sum(c) for c in zip(*sub)]) == pytest.approx(M.bleu(hyps[:15], refs[:15])[0], abs=1e-9)


def test_rouge_per_pair_means_are_the_corpus_numbers():
    from tasks.seq2seq import metrics as M

    hyps, refs = ["police arrest man", "stocks fall in tokyo"], ["police arrest two men", "tokyo stocks close lower"]
    per = M.rouge_f1_per_pair(hyps, refs)
    assert M.rouge_f1(hyps, refs) == pytest.approx({k: sum(v) / 2 for k, v in per.items()})
