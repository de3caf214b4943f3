"""tasks/seq2seq/model.py and search.py: shapes, masks, greedy vs beam, batching, UNK replacement, overfitting."""

import pytest
import torch

import attention
from tasks.runtime import set_threads
from tasks.seq2seq.model import Seq2Seq, nll_loss
from tasks.seq2seq.search import beam_search, greedy_search, replace_unk

PARAMS = {"softmax": {}, "sparsemax": {}, "fusedmax": {"lam": 0.1}, "oscarmax": {"lam": 0.05},
          "sq_pnorm_max": {"p": 1.5}, "entmax": {"alpha": 1.5}}
BOS, EOS = 2, 3


def padded(lengths, vocab, gen):
    x = torch.randint(4, vocab, (len(lengths), max(lengths)), generator=gen)
    for b, n in enumerate(lengths):
        x[b, n:] = 0
    return x, torch.tensor(lengths)


def small(name, layers=2, **kw):
    return Seq2Seq(30, 25, attention.build(name, **PARAMS[name]), layers=layers, rnn_size=24, word_vec_size=12, **kw)


@pytest.mark.parametrize("name", attention.NAMES)
def test_forward_backward_shapes_and_source_mask(name, gen):
    torch.manual_seed(0)
    model = small(name)
    src, lengths = padded([7, 3, 5, 1], 30, gen)
    tgt = torch.randint(4, 25, (4, 6), generator=gen)
    log_probs, attn = model(src, lengths, tgt)
    assert log_probs.shape == (4, 6, 25) and attn.shape == (4, 6, 7)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(4, 6), atol=1e-5)
    allowed = torch.arange(7)[None, None, :] < lengths[:, None, None]
    assert (attn.masked_select(~allowed.expand_as(attn)) == 0).all()  # nothing on padding
    assert torch.allclose(attn.sum(-1), torch.ones(4, 6), atol=1e-5)  # each row on the simplex
    loss, ntok = nll_loss(log_probs, tgt)
    assert ntok == 24
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.attn.linear_in.weight.grad.abs().sum() > 0  # gradient flows through the mapping


def test_padding_does_not_change_a_sentence(gen):
    torch.manual_seed(0)
    model = small("fusedmax").eval()
    src, lengths = padded([6, 2], 30, gen)
    tgt = torch.randint(4, 25, (2, 4), generator=gen)
    lp_batch, at_batch = model(src, lengths, tgt)
    lp_one, at_one = model(src[1:, :2], lengths[1:], tgt[1:])
    assert torch.allclose(lp_batch[1], lp_one[0], atol=1e-5)
    assert torch.allclose(at_batch[1, :, :2], at_one[0], atol=1e-5)


def test_defaults_are_opennmt_py():
    model = Seq2Seq(10, 10, attention.build("softmax"))
    assert model.layers == 2 and model.rnn_size == 500 and model.src_embed.embedding_dim == 500
    assert model.cells[0].input_size == 1000  # input feeding: [embedding; previous attentional output]
    assert model.attn.linear_out.bias is None and model.dropout.p == 0.3
    assert max(p.abs().max().item() for p in model.parameters()) <= 0.1


# a tiny copy-with-a-twist task that the model learns to near-zero loss
PAIRS = [([5, 6, 7, 8], [9, 10, 11]), ([6, 5, 4], [12, 9]), ([7, 7, 8, 9, 5], [10, 13, 11, 9]),
         ([8, 4], [14]), ([9, 8, 7, 6, 5, 4], [11, 12, 13, 14, 9])]


def batch_of(pairs):
    S = max(len(s) for s, _ in pairs)
    T = max(len(t) for _, t in pairs) + 1
    src = torch.zeros(len(pairs), S, dtype=torch.long)
    tin = torch.zeros(len(pairs), T, dtype=torch.long)
    tout = torch.zeros(len(pairs), T, dtype=torch.long)
    for b, (s, t) in enumerate(pairs):
        src[b, : len(s)] = torch.tensor(s)
        tin[b, : len(t) + 1] = torch.tensor([BOS] + t)
        tout[b, : len(t) + 1] = torch.tensor(t + [EOS])
    return src, torch.tensor([len(s) for s, _ in pairs]), tin, tout


@pytest.fixture(scope="module", params=["softmax", "fusedmax"])
def trained(request):
    import numba

    threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    set_threads(1)  # tiny tensors: one thread (torch and numba) is much faster on a busy 2-core machine
    torch.manual_seed(0)
    model = Seq2Seq(16, 16, attention.build(request.param, **PARAMS[request.param]), layers=1, rnn_size=32,
                    word_vec_size=16, dropout=0.0)
    src, lengths, tin, tout = batch_of(PAIRS)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        lp, _ = model(src, lengths, tin)
        loss, n = nll_loss(lp, tout)
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
    torch.set_num_threads(threads)
    numba.set_num_threads(numba_threads)
    model.eval()
    return model, float(loss.detach() / n)


def test_overfit_a_few_sentences(trained):
    model, loss = trained
    assert loss < 0.15  # mean token NLL after 150 Adam steps (~0.05)
    src, lengths, _, _ = batch_of(PAIRS)
    hyps = greedy_search(model, src, lengths, BOS, EOS, max_length=10)
    assert [h.tokens for h in hyps] == [t for _, t in PAIRS]
    for h, (s, t) in zip(hyps, PAIRS):
        assert h.attention.shape == (len(t), len(s))
        assert torch.allclose(h.attention.sum(-1), torch.ones(len(t)), atol=1e-5)


