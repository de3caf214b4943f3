"""Vocab, GloVe reading, attention statistics."""

import gzip
import math
import zipfile
from pathlib import Path

import pytest
import torch

import attention
from attention import groups_kind
from tasks.embeddings import embedding_matrix, read_glove
from tasks.stats import AttentionStats, attention_stats
from tasks.vocab import Vocab

GLOVE = Path(__file__).parent / "data" / "glove" / "glove.tiny.16d.txt"


def test_vocab_roundtrip(tmp_path):
    v = Vocab.build([["a", "cat", "a"], ["a", "dog"], ["rare"]], min_freq=1, max_size=3, extra=["zebra"])
    assert v.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"] and v.itos[4] == "a"
    assert len(v) == 8 and v["rare"] == v.unk_id  # max_size 3 keeps a, cat, dog (first seen wins ties)
    ids = v.encode(["a", "cow", "zebra"], bos=True, eos=True)
    assert ids[0] == v.bos_id and ids[-1] == v.eos_id and ids[2] == v.unk_id
    assert v.decode(ids) == ["a", "<unk>", "zebra"]
    v.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json") == v
    assert len(Vocab.build([["a"], ["b"], ["b"]], min_freq=2)) == 5


def test_glove_txt_gz_zip_agree(tmp_path):
    text = GLOVE.read_bytes()
    gz = tmp_path / "g.txt.gz"
    gz.write_bytes(gzip.compress(text))
    zp = tmp_path / "g.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("g.16d.txt", text)
    a = read_glove(GLOVE, {"man", "Woman", "xyz"})
    b = read_glove(gz, {"man", "Woman", "xyz"}, dim=16)
    c = read_glove(zp, {"man", "Woman", "xyz"})
    assert set(a) == {"man", "woman"} and all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)


def test_glove_word_with_spaces(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text(". . . 1 2 3\nat 4 5 6\n")
    vectors = read_glove(path, None, dim=3)
    assert vectors[". . ."].tolist() == [1, 2, 3] and vectors["at"].tolist() == [4, 5, 6]


def test_embedding_matrix_oov():
    vocab = Vocab(["man", "Woman", "lake"])
    vectors = read_glove(GLOVE, set(vocab.itos))
    w, info = embedding_matrix(vocab, vectors, 16, oov="normal", oov_std=0.1, seed=0)
    assert torch.equal(w[vocab["man"]], vectors["man"]) and torch.equal(w[vocab["Woman"]], vectors["woman"])
    assert w[0].abs().sum() == 0 and w[vocab["lake"]].abs().sum() > 0 and info["found"] == 2
    w0, _ = embedding_matrix(vocab, vectors, 16, oov="zeros")
    assert w0[vocab["lake"]].abs().sum() == 0
    w2, _ = embedding_matrix(vocab, vectors, 16, oov="normal", oov_std=0.1, seed=0)
    assert torch.equal(w, w2)


def test_stats_hand_computed():
    w = torch.tensor([[0.3, 0.3, 0.0, 0.2, 0.2], [0.5, 0.0, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4, 0.0]])
    s = attention_stats(w)
    assert s["rows"] == 3 and s["support"] == pytest.approx((4 + 2 + 4) / 3)
    assert s["segments"] == pytest.approx((2 + 2 + 4) / 3) and s["clusters"] == pytest.approx((2 + 1 + 4) / 3)
    assert s["groups"] == s["segments"] and attention_stats(w, groups="clusters")["groups"] == s["clusters"]
    # tolerance: float noise does not split a group
    noisy = torch.tensor([[0.25, 0.25 * (1 + 1e-7), 0.5, 0.0]])
    assert attention_stats(noisy)["segments"] == 2


def test_stats_mask_and_accumulator():
    w = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False], [False, False, False]])
    s = attention_stats(w, mask)
    assert s["rows"] == 2 and s["support"] == 1.5 and s["support_frac"] == pytest.approx((2 / 3 + 1) / 2)
    acc = AttentionStats()
    acc.update(w[:1], mask[:1])
    acc.update(w[1:], mask[1:])
    assert acc.compute() == pytest.approx(s)


