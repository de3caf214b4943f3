"""attention.scaled_dot_product_attention and attention.MultiheadAttention: torch's semantics, any mapping."""

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck
from torch.nn import functional as F

import attention

MAPPINGS = {"sparsemax": {}, "fusedmax": {"lam": 0.1}, "oscarmax": {"lam": 0.05}, "sq_pnorm_max": {"p": 1.5},
            "entmax": {"alpha": 1.5}}


def qkv(seed, batch=(2, 3), L=5, S=7, E=8, Ev=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*batch, L, E, generator=g, dtype=dtype), torch.randn(*batch, S, E, generator=g, dtype=dtype),
            torch.randn(*batch, S, Ev, generator=g, dtype=dtype))


def _masks(seed):
    g = torch.Generator().manual_seed(seed)
    bool_mask = torch.rand(2, 1, 5, 7, generator=g) < 0.6
    bool_mask[..., 0] = True  # every query keeps a key (torch gives nan otherwise; we give 0)
    float_mask = torch.randn(5, 7, generator=g, dtype=torch.float64)
    float_mask[torch.rand(5, 7, generator=g) < 0.3] = -torch.inf
    float_mask[:, 1] = 0.5
    return {"none": {}, "causal": {"is_causal": True}, "bool": {"attn_mask": bool_mask},
            "float": {"attn_mask": float_mask}, "scale": {"scale": 0.37}}


@pytest.mark.parametrize("kind", ["none", "causal", "bool", "float", "scale"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_softmax_equals_torch_sdpa(kind, dtype, tol):
    q, k, v = qkv(1, dtype=dtype)
    kw = _masks(2)[kind]
    if "attn_mask" in kw and kw["attn_mask"].is_floating_point():
        kw = {"attn_mask": kw["attn_mask"].to(dtype)}
    want = F.scaled_dot_product_attention(q, k, v, **kw)
    got = attention.scaled_dot_product_attention(q, k, v, mapping="softmax", **kw)
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)


def test_softmax_equals_torch_sdpa_unbatched_and_gqa():
    q, k, v = qkv(3, batch=(), L=4, S=6)
    torch.testing.assert_close(attention.scaled_dot_product_attention(q, k, v, mapping="softmax"),
                               F.scaled_dot_product_attention(q, k, v))
    q, k, v = qkv(4, batch=(2, 6))
    k, v = k[:, :2], v[:, :2]  # 6 query heads, 2 key/value heads
    torch.testing.assert_close(
        attention.scaled_dot_product_attention(q, k, v, mapping="softmax", enable_gqa=True, is_causal=True),
        F.scaled_dot_product_attention(q, k, v, enable_gqa=True, is_causal=True))


def test_errors():
    q, k, v = qkv(5)
    with pytest.raises(ValueError, match="attn_mask or is_causal"):
        attention.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(5, 7, dtype=torch.bool), is_causal=True)
    with pytest.raises(ValueError, match="unknown attention mapping 'sparse'; valid names"):
        attention.scaled_dot_product_attention(q, k, v, mapping="sparse")
    with pytest.raises(ValueError, match="fusedmax: lam must be >= 0"):
        attention.scaled_dot_product_attention(q, k, v, mapping="fusedmax", lam=-1.0)
    integer = torch.ones(5, 7, dtype=torch.int64)  # was "torch.finfo() requires a floating point input"
    with pytest.raises(TypeError, match="attn_mask must be bool .* or floating .*, not torch.int64: .*attn_mask.bool"):
        attention.scaled_dot_product_attention(q, k, v, attn_mask=integer)
    with pytest.raises(TypeError, match="not torch.int32"):
        attention.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64)(
            q[0], q[0], q[0], attn_mask=integer[:5, :5].int())