def test_beam_one_equals_greedy(trained):
    model, _ = trained
    src, lengths, _, _ = batch_of(PAIRS)
    greedy = greedy_search(model, src, lengths, BOS, EOS, max_length=10)
    beam = beam_search(model, src, lengths, BOS, EOS, beam=1, max_length=10)
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    for g, b in zip(greedy, beam):
        assert b.score == pytest.approx(g.score, abs=1e-4)
        assert torch.allclose(g.attention, b.attention, atol=1e-6)


@pytest.mark.parametrize("beam", [2, 5])
def test_batched_beam_equals_per_sentence(trained, beam):
    model, _ = trained
    src, lengths, _, _ = batch_of(PAIRS)
    batched = beam_search(model, src, lengths, BOS, EOS, beam=beam, max_length=10)
    for b, (s, _) in enumerate(PAIRS):
        one = beam_search(model, src[b: b + 1, : len(s)], lengths[b: b + 1], BOS, EOS, beam=beam, max_length=10)[0]
        assert one.tokens == batched[b].tokens
        assert one.score == pytest.approx(batched[b].score, abs=1e-4)
        assert torch.allclose(one.attention, batched[b].attention, atol=1e-5)


def test_beam_finds_at_least_the_greedy_score():
    torch.manual_seed(3)
    model = small("sparsemax", layers=1).eval()
    with torch.no_grad():
        model.generator.bias[EOS] += 2.0  # short outputs
    src, lengths = padded([5, 4, 6], 30, torch.Generator().manual_seed(1))
    greedy = greedy_search(model, src, lengths, BOS, EOS, max_length=8)
    beam = beam_search(model, src, lengths, BOS, EOS, beam=4, max_length=8)
    for g, b in zip(greedy, beam):
        assert b.score >= g.score - 1e-5


def test_length_limit_forces_eos():
    torch.manual_seed(0)
    model = small("softmax", layers=1).eval()
    with torch.no_grad():
        model.generator.bias[EOS] = -1e4  # never chosen freely
    src, lengths = padded([3, 5], 30, torch.Generator().manual_seed(0))
    for hyps in (greedy_search(model, src, lengths, BOS, EOS, max_len_a=1.0, max_len_b=2, max_length=50),
                 beam_search(model, src, lengths, BOS, EOS, beam=3, max_len_a=1.0, max_len_b=2, max_length=50)):
        assert [len(h.tokens) for h in hyps] == [3 + 2 - 1, 5 + 2 - 1]  # the last allowed step is <eos>


def test_replace_unk_takes_the_attention_argmax():
    attn = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.0, 0.6, 0.4]])
    out = replace_unk(["the", "<unk>", "<unk>"], ["der", "Hund", "Zürich"], attn)
    assert out == ["the", "Zürich", "Hund"]
    assert replace_unk(["a"], [], attn) == ["a"]


def test_replace_unk_breaks_a_fused_tie_by_the_score():
    import attention
    from tasks.seq2seq.search import attended_position

    scores = torch.tensor([[0.0, 2.0, 2.2, 0.1]])
    weights = attention.fusedmax(scores, lam=0.5)
    assert weights[0, 1] == weights[0, 2] and weights[0, 1] == weights.max()  # an exact tie, by design
    assert attended_position(weights[0]) == 1                  # the leftmost of the group without scores
    assert attended_position(weights[0], scores[0]) == 2       # the position the model scored highest
    out = replace_unk(["the", "<unk>"], ["der", "alte", "Hund", "."], torch.cat([weights, weights]),
                      scores=torch.cat([scores, scores]))
    assert out == ["the", "Hund"]
    # no tie: the argmax, whatever the scores say
    assert attended_position(torch.tensor([0.1, 0.7, 0.2]), torch.tensor([9.0, 0.0, 0.0])) == 1


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_hypotheses_carry_the_scores_behind_their_attention(trained, search):
    model = trained[0]
    src, lengths, _, _ = batch_of(PAIRS)
    if search == "greedy":
        hyps = greedy_search(model, src, lengths, BOS, EOS, max_length=10)
    else:
        hyps = beam_search(model, src, lengths, BOS, EOS, beam=3, max_length=10)
    for h, n in zip(hyps, lengths.tolist()):
        assert h.attention_scores.shape == h.attention.shape == (len(h.tokens), n)
        if len(h.tokens):
            again = model.attn.normalizer(h.attention_scores)
            assert torch.allclose(again, h.attention, atol=1e-5)


def test_bidirectional_encoder_is_opennmt_brnn():
    torch.manual_seed(0)
    model = Seq2Seq(16, 16, attention.build("sparsemax"), layers=2, rnn_size=8, word_vec_size=4, dropout=0.0,
                    bidirectional=True)
    assert model.encoder.hidden_size == 4 and model.encoder.bidirectional
    src, lengths, tin, tout = batch_of(PAIRS)
    enc = model.encode(src, lengths)
    assert enc.memory.shape == (len(PAIRS), src.size(1), 8) and enc.state[0].shape == (2, len(PAIRS), 8)
    # the initial decoder state of a layer is [forward final state; backward final state] of that layer
    out, (h, _) = model.encoder(torch.nn.utils.rnn.pack_padded_sequence(model.src_embed(src), lengths,
                                                                         batch_first=True, enforce_sorted=False))
    assert torch.equal(enc.state[0][1], torch.cat([h[2], h[3]], dim=1))
    lp, attn = model(src, lengths, tin)
    assert lp.shape[:2] == tin.shape and torch.isfinite(lp).all()
    with pytest.raises(ValueError, match="even rnn_size"):
        Seq2Seq(16, 16, attention.build("softmax"), rnn_size=7, bidirectional=True)
