"""The paired bootstrap of tasks/report/significance.py against sacreBLEU's own machinery."""

import numpy as np
import pytest
import sacrebleu

from tasks.report.significance import Examples, examples_of, paired_bootstrap
from tasks.seq2seq import metrics as M


def corpus(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    words = "a man woman dog is in the park runs with red ball on grass .".split()
    refs = [" ".join(rng.choice(words, rng.integers(4, 12))) for _ in range(n)]
    return refs, rng


def test_bleu_of_a_resample_equals_sacrebleu_on_the_same_sentences():
    refs, rng = corpus(0)
    hyps = [" ".join(r.split()[: max(1, len(r.split()) - 1)]) + " dog" for r in refs]
    ex = examples_of({"kind": "bleu", "stats": M.bleu_sentence_stats(hyps, refs)}, "bleu")
    idx = rng.integers(0, len(refs), size=(5, len(refs)))
    weights = np.stack([np.bincount(row, minlength=len(refs)) for row in idx]).astype(float)
    mine = ex.score_sums(weights @ ex.values, len(refs))
    for row, score in zip(idx, mine):
        expected = sacrebleu.corpus_bleu([hyps[i] for i in row], [[refs[i] for i in row]]).score
        assert score == pytest.approx(expected, abs=1e-9)
    assert ex.score() == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)


def test_identical_systems_are_not_different_and_a_better_one_is():
    refs, rng = corpus(1, n=200)
    good = [r for r in refs]
    noisy = [" ".join(w if rng.random() < 0.7 else "zz" for w in r.split()) for r in refs]
    g = examples_of({"kind": "bleu", "stats": M.bleu_sentence_stats(good, refs)}, "bleu")
    b = examples_of({"kind": "bleu", "stats": M.bleu_sentence_stats(noisy, refs)}, "bleu")
    same = paired_bootstrap([b], [b], samples=300)
    assert same.delta == 0 and same.p == 1.0
    diff = paired_bootstrap([g, g], [b, b], samples=300)
    assert diff.delta == pytest.approx(g.score() - b.score()) and diff.delta > 10
    assert diff.p < 0.01 and diff.low > 0 and diff.pairs == 2


def test_accuracy_and_mean_examples():
    acc = examples_of({"kind": "accuracy", "correct": "1101"}, "accuracy")
    assert acc.score() == pytest.approx(75.0)
    rouge = examples_of({"kind": "mean", "rouge1_f1": [10.0, 30.0]}, "rouge1_f1")
    assert rouge.score() == pytest.approx(20.0)
    assert examples_of({"kind": "mean", "rouge1_f1": [1.0]}, "rouge2_f1") is None
    assert examples_of(None, "bleu") is None


def test_mismatched_test_sets_are_an_error():
    a = Examples(np.ones((5, 1)), "accuracy")
    b = Examples(np.ones((6, 1)), "accuracy")
    with pytest.raises(ValueError, match="different sizes"):
        paired_bootstrap([a], [b])
    with pytest.raises(ValueError, match="same number"):
        paired_bootstrap([a], [])


def test_sign_flip_over_seeds_is_exact_and_bounded_by_the_number_of_seeds():
    from tasks.report.significance import sign_flip_p

    assert sign_flip_p([1.0, 2.0, 3.0]) == 0.25  # all ahead: 2 of the 8 sign patterns are as extreme
    assert sign_flip_p([1.0] * 10) == 2 / 1024
    assert sign_flip_p([1.0, -1.0]) == 1.0
    # 4 seeds +1, one seed -1: mean 0.6; patterns with |mean| >= 0.6 are those with at most one sign against
    # the majority: 2 * (1 + 5) of 32
    assert sign_flip_p([1.0, 1.0, 1.0, 1.0, -1.0]) == 12 / 32
    assert sign_flip_p([0.3] * 20) < 1e-3 and sign_flip_p([0.3, -0.3] * 10) > 0.9  # sampled above 16 seeds