@pytest.mark.parametrize("name", list(MAPPINGS))
def test_causal_and_padded_batches(name):
    """Causal self-attention over a padded batch: each query's weights are the mapping applied to the keys it may
    see (itself and earlier, not padding) and nothing else; padded queries see no key and get 0."""
    g = torch.Generator().manual_seed(6)
    B, H, T, E = 3, 2, 6, 5
    lengths = torch.tensor([6, 4, 1])
    x = torch.randn(B, H, T, E, generator=g, dtype=torch.float64)
    pad = torch.arange(T) < lengths.reshape(B, 1, 1, 1)  # (B, 1, 1, T): True = a real key
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    allowed = causal & pad & pad.transpose(-1, -2)  # padded queries attend to nothing
    out, weights = attention.sdpa.attend(x, x, x, allowed=allowed, mapping=name, **MAPPINGS[name])
    scores = x @ x.transpose(-1, -2) / E ** 0.5
    for b in range(B):
        for h in range(H):
            for t in range(T):
                keys = allowed[b, 0, t]
                if not keys.any():
                    assert (weights[b, h, t] == 0).all() and (out[b, h, t] == 0).all()
                    continue
                alone = attention.MAPPINGS[name](scores[b, h, t][keys], **MAPPINGS[name])
                torch.testing.assert_close(weights[b, h, t][keys], alone)
                assert (weights[b, h, t][~keys] == 0).all()
    # the public function with the same bool mask gives the same outputs
    torch.testing.assert_close(
        attention.scaled_dot_product_attention(x, x, x, attn_mask=allowed, mapping=name, **MAPPINGS[name]), out)


def _where(allowed, kept, masked, dtype):
    return torch.where(allowed, torch.as_tensor(kept, dtype=dtype), torch.tensor(masked, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.5, 1.0])
@pytest.mark.parametrize("name", ["softmax", *MAPPINGS])
def test_float_mask_with_finfo_min_is_the_bool_mask(name, gamma, dtype):
    """finfo(dtype).min, as Hugging Face's eager masks, fairseq and much user code write "masked", masks exactly like
    a bool False and -inf: before, fusedmax kept those keys in its TV chain and γ < 1 overflowed to inf."""
    g = torch.Generator().manual_seed(11)
    q, k, v = qkv(12, dtype=dtype)
    allowed = torch.rand(2, 1, 5, 7, generator=g) < 0.6
    allowed[0, 0, 2] = False  # a query that may attend to no key: zeros, not nan
    bias = torch.randn(2, 1, 5, 7, generator=g, dtype=dtype)
    params = {"gamma": gamma, **MAPPINGS.get(name, {})}
    want = attention.scaled_dot_product_attention(q, k, v, attn_mask=allowed, mapping=name, **params)
    assert (want[0, :, 2] == 0).all() and torch.isfinite(want).all()
    minimum = torch.finfo(dtype).min
    for masked in (minimum, minimum / 2, -torch.inf):  # finfo.min / 2 is masked too ("at or below")
        float_mask = _where(allowed, 0.0, masked, dtype)
        got = attention.scaled_dot_product_attention(q, k, v, attn_mask=float_mask, mapping=name, **params)
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    # a float16 model's mask (float16's min) on float32/64 scores: the narrower type sets the threshold
    half_mask = _where(allowed, 0.0, torch.finfo(torch.float16).min, torch.float16)
    got = attention.scaled_dot_product_attention(q, k, v, attn_mask=half_mask, mapping=name, **params)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    # the finite entries still add to the scores: a bias with finfo.min where masked is the bias with -inf there
    with_bias = attention.scaled_dot_product_attention(q, k, v, attn_mask=_where(allowed, bias, minimum, dtype),
                                                       mapping=name, **params)
    torch.testing.assert_close(with_bias, attention.scaled_dot_product_attention(
        q, k, v, attn_mask=torch.where(allowed, bias, -torch.inf), mapping=name, **params), atol=0, rtol=0)


