"""attention.huggingface: the library's mappings inside transformers models, built tiny and offline from configs.

Llama (grouped-query attention, left padding, generate with and without the KV cache, learnable γ/λ), Mistral
(sliding window), BERT (right padding), T5 (relative position bias, cross-attention) and Bart (cross-attention):
``mapping="softmax"`` reproduces ``attn_implementation="eager"``; sparse mappings give exactly 0 weight to padded
and future keys; what is not supported (soft-capping, attention sinks) is refused by name.
"""

import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from attention import huggingface  # noqa: E402

SPARSE = {"sparsemax": {}, "fusedmax": {"lam": 0.1}, "oscarmax": {"lam": 0.05}, "sq_pnorm_max": {"p": 1.5},
          "entmax": {"alpha": 1.5}}
for _name, _params in {"softmax": {}, **SPARSE}.items():
    huggingface.register(_name, **_params)
huggingface.register("fusedmax-0.2", mapping="fusedmax", lam=0.2)
TOL = {"atol": 1e-5, "rtol": 1e-5}
V = 50  # vocabulary


def tiny(config_class, **overrides):
    small = {"vocab_size": V, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64, "pad_token_id": 0,
             "initializer_range": 0.3}  # weights large enough for sparse attention
    return config_class(**{**small, **overrides})


def build(model_class, config, implementation, seed=0):
    """The same random weights for every implementation (seeded), in eval mode."""
    torch.manual_seed(seed)
    return model_class._from_config(config, attn_implementation=implementation).eval()


def left_padded(seed=0, batch=3, length=7):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :5] = 0
    ids[mask == 0] = 0
    positions = (mask.cumsum(-1) - 1).clamp_min(0)  # as generate computes them
    return ids, mask, positions


def llama(implementation, **overrides):
    return build(transformers.LlamaForCausalLM, tiny(transformers.LlamaConfig, **overrides), implementation)


def test_import_attention_does_not_import_transformers():
    code = "import sys, attention, attention.huggingface; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_transformers_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"needs transformers.*pip install 'structured-attention\[huggingface\]'"):
        huggingface.register("fusedmax")


def test_register_errors():
    with pytest.raises(ValueError, match="'sdpa' is one of transformers' own"):
        huggingface.register("sdpa")
    with pytest.raises(ValueError, match="unknown attention mapping 'fused'.*mapping="):
        huggingface.register("fused")
    with pytest.raises(TypeError, match="register\\('x', mapping='sparsemax'\\).*lam"):
        huggingface.register("x", mapping="sparsemax", lam=0.1)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        huggingface.register("x", mapping="fusedmax", lam=-1.0)
    assert huggingface.register("fusedmax-0.2", mapping="fusedmax", lam=0.2) == "fusedmax-0.2"


@pytest.mark.parametrize("padded", [False, True])
def test_llama_softmax_equals_eager(padded):
    """GQA (4 query heads, 2 key/value heads), causal; without padding transformers would skip the causal mask for a
    custom name (and its sdpa): the registered mask builder keeps it. Logits and attention weights at the real
    tokens equal eager's (eager gives left-padded queries, which see no key, uniform weights; we give zeros)."""
    ids, mask, positions = left_padded()
    if not padded:
        mask, positions = torch.ones_like(mask), None
    want = llama("eager")(ids, attention_mask=mask, position_ids=positions, output_attentions=True)
    model = llama("softmax")
    got = model(ids, attention_mask=mask, position_ids=positions, output_attentions=True)
    assert model.config._attn_implementation == "softmax"
    real = mask.bool()
    torch.testing.assert_close(got.logits[real], want.logits[real], **TOL)
    assert len(got.attentions) == 2
    for ours, theirs in zip(got.attentions, want.attentions):
        assert ours.shape == (3, 4, 7, 7)
        torch.testing.assert_close(ours.transpose(1, 2)[real], theirs.transpose(1, 2)[real], **TOL)
    if padded:  # a left-padded query sees no key: zeros, not nan
        assert (got.attentions[0][2, :, :5] == 0).all()


