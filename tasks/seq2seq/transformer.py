"""A Transformer encoder-decoder for the seq2seq tasks, with this library's mappings in every attention head.

The layers are transformers' ``MarianMTModel`` (post-norm encoder-decoder of Vaswani et al. 2017 with sinusoidal
positions, the architecture of Marian/OPUS-MT), built from a config: no weights are downloaded. The attention is
plugged in through the library's own adapter (``attention.huggingface``), one mapping per attention kind:

- ``encoder``: the encoder's self-attention, ``decoder``: the decoder's (causal) self-attention, ``cross``: the
  decoder's attention over the source. Each kind runs the run's attention (``attention=fusedmax``) unless
  ``task.model.mappings.<kind>`` names another mapping (e.g. ``softmax`` for "structured cross-attention only"),
  which then takes the library's default parameters.
- ``learn``: the mapping parameters learned per layer and head (``attention.huggingface.add_parameters``): γ for
  every mapping, λ for fusedmax and oscarmax, α for entmax; a parameter a mapping does not have is skipped.

The harness's model interface is the RNN's (``model.Seq2Seq``): ``forward`` for teacher forcing, ``encode`` /
``init_state`` / ``decode_step`` / ``log_probs`` for ``search.py``, whose decoder state here is the key/value cache
(``DecoderCache``: beam reordering reorders the cache). Attention weights are read with forward hooks on the
attention modules (the adapter returns them from every call), as rows of every layer and head:
``(..., layers * heads, source length)`` for the cross-attention.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
from torch import nn

from attention import MAPPINGS, num_groups, registry
from attention import huggingface as hf_attention

from .model import EncoderOutput

KINDS = ("encoder", "decoder", "cross")
# which count of groups makes a row's Jacobian zero (the row passes no gradient): one group in the support
_DEAD_GROUPS = {"fusedmax": "segments", "oscarmax": "clusters"}


def _registered_name(mapping: str, params: dict) -> str:
    """One transformers attention implementation per (mapping, parameters): registering a name again would change
    every model that uses it, so the name is derived from both."""
    digest = hashlib.sha1(json.dumps([mapping, params], sort_keys=True).encode()).hexdigest()[:10]
    return f"seq2seq-{mapping}-{digest}"


@dataclass
class DecoderCache:
    """The decoder's state between steps: transformers' key/value cache (self- and cross-attention)."""

    cache: object  # transformers.EncoderDecoderCache

    def index_select(self, index: torch.Tensor) -> "DecoderCache":
        # in place: search.py replaces the old state by the one returned and never reads the old one again
        self.cache.reorder_cache(index)
        return self


class TransformerSeq2Seq(nn.Module):
    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, attention: dict, d_model: int = 256,
                 heads: int = 4, encoder_layers: int = 3, decoder_layers: int = 3, ffn_size: int = 1024,
                 dropout: float = 0.1, attention_dropout: float = 0.0, activation_dropout: float = 0.0,
                 activation: str = "relu", max_positions: int = 512, init_std: float = 0.02,
                 mappings: dict | None = None, learn: list | tuple = ("gamma", "lam", "alpha"),
                 pad: int = 0, bos: int = 2, eos: int = 3, kind: str = "transformer"):
        super().__init__()
        try:
            from transformers import MarianConfig, MarianMTModel
        except ImportError as error:
            raise ImportError(f"task.model.kind=transformer needs transformers ({error}): "
                              "pip install 'structured-attention[huggingface]'") from None
        if d_model % heads:
            raise ValueError(f"task.model: d_model={d_model} is not divisible by heads={heads}")
        unknown = set(mappings or {}) - set(KINDS)
        if unknown:
            raise ValueError(f"task.model.mappings: unknown attention kind(s) {sorted(unknown)}; use {list(KINDS)}")
        unknown = set(learn or ()) - set(registry.learnable())
        if unknown:
            raise ValueError(f"task.model.learn: unknown parameter(s) {sorted(unknown)}; use "
                             f"{list(registry.learnable())}")
        self.pad, self.heads = pad, heads
        self.kinds = self._resolve_mappings(attention, mappings or {})
        names = {kind: hf_attention.register(_registered_name(m, p), mapping=m, **p)
                 for kind, (m, p) in self.kinds.items()}
        config = MarianConfig(
            vocab_size=src_vocab_size, decoder_vocab_size=tgt_vocab_size, share_encoder_decoder_embeddings=False,
            d_model=d_model, encoder_layers=encoder_layers, decoder_layers=decoder_layers,
            encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn_size,
            decoder_ffn_dim=ffn_size, dropout=dropout, attention_dropout=attention_dropout,
            activation_dropout=activation_dropout, activation_function=activation,
            max_position_embeddings=max_positions, init_std=init_std, scale_embedding=True,
            pad_token_id=pad, bos_token_id=bos, eos_token_id=eos, decoder_start_token_id=bos,
            forced_eos_token_id=None, tie_word_embeddings=True)
        # the encoder's and decoder's masks are built from the model's config: any registered name gives the exact
        # bool masks (attention.huggingface); each attention module then reads its own copy of the config
        config._attn_implementation = names["cross"]
        self.hf = MarianMTModel(config)
        self.attention_modules: dict[str, list[nn.Module]] = {kind: [] for kind in KINDS}
        for layer in self.hf.model.encoder.layers:
            self.attention_modules["encoder"].append(layer.self_attn)
        for layer in self.hf.model.decoder.layers:
            self.attention_modules["decoder"].append(layer.self_attn)
            self.attention_modules["cross"].append(layer.encoder_attn)
        self.learned: dict[str, tuple[str, ...]] = {}
        for kind, modules in self.attention_modules.items():
            mapping = self.kinds[kind][0]
            wanted = tuple(key for key in (learn or ()) if key in registry.lookup(mapping).learnable())
            self.learned[kind] = wanted
            for module in modules:
                module.config = _config_copy(config, names[kind])
                if wanted:
                    hf_attention.add_parameters(module, learn=wanted, num_heads=heads)
                module.register_forward_hook(self._capture_hook(kind))
        self._captured: dict[str, list[torch.Tensor]] | None = None

    @staticmethod
    def _resolve_mappings(attention: dict, mappings: dict) -> dict[str, tuple[str, dict]]:
        spec = {k: v for k, v in dict(attention or {}).items() if k != "_target_"}
        name = spec.pop("name", "softmax")
        kinds = {}
        for kind in KINDS:
            other = mappings.get(kind)
            if other is None or other == name:
                kinds[kind] = (name, spec)
            elif other not in MAPPINGS:
                raise ValueError(f"task.model.mappings.{kind}={other!r}: not a mapping ({', '.join(MAPPINGS)})")
            else:
                kinds[kind] = (other, {})
        return kinds

    # ------------------------------------------------------------------------------------------- attention rows
    def _capture_hook(self, kind: str):
        def hook(module, args, output):
            if self._captured is not None and output[1] is not None:
                self._captured[kind].append(output[1].detach())
        return hook

    def capture(self, on: bool = True) -> None:
        """Keep the attention weights of the following calls (``captured``), or stop keeping them."""
        self._captured = {kind: [] for kind in KINDS} if on else None

    def captured(self, kind: str) -> torch.Tensor:
        """The weights kept for ``kind`` since the last ``capture()``, stacked: (B, layers, heads, T, S)."""
        return torch.stack(self._captured[kind], dim=1)

    def learned_values(self) -> dict:
        """{kind: {"gamma": [[per head] per layer], ...}} of the parameters learned per head."""
        out = {}
        for kind, modules in self.attention_modules.items():
            values = [hf_attention.learned_parameters(m) for m in modules]
            out[kind] = {key: [[round(x, 6) for x in v[key].detach().reshape(-1).tolist()] for v in values]
                         for key in self.learned[kind]}
        return out

    def dead_rows(self, weights: torch.Tensor, kind: str = "cross") -> torch.Tensor:
        """A bool per row: the mapping passes no gradient through it. The Jacobian of sparsemax and entmax is zero
        exactly when the support is one position, of fusedmax (oscarmax) when the support is one fused segment
        (cluster); softmax's only numerically, when the row is one-hot to within 1e-5 (its entries are
        y_i (δ_ij - y_j)). tests/test_seq2seq_transformer.py checks this against measured Jacobians."""
        mapping = self.kinds[kind][0]
        rows = weights.detach().reshape(-1, weights.shape[-1])
        if mapping == "softmax":
            return (1 - rows.amax(-1) <= 1e-5).reshape(weights.shape[:-1])
        if mapping in _DEAD_GROUPS:
            count = num_groups(rows, _DEAD_GROUPS[mapping])
        else:
            count = (rows > 0).sum(-1)
        return (count == 1).reshape(weights.shape[:-1])

    # ------------------------------------------------------------------------------------------- the interface
    def _source_mask(self, src: torch.Tensor, src_lengths: torch.Tensor) -> torch.Tensor:
        return torch.arange(src.size(1), device=src.device)[None] < src_lengths.to(src.device)[:, None]

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        mask = self._source_mask(src, src_lengths)
        memory = self.hf.model.encoder(input_ids=src, attention_mask=mask.long()).last_hidden_state
        return EncoderOutput(memory, mask, None)

    def init_state(self, enc: EncoderOutput) -> DecoderCache:
        from transformers import DynamicCache, EncoderDecoderCache

        return DecoderCache(EncoderDecoderCache(DynamicCache(), DynamicCache()))

    def decode_step(self, tokens: torch.Tensor, state: DecoderCache, memory: torch.Tensor, mask: torch.Tensor):
        """One target step: tokens (B,) -> (decoder output (B, d_model), state, cross-attention (B, layers * heads,
        S), None: the scores are not kept)."""
        keep = self._captured
        self.capture()
        try:
            out = self.hf.model.decoder(input_ids=tokens[:, None], encoder_hidden_states=memory,
                                        encoder_attention_mask=mask.long(), cache=state.cache, use_cache=True)
            cross = self.captured("cross")  # (B, L, H, 1, S)
        finally:
            self._captured = keep
        weights = cross[:, :, :, -1].reshape(cross.size(0), -1, cross.size(-1))
        return out.last_hidden_state[:, -1], state, weights, None

    def log_probs(self, out: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.hf.lm_head(out) + self.hf.final_logits_bias, dim=-1)

    def forward(self, src, src_lengths, tgt_in, return_scores: bool = False):
        """Teacher forcing: log-probabilities (B, T, V) and the cross-attention (B, T, layers * heads, S) (and
        ``None`` for the scores with ``return_scores``)."""
        mask = self._source_mask(src, src_lengths)
        keep = self._captured
        if return_scores and keep is None:
            self.capture()
        try:
            out = self.hf.model(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt_in, use_cache=False)
            cross = self.captured("cross") if self._captured is not None else None
        finally:
            if return_scores and keep is None:
                self._captured = None
        log_probs = self.log_probs(out.last_hidden_state)
        if cross is not None:  # (B, L, H, T, S) -> (B, T, L * H, S)
            B, L, H, T, S = cross.shape
            cross = cross.permute(0, 3, 1, 2, 4).reshape(B, T, L * H, S)
        if return_scores:
            return log_probs, cross, None
        return log_probs, cross


def _config_copy(config, implementation: str):
    import copy

    own = copy.copy(config)
    own._attn_implementation = implementation
    return own


class HeadStats:
    """Attention statistics per attention kind, layer and head (``tasks.stats``: support, spread, groups and the
    rows that pass no gradient), accumulated over teacher-forced batches: what each head learned."""

    KEYS = ("support", "above_1pct", "attn_ppl", "groups", "dead_rows")

    def __init__(self, model: TransformerSeq2Seq):
        from attention import groups_kind
        from tasks.stats import AttentionStats

        self.model = model
        self.acc = {(kind, layer, head): AttentionStats(groups=groups_kind(model.kinds[kind][0]))
                    for kind, modules in model.attention_modules.items()
                    for layer in range(len(modules)) for head in range(model.heads)}

    def update(self, src_mask: torch.Tensor, tgt_mask: torch.Tensor) -> None:
        """Add the weights the model captured in one teacher-forced call (``model.capture()`` before it);
        ``src_mask`` (B, S) and ``tgt_mask`` (B, T): True at real tokens."""
        T = tgt_mask.size(1)
        causal = torch.ones(T, T, dtype=torch.bool, device=tgt_mask.device).tril()
        masks = {"encoder": src_mask[:, :, None] & src_mask[:, None, :],
                 "decoder": tgt_mask[:, :, None] & tgt_mask[:, None, :] & causal,
                 "cross": tgt_mask[:, :, None] & src_mask[:, None, :]}
        for kind in KINDS:
            weights = self.model.captured(kind)  # (B, L, H, queries, keys)
            dead = self.model.dead_rows(weights, kind)
            mask = masks[kind]
            for layer in range(weights.size(1)):
                for head in range(weights.size(2)):
                    self.acc[kind, layer, head].update(weights[:, layer, head], mask, dead=dead[:, layer, head])

    def compute(self) -> dict:
        """{kind: [[{statistic: value} per head] per layer]}."""
        out: dict = {}
        for (kind, layer, head), acc in self.acc.items():
            stats = acc.compute()
            layers = out.setdefault(kind, [])
            if len(layers) <= layer:
                layers.append([])
            layers[layer].append({key: round(float(stats[key]), 4) for key in self.KEYS if key in stats})
        return out