def test_split_float_mask_threshold():
    low = torch.finfo(torch.float32).min
    mask = torch.tensor([0.0, -3.0, low, low / 2, low / 2 * 0.99, -torch.inf, torch.nan])
    allowed, additive = attention.sdpa.split_float_mask(mask, torch.float32)
    assert allowed.tolist() == [True, True, False, False, True, False, True]  # nan stays, to be reported
    assert torch.equal(additive[:5], torch.stack([mask[0], mask[1], mask[0], mask[0], mask[4]]))
    # float64 scores with a float64 mask: float64's threshold; float16 scores: float16's
    assert attention.sdpa.split_float_mask(mask.double(), torch.float64)[0][2]
    assert not attention.sdpa.split_float_mask(torch.tensor([-40000.0]), torch.float16)[0][0]
    with pytest.raises(ValueError, match="scores contain nan"):
        attention.scaled_dot_product_attention(*qkv(1, batch=(), L=1, S=7), attn_mask=mask, mapping="sparsemax")


@pytest.mark.parametrize("name", ["softmax", *MAPPINGS])
def test_multihead_float_masks_with_finfo_min(name):
    """MultiheadAttention reads float attn_mask / key_padding_mask entries at finfo.min as "not allowed"."""
    torch.manual_seed(3)
    mha = attention.MultiheadAttention(12, 3, batch_first=True, mapping=name, gamma=0.5, **MAPPINGS.get(name, {}))
    x = torch.randn(2, 5, 12)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])  # True = padding
    blocked = torch.ones(5, 5, dtype=torch.bool).triu(1)  # True = not allowed
    blocked[1, 0] = True  # query 1 of the padded sequence then sees one key
    minimum = torch.finfo(torch.float32).min
    want_out, want_w = mha(x, x, x, key_padding_mask=pad, attn_mask=blocked)
    got_out, got_w = mha(x, x, x, key_padding_mask=torch.where(pad, minimum, 0.0),
                         attn_mask=torch.where(blocked, minimum, 0.0))
    torch.testing.assert_close(got_out, want_out, atol=0, rtol=0)
    torch.testing.assert_close(got_w, want_w, atol=0, rtol=0)
    assert (got_w[blocked.expand_as(got_w)] == 0).all()


@pytest.mark.parametrize("name", list(MAPPINGS))
def test_gradcheck_through_sdpa(name):
    q, k, v = qkv(7, batch=(2,), L=3, S=4, E=3, Ev=2)
    mask = torch.ones(3, 4, dtype=torch.bool).tril(1)
    gamma = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    inputs = tuple(t.clone().requires_grad_(True) for t in (q, k, v)) + (gamma,)
    assert gradcheck(lambda a, b, c, gm: attention.scaled_dot_product_attention(
        a, b, c, attn_mask=mask, mapping=name, gamma=gm, **MAPPINGS[name]), inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def _copy_torch_mha(ours: attention.MultiheadAttention, theirs: nn.MultiheadAttention):
    E = theirs.embed_dim
    with torch.no_grad():
        for i, proj in enumerate((ours.q_proj, ours.k_proj, ours.v_proj)):
            proj.weight.copy_(theirs.in_proj_weight[i * E:(i + 1) * E])
            proj.bias.copy_(theirs.in_proj_bias[i * E:(i + 1) * E])
        ours.out_proj.load_state_dict(theirs.out_proj.state_dict())


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_softmax_equals_torch(batch_first):
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(12, 3, batch_first=batch_first, dtype=torch.float64)
    ours = attention.MultiheadAttention(12, 3, batch_first=batch_first, mapping="softmax", dtype=torch.float64)
    _copy_torch_mha(ours, theirs)
    N, L, S = 2, 4, 5
    shape = (N, L, 12) if batch_first else (L, N, 12)
    kshape = (N, S, 12) if batch_first else (S, N, 12)
    q, k = torch.randn(shape, dtype=torch.float64), torch.randn(kshape, dtype=torch.float64)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])  # True = padding (torch's convention)
    blocked = torch.zeros(L, S, dtype=torch.bool)
    blocked[0, 1] = True  # True = not allowed
    for kw in ({}, {"key_padding_mask": pad}, {"attn_mask": blocked, "key_padding_mask": pad},
               {"attn_mask": torch.where(blocked, -torch.inf, 0.3).to(torch.float64)},
               {"average_attn_weights": False}):
        want_out, want_w = theirs(q, k, k, **kw)
        got_out, got_w = ours(q, k, k, **kw)
        torch.testing.assert_close(got_out, want_out)
        torch.testing.assert_close(got_w, want_w)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_drop_in_transformer_layer(mode):
    """Swapped into nn.TransformerEncoderLayer: softmax reproduces the original layer (train and eval: torch's
    fused eval fast path must not bypass the module), fusedmax gives sparse attention and trains."""
    torch.manual_seed(1)
    reference = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0, batch_first=True)
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0, batch_first=True)
    layer.load_state_dict(reference.state_dict())
    mha = attention.MultiheadAttention(16, 4, batch_first=True, mapping="softmax")
    _copy_torch_mha(mha, reference.self_attn)
    layer.self_attn = mha
    getattr(layer, mode)()
    getattr(reference, mode)()
    x = torch.randn(3, 6, 16)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[1, 4:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(6)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, src_key_padding_mask=pad), reference(x, src_key_padding_mask=pad),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer(x, src_mask=causal, is_causal=True),
                                   reference(x, src_mask=causal, is_causal=True), atol=1e-5, rtol=1e-5)
    layer.self_attn = attention.MultiheadAttention(16, 4, batch_first=True, mapping="fusedmax", lam=0.1,
                                                   learn_gamma=True, learn_lam=True)
    layer.train()
    out = layer(x, src_mask=causal, is_causal=True)
    out.sum().backward()
    assert layer.self_attn.log_gamma.grad is not None and layer.self_attn.log_lam.grad.abs().sum() > 0
    _, weights = layer.self_attn(4 * x, 4 * x, 4 * x, attn_mask=causal, need_weights=True,
                                 average_attn_weights=False)  # (N, heads, L, S)
    assert (weights.triu(1) == 0).all()  # causal
    visible = torch.ones(6, 6, dtype=torch.bool).tril().expand_as(weights)
    assert (weights[visible] == 0).any()  # and sparse beyond that: weights that are exactly 0
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 6))