@pytest.mark.parametrize("name", list(SPARSE))
def test_llama_sparse_mappings_mask_padding_and_future_exactly(name):
    """Every weight on a padded or future key is exactly 0, each real query's weights sum to 1 with some exact zeros
    among the keys it may see (sparsity), and the real tokens' logits equal those of each sequence run alone
    without padding (padding takes no part, not even in fusedmax's TV chain)."""
    ids, mask, positions = left_padded(seed=1)
    model = llama(name)
    out = model(ids, attention_mask=mask, position_ids=positions, output_attentions=True)
    real = mask.bool()
    may_see = torch.ones(7, 7, dtype=torch.bool).tril() & real[:, None, None, :] & real[:, None, :, None]
    zeros = 0
    for weights in out.attentions:
        may = may_see.expand_as(weights)
        assert (weights[~may] == 0).all()
        sums = weights.sum(-1).transpose(1, 2)[real]
        torch.testing.assert_close(sums, torch.ones_like(sums))
        zeros += int((weights[may] == 0).sum())
    assert zeros > 0
    for b in range(3):
        alone = model(ids[b, real[b]][None]).logits[0]
        torch.testing.assert_close(out.logits[b, real[b]], alone, **TOL)


@pytest.mark.parametrize("name", ["fusedmax-0.2", "sparsemax"])
def test_llama_generate_with_and_without_cache(name):
    """Greedy generate over a left-padded batch: the same tokens with the KV cache (one query against the cached
    keys) as without it (the whole prefix each step), and as each prompt generated alone."""
    ids, mask, _ = left_padded(seed=2)
    model = llama(name)
    kw = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    cached = model.generate(ids, attention_mask=mask, use_cache=True, **kw)
    uncached = model.generate(ids, attention_mask=mask, use_cache=False, **kw)
    assert cached.shape == (3, 13)
    torch.testing.assert_close(cached, uncached, atol=0, rtol=0)
    for b in range(3):
        prompt = ids[b, mask[b].bool()][None]
        torch.testing.assert_close(model.generate(prompt, use_cache=True, **kw)[0, prompt.shape[1]:],
                                   cached[b, 7:], atol=0, rtol=0)


def test_from_pretrained_and_set_attn_implementation(tmp_path):
    """from_pretrained(..., attn_implementation=name) on a saved tiny model (no hub), and set_attn_implementation
    switching between two registered configurations of one mapping (λ = 0.1 and 0.2 give different weights)."""
    ids, mask, positions = left_padded(seed=3)
    llama("eager").save_pretrained(tmp_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="fusedmax").eval()
    assert model.config._attn_implementation == "fusedmax"
    first = model(ids, attention_mask=mask, position_ids=positions, output_attentions=True).attentions
    model.set_attn_implementation("fusedmax-0.2")
    assert model.config._attn_implementation == "fusedmax-0.2"
    second = model(ids, attention_mask=mask, position_ids=positions, output_attentions=True).attentions
    assert not torch.equal(first[0], second[0])
    model.set_attn_implementation("eager")
    eager = model(ids, attention_mask=mask, position_ids=positions).logits
    model.set_attn_implementation("softmax")
    real = mask.bool()
    torch.testing.assert_close(model(ids, attention_mask=mask, position_ids=positions).logits[real], eager[real],
                               **TOL)


def test_llama_dropout_in_training():
    """With attention dropout in training mode, softmax reproduces eager under the same seed (the same dropout
    mask); a sparse mapping's dropped weights are exact zeros too, and eval mode is deterministic."""
    ids, mask, positions = left_padded(seed=4)
    models = {name: llama(name, attention_dropout=0.5).train() for name in ("eager", "softmax", "fusedmax")}
    outputs = {}
    for name, model in models.items():
        torch.manual_seed(5)
        outputs[name] = model(ids, attention_mask=mask, position_ids=positions, output_attentions=True)
    real = mask.bool()
    torch.testing.assert_close(outputs["softmax"].logits[real], outputs["eager"].logits[real], **TOL)
    dropped = outputs["fusedmax"].attentions[0]
    sums = dropped.sum(-1).transpose(1, 2)[real]
    assert not torch.allclose(sums, torch.ones_like(sums))  # dropout rescaled by 1 / (1 - p), and dropped some
    model = models["fusedmax"].eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits,
                                   atol=0, rtol=0)