def test_stats_of_the_mappings():
    torch.manual_seed(0)
    x = torch.randn(64, 12) * 2
    dense = attention_stats(attention.softmax(x))
    assert dense["support"] == 12 and dense["segments"] == 12
    fused = attention_stats(attention.fusedmax(x, lam=0.5))
    sparse = attention_stats(attention.sparsemax(x))
    assert fused["support"] < 12 and fused["segments"] < fused["support"] and sparse["segments"] == sparse["support"]
    oscar = attention_stats(attention.oscarmax(x, lam=0.3), groups=groups_kind("oscarmax"))
    assert oscar["clusters"] < oscar["support"] and oscar["groups"] == oscar["clusters"]


def test_support_counts_exact_zeros_and_the_common_measures_mean_the_same_for_all():
    # a peaked softmax row: no exact zero (support = all 4), but only one weight carries >= 1% of the mass
    soft = attention.softmax(torch.tensor([[30.0, 0.0, 0.0, 0.0]]))
    assert (soft > 0).all() and (soft[0, 1:] < 1e-10).all()
    s = attention_stats(soft)
    assert s["support"] == 4 and s["above_1pct"] == 1 and s["attn_ppl"] == pytest.approx(1.0, abs=1e-6)
    # exact zeros of a sparse row; a uniform row over n positions has perplexity n
    w = torch.tensor([[0.25, 0.25, 0.25, 0.25, 0.0, 0.0], [0.995, 0.005, 0.0, 0.0, 0.0, 0.0]])
    rows = [attention_stats(w[i: i + 1]) for i in range(2)]
    assert rows[0]["support"] == 4 and rows[0]["above_1pct"] == 4 and rows[0]["attn_ppl"] == pytest.approx(4.0)
    assert rows[1]["support"] == 2 and rows[1]["above_1pct"] == 1
    assert rows[1]["attn_ppl"] == pytest.approx(math.exp(-(0.995 * math.log(0.995) + 0.005 * math.log(0.005))))


def test_score_gap_diagnostics():
    scores = torch.tensor([[2.0, 0.5, 0.0], [0.3, 0.1, 5.0], [1.0, 9.0, 9.0]])
    mask = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    w = attention.sparsemax(scores, mask=mask)
    s = attention_stats(w, mask, scores=scores)
    # row 0: gap 1.5 (sparsemax one-hot, as gap >= 1 says); row 1: 5.0 is masked, gap 0.2; row 2: one position, no gap
    assert s["top2_gap"] == pytest.approx((1.5 + 0.2) / 2) and s["gap_ge_1"] == pytest.approx(0.5)
    assert w[0].tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("name,params", [("sparsemax", {}), ("fusedmax", {"lam": 0.3}), ("oscarmax", {"lam": 0.3}),
                                         ("softmax", {})])
def test_zero_gradient_rows_are_the_single_group_rows(name, params):
    from tasks.stats import zero_gradient_rows

    torch.manual_seed(0)
    x = torch.randn(200, 7) * 3
    for gamma in (1.0, 10.0):
        mapping = attention.build(name, gamma=gamma, **params)
        y = mapping(x * gamma)
        dead = zero_gradient_rows(mapping, x * gamma)
        kind = {"sparsemax": "support", "fusedmax": "segments", "oscarmax": "clusters"}.get(name)
        if kind is None:
            assert not dead.any()  # softmax always passes a gradient
            continue
        single = torch.tensor([attention_stats(y[i: i + 1], groups="clusters")[kind] == 1 for i in range(len(y))])
        assert single.any() and (~single).any()  # both kinds of rows occur
        assert torch.equal(dead, single)
    masked = torch.zeros(2, 7, dtype=torch.bool)
    assert not zero_gradient_rows(attention.build(name, **params), x[:2], masked).any()  # no position: not "dead"