def test_multihead_errors():
    with pytest.raises(ValueError, match="divisible"):
        attention.MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="unknown attention mapping"):
        attention.MultiheadAttention(12, 3, mapping="hardmax")
    with pytest.raises(ValueError, match="learn_lam needs mapping fusedmax or oscarmax"):
        attention.MultiheadAttention(12, 3, mapping="sparsemax", learn_lam=True)
    with pytest.raises(TypeError, match="lam"):
        attention.MultiheadAttention(12, 3, mapping="sparsemax", lam=0.1)


@pytest.mark.parametrize("name", ["softmax", *MAPPINGS])
def test_a_mask_that_allows_every_key_is_not_applied(name):
    """BERT passes its padding mask even when nothing is padded: attention then runs the mapping without a mask (its
    faster path), with the same weights and gradients as with the mask; a mask with one False still goes through."""
    seen = []

    def spy(scores, mask=None, **params):
        seen.append(mask)
        return attention.MAPPINGS[name](scores, mask=mask, **params)

    q, k, v = (t.requires_grad_() for t in qkv(3))
    every = torch.ones(2, 1, 5, 7, dtype=torch.bool)
    out, _ = attention.sdpa.attend(q, k, v, allowed=every, mapping=spy, **MAPPINGS.get(name, {}))
    assert seen == [None]
    masked, _ = attention.sdpa.attend(q, k, v, allowed=every, mapping=name, **MAPPINGS.get(name, {}))
    plain, _ = attention.sdpa.attend(q, k, v, mapping=name, **MAPPINGS.get(name, {}))
    torch.testing.assert_close(masked, plain, rtol=0, atol=0)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    for got, want in zip(grads, torch.autograd.grad(plain.sum(), (q, k, v))):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    one_out = every.clone()
    one_out[1, 0, 2, 3] = False
    attention.sdpa.attend(q, k, v, allowed=one_out, mapping=spy, **MAPPINGS.get(name, {}))
    assert seen[-1] is one_out
