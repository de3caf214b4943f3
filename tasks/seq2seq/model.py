"""OpenNMT-py's default RNN encoder-decoder, rebuilt on current torch with a pluggable attention mapping.

What it reproduces of OpenNMT-py's (legacy, 0.x) default model, the one Niculae & Blondel (2017) trained:

- ``encoder_type rnn``: a unidirectional ``layers``-layer LSTM over ``word_vec_size`` embeddings, with dropout
  between layers; padded batches go through ``pack_padded_sequence``. ``bidirectional=True`` is OpenNMT-py's
  ``-encoder_type brnn``: each direction has ``rnn_size / 2`` units, their states are concatenated (memory and the
  decoder's initial state, as OpenNMT-py's ``_fix_enc_hidden``).
- ``decoder_type rnn`` with ``input_feed 1``: a stack of LSTM cells (dropout between layers) whose input at step t is
  [embedding(y_{t-1}); h̃_{t-1}], h̃ being the previous attentional output; initial state = the encoder's final state,
  initial h̃ = 0.
- ``global_attention general`` (Luong et al., 2015): score(h_t, h_s) = h_tᵀ W_a h_s; the weights
  a_t = Π(scores) where Π is the configured mapping (softmax in OpenNMT-py; sparsemax / fusedmax / oscarmax here),
  called with the source padding mask; context c_t = Σ_s a_ts h_s; h̃_t = tanh(W_c [c_t; h_t]) (no bias, as
  OpenNMT-py's ``linear_out`` for ``general``).
- dropout on the embeddings and on h̃_t (OpenNMT-py applies ``opt.dropout`` to both), a linear generator with
  log-softmax, parameters initialised uniformly in [-param_init, param_init].

The attention module is whatever ``attention.build(...)`` (or Hydra's instantiate of ``configs/attention/*.yaml``)
returns: an ``nn.Module`` with ``forward(scores, mask=None)``; nothing else of the attention package is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@dataclass
class EncoderOutput:
    memory: torch.Tensor  # (B, S, H) encoder states
    mask: torch.Tensor  # (B, S) bool, True = a real source token
    state: tuple[torch.Tensor, torch.Tensor]  # (layers, B, H) each: final (h, c)


@dataclass
class DecoderState:
    h: torch.Tensor  # (layers, B, H)
    c: torch.Tensor  # (layers, B, H)
    feed: torch.Tensor  # (B, H) previous attentional output h̃ (input feeding)

    def index_select(self, index: torch.Tensor) -> "DecoderState":
        return DecoderState(self.h.index_select(1, index), self.c.index_select(1, index),
                            self.feed.index_select(0, index))


class GlobalAttention(nn.Module):
    """Luong "general" attention with a configurable normalizer Π: a = Π(h_tᵀ W_a H_s, mask)."""

    def __init__(self, dim: int, normalizer: nn.Module):
        super().__init__()
        self.linear_in = nn.Linear(dim, dim, bias=False)  # W_a
        self.linear_out = nn.Linear(2 * dim, dim, bias=False)  # W_c, no bias for "general" as in OpenNMT-py
        self.normalizer = normalizer

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor):
        """query (B, H), memory (B, S, H), mask (B, S) -> attentional output (B, H), weights (B, S), scores (B, S).

        The scores are returned for diagnostics (their scale decides how sparse a sparse mapping is) and for UNK
        replacement, which breaks ties inside a fused group by them."""
        scores = torch.bmm(memory, self.linear_in(query).unsqueeze(2)).squeeze(2)  # (B, S)
        weights = self.normalizer(scores, mask=mask)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)
        out = torch.tanh(self.linear_out(torch.cat([context, query], dim=1)))
        return out, weights, scores


class Seq2Seq(nn.Module):
    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        attention: nn.Module,
        layers: int = 2,
        rnn_size: int = 500,
        word_vec_size: int = 500,
        dropout: float = 0.3,
        input_feed: bool = True,
        param_init: float = 0.1,
        pad: int = 0,
        share_embeddings: bool = False,
        bidirectional: bool = False,
    ):
        super().__init__()
        if bidirectional and rnn_size % 2:
            raise ValueError(f"a bidirectional encoder needs an even rnn_size (two halves), got {rnn_size}")
        self.bidirectional = bidirectional
        self.pad = pad
        self.layers = layers
        self.rnn_size = rnn_size
        self.input_feed = input_feed
        self.src_embed = nn.Embedding(src_vocab_size, word_vec_size, padding_idx=pad)
        if share_embeddings:
            if src_vocab_size != tgt_vocab_size:
                raise ValueError("share_embeddings needs one vocabulary for source and target")
            self.tgt_embed = self.src_embed
        else:
            self.tgt_embed = nn.Embedding(tgt_vocab_size, word_vec_size, padding_idx=pad)
        self.dropout = nn.Dropout(dropout)
        self.encoder = nn.LSTM(word_vec_size, rnn_size // 2 if bidirectional else rnn_size, num_layers=layers,
                               dropout=dropout if layers > 1 else 0.0, batch_first=True, bidirectional=bidirectional)
        in_size = word_vec_size + (rnn_size if input_feed else 0)
        self.cells = nn.ModuleList(
            [nn.LSTMCell(in_size if i == 0 else rnn_size, rnn_size) for i in range(layers)]
        )
        self.attn = GlobalAttention(rnn_size, attention)
        self.generator = nn.Linear(rnn_size, tgt_vocab_size)
        if param_init > 0:
            for p in self.parameters():
                nn.init.uniform_(p, -param_init, param_init)
        with torch.no_grad():  # keep padding embeddings at zero, as OpenNMT-py's padding_idx does after init
            self.src_embed.weight[pad].zero_()
            self.tgt_embed.weight[pad].zero_()

    # ---------------------------------------------------------------------------------------------- encoder
    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        """src (B, S) padded ids, src_lengths (B,) -> memory, mask and final state."""
        emb = self.dropout(self.src_embed(src))
        lengths = src_lengths.clamp(min=1).cpu()
        packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
        out, (h, c) = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        mask = torch.arange(src.size(1), device=src.device).unsqueeze(0) < src_lengths.to(src.device).unsqueeze(1)
        if self.bidirectional:  # (layers * 2, B, H/2) -> (layers, B, H): [forward; backward] per layer
            h, c = (torch.cat([x[0::2], x[1::2]], dim=2) for x in (h, c))
        return EncoderOutput(memory, mask, (h, c))

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        h, c = enc.state
        feed = h.new_zeros(h.size(1), self.rnn_size)
        return DecoderState(h, c, feed)

    # ---------------------------------------------------------------------------------------------- decoder
    def decode_step(self, tokens: torch.Tensor, state: DecoderState, memory: torch.Tensor, mask: torch.Tensor):
        """One target step: tokens (B,) -> (attentional output h̃ (B, H), new state, attention weights (B, S),
        attention scores (B, S))."""
        x = self.dropout(self.tgt_embed(tokens))
        if self.input_feed:
            x = torch.cat([x, state.feed], dim=1)
        hs, cs = [], []
        for i, cell in enumerate(self.cells):
            h_i, c_i = cell(x, (state.h[i], state.c[i]))
            hs.append(h_i)
            cs.append(c_i)
            x = self.dropout(h_i) if i + 1 < len(self.cells) else h_i
        out, weights, scores = self.attn(x, memory, mask)
        out = self.dropout(out)
        return out, DecoderState(torch.stack(hs), torch.stack(cs), out), weights, scores

    def log_probs(self, out: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.generator(out), dim=-1)

    def forward(self, src, src_lengths, tgt_in, return_scores: bool = False):
        """Teacher forcing. src (B, S), src_lengths (B,), tgt_in (B, T) = <bos> y_1 … y_{T-1}.

        Returns log-probabilities (B, T, V) and attention weights (B, T, S) (and the attention scores (B, T, S)
        with ``return_scores``).
        """
        enc = self.encode(src, src_lengths)
        state = self.init_state(enc)
        outs, attns, scores = [], [], []
        for t in range(tgt_in.size(1)):
            out, state, weights, step_scores = self.decode_step(tgt_in[:, t], state, enc.memory, enc.mask)
            outs.append(out)
            attns.append(weights)
            scores.append(step_scores)
        outs = torch.stack(outs, dim=1)
        if return_scores:
            return self.log_probs(outs), torch.stack(attns, dim=1), torch.stack(scores, dim=1)
        return self.log_probs(outs), torch.stack(attns, dim=1)


def nll_loss(log_probs: torch.Tensor, target: torch.Tensor, pad: int = 0):
    """Summed negative log-likelihood over non-pad target tokens and the number of those tokens."""
    flat = log_probs.reshape(-1, log_probs.size(-1))
    loss = nn.functional.nll_loss(flat, target.reshape(-1), ignore_index=pad, reduction="sum")
    return loss, int((target != pad).sum())