def test_mistral_sliding_window_comes_with_the_mask():
    """Mistral's sliding window (3 keys) is drawn into the bool mask: softmax equals eager, and a sparse mapping
    gives exactly 0 to the keys outside the window."""
    config = tiny(transformers.MistralConfig, sliding_window=3)
    ids = torch.randint(3, V, (2, 7), generator=torch.Generator().manual_seed(6))
    want = build(transformers.MistralForCausalLM, config, "eager")(ids).logits
    torch.testing.assert_close(build(transformers.MistralForCausalLM, config, "softmax")(ids).logits, want, **TOL)
    weights = build(transformers.MistralForCausalLM, config, "sparsemax")(ids, output_attentions=True).attentions
    window = torch.ones(7, 7, dtype=torch.bool).tril() & ~torch.ones(7, 7, dtype=torch.bool).tril(-3)
    for w in weights:
        assert (w[..., ~window] == 0).all() and (w[..., window] > 0).any()


def bert(implementation):
    config = transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32,
                                     initializer_range=0.3)
    return build(transformers.BertModel, config, implementation)


def test_bert_padding():
    """BERT with right padding: softmax equals eager on every token; a sparse mapping gives padded keys exactly 0
    and the real tokens the outputs of each sentence encoded alone."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, V, (3, 6), generator=g)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    want = bert("eager")(ids, attention_mask=mask, output_attentions=True)
    got = bert("softmax")(ids, attention_mask=mask, output_attentions=True)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, **TOL)
    for ours, theirs in zip(got.attentions, want.attentions):
        torch.testing.assert_close(ours, theirs, **TOL)
    model = bert("fusedmax")
    out = model(ids, attention_mask=mask, output_attentions=True)
    for weights in out.attentions:
        assert (weights[(mask == 0)[:, None, None, :].expand_as(weights)] == 0).all()  # every query and head
    for b in range(3):
        n = int(mask[b].sum())
        alone = model(ids[b:b + 1, :n]).last_hidden_state[0]
        torch.testing.assert_close(out.last_hidden_state[b, :n], alone, **TOL)


def seq2seq(kind, implementation):
    if kind == "t5":
        config = transformers.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                                       num_heads=4, relative_attention_num_buckets=8, decoder_start_token_id=0,
                                       pad_token_id=0, eos_token_id=1)
        return build(transformers.T5ForConditionalGeneration, config, implementation)
    config = transformers.BartConfig(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2,
                                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                     decoder_ffn_dim=64, max_position_embeddings=32, pad_token_id=0, eos_token_id=1,
                                     bos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None)
    return build(transformers.BartForConditionalGeneration, config, implementation)


def seq2seq_batch():
    g = torch.Generator().manual_seed(8)
    source = torch.randint(3, V, (2, 6), generator=g)
    source_mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    target = torch.randint(3, V, (2, 5), generator=g)
    return source, source_mask, target


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_seq2seq_softmax_equals_eager(kind):
    """T5's relative position bias (added to the scores, every layer) and Bart's learned positions; padded
    source, causal decoder, cross-attention: softmax equals eager in logits and every attention tensor."""
    source, source_mask, target = seq2seq_batch()
    kw = {"attention_mask": source_mask, "decoder_input_ids": target, "output_attentions": True}
    want = seq2seq(kind, "eager")(source, **kw)
    got = seq2seq(kind, "softmax")(source, **kw)
    torch.testing.assert_close(got.logits, want.logits, **TOL)
    for key in ("encoder_attentions", "decoder_attentions", "cross_attentions"):
        for ours, theirs in zip(getattr(got, key), getattr(want, key), strict=True):
            torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("name", ["fusedmax", "entmax"])
def test_t5_sparse_cross_attention_and_generate(name):
    """Sparse mappings in T5: cross-attention gives padded source tokens exactly 0, decoder self-attention gives
    future tokens exactly 0; generate is the same with and without the (self- and cross-attention) cache."""
    source, source_mask, target = seq2seq_batch()
    model = seq2seq("t5", name)
    out = model(source, attention_mask=source_mask, decoder_input_ids=target, output_attentions=True)
    for weights in out.cross_attentions:
        assert (weights[1, ..., 3:] == 0).all() and (weights[0, ..., 3:] > 0).any()
    for weights in out.decoder_attentions:
        assert (weights.triu(1) == 0).all()
    for weights in out.encoder_attentions:
        assert (weights[1, ..., 3:] == 0).all()
    kw = {"attention_mask": source_mask, "max_new_tokens": 5, "do_sample": False}
    cached, uncached = model.generate(source, use_cache=True, **kw), model.generate(source, use_cache=False, **kw)
    torch.testing.assert_close(cached, uncached, atol=0, rtol=0)


def test_unsupported_arguments_are_refused_by_name():
    gemma = tiny(transformers.Gemma2Config, head_dim=8, attn_logit_softcapping=50.0)
    with pytest.raises(NotImplementedError, match=r"Gemma2Attention \(gemma2\) passes softcap="):
        build(transformers.Gemma2ForCausalLM, gemma, "fusedmax")(torch.tensor([[3, 4, 5]]))
    oss = tiny(transformers.GptOssConfig, head_dim=8, num_local_experts=2, num_experts_per_tok=1)
    with pytest.raises(NotImplementedError, match=r"GptOssAttention \(gpt_oss\) passes s_aux= \(attention sinks\)"):
        build(transformers.GptOssForCausalLM, oss, "sparsemax")(torch.tensor([[3, 4, 5]]))


def test_learnable_gamma_and_lambda_per_head():
    """add_parameters: one γ and one λ per head on every attention module, starting at the registered values (the
    outputs do not change), read by the attention function (changing them changes the outputs), with gradients,
    and moved by an ordinary optimizer step."""
    ids, mask, positions = left_padded(seed=9)
    model = llama("fusedmax-0.2")
    before = model(ids, attention_mask=mask, position_ids=positions).logits
    changed = huggingface.add_parameters(model, learn_gamma=True, learn_lam=True)
    assert changed == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    attn = model.model.layers[0].self_attn
    assert attn.log_gamma.shape == attn.log_lam.shape == (4, 1, 1)
    torch.testing.assert_close(attn.log_lam.exp(), torch.full((4, 1, 1), 0.2))
    after = model(ids, attention_mask=mask, position_ids=positions, labels=ids)
    torch.testing.assert_close(after.logits, before, **TOL)  # exp(log 0.2) is 0.2 to rounding
    learned = [p for n, p in model.named_parameters() if n.endswith(("log_gamma", "log_lam"))]
    assert len(learned) == 4
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    after.loss.backward()
    for p in learned:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    start = [p.detach().clone() for p in learned]
    optimizer.step()
    assert all(not torch.equal(p, s) for p, s in zip(learned, start))
    with torch.no_grad():
        attn.log_gamma.fill_(1.0)
        assert not torch.allclose(model(ids, attention_mask=mask, position_ids=positions).logits, after.logits)


def test_learnable_alpha_per_head():
    model = llama("entmax")
    try:
        huggingface.add_parameters(model, learn_alpha=True)
    except NotImplementedError as error:
        pytest.skip(str(error))  # attention.entmax takes a tensor alpha from the learnable-α change on
    attn = model.model.layers[1].self_attn
    torch.testing.assert_close(1.01 + torch.nn.functional.softplus(attn.raw_alpha), torch.full((4, 1, 1), 1.5))
    ids, mask, positions = left_padded(seed=10)
    model(ids, attention_mask=mask, position_ids=positions, labels=ids).loss.backward()
    assert attn.raw_alpha.grad.abs().sum() > 0


def test_add_parameters_errors():
    with pytest.raises(ValueError, match="learn_lam needs mapping fusedmax or oscarmax; 'sparsemax' is sparsemax"):
        huggingface.add_parameters(llama("sparsemax"), learn_lam=True)
    with pytest.raises(ValueError, match="runs attn_implementation='eager', not one registered here"):
        huggingface.add_parameters(llama("eager"), learn_gamma=True)
    with pytest.raises(ValueError, match="ask for learn_gamma"):
        huggingface.add_parameters(llama("fusedmax"))
    with pytest.raises(ValueError, match="found no module of Linear"):
        huggingface.add_parameters(torch.nn.Linear(2, 2), learn_gamma=True)


def test_t5_learnable_gamma_trains():
    """T5 (encoder, decoder and cross-attention modules) with one γ per head: all of them get gradients, and so
    does the relative position bias."""
    source, source_mask, target = seq2seq_batch()
    model = seq2seq("t5", "sparsemax")
    changed = huggingface.add_parameters(model, learn_gamma=True)
    assert len(changed) == 2 + 2 * 2  # encoder self, decoder self and cross per layer
    model(source, attention_mask=source_mask, labels=target).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.endswith("log_gamma")]
    assert len(grads) == 6 and all(g is not None and g.abs().sum() > 0 for g in grads)
    # the relative position bias is added to the scores differentiably: it learns too
    bias = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    assert bias.grad is not None and bias.grad.abs().sum() > 0


class _Module(torch.nn.Module):
    def __init__(self, is_causal):
        super().__init__()
        self.is_causal = is_causal


@pytest.mark.parametrize("is_causal", [True, False])
def test_no_mask_takes_causality_from_the_module(is_causal):
    """A model that builds no mask (attention_mask=None) gets causality from the module's is_causal, as in
    transformers' sdpa: the registered function then equals torch's sdpa, GQA included."""
    g = torch.Generator().manual_seed(11)
    q, k, v = torch.randn(2, 4, 5, 8, generator=g), torch.randn(2, 2, 5, 8, generator=g), torch.randn(2, 2, 5, 8,
                                                                                                         generator=g)
    function = transformers.AttentionInterface()["softmax"]
    out, weights = function(_Module(is_causal), q, k, v, None, scaling=0.3)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=0.3, enable_gqa=True)
    torch.testing.assert_close(out, want.transpose(1, 2), **TOL)
    assert weights.shape == (2, 4, 5, 5)
    assert bool((weights.triu(1) == 0).all()) if is_causal else bool((weights > 0).all())
    # an explicit is_causal argument wins over the module's
    out, _ = function(_Module(not is_causal), q, k, v, None, scaling=0.3, is_causal=is_causal)
    torch.testing.assert_close(out, want.transpose(1, 2), **TOL)
    # a sliding window it cannot see in a mask is refused; one longer than the keys changes nothing
    with pytest.raises(NotImplementedError, match=r"_Module passes sliding_window=2 without a mask"):
        function(_Module(is_causal), q, k, v, None, scaling=0.3, sliding_window=2)
    torch.testing.assert_close(function(_Module(is_causal), q, k, v, None, scaling=0.3, sliding_window=8)[0], out)


@pytest.mark.parametrize("name", ["softmax", "fusedmax"])
def test_custom_float_4d_mask_with_finfo_min(name):
    """A user's 4-D float mask (0 / finfo.min, as transformers' eager masks), passed as is by transformers, masks
    exactly like the 2-D padding mask (fusedmax included, whose TV chain finfo.min used to leave keys in)."""
    ids, mask, positions = left_padded(seed=12)
    model = llama(name)
    want = model(ids, attention_mask=mask, position_ids=positions).logits
    allowed = torch.ones(7, 7, dtype=torch.bool).tril() & mask.bool()[:, None, None, :]
    float_mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    got = model(ids, attention_mask=float_mask, position_ids=positions).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], **TOL)


@pytest.mark.parametrize("family", ["bloom", "mpt", "falcon"])
def test_families_that_bypass_the_attention_interface_are_named(family):
    """Their attention computes softmax itself: attn_implementation=<registered name> was accepted and silently ran
    softmax (falcon: a bare KeyError when built with it). check() and add_parameters name the module class."""
    config_class, model_class, module = {
        "bloom": (transformers.BloomConfig, transformers.BloomForCausalLM, "BloomAttention"),
        "mpt": (transformers.MptConfig, transformers.MptForCausalLM, "MptAttention"),
        "falcon": (transformers.FalconConfig, transformers.FalconForCausalLM, "FalconAttention")}[family]
    config = config_class(vocab_size=V, hidden_size=32, n_layer=2, num_hidden_layers=2, n_head=4,
                          num_attention_heads=4, d_model=32, n_heads=4, n_layers=2)
    model = model_class._from_config(config, attn_implementation="eager" if family == "falcon" else "fusedmax")
    message = rf"\.0\.\w+ \({module}.*\) computes its attention itself, not through transformers' attention"
    with pytest.raises(NotImplementedError, match=message):
        huggingface.check(model)
    with pytest.raises(NotImplementedError, match=message):
        huggingface.add_parameters(model, learn_gamma=True)


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_families_that_use_the_interface_pass_the_check(family):
    config_class, model_class = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                                 "gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel),
                                 "bert": (transformers.BertConfig, transformers.BertModel)}[family]
    model = build(model_class, tiny(config_class, n_embd=32, n_layer=2, n_head=4), "fusedmax")
    assert huggingface.check(model) is model
